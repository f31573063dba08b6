"""The official `anthropic` SDKs, both generations, talking to a real cco-proxy in front of the mock upstream.

Current SDK (2.x, in this venv): Bearer auth, `anthropic-version: 2026-10-21`, no query strings.
Old SDK (0.75.0): `x-api-key`, `anthropic-version: 2023-06-01`, `?beta=true` on beta resources. It cannot share
the venv, so it runs in a subprocess (tests/sdk_old_client.py) with its `pip install --target` directory, taken
from $CCO_OLD_SDK_PATH (default <repo>/.venv/sdk-old), first on PYTHONPATH.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anthropic
import pytest

from tests.mock_anthropic import TOOL_INPUT

ROOT = Path(__file__).resolve().parent.parent
MODEL = "claude-haiku-4-5"  # claude-sonnet-4-5 makes the SDK emit a DeprecationWarning (an error here)
DEFAULT_MODEL_IDS = {"claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"}
MOCK_STREAM_EVENTS = ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
                      "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
TOOLS = [{"name": "bash", "description": "Run a shell command",
          "input_schema": {"type": "object", "properties": {"command": {"type": "string"},
                                                            "timeout": {"type": "integer"}}}}]
TOOL_MODE = {"x-mock-mode": "tool"}


def clear_anthropic_env(monkeypatch) -> None:
    for key in list(os.environ):
        if key.startswith("ANTHROPIC_"):
            monkeypatch.delenv(key)


@pytest.fixture
def client(proxy, monkeypatch):
    clear_anthropic_env(monkeypatch)
    c = anthropic.Anthropic(api_key="sk-test", base_url=proxy.url, max_retries=0)
    yield c
    c.close()


def text_of(message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def message_requests(mock) -> list:
    return [r for r in mock.requests if r.path == "/v1/messages"]


# ------------------------------------------------------------------ current SDK: messages

def test_create_non_stream(client, proxy, mock):
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=user("hello sdk"))
    msg = raw.parse()
    assert text_of(msg) == "Hello from mock: hello sdk"
    assert msg.stop_reason == "end_turn"
    [upstream] = message_requests(mock)
    assert msg.usage.input_tokens == len(upstream.body) // 4
    assert msg.usage.output_tokens == 7
    assert msg.usage.cache_read_input_tokens == 0
    assert raw.headers["x-cco-provider"] == "anthropic"
    assert raw.headers.get("x-cco-model")
    assert raw.headers.get("request-id")
    assert upstream.headers["authorization"] == "Bearer sk-test"
    assert upstream.headers["anthropic-version"] == "2026-10-21"
    assert "accept-encoding" not in upstream.headers
    assert upstream.query == ""
    assert upstream.json["model"] == MODEL


def test_stream_final_message_and_raw_events(client, mock):
    prompt = user("stream please")
    plain = client.messages.create(model=MODEL, max_tokens=64, messages=prompt)
    with client.messages.stream(model=MODEL, max_tokens=64, messages=prompt) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text_of(final) == text_of(plain) == streamed == "Hello from mock: stream please"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 7

    with client.messages.with_streaming_response.create(model=MODEL, max_tokens=64, messages=prompt,
                                                        stream=True) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-cco-provider"] == "anthropic"
        events = list(anthropic.Stream.raw_events(resp.http_response))
    assert [e.event for e in events] == MOCK_STREAM_EVENTS
    for e in events:
        assert json.loads(e.data)["type"] == e.event
    assert all(r.json.get("stream") for r in message_requests(mock)[1:])


# ------------------------------------------------------------------ current SDK: tool use

def test_tool_use_non_stream(client):
    msg = client.messages.create(model=MODEL, max_tokens=64, tools=TOOLS, messages=user("list files"),
                                 extra_headers=TOOL_MODE)
    assert msg.stop_reason == "tool_use"
    [tool] = [b for b in msg.content if b.type == "tool_use"]
    assert tool.name == "bash"
    assert tool.input == TOOL_INPUT


def test_tool_use_streamed_then_tool_result(client, mock):
    prompt = user("list files")
    with client.messages.stream(model=MODEL, max_tokens=64, tools=TOOLS, messages=prompt,
                                extra_headers=TOOL_MODE) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use"]
    tool = final.content[1]
    assert tool.name == "bash" and tool.id.startswith("toolu_")
    assert tool.input == TOOL_INPUT

    second = client.messages.create(model=MODEL, max_tokens=64, tools=TOOLS, messages=[
        *prompt,
        {"role": "assistant", "content": final.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "cco-ok"}]},
    ])
    assert second.stop_reason == "end_turn"
    assert text_of(second).startswith("Hello from mock:")
    sent = message_requests(mock)[-1].json["messages"]
    assert sent[1]["content"][1] == {"type": "tool_use", "id": tool.id, "name": "bash", "input": TOOL_INPUT}
    assert sent[2]["content"][0]["tool_use_id"] == tool.id


# ------------------------------------------------------------------ current SDK: count_tokens, models

def test_count_tokens(client, mock):
    count = client.messages.count_tokens(model=MODEL, messages=user("count these tokens"))
    [upstream] = [r for r in mock.requests if r.path == "/v1/messages/count_tokens"]
    assert count.input_tokens == len(upstream.body) // 4 > 0
    assert upstream.query == ""


def test_models_list_and_retrieve(client, mock):
    models = list(client.models.list())
    ids = {m.id for m in models}
    assert DEFAULT_MODEL_IDS <= ids
    assert "claude-upstream-only" not in ids  # served from the config, not the upstream
    for m in models:
        assert m.type == "model"
        assert m.display_name
    one = client.models.retrieve("claude-sonnet-4-5")
    assert one.id == "claude-sonnet-4-5" and one.type == "model" and one.display_name
    with pytest.raises(anthropic.NotFoundError) as exc:
        client.models.retrieve("mistral-nowhere")
    assert exc.value.status_code == 404


# ------------------------------------------------------------------ current SDK: errors

def test_error_400_body_unchanged(client, mock):
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model=MODEL, max_tokens=64, messages=user("bad"),
                               extra_headers={"x-mock-mode": "error-400"})
    err = exc.value
    assert err.status_code == 400
    assert re.fullmatch(r"req_mock_\d+", err.body["request_id"])
    expected = {"type": "error", "error": {"type": "invalid_request_error", "message": "mock 400"},
                "request_id": err.body["request_id"]}
    assert err.body == expected
    assert err.response.content == json.dumps(expected).encode()  # the mock's bytes, unchanged
    assert mock.count() == 1


def test_error_529_overloaded(client, mock):
    with pytest.raises(anthropic.InternalServerError) as exc:
        client.messages.create(model=MODEL, max_tokens=64, messages=user("busy"),
                               extra_headers={"x-mock-mode": "error-529"})
    err = exc.value
    assert err.status_code == 529
    assert isinstance(err, getattr(anthropic, "OverloadedError", anthropic.InternalServerError))
    assert err.body["error"]["type"] == "overloaded_error"
    assert mock.count() == 1  # route max_retries 0, client max_retries 0


# ------------------------------------------------------------------ current SDK: batches

def test_batches_lifecycle(client, proxy, mock):
    requests = [{"custom_id": cid, "params": {"model": MODEL, "max_tokens": 32, "messages": user(f"batch {cid}")}}
                for cid in ("a", "b")]
    batch = client.messages.batches.create(requests=requests)
    assert batch.type == "message_batch" and batch.request_counts.succeeded == 2
    assert batch.results_url.startswith(proxy.url + "/")

    got = client.messages.batches.retrieve(batch.id)
    assert got.id == batch.id and got.processing_status == "ended"
    assert got.results_url == f"{proxy.url}/v1/messages/batches/{batch.id}/results"
    listed = client.messages.batches.list()
    assert batch.id in [b.id for b in listed.data]
    assert all(b.results_url.startswith(proxy.url + "/") for b in listed.data if b.results_url)

    results = list(client.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == ["a", "b"]
    for r in results:
        assert r.result.type == "succeeded"
        assert text_of(r.result.message) == f"Hello from mock: batch {r.custom_id}"
    assert any(r.method == "GET" and r.path == f"/v1/messages/batches/{batch.id}/results" for r in mock.requests)

    canceled = client.messages.batches.cancel(batch.id)
    assert canceled.processing_status == "canceling"
    deleted = client.messages.batches.delete(batch.id)
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


# ------------------------------------------------------------------ current SDK: async, concurrent streams

def test_async_client_concurrent_streams(proxy, mock, monkeypatch):
    clear_anthropic_env(monkeypatch)

    async def one(client, i: int):
        async with client.messages.stream(model=MODEL, max_tokens=64, messages=user(f"async stream {i}")) as s:
            return await s.get_final_message()

    async def main():
        client = anthropic.AsyncAnthropic(api_key="sk-test", base_url=proxy.url, max_retries=0)
        try:
            return await asyncio.gather(*(one(client, i) for i in range(10)))
        finally:
            await client.close()

    finals = asyncio.run(main())
    for i, msg in enumerate(finals):
        assert text_of(msg) == f"Hello from mock: async stream {i}"
        assert msg.stop_reason == "end_turn"
        assert msg.usage.output_tokens == 7
    assert len(message_requests(mock)) == 10


# ------------------------------------------------------------------ old SDK (0.75.0) in a subprocess

def old_sdk_dir() -> Path:
    path = Path(os.environ.get("CCO_OLD_SDK_PATH") or ROOT / ".venv" / "sdk-old")
    if not (path / "anthropic").is_dir():
        pytest.fail(f"old anthropic SDK not found in {path} (set CCO_OLD_SDK_PATH or run "
                    f"`pip install --target {path} anthropic==0.75.0`)", pytrace=False)
    return path


def run_old(scenario: str, proxy) -> dict:
    sdk = old_sdk_dir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(sdk), env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "tests/sdk_old_client.py", scenario, proxy.url], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"old-SDK scenario {scenario!r} failed:\n{done.stderr}"
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["version"].startswith("0.")
    return out


def test_old_sdk_create(proxy, mock):
    out = run_old("create", proxy)
    assert out == {"text": "Hello from mock: hi old sdk", "stop_reason": "end_turn", "output_tokens": 7,
                   "provider": "anthropic", "version": out["version"]}
    [upstream] = message_requests(mock)
    assert upstream.headers["x-api-key"] == "sk-test"
    assert upstream.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in upstream.headers


def test_old_sdk_stream(proxy, mock):
    out = run_old("stream", proxy)
    assert out["text"] == out["streamed"] == "Hello from mock: hi old stream"
    assert out["stop_reason"] == "end_turn"
    [upstream] = message_requests(mock)
    assert upstream.json["stream"] is True
    assert upstream.headers["anthropic-version"] == "2023-06-01"


def test_old_sdk_tool_use_streamed(proxy, mock):
    out = run_old("tool_stream", proxy)
    assert out["stop_reason"] == "tool_use"
    assert out["tool_name"] == "bash" and out["tool_id"].startswith("toolu_")
    assert out["tool_input"] == TOOL_INPUT


def test_old_sdk_count_tokens(proxy, mock):
    out = run_old("count_tokens", proxy)
    [upstream] = [r for r in mock.requests if r.path == "/v1/messages/count_tokens"]
    assert out["input_tokens"] == len(upstream.body) // 4 > 0
    assert upstream.headers["x-api-key"] == "sk-test"
    if out["resource"] == "beta":
        assert upstream.query == "beta=true"
        assert "token-counting" in upstream.headers.get("anthropic-beta", "")


def test_old_sdk_models_list(proxy, mock):
    out = run_old("models", proxy)
    assert DEFAULT_MODEL_IDS <= set(out["ids"])
    assert out["types"] == ["model"]
