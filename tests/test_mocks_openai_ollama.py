"""Self-tests of the mock OpenAI and Ollama upstreams (and, when installed, the openai SDK against MockOpenAI)."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from tests.mock_ollama import MockOllama
from tests.mock_openai import TOOL_ARGS, TOOL_ARGS_2, MockOpenAI

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}, "unit": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def oai():
    mock = MockOpenAI(tokenize=True).start()
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def oll():
    mock = MockOllama().start()
    yield mock
    mock.stop()


@pytest.fixture(autouse=True)
def _reset(request):
    for name in ("oai", "oll"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


def call(mock, method, path, body=None, headers=None, timeout=10.0):
    """(status, lower-case headers, body bytes) over a fresh http.client connection."""
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        hdrs = {"content-type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def chat(text, **extra):
    return {"model": "gpt-test", "messages": [{"role": "system", "content": "be brief"},
                                              {"role": "user", "content": text}], **extra}


def sse(body: bytes) -> list:
    """data payloads of an SSE body, parsed ([DONE] kept as the string)."""
    out = []
    for event in body.decode().split("\n\n"):
        if event.strip():
            assert event.startswith("data: ") and "\nevent:" not in event, event
            payload = event[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def assemble_tool_calls(chunks) -> dict:
    calls: dict = {}
    for c in chunks:
        for choice in c["choices"]:
            for tc in choice["delta"].get("tool_calls") or []:
                slot = calls.setdefault(tc["index"], {"id": None, "name": None, "arguments": ""})
                slot["id"] = tc.get("id") or slot["id"]
                fn = tc.get("function") or {}
                slot["name"] = fn.get("name") or slot["name"]
                slot["arguments"] += fn.get("arguments") or ""
    return calls


# ---------------------------------------------------------------- MockOpenAI
def test_openai_non_stream_text_usage_and_recording(oai):
    body = json.dumps(chat("What is the capital of France? Please answer in one word only.")).encode()
    status, headers, raw = call(oai, "POST", "/v1/chat/completions", body,
                                {"authorization": "Bearer sk-abc", "x-mock-cached-tokens": "12"})
    assert status == 200 and headers["content-type"] == "application/json" and headers["x-request-id"]
    out = json.loads(raw)
    assert out["object"] == "chat.completion" and out["model"] == "gpt-test" and out["id"].startswith("chatcmpl-")
    [choice] = out["choices"]
    assert choice["message"] == {"role": "assistant", "refusal": None,
                                 "content": "Hello from mock openai: What is the capital of France? Please an"}
    assert choice["finish_reason"] == "stop"
    usage = out["usage"]
    assert usage["prompt_tokens"] == len(body) // 4 and usage["completion_tokens"] == 7
    assert usage["total_tokens"] == len(body) // 4 + 7 and usage["prompt_tokens_details"]["cached_tokens"] == 12
    [req] = oai.requests
    assert (req.method, req.path, req.body) == ("POST", "/v1/chat/completions", body)
    assert req.headers["authorization"] == "Bearer sk-abc" and req.json["model"] == "gpt-test"


def test_openai_stream_without_include_usage(oai):
    status, headers, raw = call(oai, "POST", "/v1/chat/completions", chat("hi there", stream=True))
    assert status == 200 and headers["content-type"] == "text/event-stream"
    events = sse(raw)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Hello from mock openai: hi there" and len(chunks) >= 4
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_openai_stream_with_include_usage(oai):
    body = chat("count me", stream=True, stream_options={"include_usage": True})
    status, _, raw = call(oai, "POST", "/v1/chat/completions", body, {"x-mock-cached-tokens": "3"})
    events = sse(raw)
    assert status == 200 and events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 7
    assert usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"] == 3
    assert usage_chunk["usage"]["prompt_tokens"] == len(oai.requests[0].body) // 4
    assert all(c["usage"] is None for c in events[:-2])
    assert events[-3]["choices"][0]["finish_reason"] == "stop"


def test_openai_no_usage_mode(oai):
    body = chat("x", stream=True, stream_options={"include_usage": True})
    events = sse(call(oai, "POST", "/v1/chat/completions", body, {"x-mock-mode": "no-usage"})[2])
    assert events[-1] == "[DONE]" and all(c["choices"] and not c.get("usage") for c in events[:-1])
    out = json.loads(call(oai, "POST", "/v1/chat/completions", chat("x"), {"x-mock-mode": "no-usage"})[2])
    assert "usage" not in out


def test_openai_tool_call_non_stream(oai):
    status, _, raw = call(oai, "POST", "/v1/chat/completions", chat("please use the tool", tools=TOOLS))
    out = json.loads(raw)
    [choice] = out["choices"]
    assert status == 200 and choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [tc] = choice["message"]["tool_calls"]
    assert tc["id"].startswith("call_mock_") and tc["type"] == "function"
    assert tc["function"]["name"] == "get_weather" and isinstance(tc["function"]["arguments"], str)
    assert json.loads(tc["function"]["arguments"]) == TOOL_ARGS == {"city": "Paris", "unit": "celsius"}
    # without tools there is no tool call, even in tool mode
    out = json.loads(call(oai, "POST", "/v1/chat/completions", chat("use the tool"), {"x-mock-mode": "tool"})[2])
    assert out["choices"][0]["finish_reason"] == "stop"


def test_openai_tool_call_stream_in_pieces(oai):
    body = chat("hello", tools=TOOLS, stream=True)
    events = sse(call(oai, "POST", "/v1/chat/completions", body, {"x-mock-mode": "tool"})[2])
    chunks = events[:-1]
    tool_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]
    first = tool_chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["id"].startswith("call_mock_") and first["type"] == "function"
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert len(tool_chunks) >= 3
    [call0] = assemble_tool_calls(chunks).values()
    assert json.loads(call0["arguments"]) == TOOL_ARGS and call0["id"] == first["id"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_interleaved_tools(oai):
    body = chat("go", tools=TOOLS, stream=True)
    events = sse(call(oai, "POST", "/v1/chat/completions", body, {"x-mock-mode": "interleaved-tools"})[2])
    order = [tc["index"] for c in events[:-1] for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert order[:4] == [0, 0, 1, 1] and order[4:6] == [0, 1]
    calls = assemble_tool_calls(events[:-1])
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == TOOL_ARGS
    assert calls[1]["name"] == "get_time" and json.loads(calls[1]["arguments"]) == TOOL_ARGS_2
    assert calls[0]["id"] != calls[1]["id"]
    out = json.loads(call(oai, "POST", "/v1/chat/completions", chat("go", tools=TOOLS),
                          {"x-mock-mode": "interleaved-tools"})[2])
    assert len(out["choices"][0]["message"]["tool_calls"]) == 2


def test_openai_object_arguments(oai):
    hdr = {"x-mock-mode": "object-arguments"}
    out = json.loads(call(oai, "POST", "/v1/chat/completions", chat("use the tool", tools=TOOLS), hdr)[2])
    assert out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == TOOL_ARGS
    events = sse(call(oai, "POST", "/v1/chat/completions", chat("x", tools=TOOLS, stream=True), hdr)[2])
    tcs = [tc for c in events[:-1] for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert len(tcs) == 1 and tcs[0]["function"]["arguments"] == TOOL_ARGS


def test_openai_max_tokens_gives_length(oai):
    out = json.loads(call(oai, "POST", "/v1/chat/completions", chat("abc", max_tokens=2))[2])
    assert out["choices"][0]["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_openai_error_modes(oai, status):
    code, headers, raw = call(oai, "POST", "/v1/chat/completions", chat("x"),
                              {"x-mock-mode": f"error-{status}", "x-mock-retry-after": "1"})
    err = json.loads(raw)["error"]
    assert code == status and headers["retry-after"] == "1"
    assert set(err) == {"message", "type", "param", "code"} and err["param"] is None and err["code"] is None
    assert err["type"] == ("server_error" if status >= 500 else err["type"]) and err["message"]


def test_openai_fail_first(oai):
    statuses = [call(oai, "POST", "/v1/chat/completions", chat("x"), {"x-mock-mode": "fail-first-2"})[0]
                for _ in range(3)]
    assert statuses == [503, 503, 200]


def test_openai_slow_and_drops(oai):
    t0 = time.monotonic()
    assert call(oai, "GET", "/v1/models", headers={"x-mock-mode": "slow", "x-mock-delay-ms": "300"})[0] == 200
    assert time.monotonic() - t0 >= 0.3
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        call(oai, "POST", "/v1/chat/completions", chat("x"), {"x-mock-mode": "drop-before-head"})
    with pytest.raises(http.client.IncompleteRead) as info:
        call(oai, "POST", "/v1/chat/completions", chat("x", stream=True), {"x-mock-mode": "drop-mid-stream"})
    partial = info.value.partial
    assert partial.startswith(b"data: ") and b"[DONE]" not in partial and b"finish_reason\": \"stop" not in partial
    with pytest.raises(http.client.IncompleteRead):
        call(oai, "POST", "/v1/chat/completions", chat("x"), {"x-mock-mode": "drop-mid-stream"})


def test_openai_models_tokenize_and_404(oai):
    status, _, raw = call(oai, "GET", "/v1/models")
    page = json.loads(raw)
    assert status == 200 and page["object"] == "list" and page["data"][0]["object"] == "model"
    assert {"id", "created", "owned_by"} <= set(page["data"][0])
    assert call(oai, "GET", "/v1/models/gpt-4o-mini")[0] == 200
    assert json.loads(call(oai, "GET", "/v1/models/nope")[2])["error"]["code"] == "model_not_found"
    tok = json.loads(call(oai, "POST", "/tokenize", {"model": "m", "prompt": "12345678X"})[2])
    assert tok["count"] == 3 == len(tok["tokens"]) and tok["max_model_len"] == 32768
    msgs = [{"role": "user", "content": "hi"}]
    tok2 = json.loads(call(oai, "POST", "/tokenize", {"model": "m", "messages": msgs})[2])
    assert tok2["count"] == 2  # "user: hi"
    assert call(oai, "POST", "/v1/nothing", {})[0] == 404
    plain = MockOpenAI().start()
    try:
        assert call(plain, "POST", "/tokenize", {"model": "m", "prompt": "x"})[0] == 404
    finally:
        plain.stop()


def test_openai_require_key():
    mock = MockOpenAI(require_key="sk-good").start()
    try:
        status, _, raw = call(mock, "POST", "/v1/chat/completions", chat("x"), {"authorization": "Bearer sk-bad"})
        err = json.loads(raw)["error"]
        assert status == 401 and err["code"] == "invalid_api_key" and err["param"] is None
        assert call(mock, "GET", "/v1/models")[0] == 401
        ok = call(mock, "POST", "/v1/chat/completions", chat("x"), {"authorization": "Bearer sk-good"})
        assert ok[0] == 200
    finally:
        mock.stop()


def test_openai_keep_alive_and_chunked_request_body(oai):
    payload = json.dumps(chat("chunked body")).encode()
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, payload[:10], len(payload) - 10, payload[10:])
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n")
    with socket.create_connection(("127.0.0.1", oai.port), timeout=5) as sock:
        for _ in range(2):  # two requests on one connection
            sock.sendall(head + chunked)
            resp = http.client.HTTPResponse(sock)
            resp.begin()
            assert resp.status == 200 and not resp.will_close
            assert json.loads(resp.read())["choices"][0]["message"]["content"].endswith("chunked body")
    assert [r.body for r in oai.requests] == [payload, payload]


# ---------------------------------------------------------------- openai SDK against MockOpenAI
def test_openai_sdk_talks_to_the_mock(oai):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=oai.url + "/v1", api_key="sk-sdk", max_retries=0)
    try:
        out = client.chat.completions.create(model="gpt-sdk", messages=[{"role": "user", "content": "sdk hello"}])
        assert out.choices[0].message.content == "Hello from mock openai: sdk hello"
        assert out.model == "gpt-sdk" and out.usage.completion_tokens == 7
        assert oai.requests[-1].headers["authorization"] == "Bearer sk-sdk"

        stream = client.chat.completions.create(model="gpt-sdk", messages=[{"role": "user", "content": "streamed"}],
                                                stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
            "Hello from mock openai: streamed"
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7

        out = client.chat.completions.create(model="gpt-sdk", messages=[{"role": "user", "content": "use the tool"}],
                                             tools=TOOLS)
        tc = out.choices[0].message.tool_calls[0]
        assert out.choices[0].finish_reason == "tool_calls" and tc.function.name == "get_weather"
        assert json.loads(tc.function.arguments) == TOOL_ARGS

        with client.chat.completions.stream(model="gpt-sdk", messages=[{"role": "user", "content": "use the tool"}],
                                            tools=TOOLS) as s:
            final = s.get_final_completion()
        assert json.loads(final.choices[0].message.tool_calls[0].function.arguments) == TOOL_ARGS

        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-sdk", messages=[{"role": "user", "content": "x"}],
                                           extra_headers={"x-mock-mode": "error-429"})
    finally:
        client.close()


# ---------------------------------------------------------------- MockOllama
def ochat(text, **extra):
    return {"model": "llama3.2", "messages": [{"role": "user", "content": text}], **extra}


def ndjson(body: bytes) -> list:
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def test_ollama_non_stream(oll):
    body = json.dumps(ochat("why is the sky blue?", stream=False)).encode()
    status, headers, raw = call(oll, "POST", "/api/chat", body)
    out = json.loads(raw)
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert out["model"] == "llama3.2" and out["done"] is True and out["done_reason"] == "stop"
    assert out["message"] == {"role": "assistant", "content": "Hello from mock ollama: why is the sky blue?"}
    assert out["prompt_eval_count"] == len(body) // 4 and out["eval_count"] == 7 and out["total_duration"] > 0
    assert out["created_at"].endswith("Z")


def test_ollama_stream_is_the_default(oll):
    status, headers, raw = call(oll, "POST", "/api/chat", ochat("stream me"))
    lines = ndjson(raw)
    assert status == 200 and headers["content-type"] == "application/x-ndjson"
    assert all(x["done"] is False for x in lines[:-1]) and len(lines) >= 3
    assert "".join(x["message"]["content"] for x in lines) == "Hello from mock ollama: stream me"
    last = lines[-1]
    assert last["done"] is True and last["done_reason"] == "stop" and last["eval_count"] == 7
    assert call(oll, "POST", "/api/chat", ochat("x", stream=True))[1]["content-type"] == "application/x-ndjson"


def test_ollama_tool_calls(oll):
    lines = ndjson(call(oll, "POST", "/api/chat", ochat("please use the tool", tools=TOOLS))[2])
    with_calls = [x for x in lines if x["message"].get("tool_calls")]
    assert len(with_calls) == 1 and with_calls[0] is lines[-2]
    [tc] = with_calls[0]["message"]["tool_calls"]
    assert tc == {"function": {"name": "get_weather", "arguments": TOOL_ARGS}}
    assert lines[-1]["done_reason"] == "stop"
    out = json.loads(call(oll, "POST", "/api/chat", ochat("hi", tools=TOOLS, stream=False), {"x-mock-mode": "tool"})[2])
    assert out["message"]["tool_calls"][0]["function"]["arguments"] == TOOL_ARGS and out["done_reason"] == "stop"
    out = json.loads(call(oll, "POST", "/api/chat", ochat("hi", stream=False, options={"num_predict": 3}))[2])
    assert out["done_reason"] == "length" and out["eval_count"] == 3


def test_ollama_modes(oll):
    status, _, raw = call(oll, "POST", "/api/chat", ochat("x"), {"x-mock-mode": "error-404"})
    assert status == 404 and set(json.loads(raw)) == {"error"}
    status, _, raw = call(oll, "POST", "/api/chat", ochat("x"), {"x-mock-mode": "error-line"})
    lines = ndjson(raw)
    assert status == 200 and len(lines) == 3 and lines[-1] == {"error": "model crashed"}
    with pytest.raises(http.client.IncompleteRead) as info:
        call(oll, "POST", "/api/chat", ochat("x"), {"x-mock-mode": "drop-mid-stream"})
    assert len(ndjson(info.value.partial)) == 2 and b'"done": true' not in info.value.partial
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        call(oll, "POST", "/api/chat", ochat("x"), {"x-mock-mode": "drop-before-head"})
    t0 = time.monotonic()
    assert call(oll, "GET", "/api/tags", headers={"x-mock-mode": "slow", "x-mock-delay-ms": "200"})[0] == 200
    assert time.monotonic() - t0 >= 0.2


def test_ollama_tags_show_version_404(oll):
    models = json.loads(call(oll, "GET", "/api/tags")[2])["models"]
    assert models[0]["name"] == "llama3.2:latest" and models[0]["details"]["format"] == "gguf"
    show = json.loads(call(oll, "POST", "/api/show", {"model": "llama3.2"})[2])
    assert show["model_info"]["llama.context_length"] == 32768 and "tools" in show["capabilities"]
    assert json.loads(call(oll, "GET", "/api/version")[2])["version"]
    assert call(oll, "GET", "/v1/nothing")[0] == 404
