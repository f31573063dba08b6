"""Mock Anthropic Messages API upstream for CCO's integration tests (stdlib only).

Serves HTTP/1.1 with keep-alive on 127.0.0.1 from its own asyncio loop in a
daemon thread.  Request bodies may use Content-Length or chunked encoding.

Endpoints: POST /v1/messages (JSON or SSE stream), POST /v1/messages/count_tokens,
GET /v1/models, and an in-memory /v1/messages/batches store (create, get, list,
cancel, results, delete).  Anything else gets a 404 Anthropic error.

The behaviour is picked with the request header ``x-mock-mode`` (absent = normal):

  tool               tool_use answer when the request has ``tools`` (also when the
                     last user text contains "use the tool")
  error-<status>     that status with an Anthropic error body; ``x-mock-retry-after``
                     is echoed as ``retry-after``
  fail-first-<k>     the first k requests of this mode string get 529, then normal
  slow               waits ``x-mock-delay-ms`` (default 2000) before the head
  stream-slow        streamed events 300 ms apart
  drop-mid-stream    200 head + message_start, content_block_start, one delta, close
  drop-before-head   closes the connection without answering
  truncate-body      Content-Length larger than the body sent, then close
  big-stream         2000 text_delta events of 1 KB each, ended properly
  close              normal answer with ``connection: close``, then close

``x-mock-delay-ms`` delays the response head in any mode; ``x-mock-answer-bytes: N`` pads a text answer to about N bytes;
``x-mock-usage: {json}`` replaces the answer's usage object.

Run standalone:  python tests/mock_anthropic.py --port 9101   (prints "listening <port>")
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import traceback
from dataclasses import dataclass, field
from http import HTTPStatus

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 503: "api_error", 529: "overloaded_error"}
TOOL_INPUT = {"command": "echo cco-ok", "timeout": 5}
MODELS = {"data": [{"type": "model", "id": "claude-upstream-only", "display_name": "Upstream",
                    "created_at": "2025-01-01T00:00:00Z"}],
          "has_more": False, "first_id": "claude-upstream-only", "last_id": "claude-upstream-only"}
BATCH_PREFIX = "/v1/messages/batches"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict = field(default_factory=dict)
    raw_headers: list = field(default_factory=list)
    body: bytes = b""
    json: object = None


class _BadRequest(Exception):
    """Malformed request: answer 400 and close the connection."""


def _reason(status: int) -> str:
    known = {s.value: s.phrase for s in HTTPStatus}
    return "Overloaded" if status == 529 else known.get(status, "Status")


def _last_user_text(params: dict) -> str:
    for msg in reversed(params.get("messages") or []):
        if not isinstance(msg, dict) or msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(b.get("text", "") for b in content
                            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
        return ""
    return ""


def _split3(s: str) -> list:
    k = max(1, len(s) // 3)
    return [p for p in (s[:k], s[k:2 * k], s[2 * k:]) if p] or [s]


def _sse(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class MockAnthropic:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, ssl_context=None):
        self.host, self.port = host, port
        self.ssl_context = ssl_context  # serve HTTPS with this server-side context
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._n = 0
        self._mode_counts: dict[str, int] = {}
        self._batches: dict[str, dict] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._tasks: set = set()

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "MockAnthropic":
        ready = threading.Event()
        errors: list = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(asyncio.start_server(
                    self._handle_conn, self.host, self.port, limit=1 << 20, ssl=self.ssl_context))
                self.port = self._server.sockets[0].getsockname()[1]
                scheme = "https" if self.ssl_context is not None else "http"
                self.url = f"{scheme}://127.0.0.1:{self.port}"
            except Exception as e:  # e.g. port in use
                errors.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="mock-anthropic", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=5)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(timeout=5)

    async def _shutdown(self):
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._mode_counts.clear()

    def count(self, path_prefix: str = "/v1/messages") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path.startswith(path_prefix))

    def _next_n(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    # ------------------------------------------------------------ HTTP parsing
    async def _read_request(self, reader, writer):
        line = b"\r\n"
        while line in (b"\r\n", b"\n"):  # tolerate stray CRLFs between requests
            line = await reader.readline()
        if not line:
            return None
        parts = line.decode("latin-1").strip().split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _BadRequest("bad request line")
        method, target, version = parts
        raw_headers = []
        while True:
            h = await reader.readline()
            if not h:
                raise _BadRequest("eof in headers")
            if h in (b"\r\n", b"\n"):
                break
            name, sep, value = h.decode("latin-1").partition(":")
            if not sep:
                raise _BadRequest("bad header line")
            raw_headers.append((name.strip(), value.strip()))
        headers = {k.lower(): v for k, v in raw_headers}
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked(reader)
        else:
            try:
                length = int(headers.get("content-length", "0") or 0)
            except ValueError:
                raise _BadRequest("bad content-length")
            if length < 0:
                raise _BadRequest("bad content-length")
            body = await reader.readexactly(length)
        path, _, query = target.partition("?")
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        conn = headers.get("connection", "").lower()
        keep_alive = "keep-alive" in conn if version == "HTTP/1.0" else "close" not in conn
        req = RecordedRequest(method.upper(), path, query, headers, raw_headers, body, parsed)
        with self._lock:
            self.requests.append(req)
        return req, keep_alive

    async def _read_chunked(self, reader) -> bytes:
        out = bytearray()
        while True:
            size_line = (await reader.readline()).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _BadRequest("bad chunk size")
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readline()

    async def _handle_conn(self, reader, writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            while True:
                try:
                    got = await self._read_request(reader, writer)
                except _BadRequest as e:
                    body = json.dumps({"type": "error", "error": {
                        "type": "invalid_request_error", "message": f"mock: {e}"}}).encode()
                    await self._send(writer, 400, body, "req_mock_bad", keep_alive=False)
                    break
                if got is None:
                    break
                if not await self._dispatch(writer, *got):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.CancelledError, ValueError):
            pass
        except Exception:
            traceback.print_exc(file=sys.stderr)
        finally:
            self._tasks.discard(task)
            try:
                writer.close()
            except Exception:
                pass

    # ------------------------------------------------------------ responses
    async def _send(self, writer, status, body: bytes, req_id, keep_alive=True,
                    ctype="application/json", extra=(), declared_len=None) -> bool:
        headers = [("content-type", ctype),
                   ("content-length", str(len(body) if declared_len is None else declared_len)),
                   ("request-id", req_id), *extra,
                   ("connection", "keep-alive" if keep_alive else "close")]
        head = f"HTTP/1.1 {status} {_reason(status)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        writer.write(head.encode("latin-1") + b"\r\n" + body)
        await writer.drain()
        return keep_alive

    async def _send_json(self, writer, status, obj, req_id, keep_alive, mode, extra=()) -> bool:
        body = json.dumps(obj).encode()
        if mode in ("truncate-body", "drop-mid-stream"):
            await self._send(writer, status, body[: len(body) // 2], req_id, False,
                             declared_len=len(body) + 100)
            return False
        return await self._send(writer, status, body, req_id, keep_alive and mode != "close", extra=extra)

    async def _send_error(self, writer, status, n, keep_alive, extra=(), message=None) -> bool:
        etype = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        obj = {"type": "error", "error": {"type": etype, "message": message or f"mock {status}"},
               "request_id": f"req_mock_{n}"}
        return await self._send(writer, status, json.dumps(obj).encode(), f"req_mock_{n}",
                                keep_alive, extra=extra)

    async def _dispatch(self, writer, req: RecordedRequest, keep_alive: bool) -> bool:
        n = self._next_n()
        rid = f"req_mock_{n}"
        mode = req.headers.get("x-mock-mode", "").strip().lower()
        delay = req.headers.get("x-mock-delay-ms")
        try:
            delay_ms = float(delay) if delay else (2000.0 if mode == "slow" else 0.0)
        except ValueError:
            delay_ms = 0.0
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        if mode == "drop-before-head":
            return False
        status = None
        if mode.startswith("error-") and mode[6:].isdigit():
            status = int(mode[6:])
        elif mode.startswith("fail-first-") and mode[11:].isdigit():
            with self._lock:
                seen = self._mode_counts[mode] = self._mode_counts.get(mode, 0) + 1
            status = 529 if seen <= int(mode[11:]) else None
        if status is not None and 100 <= status <= 999:
            ra = req.headers.get("x-mock-retry-after")
            return await self._send_error(writer, status, n, keep_alive,
                                          extra=[("retry-after", ra)] if ra else ())

        m, p, params = req.method, req.path, req.json if isinstance(req.json, dict) else None
        if p == "/v1/messages" and m == "POST":
            if params is None:
                return await self._send_error(writer, 400, n, keep_alive, message="mock: body must be JSON")
            msg = self._make_message(params, n, len(req.body), mode)
            usage = req.headers.get("x-mock-usage")
            if usage:
                msg["usage"] = json.loads(usage)  # exact token counts for cost tests
            pad = req.headers.get("x-mock-answer-bytes", "")
            if pad.isdigit() and msg["content"] and msg["content"][0]["type"] == "text":
                # a long answer of about that many bytes (cache memory tests)
                text = msg["content"][0]["text"]
                msg["content"][0]["text"] = text + " " + "lorem ipsum " * max((int(pad) - len(text)) // 12, 0)
            if params.get("stream"):
                return await self._stream(writer, msg, rid, keep_alive, mode)
            return await self._send_json(writer, 200, msg, rid, keep_alive, mode)
        if p == "/v1/messages/count_tokens" and m == "POST":
            return await self._send_json(writer, 200, {"input_tokens": len(req.body) // 4}, rid, keep_alive, mode)
        if p == "/v1/models" and m == "GET":
            return await self._send_json(writer, 200, MODELS, rid, keep_alive, mode)
        if p == BATCH_PREFIX or p.startswith(BATCH_PREFIX + "/"):
            return await self._batches_route(writer, req, n, keep_alive, mode)
        return await self._send_error(writer, 404, n, keep_alive, message=f"mock: no route {m} {p}")

    # ------------------------------------------------------------ messages
    def _make_message(self, params: dict, n: int, body_len: int, mode: str = "") -> dict:
        text = _last_user_text(params)
        tools = params.get("tools")
        use_tool = bool(tools) and isinstance(tools, list) and isinstance(tools[0], dict) and (
            mode == "tool" or "use the tool" in text.lower())
        if use_tool:
            content = [{"type": "text", "text": "Let me check."},
                       {"type": "tool_use", "id": f"toolu_mock_{n}", "name": tools[0].get("name", "tool"),
                        "input": dict(TOOL_INPUT)}]
        else:
            content = [{"type": "text", "text": "Hello from mock: " + text[:40]}]
        return {"id": f"msg_mock_{n}", "type": "message", "role": "assistant",
                "model": params.get("model", "claude-mock"), "content": content,
                "stop_reason": "tool_use" if use_tool else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": body_len // 4, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": 7}}

    def _stream_events(self, msg: dict, mode: str):
        start = dict(msg, content=[], stop_reason=None, stop_sequence=None,
                     usage=dict(msg["usage"], output_tokens=1))
        yield _sse("message_start", {"type": "message_start", "message": start})
        for i, block in enumerate(msg["content"]):
            if block["type"] == "text":
                yield _sse("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "text", "text": ""}})
                if i == 0:
                    yield _sse("ping", {"type": "ping"})
                if mode == "big-stream":
                    pieces = (f"{k:06d}" + "x" * 1018 for k in range(2000))
                else:
                    pieces = _split3(block["text"])
                for piece in pieces:
                    yield _sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "text_delta", "text": piece}})
            else:
                yield _sse("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": dict(block, input={})})
                for piece in ["", *_split3(json.dumps(block["input"]))]:
                    yield _sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "input_json_delta",
                                                                 "partial_json": piece}})
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": i})
        yield _sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                                     "usage": {"output_tokens": msg["usage"]["output_tokens"]}})
        yield _sse("message_stop", {"type": "message_stop"})

    async def _stream(self, writer, msg, rid, keep_alive, mode) -> bool:
        keep_alive = keep_alive and mode not in ("close", "drop-mid-stream")
        head = ("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                f"transfer-encoding: chunked\r\nrequest-id: {rid}\r\n"
                f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        writer.write(head.encode())
        await writer.drain()
        gap = 0.3 if mode == "stream-slow" else 0
        for ev in self._stream_events(msg, mode):
            writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            await writer.drain()
            if mode == "drop-mid-stream" and ev.startswith(b"event: content_block_delta"):
                return False  # caller closes the socket: no terminating chunk
            await asyncio.sleep(gap)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return keep_alive

    # ------------------------------------------------------------ batches
    async def _batches_route(self, writer, req, n, keep_alive, mode) -> bool:
        rid, m = f"req_mock_{n}", req.method
        rest = [s for s in req.path[len(BATCH_PREFIX):].split("/") if s]
        if not rest and m == "POST":
            reqs = req.json.get("requests") if isinstance(req.json, dict) else None
            if not isinstance(reqs, list) or not all(isinstance(r, dict) for r in reqs):
                return await self._send_error(writer, 400, n, keep_alive, message="mock: requests must be a list")
            bid = f"msgbatch_mock_{n}"
            batch = {"id": bid, "type": "message_batch", "processing_status": "ended",
                     "request_counts": {"processing": 0, "succeeded": len(reqs), "errored": 0,
                                        "canceled": 0, "expired": 0},
                     "created_at": "2025-01-01T00:00:00Z", "expires_at": "2025-01-02T00:00:00Z",
                     "ended_at": "2025-01-01T00:01:00Z", "cancel_initiated_at": None, "archived_at": None,
                     "results_url": f"https://api.anthropic.com/v1/messages/batches/{bid}/results"}
            with self._lock:
                self._batches[bid] = {"batch": batch, "requests": reqs}
            return await self._send_json(writer, 200, batch, rid, keep_alive, mode)
        if not rest and m == "GET":
            with self._lock:
                data = [b["batch"] for b in reversed(list(self._batches.values()))]
            page = {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None}
            return await self._send_json(writer, 200, page, rid, keep_alive, mode)
        with self._lock:
            entry = self._batches.get(rest[0]) if rest else None
        if entry is None or len(rest) > 2:
            return await self._send_error(writer, 404, n, keep_alive, message="mock: batch not found")
        batch, action = entry["batch"], rest[1] if len(rest) == 2 else None
        if action is None and m == "GET":
            return await self._send_json(writer, 200, batch, rid, keep_alive, mode)
        if action is None and m == "DELETE":
            with self._lock:
                self._batches.pop(batch["id"], None)
            return await self._send_json(writer, 200, {"id": batch["id"], "type": "message_batch_deleted"},
                                         rid, keep_alive, mode)
        if action == "cancel" and m == "POST":
            batch.update(processing_status="canceling", cancel_initiated_at="2025-01-01T00:00:30Z")
            return await self._send_json(writer, 200, batch, rid, keep_alive, mode)
        if action == "results" and m == "GET":
            lines = []
            for r in entry["requests"]:
                params = r.get("params") if isinstance(r.get("params"), dict) else {}
                msg = self._make_message(params, self._next_n(), len(json.dumps(params)))
                lines.append(json.dumps({"custom_id": r.get("custom_id"),
                                         "result": {"type": "succeeded", "message": msg}}))
            body = "".join(line + "\n" for line in lines).encode()
            return await self._send(writer, 200, body, rid, keep_alive and mode != "close",
                                    ctype="application/x-jsonl")
        return await self._send_error(writer, 404, n, keep_alive, message=f"mock: no route {m} {req.path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Mock Anthropic Messages API upstream")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    mock = MockAnthropic(args.host, args.port).start()
    print(f"listening {mock.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        mock.stop()


if __name__ == "__main__":
    main()
