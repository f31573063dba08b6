"""Mock OpenAI Chat Completions upstream (also vLLM / TGI flavours) for CCO's tests (stdlib only).

Same structure as ``tests/mock_anthropic.py``: HTTP/1.1 with keep-alive on 127.0.0.1 from its own asyncio
loop in a daemon thread; request bodies may use Content-Length or chunked encoding.  ``MockServerBase``
(lifecycle, HTTP parsing, common modes) is shared with ``tests/mock_ollama.py``.

Endpoints (routes in the proxy config use the endpoint ``<url>/v1``):
  POST /v1/chat/completions   chat.completion JSON, or ``text/event-stream`` chunks ending in ``data: [DONE]``
  GET  /v1/models, GET /v1/models/<id>
  POST /tokenize              vLLM tokenizer endpoint, only with ``MockOpenAI(tokenize=True)`` (else 404)

Answer text: "Hello from mock openai: " + the first 40 chars of the last user text.  When the request has
``tools`` and that text contains "use the tool" (or a tool mode is set) the answer is one ``tool_calls`` entry
calling the first tool (id ``call_mock_<n>``, arguments ``json.dumps(TOOL_ARGS)``), finish_reason
``tool_calls``; streamed, it arrives as a start chunk (id/type/name, ``arguments: ""``) then argument pieces.
``max_tokens`` / ``max_completion_tokens`` below 7 cut the text and give finish_reason ``length``.
usage: prompt_tokens = len(body) // 4, completion_tokens = 7, ``prompt_tokens_details.cached_tokens`` from
the header ``x-mock-cached-tokens`` (default 0).  Streams carry usage (one last chunk with ``choices: []``)
only when the request has ``stream_options.include_usage``.

``x-mock-mode`` (absent = normal):
  tool                tool answer when the request has ``tools``
  interleaved-tools   two tool calls (first tool with TOOL_ARGS, second-or-first tool with TOOL_ARGS_2) whose
                      stream argument pieces interleave by index
  object-arguments    tool answer with ``arguments`` as a JSON object (old TGI); streamed as one chunk
  no-usage            never send usage (not even with include_usage, nor in the JSON answer)
  error-<status>      that status, body ``{"error": {"message", "type", "param": null, "code": null}}``;
                      ``x-mock-retry-after`` is echoed as ``retry-after``
  fail-first-<k>      the first k requests of this mode string get 503, then normal
  slow                waits ``x-mock-delay-ms`` (default 2000) before the head
  stream-slow         stream chunks 300 ms apart
  drop-mid-stream     200 head + 3 chunks then close (no [DONE], no last chunk); non-stream: short body, close
  drop-before-head    closes the connection without answering
  close               normal answer with ``connection: close``, then close

Other headers: ``x-mock-delay-ms`` (any mode), ``x-mock-cached-tokens``, ``x-mock-usage: {json}`` (replaces the
usage object).  ``Authorization: Bearer`` is recorded, and only checked with ``MockOpenAI(require_key=...)``
(then a wrong or missing key on /v1/* is a 401 ``invalid_api_key``).

Run standalone:  python tests/mock_openai.py --port 9102 [--tokenize]   (prints "listening <port>")
"""
from __future__ import annotations

import abc
import argparse
import asyncio
import json
import sys
import threading
import time
import traceback

try:
    from tests.mock_anthropic import MockAnthropic, RecordedRequest, _BadRequest, _last_user_text, _reason, _split3
except ImportError:  # run as a script from tests/
    from mock_anthropic import MockAnthropic, RecordedRequest, _BadRequest, _last_user_text, _reason, _split3

__all__ = ["TOOL_ARGS", "TOOL_ARGS_2", "MockOpenAI", "MockServerBase", "RecordedRequest"]

TOOL_ARGS = {"city": "Paris", "unit": "celsius"}
TOOL_ARGS_2 = {"city": "Tokyo", "unit": "fahrenheit"}
DEFAULT_MODELS = ["gpt-4o-mini", "mock-model"]
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
               404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
               422: "invalid_request_error", 429: "rate_limit_exceeded"}


def tool_name(tool) -> str:
    """Name of an OpenAI/Ollama-style tool ``{"type": "function", "function": {"name"}}``."""
    if not isinstance(tool, dict):
        return "tool"
    fn = tool.get("function")
    name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
    return name if isinstance(name, str) and name else "tool"


