"""Mock Ollama native API upstream for CCO's tests (stdlib only).

Same structure as ``tests/mock_anthropic.py`` (lifecycle and HTTP parsing come from
``tests.mock_openai.MockServerBase``).  Routes in the proxy config use the endpoint ``<url>``.

Endpoints:
  POST /api/chat     streams NDJSON (``application/x-ndjson``) unless the body has ``"stream": false`` —
                     one ``{model, created_at, message: {role, content: piece}, done: false}`` line per piece,
                     then ``{..., message: {role, content: ""}, done: true, done_reason, total_duration,
                     load_duration, prompt_eval_count, prompt_eval_duration, eval_count, eval_duration}``;
                     non-stream: one JSON object with the whole message and the stats
  GET  /api/tags     the models (``MockOllama(models=[...])``)
  POST /api/show     minimal model info (details, model_info with context length, capabilities)
  GET  /api/version
  anything else      404 ``404 page not found`` (text/plain, like Ollama's router)

Answer text: "Hello from mock ollama: " + the first 40 chars of the last user text.  When the request has
``tools`` and that text contains "use the tool" (or mode ``tool``) the answer is
``message.tool_calls: [{"function": {"name": <first tool>, "arguments": TOOL_ARGS}}]`` — arguments an
OBJECT, no id — with empty content; streamed, the tool calls arrive whole in one message line just before the
done line, and done_reason stays "stop".  ``options.num_predict`` below 7 cuts the text and gives
done_reason "length".  prompt_eval_count = len(body) // 4, eval_count = 7.

``x-mock-mode`` (absent = normal):
  tool                tool answer when the request has ``tools``
  interleaved-tools   two tool calls in the tool_calls line (second uses TOOL_ARGS_2)
  error-<status>      that status with ``{"error": "mock <status>"}``
  fail-first-<k>      the first k requests of this mode string get 503, then normal
  slow                waits ``x-mock-delay-ms`` (default 2000) before the head
  stream-slow         lines 300 ms apart
  drop-mid-stream     200 head + 2 lines then close without the done line (non-stream: short body, close)
  drop-before-head    closes the connection without answering
  error-line          200 head, two lines, then ``{"error": "model crashed"}`` and the end of the body
  close               normal answer with ``connection: close``, then close

Other headers: ``x-mock-delay-ms`` (any mode), ``x-mock-usage: {json}`` (merged into the final stats, e.g.
``{"prompt_eval_count": 10, "eval_count": 3}``).

Run standalone:  python tests/mock_ollama.py --port 9103   (prints "listening <port>")
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import threading

try:
    from tests.mock_anthropic import _last_user_text, _split3
    from tests.mock_openai import TOOL_ARGS, TOOL_ARGS_2, MockServerBase, plan_tool_calls
except ImportError:  # run as a script from tests/
    from mock_anthropic import _last_user_text, _split3
    from mock_openai import TOOL_ARGS, TOOL_ARGS_2, MockServerBase, plan_tool_calls

__all__ = ["TOOL_ARGS", "TOOL_ARGS_2", "MockOllama"]

DEFAULT_MODELS = ["llama3.2:latest", "qwen2.5-coder:7b"]
CONTEXT_LENGTH = 32768


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _details(name: str) -> dict:
    family = name.split(":")[0].rstrip("0123456789.") or "llama"
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family],
            "parameter_size": "7.6B", "quantization_level": "Q4_K_M"}


class MockOllama(MockServerBase):
    thread_name = "mock-ollama"
    request_id_header = None  # Ollama sends no request id
    drop_after = 2

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ssl_context=None,
                 models: list[str] | None = None):
        super().__init__(host, port, ssl_context)
        self.models = list(models or DEFAULT_MODELS)

    def _error_obj(self, status: int, message: str) -> dict:
        return {"error": message}

    async def _route(self, writer, req, n, keep_alive, mode) -> bool:
        m, p = req.method, req.path
        params = req.json if isinstance(req.json, dict) else None
        if p == "/api/chat" and m == "POST":
            if params is None or not isinstance(params.get("messages", []), list):
                return await self._send_error(writer, 400, n, keep_alive, message="invalid request body")
            if not params.get("model"):
                return await self._send_error(writer, 400, n, keep_alive, message="model is required")
            final, lines = self._answer(req, params, n, mode)
            if params.get("stream", True) is False:
                msg = {"role": "assistant", "content": "".join(x["message"]["content"] for x in lines)}
                calls = [x["message"]["tool_calls"] for x in lines if "tool_calls" in x["message"]]
                if calls:
                    msg["tool_calls"] = calls[0]
                return await self._send_json(writer, 200, dict(final, message=msg), None, keep_alive, mode,
                                             ctype="application/json; charset=utf-8")
            return await self._stream(writer, self._lines(final, lines, mode), None, keep_alive, mode,
                                      "application/x-ndjson", drop_after=max(1, min(2, len(lines))))
        if p == "/api/tags" and m == "GET":
            models = [{"name": x, "model": x, "modified_at": "2025-01-01T00:00:00.000000Z", "size": 4683087332,
                       "digest": hashlib.sha256(x.encode()).hexdigest(), "details": _details(x)} for x in self.models]
            return await self._send_json(writer, 200, {"models": models}, None, keep_alive, mode)
        if p == "/api/show" and m == "POST":
            name = (params or {}).get("model") or (params or {}).get("name") or ""
            if not name:
                return await self._send_error(writer, 400, n, keep_alive, message="model is required")
            family = _details(name)["family"]
            info = {"license": "", "modelfile": f"# Modelfile generated by mock\nFROM {name}\n",
                    "parameters": f"num_ctx {CONTEXT_LENGTH}", "template": "{{ .Prompt }}",
                    "details": _details(name), "modified_at": "2025-01-01T00:00:00.000000Z",
                    "model_info": {"general.architecture": family, f"{family}.context_length": CONTEXT_LENGTH},
                    "capabilities": ["completion", "tools"]}
            return await self._send_json(writer, 200, info, None, keep_alive, mode)
        if p == "/api/version" and m == "GET":
            return await self._send_json(writer, 200, {"version": "0.14.0"}, None, keep_alive, mode)
        return await self._send(writer, 404, b"404 page not found", None, keep_alive, ctype="text/plain")

    # ------------------------------------------------------------ chat
    def _answer(self, req, params: dict, n: int, mode: str):
        """(final stats object, [piece lines]) for /api/chat."""
        text = _last_user_text(params)
        calls = plan_tool_calls(params, text, mode, n)
        answer, reason, eval_count = "Hello from mock ollama: " + text[:40], "stop", 7
        options = params.get("options") if isinstance(params.get("options"), dict) else {}
        limit = options.get("num_predict")
        if calls:
            answer = ""
        elif isinstance(limit, int) and 0 < limit < 7:
            answer, reason, eval_count = answer[: limit * 4], "length", limit
        model, created = params.get("model"), _now()
        lines = [{"model": model, "created_at": created, "message": {"role": "assistant", "content": piece},
                  "done": False} for piece in (_split3(answer) if answer else [])]
        if calls:
            lines.append({"model": model, "created_at": created, "done": False, "message": {
                "role": "assistant", "content": "",
                "tool_calls": [{"function": {"name": name, "arguments": args}} for _, name, args in calls]}})
        final = {"model": model, "created_at": created, "message": {"role": "assistant", "content": ""},
                 "done": True, "done_reason": reason, "total_duration": 123456789, "load_duration": 1234567,
                 "prompt_eval_count": len(req.body) // 4, "prompt_eval_duration": 2345678,
                 "eval_count": eval_count, "eval_duration": 3456789}
        if req.headers.get("x-mock-usage"):
            final.update(json.loads(req.headers["x-mock-usage"]))
        return final, lines

    def _lines(self, final: dict, lines: list, mode: str):
        for i, line in enumerate(lines):
            if mode == "error-line" and i == 2:
                break
            yield json.dumps(line).encode() + b"\n"
        if mode == "error-line":
            yield b'{"error":"model crashed"}\n'
            return
        yield json.dumps(final).encode() + b"\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Mock Ollama native API upstream")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    mock = MockOllama(args.host, args.port).start()
    print(f"listening {mock.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        mock.stop()


if __name__ == "__main__":
    main()
