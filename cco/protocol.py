"""The inbound HTTP/1.1 connection: bytes in, `Request` objects out, response bytes back. No business logic.

Theory of operation. httptools parses the byte stream and calls back; a completed request is appended to the
connection's queue. One request is handled at a time, in arrival order, so pipelined requests are answered in
order; when more than MAX_PIPELINED_REQUESTS wait, we stop reading the socket until the queue drains. Limits are
enforced while parsing: header bytes and count (431), body size (413, checked against Content-Length before the
body arrives), malformed HTTP (400); each of these answers in order and closes the connection, since the byte
stream can no longer be trusted. Timeouts are checked by the server's 1 s tick (`check_timeouts`): the request
head must be complete within `header_timeout` of its first byte (slowloris), a body must keep flowing, and an idle
keep-alive connection is closed after `idle_timeout`. When the client goes away the running handler is
cancelled, which cancels its upstream request.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from cco import wire
from cco.driver import Driver
from cco.errors import CcoError, HeadersTooLarge, InvalidRequest, RequestTooLarge, error_body
from cco.flow_control import CLIENT_WRITE_HIGH_WATER, CLIENT_WRITE_LOW_WATER, MAX_PIPELINED_REQUESTS, FlowControl

if TYPE_CHECKING:
    from cco.server import ConnectionRegistry

log = logging.getLogger("cco.protocol")

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


class Limits:
    __slots__ = ("max_body_bytes", "max_header_bytes", "max_headers", "header_timeout", "body_timeout",
                 "idle_timeout")

    def __init__(self, max_body_bytes: int = 32 * 1024 * 1024, max_header_bytes: int = 64 * 1024,
                 max_headers: int = 128, header_timeout: float = 10.0, body_timeout: float = 60.0,
                 idle_timeout: float = 75.0) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.idle_timeout = idle_timeout


class Request:
    """One parsed client request. Header names are lower-case bytes, values as sent."""

    __slots__ = ("method", "path", "query", "headers", "body", "keep_alive", "received_at", "project",
                 "error", "is_head", "status", "shape", "prefix", "_header_map", "responded_at", "request_id",
                 "pivot", "requested_model", "override_rule", "agent", "openai")

    def __init__(self, method: bytes, path: bytes, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
                 keep_alive: bool) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.received_at = time.perf_counter()
        self.project: str | None = None
        self.error: CcoError | None = None  # set when the request could not be parsed: answer it and close
        self.is_head = method == b"HEAD"
        self.status = 0  # of the response, once written
        self.shape = "anthropic"  # error shape: "openai" on the OpenAI-compatible endpoint
        self.prefix = b""  # the /p/{project} path prefix the request came with
        self._header_map: dict[bytes, bytes] | None = None
        self.responded_at = 0.0  # perf_counter when the response head was written (time to first byte)
        self.request_id = b""  # the request-id the response carried
        # set by the endpoints: the body as an Anthropic dict when translated, the model the client asked for,
        # the override rule that changed it and the agent (header or detected)
        self.pivot: dict | None = None
        self.requested_model: str | None = None
        self.override_rule: str | None = None
        self.agent: str | None = None
        self.openai: dict | None = None  # /v1/chat/completions: the client's stream_options

    def reset_header_map(self) -> None:
        """After `headers` was replaced (a translated request forwards other headers)."""
        self._header_map = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (names are lower-case); a map is built on the first lookup."""
        header_map = self._header_map
        if header_map is None:
            header_map = self._header_map = dict(reversed(self.headers))
        return header_map.get(name)


class _ParseAbort(Exception):
    """Raised from a parser callback to stop parsing; carries the error to answer with."""

    def __init__(self, error: CcoError) -> None:
        self.error = error


