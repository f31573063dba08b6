"""Beyond Anthropic, end to end: the real cco-proxy between the official SDKs and our mock OpenAI and Ollama
upstreams — translation both ways (JSON and streams, tool calls), fallback chains, overrides, count_tokens,
/api/route and config reload."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid

import anthropic
import openai
import pytest

from cco.config import load_config
from cco.pricing import Usage, cost_at
from tests.conftest import IMPLS, ProxyProcess
from tests.http_util import wait_for
from tests.mock_anthropic import TOOL_INPUT
from tests.mock_ollama import MockOllama
from tests.mock_openai import TOOL_ARGS, MockOpenAI
from tests.test_cache import send

pytestmark = pytest.mark.integration

WEATHER_TOOL = {"name": "get_weather", "description": "Weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"},
                                                                  "unit": {"type": "string"}},
                                 "required": ["city"]}}
OPENAI_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                "parameters": WEATHER_TOOL["input_schema"]}}

OVERRIDES = """
[overrides]
enabled = true
rules = [["claude-opus-4-1", "claude-haiku-4-5"], ["re:^claude-retired-", "claude-sonnet-4-5"]]

[agents]
"test-engineer" = "gpt-4o-mini"

[agent_detection]
"test-engineer" = "You are a test engineer"
"""


@pytest.fixture(scope="module")
def upstreams():
    oai = MockOpenAI(tokenize=True).start()
    olm = MockOllama().start()
    yield oai, olm
    oai.stop()
    olm.stop()


def routes(anthropic_url: str, openai_url: str, ollama_url: str) -> list[dict]:
    return [
        {"pattern": "^claude-", "provider": "anthropic", "endpoint": anthropic_url, "max_retries": 0},
        {"pattern": "^gptdrop-", "provider": "openai", "endpoint": openai_url + "/v1", "max_retries": 0,
         "strip_prefix": "gptdrop-", "headers": {"x-mock-mode": "drop-mid-stream"}},
        {"pattern": "^gpt-", "provider": "openai", "endpoint": openai_url + "/v1", "max_retries": 0},
        {"pattern": "^vllm/", "provider": "vllm", "endpoint": openai_url + "/v1", "strip_prefix": "vllm/"},
        {"pattern": "^ollamadrop/", "provider": "ollama", "endpoint": ollama_url, "strip_prefix": "ollamadrop/",
         "headers": {"x-mock-mode": "drop-mid-stream"}},
        {"pattern": "^ollama/", "provider": "ollama", "endpoint": ollama_url, "strip_prefix": "ollama/"},
        {"pattern": "^dead-", "provider": "anthropic", "endpoint": "http://127.0.0.1:9", "max_retries": 0,
         "connect_timeout_ms": 2000},
    ]


FALLBACKS = {"claude-fallback-1": ["gpt-4o-mini"], "dead-model": ["dead-other", "claude-sonnet-4-5"]}


@pytest.fixture(scope="module", params=IMPLS)
def gateway(request, mock_upstream, upstreams, tmp_path_factory):
    oai, olm = upstreams
    proc = ProxyProcess(tmp_path_factory.mktemp(f"gateway-{request.param}"), mock_upstream.url,
                        impl=request.param, routes=routes(mock_upstream.url, oai.url, olm.url),
                        fallback_chain=FALLBACKS)
    (proc.config_dir / "model-overrides.toml").write_text(OVERRIDES)
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture
def claude(gateway, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    return anthropic.Anthropic(base_url=gateway.url, api_key="sk-test", max_retries=0)


@pytest.fixture
def oai_client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-openai-test", max_retries=0)


def get_json(proxy, path: str):
    with urllib.request.urlopen(proxy.url + path, timeout=10) as resp:
        return json.loads(resp.read())


def text_of(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


# /v1/messages to OpenAI-compatible and Ollama routes (translated), with the anthropic SDK


@pytest.mark.parametrize("model,greeting", [("gpt-4o-mini", "Hello from mock openai"),
                                            ("ollama/llama3.2", "Hello from mock ollama")])
def test_anthropic_sdk_text_and_stream_through_translated_providers(claude, upstreams, model, greeting):
    prompt = f"hi {uuid.uuid4().hex[:8]}"
    raw = claude.messages.with_raw_response.create(model=model, max_tokens=64,
                                                   messages=[{"role": "user", "content": prompt}])
    message = raw.parse()
    assert text_of(message).startswith(greeting) and prompt in text_of(message)
    assert message.stop_reason == "end_turn" and message.model == model
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 7
    assert raw.headers["x-cco-model"] == model
    assert raw.headers["x-cco-provider"] == ("openai" if model.startswith("gpt") else "ollama")
    assert float(raw.headers["x-cco-cost-usd"]) >= 0
    upstream = upstreams[0] if model.startswith("gpt") else upstreams[1]
    sent = upstream.requests[-1].json
    assert sent["model"] == model.removeprefix("ollama/")
    prompt2 = f"stream {uuid.uuid4().hex[:8]}"
    with claude.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": prompt2}]) as s:
        streamed_text = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed_text.startswith(greeting) and prompt2 in streamed_text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 7


@pytest.mark.parametrize("model", ["gpt-4o-mini", "ollama/llama3.2"])
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_tool_use_round_trip(claude, upstreams, model, stream):
    messages = [{"role": "user", "content": f"use the tool for Paris {uuid.uuid4().hex[:6]}"}]
    kwargs = dict(model=model, max_tokens=128, tools=[WEATHER_TOOL], messages=messages)
    if stream:
        with claude.messages.stream(**kwargs) as s:
            first = s.get_final_message()
    else:
        first = claude.messages.create(**kwargs)
    assert first.stop_reason == "tool_use"
    tool_use = [b for b in first.content if b.type == "tool_use"][0]
    assert tool_use.name == "get_weather" and tool_use.input == TOOL_ARGS
    messages += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id,
                                               "content": "18 degrees"}]}]
    second = claude.messages.create(model=model, max_tokens=128, tools=[WEATHER_TOOL], messages=messages)
    assert second.stop_reason == "end_turn"
    upstream = upstreams[0] if model.startswith("gpt") else upstreams[1]
    sent = upstream.requests[-1].json["messages"]
    assert sent[-1]["role"] == "tool" and "18 degrees" in json.dumps(sent[-1])
    assistant = [m for m in sent if m["role"] == "assistant"][-1]
    call = assistant["tool_calls"][0]["function"]
    arguments = call["arguments"] if isinstance(call["arguments"], dict) else json.loads(call["arguments"])
    assert call["name"] == "get_weather" and arguments == TOOL_ARGS


@pytest.mark.parametrize("model", ["gptdrop-gpt-4o-mini", "ollamadrop/llama3.2"])
def test_translated_stream_cut_mid_way_ends_with_error_event_and_is_not_cached(gateway, model):
    payload = {"model": model, "max_tokens": 64, "stream": True,
               "messages": [{"role": "user", "content": f"drop {uuid.uuid4().hex}"}]}
    first = send(gateway, payload)
    assert first.status == 200
    assert b"event: error" in first.body and b"message_stop" not in first.body
    again = send(gateway, payload)
    assert again.headers["x-cco-cache"] == "miss"  # nothing was stored


def test_translated_answers_are_cached_in_anthropic_form(gateway, upstreams):
    payload = {"model": "gpt-4o-mini", "max_tokens": 64,
               "messages": [{"role": "user", "content": f"cache me {uuid.uuid4().hex}"}]}
    before = upstreams[0].count("/v1/chat")
    miss = send(gateway, payload)
    hit = send(gateway, dict(payload, stream=True))
    assert miss.headers["x-cco-cache"] == "miss" and hit.headers["x-cco-cache"] == "hit"
    assert upstreams[0].count("/v1/chat") == before + 1
    assert b"event: message_stop" in hit.body and json.loads(miss.body)["type"] == "message"


# /v1/chat/completions with the openai SDK


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet-4-5", "ollama/llama3.2"])
def test_openai_sdk_chat_completions(oai_client, gateway, upstreams, mock_upstream, model):
    prompt = f"hello {uuid.uuid4().hex[:8]}"
    raw = oai_client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        max_tokens=50)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert prompt in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 7 and completion.usage.prompt_tokens > 0
    assert raw.headers["x-cco-model"] == model
    if model.startswith("claude"):
        sent = mock_upstream.requests[-1]
        assert sent.headers["anthropic-version"] == "2023-06-01"
        assert sent.json["system"] in ("Be brief.", [{"type": "text", "text": "Be brief."}])
    stream = oai_client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                 stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert prompt in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7


def test_passthrough_stream_is_metered_even_without_include_usage(oai_client, gateway, upstreams):
    """The proxy asks the provider for the usage chunk (the ledger needs the tokens) and keeps it from a client
    that did not ask for one: what the client sees is what it asked for."""
    def metered() -> int:
        return sum(1 for c in get_json(gateway, "/api/export/analytics?days=1")["calls"]
                   if c["endpoint"] == "/v1/chat/completions" and c["stream"] == 1 and c["model"] == "gpt-4o-mini"
                   and c["output_tokens"] == 7 and c["input_tokens"] > 0)

    time.sleep(0.5)  # rows of earlier tests are flushed
    before = metered()
    prompt = f"meter {uuid.uuid4().hex[:12]}"
    chunks = list(oai_client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                      messages=[{"role": "user", "content": prompt}]))
    assert chunks and all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert prompt in "".join(c.choices[0].delta.content or "" for c in chunks)
    assert upstreams[0].requests[-1].json["stream_options"] == {"include_usage": True}
    assert wait_for(lambda: metered() == before + 1, timeout=10)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet-4-5"])
def test_openai_sdk_tool_calls(oai_client, model):
    messages = [{"role": "user", "content": "use the tool for Paris"}]
    completion = oai_client.chat.completions.create(model=model, messages=messages, tools=[OPENAI_TOOL],
                                                     max_tokens=100)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == (TOOL_ARGS if model.startswith("gpt") else TOOL_INPUT)
    with oai_client.chat.completions.stream(model=model, messages=messages, tools=[OPENAI_TOOL],
                                            max_tokens=100) as s:
        final = s.get_final_completion()
    streamed = final.choices[0].message.tool_calls[0]
    assert streamed.function.name == "get_weather"
    assert json.loads(streamed.function.arguments) == json.loads(call.function.arguments)
    follow_up = messages + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                            {"role": "tool", "tool_call_id": call.id, "content": "18 degrees"}]
    answer = oai_client.chat.completions.create(model=model, messages=follow_up, tools=[OPENAI_TOOL],
                                                 max_tokens=100)
    assert answer.choices[0].finish_reason == "stop"


def test_chat_completions_errors_have_openai_shape(oai_client):
    with pytest.raises(openai.NotFoundError) as info:
        oai_client.chat.completions.create(model="nothing-routes-this", messages=[{"role": "user", "content": "x"}])
    assert "no route" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        oai_client.chat.completions.create(model="claude-sonnet-4-5", messages="not a list")  # type: ignore[arg-type]


# fallback chains


def test_fallback_on_529_serves_the_next_model(gateway, upstreams):
    resp = send(gateway, {"model": "claude-fallback-1", "max_tokens": 32,
                          "messages": [{"role": "user", "content": f"fb {uuid.uuid4().hex}"}]},
                {"x-mock-mode": "error-529"})
    assert resp.status == 200, resp.body
    assert resp.headers["x-cco-model"] == "gpt-4o-mini"
    assert json.loads(resp.body)["model"] == "gpt-4o-mini"


def test_fallback_on_connect_failure_walks_the_chain(gateway):
    resp = send(gateway, {"model": "dead-model", "max_tokens": 32, "stream": True,
                          "messages": [{"role": "user", "content": f"fb {uuid.uuid4().hex}"}]})
    assert resp.status == 200 and b"message_stop" in resp.body
    assert resp.headers["x-cco-model"] == "claude-sonnet-4-5"
    assert wait_for(lambda: any(c["requested_model"] == "dead-model" and c["fallback_depth"] == 2
                                and c["model"] == "claude-sonnet-4-5"
                                for c in get_json(gateway, "/api/export/analytics?days=1")["calls"]), timeout=10)


# overrides


def test_override_rules_and_agents(gateway, mock_upstream):
    resp = send(gateway, {"model": "claude-opus-4-1", "max_tokens": 32,
                          "messages": [{"role": "user", "content": f"ov {uuid.uuid4().hex}"}]})
    assert resp.status == 200 and resp.headers["x-cco-model"] == "claude-haiku-4-5"
    assert mock_upstream.requests[-1].json["model"] == "claude-haiku-4-5"
    regex = send(gateway, {"model": "claude-retired-2", "max_tokens": 32,
                           "messages": [{"role": "user", "content": f"ov {uuid.uuid4().hex}"}]})
    assert regex.headers["x-cco-model"] == "claude-sonnet-4-5"
    agent = send(gateway, {"model": "claude-sonnet-4-5", "max_tokens": 32, "system": "You are a test engineer.",
                           "messages": [{"role": "user", "content": f"ov {uuid.uuid4().hex}"}]})
    assert agent.headers["x-cco-model"] == "gpt-4o-mini" and agent.headers["x-cco-provider"] == "openai"

    def counted():
        stats = get_json(gateway, "/api/overrides/stats")
        return stats["overrides_by_model"].get("claude-opus-4-1", {}).get("count", 0) >= 1 and stats
    stats = None
    assert wait_for(lambda: bool(counted()), timeout=10)
    stats = counted()
    entry = stats["overrides_by_model"]["claude-opus-4-1"]
    assert entry["overridden_to"] == "claude-haiku-4-5" and 0 < entry["percentage"] <= 100
    # saved: the price difference on the tokens actually used, from the ledger's own rows
    rows = [c for c in get_json(gateway, "/api/export/analytics?days=1")["calls"]
            if c["requested_model"] == "claude-opus-4-1"]
    table = load_config(None).pricing
    expected = 0.0
    for row in rows:
        usage = Usage(input_tokens=row["input_tokens"], output_tokens=row["output_tokens"])
        expected += cost_at(table.lookup("claude-opus-4-1"), usage) - cost_at(table.lookup("claude-haiku-4-5"), usage)
        assert row["override_rule"] == "claude-opus-4-1" and row["model"] == "claude-haiku-4-5"
    assert expected > 0 and entry["cost_saved"] == pytest.approx(expected, abs=1e-12)
    health = get_json(gateway, "/health")
    assert health["overrides_enabled"] is True and health["override_rules"] == 3


# count_tokens, /api/route


def test_count_tokens_for_translated_routes(gateway, upstreams):
    request = {"model": "vllm/qwen2.5", "messages": [{"role": "user", "content": "count these words please"}]}
    resp = send(gateway, request, path="/v1/messages/count_tokens")
    assert resp.status == 200 and resp.headers["x-cco-token-count"] == "tokenizer"
    assert json.loads(resp.body)["input_tokens"] > 0
    assert upstreams[0].requests[-1].path == "/tokenize"
    small = send(gateway, dict(request, model="ollama/llama3.2"), path="/v1/messages/count_tokens")
    assert small.headers["x-cco-token-count"] == "estimated"
    bigger = send(gateway, dict(request, model="ollama/llama3.2", tools=[WEATHER_TOOL]),
                  path="/v1/messages/count_tokens")
    assert json.loads(bigger.body)["input_tokens"] > json.loads(small.body)["input_tokens"] > 0


def test_route_explanation(gateway):
    body = get_json(gateway, "/api/route?model=claude-opus-4-1")
    assert body["override"]["applied"] is True and body["override"]["model"] == "claude-haiku-4-5"
    assert body["route"]["provider"] == "anthropic" and body["patterns_tried"] == []
    ollama = get_json(gateway, "/api/route?model=ollama/llama3.2")
    assert ollama["route"]["upstream_model"] == "llama3.2"
    assert ollama["patterns_tried"] == ["^claude-", "^gptdrop-", "^gpt-", "^vllm/", "^ollamadrop/"]
    assert ollama["price"] is not None and ollama["price"]["savings_comparison"]
    chain = get_json(gateway, "/api/route?model=dead-model")
    assert chain["fallback_chain"] == ["dead-other", "claude-sonnet-4-5"]


# reload


def test_reload_swaps_config_under_load_and_refuses_an_invalid_one(make_proxy, mock_upstream, upstreams):
    proc = make_proxy(routes=routes(mock_upstream.url, upstreams[0].url, upstreams[1].url))
    stop = threading.Event()
    failures: list = []
    done = [0]

    def load() -> None:
        client = anthropic.Anthropic(base_url=proc.url, api_key="sk-test", max_retries=0)
        while not stop.is_set():
            try:
                client.messages.create(model="claude-sonnet-4-5", max_tokens=16,
                                       messages=[{"role": "user", "content": f"load {uuid.uuid4().hex}"}])
                done[0] += 1
            except Exception as exc:  # any failure under reload is a bug
                failures.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: done[0] >= 5, timeout=15)
        assert get_json(proc, "/api/route?model=brand-new-1")["route"] is None
        routing = json.loads((proc.config_dir / "model-routing.json").read_text())
        routing["routes"].append({"pattern": "^brand-new-", "provider": "openai", "endpoint": upstreams[0].url + "/v1"})
        (proc.config_dir / "model-routing.json").write_text(json.dumps(routing))
        request = urllib.request.Request(proc.url + "/api/config/reload", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.loads(resp.read())["status"] == "reloaded"
        assert get_json(proc, "/api/route?model=brand-new-1")["route"]["provider"] == "openai"
        (proc.config_dir / "model-routing.json").write_text('{"routes": [{"pattern": "(", "provider": "x"}]}')
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(proc.url + "/api/config/reload", method="POST", data=b""),
                                   timeout=10)
        assert refused.value.code == 422
        assert "model-routing.json" in json.loads(refused.value.read())["error"]
        assert get_json(proc, "/api/route?model=brand-new-1")["route"]["provider"] == "openai"  # old one stays
        # SIGHUP reloads too
        routing["routes"] = [r for r in routing["routes"] if r["pattern"] != "^brand-new-"]
        (proc.config_dir / "model-routing.json").write_text(json.dumps(routing))
        proc.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: get_json(proc, "/api/route?model=brand-new-1")["route"] is None, timeout=10)
        count = done[0]
        assert wait_for(lambda: done[0] >= count + 5, timeout=15)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert failures == []
