"""One upstream attempt seen from the client's side: the response callbacks, streaming to the client as bytes
arrive, and the conversions a stream may need on the way.

Theory of operation. A `ForwardExchange` receives the upstream response by callbacks (cco.upstream.connection).
A streaming 2xx answer is committed to the client at once: the bytes of every upstream read are written as one
chunk at the end of that read (`on_read_end`), with back-pressure (a paused client pauses the upstream read).
On the way, a translated provider's stream becomes Anthropic SSE (the pivot), which feeds the assembler (cache,
usage) and the single-flight followers; an OpenAI client gets it converted to Chat Completions chunks. Anything
else is buffered in the `Outcome` until complete, for the pipeline to retry, translate or answer.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import TYPE_CHECKING

import orjson

from cco import wire
from cco._fast import SseSplitter, parse_event
from cco.analytics.record import BatchUsage
from cco.cache.message import StreamAssembler
from cco.cache.store import Flight
from cco.errors import UpstreamError, sse_error_event
from cco.providers import anthropic
from cco.upstream.connection import Exchange

if TYPE_CHECKING:
    from cco.protocol import HttpProtocol, Request
    from cco.routing import Route


class Outcome:
    """What one upstream attempt ended with."""

    __slots__ = ("status", "headers", "chunks", "error", "committed", "assembler")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.error: UpstreamError | None = None
        self.committed = False  # response head already written to the client (streaming)
        self.assembler: StreamAssembler | None = None  # set for a committed SSE stream


class ForwardExchange(Exchange):
    __slots__ = ("client", "request", "stream_through", "outcome", "done", "loop", "splitter", "cco_headers",
                 "overhead_ms", "pending_head", "pending", "flight", "batch_usage", "adapter", "model", "translator",
                 "raw_client", "client_convert", "usage_filter")

    def __init__(self, loop: asyncio.AbstractEventLoop, client: HttpProtocol, request: Request, route: Route,
                 stream_through: bool, cco_headers: bytes, flight: Flight | None, adapter=None,
                 model: str = "", raw_client: bool = False) -> None:
        super().__init__(route.provider, route.timeout)
        self.loop = loop
        self.client = client
        self.request = request
        self.stream_through = stream_through
        self.outcome = Outcome()
        self.done = loop.create_future()
        self.splitter: SseSplitter | None = None
        self.cco_headers = cco_headers
        self.overhead_ms = 0.0  # time spent in the proxy before this attempt was sent
        # committed stream bytes gathered during one upstream read, written at its end (on_read_end)
        self.pending_head = b""
        self.pending: list[bytes] = []
        self.flight = flight
        self.batch_usage: BatchUsage | None = None  # set for a batch results download
        self.adapter = adapter  # a translated provider's module (None: Anthropic, passed through)
        self.model = model
        self.translator = None  # the adapter's stream translator, once a 2xx stream started
        self.raw_client = raw_client  # OpenAI passed through to an OpenAI client: translated only to be observed
        self.client_convert = None  # Anthropic events → OpenAI chunks, for an OpenAI client of a translated answer
        # Drops the usage chunk the proxy asked for on the client's behalf (see cco/chat.py)
        self.usage_filter: UsageChunkFilter | None = None
        if raw_client and request.openai is not None and request.openai.get("_strip_usage"):
            self.usage_filter = UsageChunkFilter()

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        outcome = self.outcome
        outcome.status = status
        outcome.headers = headers
        if self.stream_through and 200 <= status < 300:
            outcome.committed = True
            if self.adapter is not None:
                self.translator = self.adapter.stream_translator(self.model)
                if not self.raw_client:
                    # Translated into Anthropic SSE: our own head; the provider's headers describe its format.
                    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
            if self.request.shape == "openai" and not self.raw_client:
                self.client_convert = openai_stream_converter(self.request, self.model)
            block, request_id = anthropic.response_headers(headers)
            for name, value in headers:
                if name == b"content-type" and (value.startswith(b"text/event-stream") or self.translator):
                    self.splitter = SseSplitter()
                    outcome.assembler = StreamAssembler()
                    block += wire.NO_BUFFERING  # tell buffering reverse proxies in front of us to flush per event
                    break
            extra = b"x-cco-overhead-ms: %.3f\r\n" % self.overhead_ms
            if request_id is None:
                request_id = new_request_id()
                extra += b"request-id: " + request_id + b"\r\n"
            self.request.request_id = request_id
            self.pending_head = self.client.stream_head(self.request, status, block + self.cco_headers + extra)
            if self.flight is not None:
                self.flight.stream_started(status, block, _write_subscriber_head)

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
        """Writes what the last upstream read brought. `data` is always Anthropic SSE (the pivot: translated when
        the provider speaks another format) and feeds the assembler; the client gets it as is, converted to
        OpenAI chunks (`client_convert`), or — OpenAI passed through to an OpenAI client — the raw bytes."""
        pending = self.pending
        raw = pending[0] if len(pending) == 1 else b"".join(pending)
        data = raw
        translator = self.translator
        if translator is not None:
            events = translator.feed(raw) if raw else []
            if end and not tail:
                events += translator.finish()
            data = b"".join(b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n" for name, payload in events)
        convert = self.client_convert
        converted: list[bytes] = []
        if tail and (convert is not None or self.raw_client):
            data += tail  # the error event goes through the converter like any other
            tail = b""
        if data:
            splitter = self.splitter
            if splitter is not None:
                assembler = self.outcome.assembler
                assert assembler is not None
                for block in splitter.feed(data):
                    event, payload = parse_event(block)
                    assembler.feed(event, payload)
                    if convert is not None:
                        converted += convert.feed(event, payload)
                    elif self.raw_client and event == b"error":
                        converted.append(_openai_error_frame(payload))
            if self.flight is not None:
                self.flight.stream_data(data)
            if self.batch_usage is not None:
                self.batch_usage.feed(data)
        if self.raw_client:
            if self.usage_filter is not None:
                raw = self.usage_filter.feed(raw)
            data = raw + b"".join(converted)
        elif convert is not None:
            data = b"".join(converted)
        parts = [data] if data else []
        if tail:
            parts.append(tail)
        if parts or self.pending_head or end:
            self.client.write_stream(self.pending_head, parts, end)
            self.pending_head = b""
            self.pending = []
        if end and self.flight is not None:
            self.flight.stream_end(tail)

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
            if self.splitter is not None:
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


class UsageChunkFilter:
    """Removes the usage-only chunk (`choices: []`) from a passed-through OpenAI stream whose client did not ask
    for one: the proxy asks for it anyway (`stream_options.include_usage`) so that the ledger has the tokens."""

    __slots__ = ("splitter",)

    def __init__(self) -> None:
        self.splitter = SseSplitter()

    def feed(self, data: bytes) -> bytes:
        out = []
        for block in self.splitter.feed(data) if data else ():
            if b'"usage"' in block and self._usage_only(block):
                continue
            out.append(block + b"\n\n")
        return b"".join(out)

    @staticmethod
    def _usage_only(block: bytes) -> bool:
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                try:
                    chunk = orjson.loads(line[5:])
                except orjson.JSONDecodeError:
                    return False
                return isinstance(chunk, dict) and chunk.get("choices") == [] and "usage" in chunk
        return False


def openai_stream_converter(request: Request, model: str):
    """Anthropic SSE events → OpenAI chunks, for a /v1/chat/completions client of a translated answer."""
    from cco.providers.translate.openai_chat import AnthropicStreamToOpenAI

    include_usage = bool(request.openai is not None and request.openai.get("include_usage"))
    return AnthropicStreamToOpenAI(model, int(time.time()), include_usage, None)


def _openai_error_frame(payload: bytes) -> bytes:
    try:
        error = orjson.loads(payload).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        error = {}
    return b"data: " + orjson.dumps({"error": {"message": error.get("message", "upstream error"),
                                               "type": error.get("type", "api_error"), "param": None,
                                               "code": None}}) + b"\n\n"


def _write_subscriber_head(client: HttpProtocol, request: Request, status: int, headers: bytes) -> None:
    client.write_stream(client.stream_head(request, status, headers), [])


REQUEST_ID_PREFIX = b"req_cco_" + os.urandom(6).hex().encode()
request_counter = itertools.count(1)  # shared with the hit lane, which formats the same ids itself


def new_request_id() -> bytes:
    """Unique per process run and request: a random prefix chosen at start-up and a counter (no syscall)."""
    return REQUEST_ID_PREFIX + b"%012x" % next(request_counter)


def model_headers(route: Route, model: str) -> bytes:
    """The x-cco-provider and x-cco-model lines, built once per (route, model)."""
    lines = route.cco_headers.get(model)
    if lines is None:
        lines = b"x-cco-provider: " + route.provider_bytes + b"\r\nx-cco-model: " + model.encode() + b"\r\n"
        if len(route.cco_headers) < 1024:
            route.cco_headers[model] = lines
    return lines