class HttpProtocol(asyncio.Protocol):
    def __init__(self, handler: Any, registry: ConnectionRegistry, limits: Limits) -> None:
        # config
        self.handler = handler
        self.registry = registry
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        # connection
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()
        self.task: Driver | None = None  # the request being handled, when it waits on an upstream
        self.closed = False
        self.closed_by_us = False  # close() called: the transport may still flush, but no new request runs
        self.broken = False  # the byte stream is unusable: answer what is queued, then close
        self.requests_served = 0
        self.opened_at = time.monotonic()
        self.idle_since = self.opened_at
        # request being parsed
        self._in_request = False
        self._headers_done = False
        self._request_started = 0.0
        self._last_data = 0.0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        # response being written
        self.response_started = False
        # the cache-hit lane (cco._fast.hit_*): answers plain repeated requests without the general path
        self.lane = getattr(handler, "hit_lane", None) if not getattr(handler, "access_log", False) else None

    # Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flow = FlowControl(transport)
        transport.set_write_buffer_limits(high=CLIENT_WRITE_HIGH_WATER, low=CLIENT_WRITE_LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.registry.discard(self)
        if self.flow is not None:
            self.flow.connection_lost()
        self.queue.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.broken:
            return
        self._last_data = time.monotonic()
        lane = self.lane
        if (lane is not None and not self._in_request and self.task is None and not self.queue
                and not self.closed_by_us and not self.registry.draining):
            # At a request boundary: the hit lane answers the complete plain requests it owns straight from the
            # bytes (see cco._fast.hit_py); httptools parses whatever it leaves.
            used = lane.serve_data(data, self.transport, self.limits)
            if used:
                self.requests_served += 1  # at least one (only "none yet" matters: the first-request deadline)
                self.idle_since = self._last_data
                if used == len(data):
                    return
                data = data[used:]
        try:
            self.parser.feed_data(data)
            if self._in_request and not self._headers_done:
                self._check_head_limits()
        except _ParseAbort as abort:
            self._fail(abort.error)
        except httptools.HttpParserUpgrade:
            self._fail(InvalidRequest("protocol upgrades are not supported"))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _ParseAbort):
                self._fail(cause.error)
            else:
                log.exception("request parser callback failed")
                self._fail(InvalidRequest("malformed HTTP request"))
        except httptools.HttpParserError as exc:
            self._fail(InvalidRequest(f"malformed HTTP request: {exc}"))

    def pause_writing(self) -> None:
        assert self.flow is not None
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        assert self.flow is not None
        self.flow.resume_writing()

    def eof_received(self) -> bool | None:
        # The client closed its side. Like nginx (499), take it as the client leaving: a request in flight is
        # cancelled — with its upstream call — rather than completed for nobody. Returning None closes the
        # transport, and connection_lost does the cancelling.
        return None

    # Parser callbacks

    def on_message_begin(self) -> None:
        self._in_request = True
        self._headers_done = False
        self._request_started = time.monotonic()
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Limits are checked once per read in data_received (a per-header check costs more than the parse).
        self._header_bytes += len(name) + len(value) + 4
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._check_head_limits()
        self._headers_done = True
        limit = self.limits.max_body_bytes
        for name, value in self._headers:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise _ParseAbort(InvalidRequest("invalid content-length")) from None
                if declared > limit:
                    raise _ParseAbort(_too_large(limit))
            elif name == b"expect" and value.lower() == b"100-continue":
                assert self.transport is not None
                self.transport.write(CONTINUE_100)

    def _check_head_limits(self) -> None:
        if self._header_bytes > self.limits.max_header_bytes or len(self._headers) > self.limits.max_headers:
            raise _ParseAbort(HeadersTooLarge("request line and headers exceed the size or count limit"))

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.limits.max_body_bytes:
            raise _ParseAbort(_too_large(self.limits.max_body_bytes))
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_request = False
        parser = self.parser
        chunks = self._body
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._body = []
        lane = self.lane
        if (lane is not None and self.task is None and not self.queue and not self.closed_by_us
                and parser.should_keep_alive() and not self.registry.draining and not lane.declined(body)):
            if lane.serve(parser.get_method(), self._url, self._headers, body, time.perf_counter(), self.transport):
                self._headers = []
                self.requests_served += 1
                self.idle_since = time.monotonic()
                return
        path, query = _split_target(self._url)
        request = Request(parser.get_method(), path, query, self._headers, body, parser.should_keep_alive())
        self._headers = []
        if self.closed_by_us:
            return  # the connection is closing: nothing more is answered on it
        self.queue.append(request)
        if self.task is None:
            self._start_next()
        elif len(self.queue) > MAX_PIPELINED_REQUESTS:
            assert self.flow is not None
            self.flow.pause_reading()

    # Request handling

    def _fail(self, error: CcoError) -> None:
        """The byte stream is broken: answer `error` after the queued requests, then close."""
        self.broken = True
        self._in_request = False
        bad = Request(b"GET", b"/", b"", [], b"", False)
        bad.error = error
        if not self.closed_by_us:
            self.queue.append(bad)
            if self.task is None:
                self._start_next()

    def _start_next(self) -> None:
        """Handles queued requests in order: synchronously when the handler can answer at once (cache hits,
        errors, admin), else in one task per request, which continues the queue when it ends."""
        handler = self.handler
        while self.queue and self.task is None and not self.closed:
            request = self.queue.popleft()
            self.response_started = False
            try:
                if request.error is not None:
                    self.send_cco_error(request, request.error)
                    pending = None
                else:
                    pending = handler.dispatch(request, self)
            except CcoError as exc:
                self.send_cco_error(request, exc)
                pending = None
            except Exception as exc:
                self._internal_error(request, exc)
                pending = None
            if pending is not None:
                driver = self.task = Driver(pending, self.loop, lambda exc, r=request: self._request_done(r, exc))
                driver.start()  # may finish at once, and then continue the queue itself
                return
            if not self._finish(request):
                return

    def _request_done(self, request: Request, exc: BaseException | None) -> None:
        if isinstance(exc, asyncio.CancelledError):
            self.task = None
            return  # the client went away
        if isinstance(exc, CcoError):
            if not self.response_started and not self.closed:
                self.send_cco_error(request, exc)
            elif not self.closed:
                self.abort()
        elif exc is not None:
            self._internal_error(request, exc)
        self.task = None
        if self._finish(request):
            self._start_next()

    def _internal_error(self, request: Request, exc: BaseException) -> None:
        log.error("unhandled error while handling %s %s", request.method.decode(), request.path.decode(),
                  exc_info=exc)
        if not self.response_started and not self.closed:
            self.send_error(request, 500, "api_error", "internal proxy error")
        elif not self.closed:
            self.abort()

    def _finish(self, request: Request) -> bool:
        """After a response: False when the connection is done, True when the next request may run."""
        self.requests_served += 1
        if self.handler.access_log:
            self.handler.log_access(request)
        if self.closed:
            return False
        assert self.transport is not None and self.flow is not None
        if not request.keep_alive or request.error is not None or self.registry.draining:
            self.closed_by_us = True
            self.transport.close()
            return False
        if len(self.queue) <= MAX_PIPELINED_REQUESTS:
            self.flow.resume_reading()
        if not self.queue:
            self.idle_since = time.monotonic()
            if self.broken:
                self.closed_by_us = True
                self.transport.close()
                return False
        return True

    # Responses (called by the handler for the request being handled)

    def _closing_header(self, request: Request) -> bytes:
        if not request.keep_alive or request.error is not None or self.registry.draining:
            request.keep_alive = False
            return wire.CONNECTION_CLOSE
        return b""

    def send(self, request: Request, status: int, headers: bytes, body: bytes,
             content_type: bytes = wire.CONTENT_TYPE_JSON) -> None:
        """A whole response, head and body, in one write. `headers` is a ready header block."""
        if self.closed:
            return
        assert self.transport is not None
        self.response_started = True
        request.status = status
        request.responded_at = time.perf_counter()
        parts = [wire.status_line(status), content_type, b"content-length: %d\r\n" % len(body), headers,
                 self._closing_header(request), b"\r\n"]
        if request.is_head or status in (204, 304):
            self.transport.write(b"".join(parts))
        elif len(body) < 16384:
            parts.append(body)
            self.transport.write(b"".join(parts))
        else:
            self.transport.writelines((b"".join(parts), body))

    def send_cco_error(self, request: Request, exc: CcoError) -> None:
        """The one mapping from an error type to its response: status, API error shape, retry headers."""
        headers = exc.headers()
        self.send_error(request, exc.status, exc.error_type, exc.message, headers=headers, shape=request.shape)

    def send_error(self, request: Request, status: int, error_type: str, message: str, headers: bytes = b"",
                   shape: str = "anthropic") -> None:
        no_retry = status < 500 and status != 429 and b"x-should-retry" not in headers
        extra = headers + b"x-should-retry: false\r\n" if no_retry else headers
        self.send(request, status, extra, error_body(status, error_type, message, shape=shape))

    def stream_head(self, request: Request, status: int, headers: bytes) -> bytes:
        """The head of a response with a chunked body, to be written by `write_stream`."""
        self.response_started = True
        request.status = status
        request.responded_at = time.perf_counter()
        return b"".join((wire.status_line(status), headers, wire.CHUNKED, self._closing_header(request), b"\r\n"))

    def write_stream(self, head: bytes, parts: list[bytes], end: bool = False) -> None:
        """One write for everything a stream has ready: an unsent head, the data as one chunk, the terminator.

        Upstream reads often carry many SSE events (and many upstream chunks); writing them per event would cost
        a syscall each, so they are framed as one chunk per read — the bytes are the same, only the chunk
        boundaries (transport framing) differ.
        """
        if self.closed:
            return
        assert self.transport is not None
        size = 0
        for part in parts:
            size += len(part)
        if size:
            if size < 16384:
                out = [head, b"%x\r\n" % size, *parts, b"\r\n"]
                if end:
                    out.append(wire.CHUNK_END)
                self.transport.write(b"".join(out))
            else:
                self.transport.writelines([head, b"%x\r\n" % size, *parts,
                                           b"\r\n" + wire.CHUNK_END if end else b"\r\n"])
        elif head or end:
            self.transport.write(head + wire.CHUNK_END if end else head)

    def start_stream(self, request: Request, status: int, headers: bytes) -> None:
        """Writes a response head for a chunked body; the body follows through `write_chunk`."""
        self.write_stream(self.stream_head(request, status, headers), [])

    def write_chunk(self, data: bytes) -> None:
        if data:
            self.write_stream(b"", [data])

    def end_stream(self) -> None:
        self.write_stream(b"", [], end=True)

    def abort(self) -> None:
        """Drops the connection without a proper end (the response cannot be completed)."""
        if not self.closed and self.transport is not None:
            self.transport.abort()

    async def drain(self) -> None:
        assert self.flow is not None
        await self.flow.drain()

    # Lifecycle (called by the server)

    @property
    def idle(self) -> bool:
        return self.task is None and not self.queue and not self._in_request

    def check_timeouts(self, now: float) -> None:
        if self.closed or self.transport is None:
            return
        limits = self.limits
        if self._in_request:
            if not self._headers_done:
                if now - self._request_started > limits.header_timeout:
                    self.transport.abort()
            elif now - self._last_data > limits.body_timeout:
                self.transport.abort()
        elif self.task is None and not self.queue:
            if self.requests_served == 0:
                if now - self.opened_at > limits.header_timeout:
                    self.transport.abort()
            elif now - self.idle_since > limits.idle_timeout:
                self.transport.close()

    def shutdown(self) -> None:
        """Stop accepting requests on this connection: close it now if idle, else after the current response."""
        if self.idle and self.transport is not None:
            self.transport.close()


def _split_target(target: bytes) -> tuple[bytes, bytes]:
    """(path, query) of a request target; origin-form is split by hand (parse_url costs more than the rest)."""
    if target[:1] != b"/":
        try:
            url = httptools.parse_url(target)  # absolute-form, from clients that treat us as a forward proxy
        except httptools.HttpParserInvalidURLError:
            return target, b""
        return url.path or b"/", url.query or b""
    path, _, query = target.partition(b"?")
    hash_at = query.find(b"#") if query else path.find(b"#")
    if hash_at >= 0:
        if query:
            query = query[:hash_at]
        else:
            path = path[:hash_at]
    return path, query


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"request body exceeds the {limit // (1024 * 1024)} MB limit")
