"""Fast mock Anthropic upstream for the CCO benchmarks (uvloop + httptools).

    python benchmarks/mock_upstream.py --port 9100

* ``POST .../v1/messages``  -> a fixed ~630-byte Anthropic message (JSON,
  content-length), or, when the body contains ``"stream":true`` /
  ``"stream": true``, a fixed SSE stream (chunked transfer encoding; one
  chunk per event, the whole response written with a single write).
* ``GET /__mock_status``    -> ``{"requests": N}`` (POSTs to /v1/messages seen)
* ``GET /health``           -> 200, so the mock can stand in for the proxy
  while the real ``cco-proxy`` does not exist yet.

Keep-alive and pipelining safe: responses are written synchronously from the
parser callback, so they leave in request order.  ``--host``,
``--config-dir``, ``--data-dir`` and ``--log-level`` are accepted (the proxy's
command line) so ``--proxy-cmd "python benchmarks/mock_upstream.py"`` works;
``--stand-in-cache-hit`` adds ``x-cco-cache: hit`` to every response, to
exercise the harness's hit rows.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal

import httptools
import uvloop

# --------------------------------------------------------------------------
# Canned responses (built once at import time)
# --------------------------------------------------------------------------
MSG_ID = "msg_01BenchMockUpstream0000000"
MODEL = "claude-sonnet-4-5-20250929"
TEXT = ("A 2-core machine usually runs best with one event-loop worker per "
        "core: two processes, each with its own loop, and no thread pool for "
        "socket I/O. Keep parsing cheap, reuse upstream connections, and "
        "measure CPU time per request before adding more workers or caches. "
        "Profile the hot path first.")
USAGE = {"input_tokens": 312, "cache_creation_input_tokens": 0,
         "cache_read_input_tokens": 0, "output_tokens": 58,
         "service_tier": "standard"}


def _json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


MESSAGE_BODY = _json({
    "id": MSG_ID, "type": "message", "role": "assistant", "model": MODEL,
    "content": [{"type": "text", "text": TEXT}],
    "stop_reason": "end_turn", "stop_sequence": None, "usage": USAGE,
})


def _sse_events() -> list[bytes]:
    events = [("message_start", {"type": "message_start", "message": {
        "id": MSG_ID, "type": "message", "role": "assistant", "model": MODEL,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": dict(USAGE, output_tokens=1)}}),
        ("content_block_start", {
            "type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}})]
    words = TEXT.split(" ")
    for i in range(10):  # exactly 10 non-empty text deltas
        piece = " ".join(words[len(words) * i // 10:len(words) * (i + 1) // 10])
        events.append(("content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta",
                      "text": piece + (" " if i < 9 else "")}}))
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn",
                                     "stop_sequence": None},
                           "usage": {"output_tokens": 58}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return [b"event: %s\ndata: %s\n\n" % (name.encode(), _json(data))
            for name, data in events]


def _chunked(parts: list[bytes]) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
    return out + b"0\r\n\r\n"


COMMON_HEADERS = (b"request-id: req_01BenchMockUpstream\r\n"
                  b"anthropic-organization-id: 00000000-bench\r\n")


def build_responses(cache_hit_header: bool) -> dict[str, bytes]:
    extra = COMMON_HEADERS + (b"x-cco-cache: hit\r\n" if cache_hit_header
                              else b"")

    def fixed(status: bytes, ctype: bytes, body: bytes, close=False) -> bytes:
        return (b"HTTP/1.1 " + status + b"\r\ncontent-type: " + ctype +
                b"\r\ncontent-length: %d\r\n" % len(body) + extra +
                (b"connection: close\r\n" if close else b"") + b"\r\n" + body)

    return {
        "message": fixed(b"200 OK", b"application/json", MESSAGE_BODY),
        "stream": (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                   b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
                   + extra + b"\r\n" + _chunked(_sse_events())),
        "health": fixed(b"200 OK", b"application/json", b'{"status":"ok"}'),
        "not_found": fixed(b"404 Not Found", b"application/json",
                           b'{"type":"error","error":{"type":"not_found_error",'
                           b'"message":"not found"}}'),
        "bad": fixed(b"400 Bad Request", b"text/plain", b"bad request",
                     close=True),
    }


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------
class Stats:
    requests = 0


class MockProtocol(asyncio.Protocol):
    __slots__ = ("transport", "parser", "url", "body", "responses")

    def __init__(self, responses: dict[str, bytes]) -> None:
        self.responses = responses
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(self.responses["bad"], False)
        except httptools.HttpParserError:
            self._finish(self.responses["bad"], False)

    # httptools callbacks -------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        r = self.responses
        if method == b"POST" and path.endswith(b"/v1/messages"):
            Stats.requests += 1
            body = b"".join(self.body)
            streaming = b'"stream":true' in body or b'"stream": true' in body
            resp = r["stream"] if streaming else r["message"]
        elif method == b"GET" and path == b"/__mock_status":
            payload = _json({"requests": Stats.requests})
            resp = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(payload), payload))
        elif method == b"GET" and path == b"/health":
            resp = r["health"]
        else:
            resp = r["not_found"]
        self.body = []
        self._finish(resp, self.parser.should_keep_alive())

    def _finish(self, resp: bytes, keep_alive: bool) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(resp)
        if not keep_alive:
            t.close()

    def connection_lost(self, exc) -> None:
        self.transport = None


async def serve(host: str, port: int, cache_hit_header: bool) -> None:
    loop = asyncio.get_running_loop()
    responses = build_responses(cache_hit_header)
    server = await loop.create_server(lambda: MockProtocol(responses),
                                      host, port, backlog=1024,
                                      reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    # Accepted and ignored: lets the mock stand in for `cco-proxy`.
    ap.add_argument("--config-dir")
    ap.add_argument("--data-dir")
    ap.add_argument("--log-level")
    ap.add_argument("--stand-in-cache-hit", action="store_true",
                    help="add 'x-cco-cache: hit' to every response")
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("the mock only listens on loopback")
    uvloop.run(serve(args.host, args.port, args.stand_in_cache_hit))


if __name__ == "__main__":
    main()
