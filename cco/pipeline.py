"""One client request to a provider: route → upstream pool → response back to the client, with retries.

Theory of operation. `forward` builds the upstream request head once and sends it through the route's pool.
The response arrives in a `ForwardExchange` by callbacks. For a streaming answer (SSE, JSONL) a 2xx head is
committed to the client at once and every upstream chunk is written to the client as it arrives, with
back-pressure (a paused client pauses the upstream read). Anything else is buffered until complete, which lets
us retry: connect errors, timeouts, a body that ended early and statuses 429/500/502/503/504/529 are retried
up to the route's `max_retries` with exponential backoff and jitter, honouring `retry-after` — only ever
before the first byte went to the client (SPEC §4). A request that fails on a reused keep-alive connection
before any response byte is resent once on a new connection, outside the retry budget. When the client goes
away, the task running `forward` is cancelled and the upstream connection is closed, never reused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Callable

from cco import wire
from cco.errors import UpstreamError, sse_error_event
from cco.providers import anthropic
from cco.upstream.connection import Exchange

if TYPE_CHECKING:
    from cco.app import App
    from cco.protocol import HttpProtocol, Request
    from cco.routing import Route

log = logging.getLogger("cco.pipeline")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504, 529})
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
# A retry-after longer than this is not waited out: the error goes back to the client, which can decide.
MAX_RETRY_AFTER_SECONDS = 60.0


class Outcome:
    """What one upstream attempt ended with."""

    __slots__ = ("status", "headers", "chunks", "error", "committed")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.error: UpstreamError | None = None
        self.committed = False  # response head already written to the client (streaming)


class ForwardExchange(Exchange):
    __slots__ = ("client", "request", "stream_through", "outcome", "done", "loop", "observer", "cco_headers",
                 "overhead_ms", "pending_head", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, client: HttpProtocol, request: Request, route: Route,
                 stream_through: bool, cco_headers: bytes) -> None:
        super().__init__(route.provider, route.timeout)
        self.loop = loop
        self.client = client
        self.request = request
        self.stream_through = stream_through
        self.outcome = Outcome()
        self.done = loop.create_future()
        self.observer: anthropic.StreamObserver | None = None
        self.cco_headers = cco_headers
        self.overhead_ms = 0.0  # time spent in the proxy before this attempt was sent
        # committed stream bytes gathered during one upstream read, written at its end (on_read_end)
        self.pending_head = b""
        self.pending: list[bytes] = []

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        outcome = self.outcome
        outcome.status = status
        outcome.headers = headers
        if self.stream_through and 200 <= status < 300:
            outcome.committed = True
            block, request_id = anthropic.response_headers(headers)
            extra = b"x-cco-overhead-ms: %.3f\r\n" % self.overhead_ms
            if request_id is None:
                extra += b"request-id: " + new_request_id() + b"\r\n"
            for name, value in headers:
                if name == b"content-type" and value.startswith(b"text/event-stream"):
                    self.observer = anthropic.StreamObserver()
                    extra += wire.NO_BUFFERING  # tell buffering reverse proxies in front of us to flush per event
                    break
            self.pending_head = self.client.stream_head(self.request, status, block + self.cco_headers + extra)

    def on_body(self, data: bytes) -> None:
        if self.outcome.committed:
            self.pending.append(data)
        else:
            self.outcome.chunks.append(data)

    def on_read_end(self) -> None:
        if self.outcome.committed:
            self._flush(end=False)
            flow = self.client.flow
            if flow is not None and flow.write_paused and self.conn is not None:
                self.conn.pause_reading()
                flow.on_resume(self.conn.resume_reading)

    def _flush(self, end: bool, tail: bytes = b"") -> None:
        pending = self.pending
        if tail:
            pending.append(tail)
        if self.observer is not None and pending:
            self.observer.feed(pending[0] if len(pending) == 1 else b"".join(pending))
        if pending or self.pending_head or end:
            self.client.write_stream(self.pending_head, pending, end)
            self.pending_head = b""
            self.pending = []

    def on_complete(self) -> None:
        if self.outcome.committed:
            self._flush(end=True)
            self._release_flow()
        if not self.done.done():
            self.done.set_result(None)

    def on_error(self, exc: UpstreamError) -> None:
        outcome = self.outcome
        outcome.error = exc
        if outcome.committed:
            # The client already has a 200: the only way left to say it failed is an SSE error event.
            if self.observer is not None:
                self._flush(end=True, tail=sse_error_event("api_error", exc.message))
            else:
                self._flush(end=False)
                self.client.abort()  # not SSE: a truncated chunked body tells the client it is incomplete
            self._release_flow()
        if not self.done.done():
            self.done.set_result(None)

    def _release_flow(self) -> None:
        flow = self.client.flow
        if flow is not None:
            flow.on_resume(None)


def new_request_id() -> bytes:
    return b"req_cco_" + os.urandom(12).hex().encode()


def retry_delay(attempt: int, headers: list[tuple[bytes, bytes]] | None) -> float | None:
    """Seconds to wait before retry number `attempt + 1`, or None when the upstream asked for too long a wait."""
    delay = min(BACKOFF_BASE_SECONDS * (2 ** attempt), BACKOFF_MAX_SECONDS) * random.uniform(0.75, 1.0)
    if headers:
        asked = _retry_after(headers)
        if asked is not None:
            if asked > MAX_RETRY_AFTER_SECONDS:
                return None
            delay = max(asked, 0.0)
    return delay


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    for name, value in headers:
        if name == b"retry-after-ms":
            try:
                return float(value) / 1000
            except ValueError:
                pass
    for name, value in headers:
        if name == b"retry-after":
            try:
                return float(value)
            except ValueError:
                try:
                    when = parsedate_to_datetime(value.decode("latin-1"))
                    return when.timestamp() - time.time()
                except (TypeError, ValueError):
                    return None
    return None


async def forward(app: App, client: HttpProtocol, request: Request, route: Route, model: str, path: bytes,
                  body: bytes, *, stream_through: bool,
                  rewrite: Callable[[bytes], bytes] | None = None) -> None:
    """Sends `request` (with `body`) to `route` at `path` and answers the client with the result."""
    loop = app.loop
    head = anthropic.request_head(request.method, path, request.query, request.headers, route, len(body))
    pool = route.pool
    if pool is None:
        pool = route.pool = app.pools.get(route.origin, route.max_connections)
    cco_headers = route.cco_headers.get(model)
    if cco_headers is None:
        cco_headers = b"x-cco-provider: " + route.provider_bytes + b"\r\nx-cco-model: " + model.encode() + b"\r\n"
        if len(route.cco_headers) < 1024:
            route.cco_headers[model] = cco_headers
    upstream_seconds = 0.0
    attempt = 0
    while True:
        exchange = ForwardExchange(loop, client, request, route, stream_through, cco_headers)
        started = time.perf_counter()
        exchange.overhead_ms = max((started - request.received_at - upstream_seconds) * 1000, 0.0)
        await _attempt(pool, exchange, head, body, route)
        upstream_seconds += time.perf_counter() - started
        outcome = exchange.outcome
        if outcome.committed:
            app.stats.count(outcome.status)
            break
        retryable = outcome.error is not None or outcome.status in RETRYABLE_STATUS
        if retryable and attempt < route.max_retries:
            delay = retry_delay(attempt, outcome.headers if outcome.error is None else None)
            if delay is not None:
                app.stats.retries += 1
                await asyncio.sleep(delay)
                attempt += 1
                continue
        break
    if not outcome.committed:
        _answer(app, client, request, outcome, cco_headers, upstream_seconds, rewrite)
    if client.flow is not None and client.flow.write_paused:
        await client.drain()  # a client that does not read holds up its next pipelined request, not our memory


def _answer(app: App, client: HttpProtocol, request: Request, outcome: Outcome, cco_headers: bytes,
            upstream_seconds: float, rewrite: Callable[[bytes], bytes] | None) -> None:
    """Writes a buffered upstream answer, or the proxy's error when no answer came."""
    overhead = (time.perf_counter() - request.received_at - upstream_seconds) * 1000
    extra = cco_headers + b"x-cco-overhead-ms: %.3f\r\n" % max(overhead, 0.0)
    if outcome.error is not None:
        err = outcome.error
        app.stats.count(err.status)
        client.send_error(request, err.status, err.error_type, err.message,
                          headers=extra + b"request-id: " + new_request_id() + b"\r\n")
        return
    block, request_id = anthropic.response_headers(outcome.headers)
    if request_id is None:
        extra += b"request-id: " + new_request_id() + b"\r\n"
    chunks = outcome.chunks
    response = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if rewrite is not None and 200 <= outcome.status < 300:
        response = rewrite(response)
    app.stats.count(outcome.status)
    client.send(request, outcome.status, block + extra, response, content_type=b"")


async def _attempt(pool, exchange: ForwardExchange, head: bytes, body: bytes, route: Route) -> None:
    """One try, plus the single resend allowed when a reused connection failed before answering."""
    for fresh in (False, True):
        try:
            conn, reused = await pool.acquire(route.connect_timeout, route.provider, fresh=fresh)
        except UpstreamError as exc:
            exchange.outcome.error = exc
            return
        conn.start(exchange, head, body)
        try:
            await exchange.done
        except asyncio.CancelledError:
            if exchange.conn is not None:
                exchange.conn.detach()
            raise
        error = exchange.outcome.error
        if error is None or not (error.before_response and reused) or exchange.outcome.committed or fresh:
            return
        # The keep-alive connection was closed by the server before it read our request: resend once.
        log.debug("resending on a new connection after %s", error.cause)
        exchange.outcome = Outcome()
        exchange.done = exchange.loop.create_future()