def plan_tool_calls(params: dict, text: str, mode: str, n: int) -> list:
    """[(id, name, args)] for a tool answer, or [] for a text answer."""
    tools = params.get("tools")
    if not (isinstance(tools, list) and tools):
        return []
    messages = params.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
        return []  # a tool result came back: answer it in text, as a model would
    if mode not in ("tool", "interleaved-tools", "object-arguments") and "use the tool" not in text.lower():
        return []
    calls = [(f"call_mock_{n}", tool_name(tools[0]), dict(TOOL_ARGS))]
    if mode == "interleaved-tools":
        calls.append((f"call_mock_{n}_2", tool_name(tools[1] if len(tools) > 1 else tools[0]), dict(TOOL_ARGS_2)))
    return calls


def split_n(s: str, k: int = 4) -> list:
    step = max(1, -(-len(s) // k))
    return [s[i:i + step] for i in range(0, len(s), step)] or [s]


class MockServerBase(abc.ABC):
    """Lifecycle, HTTP/1.1 parsing and the common modes; subclasses implement ``_route`` and ``_error_obj``."""

    thread_name = "mock-server"
    request_id_header = "x-request-id"
    fail_status = 503
    drop_after = 3  # stream events sent before drop-mid-stream closes

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ssl_context=None):
        self.host, self.port = host, port
        self.ssl_context = ssl_context  # serve HTTPS with this server-side context
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._n = 0
        self._mode_counts: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._tasks: set = set()

    # ------------------------------------------------------------ lifecycle
    def start(self):
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

        self._thread = threading.Thread(target=run, name=self.thread_name, daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._mode_counts.clear()

    def count(self, path_prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path.startswith(path_prefix))

    def _next_n(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    # ------------------------------------------------------------ HTTP parsing (the Anthropic mock's)
    _read_request = MockAnthropic._read_request
    _read_chunked = MockAnthropic._read_chunked
    stop = MockAnthropic.stop
    _shutdown = MockAnthropic._shutdown

    async def _handle_conn(self, reader, writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            while True:
                try:
                    got = await self._read_request(reader, writer)
                except _BadRequest as e:
                    body = json.dumps(self._error_obj(400, f"mock: {e}")).encode()
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
    @abc.abstractmethod
    def _error_obj(self, status: int, message: str):
        """The server's error body for `status` (each API has its own shape)."""

    @abc.abstractmethod
    async def _route(self, writer, req: RecordedRequest, n: int, keep_alive: bool, mode: str) -> bool:
        """Answers one request; False closes the connection."""

    def _id_headers(self, req_id) -> list:
        return [(self.request_id_header, req_id)] if self.request_id_header else []

    async def _send(self, writer, status, body: bytes, req_id, keep_alive=True,
                    ctype="application/json", extra=(), declared_len=None) -> bool:
        headers = [("content-type", ctype),
                   ("content-length", str(len(body) if declared_len is None else declared_len)),
                   *self._id_headers(req_id), *extra,
                   ("connection", "keep-alive" if keep_alive else "close")]
        head = f"HTTP/1.1 {status} {_reason(status)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        writer.write(head.encode("latin-1") + b"\r\n" + body)
        await writer.drain()
        return keep_alive

    async def _send_json(self, writer, status, obj, req_id, keep_alive, mode, extra=(),
                         ctype="application/json") -> bool:
        body = json.dumps(obj).encode()
        if mode == "drop-mid-stream":  # declared length never arrives
            await self._send(writer, status, body[: len(body) // 2], req_id, False, ctype,
                             declared_len=len(body) + 100)
            return False
        return await self._send(writer, status, body, req_id, keep_alive and mode != "close", ctype, extra)

    async def _send_error(self, writer, status, n, keep_alive, extra=(), message=None) -> bool:
        obj = self._error_obj(status, message or f"mock {status}")
        return await self._send(writer, status, json.dumps(obj).encode(), f"req_mock_{n}", keep_alive, extra=extra)

    async def _stream(self, writer, events, req_id, keep_alive, mode, ctype, drop_after=None) -> bool:
        """Send ``events`` (bytes) as a chunked body; drop-mid-stream closes after ``drop_after`` of them."""
        drop_after = drop_after or self.drop_after
        keep_alive = keep_alive and mode not in ("close", "drop-mid-stream", "error-line")
        head = (f"HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncache-control: no-cache\r\n"
                "transfer-encoding: chunked\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in self._id_headers(req_id))
                + f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        writer.write(head.encode())
        await writer.drain()
        gap = 0.3 if mode == "stream-slow" else 0
        for i, ev in enumerate(events, 1):
            writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            await writer.drain()
            if mode == "drop-mid-stream" and i >= drop_after:
                return False  # caller closes the socket: no terminating chunk
            if gap:
                await asyncio.sleep(gap)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return keep_alive

    async def _dispatch(self, writer, req: RecordedRequest, keep_alive: bool) -> bool:
        n = self._next_n()
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
            status = self.fail_status if seen <= int(mode[11:]) else None
        if status is not None and 100 <= status <= 999:
            ra = req.headers.get("x-mock-retry-after")
            return await self._send_error(writer, status, n, keep_alive,
                                          extra=[("retry-after", ra)] if ra else ())
        return await self._route(writer, req, n, keep_alive, mode)


class MockOpenAI(MockServerBase):
    thread_name = "mock-openai"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ssl_context=None, tokenize: bool = False,
                 require_key: str | None = None, models: list[str] | None = None):
        super().__init__(host, port, ssl_context)
        self.tokenize = tokenize
        self.require_key = require_key
        self.models = list(models or DEFAULT_MODELS)

    def _error_obj(self, status: int, message: str, code=None) -> dict:
        etype = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": etype, "param": None, "code": code}}

    def _model_obj(self, mid: str) -> dict:
        return {"id": mid, "object": "model", "created": 1700000000, "owned_by": "mock"}

    async def _route(self, writer, req, n, keep_alive, mode) -> bool:
        rid, m, p = f"req_mock_{n}", req.method, req.path
        params = req.json if isinstance(req.json, dict) else None
        auth_ok = req.headers.get("authorization", "") == f"Bearer {self.require_key}"
        if self.require_key is not None and p.startswith("/v1/") and not auth_ok:
            obj = self._error_obj(401, "Incorrect API key provided (mock).", code="invalid_api_key")
            return await self._send(writer, 401, json.dumps(obj).encode(), rid, keep_alive)
        if p == "/v1/chat/completions" and m == "POST":
            if params is None or not isinstance(params.get("messages"), list):
                return await self._send_error(writer, 400, n, keep_alive,
                                              message="mock: body must be JSON with a messages list")
            ans = self._answer(req, params, n, mode)
            if params.get("stream"):
                events = self._chunks(ans, params, mode)
                return await self._stream(writer, events, rid, keep_alive, mode, "text/event-stream")
            return await self._send_json(writer, 200, self._completion(ans, mode), rid, keep_alive, mode)
        if p == "/v1/models" and m == "GET":
            page = {"object": "list", "data": [self._model_obj(x) for x in self.models]}
            return await self._send_json(writer, 200, page, rid, keep_alive, mode)
        if p.startswith("/v1/models/") and m == "GET":
            mid = p[len("/v1/models/"):]
            if mid not in self.models:
                obj = self._error_obj(404, f"The model '{mid}' does not exist", code="model_not_found")
                return await self._send(writer, 404, json.dumps(obj).encode(), rid, keep_alive)
            return await self._send_json(writer, 200, self._model_obj(mid), rid, keep_alive, mode)
        if p == "/tokenize" and m == "POST" and self.tokenize:
            return await self._send_json(writer, 200, self._tokenize(params or {}), rid, keep_alive, mode)
        if not p.startswith("/v1/"):  # vLLM / FastAPI shape for unknown paths
            return await self._send(writer, 404, b'{"detail":"Not Found"}', rid, keep_alive)
        return await self._send_error(writer, 404, n, keep_alive, message=f"mock: no route {m} {p}")

    # ------------------------------------------------------------ chat completions
    def _answer(self, req, params: dict, n: int, mode: str) -> dict:
        text = _last_user_text(params)
        calls = plan_tool_calls(params, text, mode, n)
        answer, finish, out_tokens = "Hello from mock openai: " + text[:40], "stop", 7
        limit = params.get("max_completion_tokens") or params.get("max_tokens")
        if calls:
            answer, finish = None, "tool_calls"
        elif isinstance(limit, int) and 0 < limit < 7:
            answer, finish, out_tokens = answer[: limit * 4], "length", limit
        try:
            cached = int(req.headers.get("x-mock-cached-tokens", "0") or 0)
        except ValueError:
            cached = 0
        prompt = len(req.body) // 4
        usage = {"prompt_tokens": prompt, "completion_tokens": out_tokens, "total_tokens": prompt + out_tokens,
                 "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
        if req.headers.get("x-mock-usage"):
            usage = json.loads(req.headers["x-mock-usage"])  # exact token counts for cost tests
        return {"id": f"chatcmpl-mock-{n}", "created": int(time.time()), "model": params.get("model", "mock-model"),
                "text": answer, "calls": calls, "finish": finish, "usage": usage,
                "object_args": mode == "object-arguments"}

    def _completion(self, ans: dict, mode: str) -> dict:
        message = {"role": "assistant", "content": ans["text"], "refusal": None}
        if ans["calls"]:
            message["tool_calls"] = [
                {"id": cid, "type": "function",
                 "function": {"name": name, "arguments": args if ans["object_args"] else json.dumps(args)}}
                for cid, name, args in ans["calls"]]
        out = {"id": ans["id"], "object": "chat.completion", "created": ans["created"], "model": ans["model"],
               "choices": [{"index": 0, "message": message, "finish_reason": ans["finish"], "logprobs": None}],
               "system_fingerprint": "fp_mock", "service_tier": "default"}
        if mode != "no-usage":
            out["usage"] = ans["usage"]
        return out

    def _chunks(self, ans: dict, params: dict, mode: str):
        opts = params.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage")) and mode != "no-usage"
        base = {"id": ans["id"], "object": "chat.completion.chunk", "created": ans["created"],
                "model": ans["model"], "system_fingerprint": "fp_mock"}

        def chunk(delta: dict, finish=None) -> bytes:
            obj = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
            if include_usage:
                obj["usage"] = None
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        calls = ans["calls"]
        yield chunk({"role": "assistant", "content": None if calls else ""})
        for piece in _split3(ans["text"] or ""):
            if piece:
                yield chunk({"content": piece})

        def start(i, cid, name, args):
            return chunk({"tool_calls": [{"index": i, "id": cid, "type": "function", "function": {
                "name": name, "arguments": args if ans["object_args"] else ""}}]})

        def piece(i, text):
            return chunk({"tool_calls": [{"index": i, "function": {"arguments": text}}]})

        if ans["object_args"]:  # old TGI: the whole object in one chunk
            for i, (cid, name, args) in enumerate(calls):
                yield start(i, cid, name, args)
        elif mode == "interleaved-tools" and len(calls) == 2:
            pieces = [split_n(json.dumps(args)) for _, _, args in calls]
            yield start(0, *calls[0])
            yield piece(0, pieces[0][0])
            yield start(1, *calls[1])
            for k in range(max(map(len, pieces))):
                for i in (0, 1):
                    if (i, k) != (0, 0) and k < len(pieces[i]):
                        yield piece(i, pieces[i][k])
        else:
            for i, (cid, name, args) in enumerate(calls):
                yield start(i, cid, name, args)
                for text in split_n(json.dumps(args)):
                    yield piece(i, text)
        yield chunk({}, ans["finish"])
        if include_usage:
            yield b"data: " + json.dumps(dict(base, choices=[], usage=ans["usage"])).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    # ------------------------------------------------------------ vLLM /tokenize
    def _tokenize(self, params: dict) -> dict:
        """One token per started 4 characters of the prompt (or of "role: text" lines of the messages)."""
        if isinstance(params.get("prompt"), str):
            text = params["prompt"]
        else:
            lines = []
            for msg in params.get("messages") or []:
                if isinstance(msg, dict):
                    lines.append(f"{msg.get('role', '')}: {_last_user_text({'messages': [dict(msg, role='user')]})}")
            text = "\n".join(lines)
        tokens = [sum(text[i:i + 4].encode()) % 32000 for i in range(0, len(text), 4)]
        return {"count": len(tokens), "max_model_len": 32768, "tokens": tokens, "token_strs": None}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Mock OpenAI Chat Completions upstream")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tokenize", action="store_true", help="serve vLLM's POST /tokenize")
    ap.add_argument("--require-key", default=None)
    args = ap.parse_args(argv)
    mock = MockOpenAI(args.host, args.port, tokenize=args.tokenize, require_key=args.require_key).start()
    print(f"listening {mock.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        mock.stop()


if __name__ == "__main__":
    main()
