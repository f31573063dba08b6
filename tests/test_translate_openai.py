"""Anthropic Messages ⇄ OpenAI Chat Completions translation (cco/providers/translate/openai_chat.py).

Fixtures under tests/fixtures/openai/ are hand-written in the shapes of reference/protocols.md §1.5, §3 and §4.
Streams are checked against the SPEC §4 event rules and, end to end, through the official `anthropic` and `openai`
SDKs (served from an in-process mock transport).
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import orjson
import pytest

from cco._fast import SseSplitter, parse_event
from cco.providers.translate.openai_chat import (RAW_ARGUMENTS_KEY, AnthropicStreamToOpenAI, OpenAIStreamToAnthropic,
                                                 anthropic_to_openai_request, anthropic_to_openai_response,
                                                 anthropic_usage_to_openai, encode_events,
                                                 finish_reason_to_stop_reason, openai_to_anthropic_request,
                                                 openai_to_anthropic_response, openai_usage_to_anthropic,
                                                 stop_reason_to_finish_reason)

FIXTURES = Path(__file__).parent / "fixtures" / "openai"


def load(name: str):
    return json.loads((FIXTURES / name).read_text())


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# ------------------------------------------------------------------------------------ SPEC §4 stream checker

def check_events(events: list[tuple[str, bytes]], *, error: bool = False) -> dict:
    """Asserts the Anthropic SSE rules (SPEC §4, protocols.md §1.5) and returns the message the events build.

    message_start first; blocks indexed 0, 1, 2… in order, started before their deltas, stopped before the next
    starts, tool_use started with `input: {}` and fed only through input_json_delta; then exactly one
    message_delta (non-null stop_reason) and exactly one message_stop, last. With `error`, the stream must
    instead end with one `error` event (and no message_delta/message_stop)."""
    assert events, "no events"
    parsed = []
    for name, data in events:
        assert isinstance(name, str) and isinstance(data, bytes)
        obj = orjson.loads(data)
        assert obj["type"] == name, (name, obj)
        parsed.append((name, obj))
    names = [n for n, _ in parsed]
    assert names[0] == "message_start", names[:3]
    assert names.count("message_start") == 1
    message = copy.deepcopy(parsed[0][1]["message"])
    assert message["content"] == [] and message["stop_reason"] is None and message["role"] == "assistant"
    assert message["id"].startswith("msg_")
    if error:
        assert names[-1] == "error" and names.count("error") == 1
        assert "message_delta" not in names and "message_stop" not in names
        body = parsed[-1][1]
        assert set(body["error"]) == {"type", "message"}
        message["error"] = body["error"]
        parsed = parsed[:-1]
    else:
        assert names[-1] == "message_stop" and names.count("message_stop") == 1
        assert names.count("message_delta") == 1 and names[-2] == "message_delta"
        assert "error" not in names
    open_index = None
    json_bufs: dict[int, str] = {}
    for name, obj in parsed[1:]:
        if name == "content_block_start":
            assert open_index is None, "blocks overlap"
            assert obj["index"] == len(message["content"]), "indices must be 0, 1, 2… in order"
            block = obj["content_block"]
            if block["type"] == "tool_use":
                assert block["input"] == {} and block["id"] and block["name"]
                json_bufs[obj["index"]] = ""
            message["content"].append(copy.deepcopy(block))
            open_index = obj["index"]
        elif name == "content_block_delta":
            assert obj["index"] == open_index, "delta for a block that is not open"
            block, delta = message["content"][open_index], obj["delta"]
            if delta["type"] == "text_delta":
                assert block["type"] == "text"
                block["text"] += delta["text"]
            elif delta["type"] == "input_json_delta":
                assert block["type"] == "tool_use"
                json_bufs[open_index] += delta["partial_json"]
            else:
                raise AssertionError(f"unexpected delta {delta}")
        elif name == "content_block_stop":
            assert obj["index"] == open_index, "stop for a block that is not open"
            if open_index in json_bufs:
                message["content"][open_index]["input"] = json.loads(json_bufs[open_index])
            open_index = None
        elif name == "message_delta":
            assert open_index is None, "message_delta while a block is open"
            assert obj["delta"]["stop_reason"] is not None
            message.update(obj["delta"])
            message["usage"].update(obj["usage"])
        elif name == "message_stop":
            pass
        else:
            assert name == "ping", name
    if error:
        return message
    assert open_index is None
    return message


def summary(message: dict) -> list:
    """Blocks without ids: (type, text) or (type, name, input)."""
    return [("text", b["text"]) if b["type"] == "text" else (b["type"], b.get("name"), b.get("input"))
            for b in message["content"]]


def run_stream(data: bytes, splits: str = "whole", model: str = "claude-x", **kw) -> list:
    t = OpenAIStreamToAnthropic(model, **kw)
    events = []
    if splits == "whole":
        events += t.feed(data)
    elif splits == "bytes":
        for k in range(len(data)):
            events += t.feed(data[k:k + 1])
    else:
        rng = random.Random(splits)
        k = 0
        while k < len(data):
            n = rng.randint(1, 40)
            events += t.feed(data[k:k + n])
            k += n
    return events + t.finish()


SPLITS = ["whole", "bytes", "seed-1", "seed-2"]


# ----------------------------------------------------------------------------------------- helpers / maps

def test_stop_reason_maps():
    assert finish_reason_to_stop_reason("stop") == "end_turn"
    assert finish_reason_to_stop_reason("stop", True) == "tool_use"
    assert finish_reason_to_stop_reason("length") == "max_tokens"
    assert finish_reason_to_stop_reason("length", True) == "max_tokens"
    assert finish_reason_to_stop_reason("tool_calls", True) == "tool_use"
    assert finish_reason_to_stop_reason("function_call", True) == "tool_use"
    assert finish_reason_to_stop_reason("tool_calls", False) == "end_turn"
    assert finish_reason_to_stop_reason("content_filter") == "refusal"
    assert finish_reason_to_stop_reason(None) == "end_turn"
    assert finish_reason_to_stop_reason("eos_token") == "end_turn"
    expected = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
                "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter",
                None: "stop", "something_new": "stop"}
    for stop_reason, finish in expected.items():
        assert stop_reason_to_finish_reason(stop_reason) == finish


def test_usage_conversion_with_cached_tokens():
    openai_usage = {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
                    "prompt_tokens_details": {"cached_tokens": 1024}}
    assert openai_usage_to_anthropic(openai_usage) == {"input_tokens": 93, "output_tokens": 46,
                                                       "cache_creation_input_tokens": 0,
                                                       "cache_read_input_tokens": 1024}
    assert openai_usage_to_anthropic({"prompt_tokens": 10, "completion_tokens": 2,
                                      "prompt_tokens_details": None}) == {
        "input_tokens": 10, "output_tokens": 2, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    assert openai_usage_to_anthropic(None)["input_tokens"] == 0
    anthropic_usage = {"input_tokens": 93, "output_tokens": 46, "cache_creation_input_tokens": 200,
                       "cache_read_input_tokens": 1024, "service_tier": "standard"}
    assert anthropic_usage_to_openai(anthropic_usage) == {"prompt_tokens": 1317, "completion_tokens": 46,
                                                          "total_tokens": 1363,
                                                          "prompt_tokens_details": {"cached_tokens": 1024}}
    assert anthropic_usage_to_openai({"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": None,
                                      "cache_creation_input_tokens": None})["prompt_tokens"] == 5


# ----------------------------------------------------------------------------- request: Anthropic → OpenAI

def test_anthropic_request_to_openai():
    req = load("anthropic_request_tools.json")
    body = anthropic_to_openai_request(req, "gpt-4o")
    assert body["model"] == "gpt-4o"
    msgs = body["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert msgs[0]["content"] == "You are a weather assistant.\nAnswer briefly."
    png = req["messages"][0]["content"][1]["source"]["data"]
    assert msgs[1]["content"] == [
        {"type": "text", "text": "What is the weather in Paris and in Oslo? Here is a photo."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + png}},
        {"type": "image_url", "image_url": {"url": "https://example.com/sky.jpg"}}]
    # thinking dropped, tool_use → tool_calls with JSON-string arguments
    assert msgs[2]["content"] == "Let me check both cities."
    calls = msgs[2]["tool_calls"]
    assert [c["id"] for c in calls] == ["toolu_01A09q90qw90lq917835lq9", "toolu_01B7hQ3nV2kTqW8rL5mXy4Zp"]
    assert all(c["type"] == "function" and c["function"]["name"] == "get_weather" for c in calls)
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    # tool results first (one message each, in order), then the user's remaining content with the result image
    assert msgs[3] == {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "18°C, sunny"}
    assert msgs[4] == {"role": "tool", "tool_call_id": "toolu_01B7hQ3nV2kTqW8rL5mXy4Zp",
                       "content": "Error: station offline"}
    assert msgs[5]["content"] == [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + png}},
                                  {"type": "text", "text": "And tomorrow?"}]
    # tools: the server tool is dropped; cache_control gone
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city.",
        "parameters": req["tools"][0]["input_schema"]}}]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is False
    assert body["stop"] == ["\n\nHuman:", "END"]
    assert body["temperature"] == 0.2 and body["top_p"] == 0.9
    assert body["max_tokens"] == 2048 and "max_completion_tokens" not in body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    # Claude Code's long JSON user_id is hashed into a short, stable `user`
    assert body["user"].startswith("cco-") and len(body["user"]) == 36
    assert anthropic_to_openai_request(req, "gpt-4o")["user"] == body["user"]
    for dropped in ("top_k", "thinking", "context_management", "container", "mcp_servers", "metadata", "system",
                    "stop_sequences"):
        assert dropped not in body
    assert "cache_control" not in json.dumps(body)


@pytest.mark.parametrize("choice, expected", [
    ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ({"type": "none"}, "none"),
])
def test_anthropic_tool_choice(choice, expected):
    req = load("anthropic_request_tools.json")
    req["tool_choice"] = choice
    body = anthropic_to_openai_request(req, "m")
    assert body["tool_choice"] == expected
    assert "parallel_tool_calls" not in body


def test_anthropic_request_minimal_and_edge_shapes():
    body = anthropic_to_openai_request({"model": "claude-x", "max_tokens": 10, "system": "Be terse.",
                                        "messages": [{"role": "user", "content": "hi"},
                                                     {"role": "assistant", "content": "Hello"},
                                                     {"role": "user", "content": [
                                                         {"type": "text", "text": "a"},
                                                         {"type": "text", "text": "b", "cache_control": {}},
                                                         {"type": "server_tool_use", "id": "x"}]}],
                                        "metadata": {"user_id": "u-1"}, "stream": False}, "m")
    assert body == {"model": "m", "messages": [{"role": "system", "content": "Be terse."},
                                               {"role": "user", "content": "hi"},
                                               {"role": "assistant", "content": "Hello"},
                                               {"role": "user", "content": "a\nb"}],
                    "max_tokens": 10, "user": "u-1"}
    # assistant turn with only a tool call: content null; no tools → no tool_choice
    body = anthropic_to_openai_request({"messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}}]}], "tool_choice": {"type": "any"}}, "m")
    assert body["messages"] == [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]}]
    assert "tool_choice" not in body and "tools" not in body
    # text documents are inlined; a PDF cannot go to an OpenAI backend
    doc = {"type": "document", "title": "notes", "source": {"type": "text", "media_type": "text/plain",
                                                           "data": "line"}}
    body = anthropic_to_openai_request({"messages": [{"role": "user", "content": [doc]}]}, "m")
    assert body["messages"] == [{"role": "user", "content": "notes\nline"}]
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
    with pytest.raises(ValueError, match=r"messages\[0\]\.content\[1\]\.source"):
        anthropic_to_openai_request({"messages": [{"role": "user", "content": [doc, pdf]}]}, "m")
    with pytest.raises(ValueError, match="file"):
        anthropic_to_openai_request({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}]}, "m")


# ----------------------------------------------------------------------------- request: OpenAI → Anthropic

def test_openai_request_to_anthropic():
    req = load("openai_request_tools.json")
    body = openai_to_anthropic_request(req)
    assert body["model"] == "claude-sonnet-4-5"
    assert body["system"] == "You are a weather assistant.\n\nAnswer briefly."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    png = req["messages"][2]["content"][1]["image_url"]["url"].split(",", 1)[1]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Weather in Paris and Oslo?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/sky.jpg"}}]
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "Let me check both cities."},
        {"type": "tool_use", "id": "call_Qh8cR3x1YbN2uZ", "name": "get_weather",
         "input": {"city": "Paris", "unit": "celsius"}},
        {"type": "tool_use", "id": "call_7fKe0pLmW2sTq1", "name": "get_weather", "input": {"city": "Oslo"}}]
    # consecutive tool messages and the next user message make one user turn, tool results first
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_Qh8cR3x1YbN2uZ", "content": "18°C, sunny"},
        {"type": "tool_result", "tool_use_id": "call_7fKe0pLmW2sTq1", "content": "-2°C, snow"},
        {"type": "text", "text": "And tomorrow?"}]
    assert body["tools"] == [
        {"name": "get_weather", "description": "Current weather for a city.",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["stop_sequences"] == ["END", "STOP"]
    assert body["max_tokens"] == 1000  # max_completion_tokens wins over max_tokens
    assert body["temperature"] == 1  # clamped from 1.4 to Anthropic's range
    assert body["top_p"] == 0.8
    assert body["stream"] is True
    assert body["metadata"] == {"user_id": "user-42"}
    for dropped in ("n", "seed", "stream_options", "parallel_tool_calls", "stop", "user", "max_completion_tokens"):
        assert dropped not in body


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "now"}}, {"type": "tool", "name": "now"}),
])
def test_openai_tool_choice(choice, expected):
    req = load("openai_request_tools.json")
    req["tool_choice"] = choice
    del req["parallel_tool_calls"]
    assert openai_to_anthropic_request(req)["tool_choice"] == expected


def test_openai_request_defaults_and_sampling():
    body = openai_to_anthropic_request({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}],
                                        "stop": "END", "temperature": -1, "top_p": 1})
    assert body == {"model": "claude-x", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                    "max_tokens": 4096, "temperature": 0, "stop_sequences": ["END"]}
    body = openai_to_anthropic_request({"messages": [{"role": "user", "content": "a"},
                                                     {"role": "user", "content": "b"},
                                                     {"role": "assistant", "content": None}],
                                        "max_tokens": 7, "temperature": 0.5})
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                             {"type": "text", "text": "b"}]}]
    assert body["max_tokens"] == 7 and body["temperature"] == 0.5


@pytest.mark.parametrize("patch, message", [
    ({"n": 2}, r"^n: "),
    ({"messages": "hi"}, r"^messages: expected an array"),
    ({"max_tokens": "lots"}, r"^max_tokens: expected a positive integer"),
    ({"temperature": "hot"}, r"^temperature: expected a number"),
    ({"stop": [1]}, r"^stop: "),
    ({"tool_choice": "sometimes"}, r"^tool_choice: "),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, r"^tools\[0\]: "),
])
def test_openai_request_invalid(patch, message):
    req = load("openai_request_tools.json")
    req.update(patch)
    with pytest.raises(ValueError, match=message):
        openai_to_anthropic_request(req)


def test_openai_request_invalid_messages_name_the_json_path():
    req = load("openai_request_tools.json")
    req["messages"][3]["tool_calls"][0]["function"]["arguments"] = '{"city": "Par'
    with pytest.raises(ValueError, match=r"^messages\[3\]\.tool_calls\[0\]\.function\.arguments: not valid JSON$"):
        openai_to_anthropic_request(req)
    req["messages"][3]["tool_calls"][0]["function"]["arguments"] = "[1, 2]"
    with pytest.raises(ValueError, match=r"^messages\[3\]\.tool_calls\[0\]\.function\.arguments: expected a JSON"):
        openai_to_anthropic_request(req)
    for message, path in [
        ({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}, r"messages\[0\]\.content\[0\]"),
        ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]},
         r"messages\[0\]\.content\[0\]\.image_url\.url"),
        ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]},
         r"messages\[0\]\.content\[0\]\.image_url\.url"),
        ({"role": "tool", "content": "x"}, r"messages\[0\]\.tool_call_id"),
        ({"role": "function", "name": "f", "content": "x"}, r"messages\[0\]\.role"),
    ]:
        with pytest.raises(ValueError, match="^" + path):
            openai_to_anthropic_request({"messages": [message]})


def test_tool_round_trip_anthropic_openai_anthropic():
    req = load("anthropic_request_tools.json")
    back = openai_to_anthropic_request(anthropic_to_openai_request(req, "m"))
    uses = [b for m in back["messages"] for b in m["content"] if b["type"] == "tool_use"]
    results = [b for m in back["messages"] for b in m["content"] if b["type"] == "tool_result"]
    original = [b for m in req["messages"] if isinstance(m["content"], list) for b in m["content"]]
    assert [(b["id"], b["name"], b["input"]) for b in uses] == [
        (b["id"], b["name"], b["input"]) for b in original if b["type"] == "tool_use"]
    assert [r["tool_use_id"] for r in results] == [b["tool_use_id"] for b in original if b["type"] == "tool_result"]
    assert [m["role"] for m in back["messages"]] == ["user", "assistant", "user"]
    assert back["messages"][2]["content"][-1] == {"type": "text", "text": "And tomorrow?"}
    assert back["tools"][0]["input_schema"] == req["tools"][0]["input_schema"]


def test_tool_round_trip_openai_anthropic_openai():
    req = load("openai_request_tools.json")
    back = anthropic_to_openai_request(openai_to_anthropic_request(req), "m")
    calls = back["messages"][2]["tool_calls"]
    original = req["messages"][3]["tool_calls"]
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in original]
    assert [m.get("tool_call_id") for m in back["messages"] if m["role"] == "tool"] == [
        "call_Qh8cR3x1YbN2uZ", "call_7fKe0pLmW2sTq1"]


# ---------------------------------------------------------------------------- response: OpenAI → Anthropic

def test_openai_response_text():
    msg = openai_to_anthropic_response(load("openai_response_text.json"), "claude-served")
    assert msg == {"id": "msg_B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "type": "message", "role": "assistant",
                   "model": "claude-served", "content": [{"type": "text", "text": "Paris is sunny today."}],
                   "stop_reason": "end_turn", "stop_sequence": None,
                   "usage": {"input_tokens": 93, "output_tokens": 46, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 1024}}


def test_openai_response_tool_calls():
    msg = openai_to_anthropic_response(load("openai_response_tool_calls.json"), "m")
    assert msg["content"] == [
        {"type": "tool_use", "id": "call_Qh8cR3x1YbN2uZ", "name": "get_weather",
         "input": {"city": "Paris", "unit": "celsius"}},
        {"type": "tool_use", "id": "call_7fKe0pLmW2sTq1", "name": "get_weather", "input": {"city": "Oslo"}}]
    assert msg["stop_reason"] == "tool_use"


def test_openai_response_object_arguments_and_missing_ids():
    msg = openai_to_anthropic_response(load("openai_response_tool_object_args.json"), "m")
    assert msg["id"].startswith("msg_") and len(msg["id"]) > 4
    [block] = msg["content"]
    assert block["input"] == {"city": "Oslo"} and block["name"] == "get_weather"
    assert block["id"].startswith("toolu_")
    assert msg["stop_reason"] == "tool_use"  # finish_reason "stop" with tool calls
    assert msg["usage"] == {"input_tokens": 30, "output_tokens": 12, "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": 0}


def test_openai_response_bad_arguments_kept_raw_and_restored():
    resp = load("openai_response_tool_calls.json")
    resp["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"city": "Par'
    resp["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"] = ""
    resp["choices"][0]["message"]["tool_calls"][1]["id"] = "functions.get_weather:1"
    msg = openai_to_anthropic_response(resp, "m")
    assert msg["content"][0]["input"] == {RAW_ARGUMENTS_KEY: '{"city": "Par'}
    assert msg["content"][1]["input"] == {}
    assert msg["content"][1]["id"] == "functions_get_weather_1"  # Anthropic's id alphabet
    # sent back to the backend, the raw string is restored
    req = anthropic_to_openai_request({"messages": [{"role": "assistant", "content": msg["content"]}]}, "m")
    assert req["messages"][0]["tool_calls"][0]["function"]["arguments"] == '{"city": "Par'


@pytest.mark.parametrize("finish, stop_reason", [
    ("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal"), (None, "end_turn"),
    ("tool_calls", "end_turn"),  # no tool call in the message: nothing for the client to run
])
def test_openai_response_finish_reasons(finish, stop_reason):
    resp = load("openai_response_text.json")
    resp["choices"][0]["finish_reason"] = finish
    assert openai_to_anthropic_response(resp, "m")["stop_reason"] == stop_reason


def test_openai_response_stop_sequence_refusal_and_errors():
    resp = load("openai_response_text.json")
    resp["choices"][0]["stop_reason"] = "END"  # vLLM names the stop string that matched
    msg = openai_to_anthropic_response(resp, "m")
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("stop_sequence", "END")
    resp = load("openai_response_text.json")
    resp["choices"][0]["message"].update(content=None, refusal="I can't help with that.")
    msg = openai_to_anthropic_response(resp, "m")
    assert msg["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert msg["stop_reason"] == "refusal"
    with pytest.raises(ValueError):
        openai_to_anthropic_response({"object": "error", "message": "boom", "code": 400}, "m")


# ------------------------------------------------------------------------- stream: OpenAI → Anthropic SSE

TEXT = "Hello world — ça va? 🙂"
TOOLS = [("tool_use", "get_weather", {"city": "Paris", "unit": "celsius"}),
         ("tool_use", "get_weather", {"city": "Oslo"})]


@pytest.mark.parametrize("splits", SPLITS)
def test_stream_text(splits):
    events = run_stream(raw("openai_stream_text.sse"), splits, model="claude-served")
    message = check_events(events)
    assert summary(message) == [("text", TEXT)]
    assert message["model"] == "claude-served" and message["id"] == "msg_D1fPq"
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["input_tokens"] == 0  # no usage chunk: unknown


@pytest.mark.parametrize("splits", SPLITS)
def test_stream_two_tool_calls_with_usage_chunk(splits):
    events = run_stream(raw("openai_stream_tools.sse"), splits)
    message = check_events(events)
    assert summary(message) == TOOLS
    assert [b["id"] for b in message["content"]] == ["call_Qh8cR3x1YbN2uZ", "call_7fKe0pLmW2sTq1"]
    assert message["stop_reason"] == "tool_use" and message["stop_sequence"] is None
    assert message["usage"] == {"input_tokens": 176, "output_tokens": 57, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 1024}
    # tool input is streamed piece by piece, not buffered
    assert sum(1 for name, _ in events if name == "content_block_delta") == 16


@pytest.mark.parametrize("splits", SPLITS)
def test_stream_interleaved_tool_calls_are_serialised(splits):
    message = check_events(run_stream(raw("openai_stream_interleaved.sse"), splits))
    assert summary(message) == [("text", "Checking."), ("tool_use", "get_weather", TOOLS[0][2]),
                                ("tool_use", "get_time", TOOLS[1][2])]
    assert [b.get("id") for b in message["content"]] == [None, "call_a", "call_b"]


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r"])
def test_stream_crlf_and_cr(line_end):
    data = raw("openai_stream_tools.sse").replace(b"\n", line_end)
    for splits in ("whole", "bytes"):
        assert summary(check_events(run_stream(data, splits))) == TOOLS


def test_stream_trailing_data_after_done_is_ignored():
    data = raw("openai_stream_text.sse") + b'data: {"choices":[{"index":0,"delta":{"content":"late"}}]}\n\n' + \
        b"data: [DONE]\n\ngarbage"
    for splits in SPLITS:
        events = run_stream(data, splits)
        assert summary(check_events(events)) == [("text", TEXT)]
    t = OpenAIStreamToAnthropic("m")
    t.feed(raw("openai_stream_text.sse"))
    assert t.done and t.ended and t.stop_reason == "end_turn"
    assert t.feed(b"data: {}\n\n") == [] and t.finish() == []


def test_stream_done_without_final_blank_line_and_finish_without_done():
    data = raw("openai_stream_text.sse")
    assert data.endswith(b"data: [DONE]\n\n")
    for cut in (data[:-1], data[:-2]):  # "[DONE]\n" / "[DONE]" then EOF
        assert summary(check_events(run_stream(cut, "bytes"))) == [("text", TEXT)]
    # finish_reason seen but the server never sent [DONE]: a complete answer
    no_done = data[:-len(b"data: [DONE]\n\n")]
    assert check_events(run_stream(no_done))["stop_reason"] == "end_turn"


@pytest.mark.parametrize("splits", SPLITS)
def test_stream_cut_off_is_an_error(splits):
    events = run_stream(raw("openai_stream_cut.sse"), splits)
    message = check_events(events, error=True)
    assert message["error"] == {"type": "api_error", "message": "upstream stream ended early"}
    assert summary(message) == [("text", "Hello, I was about to")]


def test_stream_upstream_error_payloads():
    start = b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}\n\n'
    for payload, kind, text in [
        (b'{"error":{"message":"Overloaded","type":"server_error","code":503}}', "overloaded_error", "Overloaded"),
        (b'{"object":"error","message":"CUDA out of memory","type":"InternalServerError","code":500}', "api_error",
         "CUDA out of memory"),
        (b'{"error":"model crashed"}', "api_error", "model crashed"),
        (b'{"id": "x", "choi', "api_error", "upstream sent a stream chunk that is not JSON"),
    ]:
        t = OpenAIStreamToAnthropic("m")
        events = t.feed(start + b"data: " + payload + b"\n\ndata: [DONE]\n\n") + t.finish()
        message = check_events(events, error=True)
        assert message["error"] == {"type": kind, "message": text}
        assert t.ended and not t.done and t.error == text
    # an error before anything else: the error event alone
    t = OpenAIStreamToAnthropic("m")
    assert [n for n, _ in t.feed(b'data: {"error":{"message":"bad"}}\n\n')] == ["error"]


def test_stream_quirks_cumulative_object_and_argumentless_calls():
    def chunk(delta, finish=None):
        return b"data: " + orjson.dumps({"id": "chatcmpl-q", "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"
    snapshots = ['{"ci', '{"city": "Os', '{"city": "Oslo"}', '{"city": "Oslo"}']
    data = chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                      "function": {"name": "get_weather"}}]})
    data += b"".join(chunk({"tool_calls": [{"index": 0, "function": {"arguments": s}}]}) for s in snapshots)
    # old TGI: a single object instead of a list, object arguments, empty id
    data += chunk({"tool_calls": {"index": 1, "id": "", "type": "function",
                                  "function": {"name": "get_time", "arguments": {"tz": "UTC"}}}})
    # a call without any arguments
    data += chunk({"tool_calls": [{"index": 2, "id": "call_3", "function": {"name": "now"}}]})
    data += chunk({}, "stop") + b"data: [DONE]\n\n"
    for splits in SPLITS:
        message = check_events(run_stream(data, splits))
        assert summary(message) == [("tool_use", "get_weather", {"city": "Oslo"}),
                                    ("tool_use", "get_time", {"tz": "UTC"}), ("tool_use", "now", {})]
        assert message["content"][1]["id"].startswith("toolu_")
        assert message["stop_reason"] == "tool_use"  # "stop" with tool calls


def test_stream_late_tool_name_and_text_during_a_tool_call():
    def chunk(delta, finish=None, **extra):
        return b"data: " + orjson.dumps({"id": "chatcmpl-z", "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish}], **extra}) + b"\n\n"
    data = chunk({"tool_calls": [{"index": 0, "id": "call_1"}]}, usage={"prompt_tokens": 5, "completion_tokens": 1})
    data += chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]})
    data += chunk({"content": "between"})  # waits: the tool call's arguments are not complete yet
    data += chunk({"tool_calls": [{"index": 0, "function": {"name": "f"}}]})
    data += chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]})
    data += chunk({"content": " more"})
    data += chunk({}, "tool_calls", usage={"prompt_tokens": 5, "completion_tokens": 9}) + b"data: [DONE]\n\n"
    for splits in SPLITS:
        message = check_events(run_stream(data, splits))
        assert summary(message) == [("tool_use", "f", {"a": 1}), ("text", "between more")]
        assert message["usage"]["output_tokens"] == 9 and message["stop_reason"] == "tool_use"


def test_stream_reasoning_dropped_with_pings_and_stop_sequence():
    def chunk(delta, finish=None, **extra):
        return b"data: " + orjson.dumps({"id": "chatcmpl-r", "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish, **extra}]}) + b"\n\n"
    data = b"".join(chunk({"reasoning_content": "hmm "}) for _ in range(70))
    data += chunk({"content": "Answer"}) + chunk({}, "stop", stop_reason="END")
    data += b'data: {"id":"chatcmpl-r","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":80}}\n\n'
    data += b"data: [DONE]\n\n"
    t = OpenAIStreamToAnthropic("m", "msg_given", input_tokens=11)
    events = t.feed(data) + t.finish()
    message = check_events(events)
    assert message["id"] == "msg_given" and message["usage"]["input_tokens"] == 12
    assert orjson.loads(events[0][1])["message"]["usage"]["input_tokens"] == 11  # the estimate, at the start
    assert summary(message) == [("text", "Answer")]
    assert [n for n, _ in events].count("ping") == 2
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")
    assert t.usage == {"input_tokens": 12, "output_tokens": 80, "cache_creation_input_tokens": 0,
                       "cache_read_input_tokens": 0}
    assert t.model == "m" and t.message_id == "msg_given"


def test_stream_empty_and_done_only():
    message = check_events(run_stream(b"data: [DONE]\n\n"))
    assert message["content"] == [] and message["stop_reason"] == "end_turn"
    assert [name for name, _ in run_stream(b"")] == ["error"]  # nothing at all: the error alone


@pytest.fixture
def no_sdk_env(monkeypatch):
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS",
                 "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)


def _mock_client(sdk, body: bytes):
    httpx2 = pytest.importorskip("httpx2")

    def handler(request):
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    return sdk(api_key="test-key", base_url="http://upstream.test/v1" if sdk.__name__ == "OpenAI"
               else "http://upstream.test", max_retries=0,
               http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def test_stream_accepted_by_anthropic_sdk(no_sdk_env):
    anthropic = pytest.importorskip("anthropic")
    t = OpenAIStreamToAnthropic("claude-served")
    body = encode_events(t.feed(raw("openai_stream_tools.sse")) + t.finish())
    client = _mock_client(anthropic.Anthropic, body)
    with client.messages.stream(model="claude-served", max_tokens=100,
                                messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    assert [(b.type, b.name, b.input) for b in final.content] == TOOLS
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cache_read_input_tokens) == (
        176, 57, 1024)


# ------------------------------------------------------------------------- Anthropic → OpenAI (both forms)

def anthropic_sse_events(data: bytes) -> list[tuple[bytes, bytes]]:
    splitter = SseSplitter()
    return [parse_event(block) for block in splitter.feed(data)]


def test_anthropic_response_to_openai():
    msg = load("anthropic_message_tool_use.json")
    resp = anthropic_to_openai_response(msg, "claude-served", 1760000000)
    assert resp == {
        "id": "chatcmpl-01XFDUDYJgAACzvnptvVoYEL", "object": "chat.completion", "created": 1760000000,
        "model": "claude-served",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Okay, let me check the weather.", "refusal": None,
            "tool_calls": [{"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city":"San Francisco, CA","unit":"fahrenheit"}'}}]}}],
        "usage": {"prompt_tokens": 1596, "completion_tokens": 89, "total_tokens": 1685,
                  "prompt_tokens_details": {"cached_tokens": 1024}}}
    msg["content"] = [b for b in msg["content"] if b["type"] != "text"]
    msg["stop_reason"] = "max_tokens"
    resp = anthropic_to_openai_response(msg, "m", 1)
    assert resp["choices"][0]["message"]["content"] is None
    assert resp["choices"][0]["finish_reason"] == "length"


def test_anthropic_stream_to_openai_frames():
    t = AnthropicStreamToOpenAI("claude-served", 1760000000, include_usage=True)
    frames = [f for event, data in anthropic_sse_events(raw("anthropic_stream_tool_use.sse")) for f in
              t.feed(event, data)]
    assert all(f.startswith(b"data: ") and f.endswith(b"\n\n") and f.count(b"\n\n") == 1 for f in frames)
    assert frames[-1] == b"data: [DONE]\n\n" and t.ended and t.feed(b"ping", b'{"type":"ping"}') == []
    chunks = [orjson.loads(f[6:]) for f in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {c["id"] for c in chunks} == {"chatcmpl-01XFDUDYJgAACzvnptvVoYEL"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 1596
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]].count("tool_calls") == 1
    # no usage requested: no usage chunk, no usage key
    t = AnthropicStreamToOpenAI("m", 1, include_usage=False, completion_id="chatcmpl-given")
    frames = [f for event, data in anthropic_sse_events(raw("anthropic_stream_tool_use.sse")) for f in
              t.feed(event, data)]
    chunks = [orjson.loads(f[6:]) for f in frames[:-1]]
    assert all("usage" not in c and c["choices"] and c["id"] == "chatcmpl-given" for c in chunks)


def test_anthropic_stream_accepted_by_openai_sdk(no_sdk_env):
    openai = pytest.importorskip("openai")
    from openai.lib.streaming.chat import ChatCompletionStreamState

    msg = load("anthropic_message_tool_use.json")
    t = AnthropicStreamToOpenAI("claude-served", 1760000000, include_usage=True)
    body = b"".join(f for event, data in anthropic_sse_events(raw("anthropic_stream_tool_use.sse"))
                    for f in t.feed(event, data))
    client = _mock_client(openai.OpenAI, body)
    state = ChatCompletionStreamState()
    for chunk in client.chat.completions.create(model="claude-served", messages=[{"role": "user", "content": "x"}],
                                                stream=True, stream_options={"include_usage": True}):
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    expected = anthropic_to_openai_response(msg, "claude-served", 1760000000)
    want = expected["choices"][0]
    got = final.choices[0]
    assert final.id == expected["id"] and final.model == "claude-served"
    assert got.message.content == want["message"]["content"]
    assert got.finish_reason == want["finish_reason"]
    assert [(c.id, c.type, c.function.name, json.loads(c.function.arguments)) for c in got.message.tool_calls] == [
        (c["id"], c["type"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in want["message"]["tool_calls"]]
    assert final.usage.model_dump(exclude_none=True) == expected["usage"]


def test_anthropic_stream_error_event_to_openai(no_sdk_env):
    openai = pytest.importorskip("openai")
    events = anthropic_sse_events(raw("anthropic_stream_tool_use.sse"))[:4]
    events.append((b"error", b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'))
    t = AnthropicStreamToOpenAI("m", 1, include_usage=True)
    frames = [f for event, data in events for f in t.feed(event, data)]
    assert frames[-2:] == [b'data: {"error":{"message":"Overloaded","type":"server_error","param":null,'
                           b'"code":"overloaded_error"}}\n\n', b"data: [DONE]\n\n"]
    assert t.ended and t.finish() == []
    client = _mock_client(openai.OpenAI, b"".join(frames))
    with pytest.raises(openai.APIError, match="Overloaded"):
        for _ in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                                stream=True):
            pass
    # cut off: finish() ends with an error frame
    t = AnthropicStreamToOpenAI("m", 1, include_usage=False)
    for event, data in events[:4]:
        t.feed(event, data)
    frames = t.finish()
    assert b"upstream stream ended early" in frames[0] and frames[-1] == b"data: [DONE]\n\n"


def test_anthropic_stream_tool_only_and_start_input():
    events = [
        (b"message_start", b'{"type":"message_start","message":{"id":"msg_9","usage":{"input_tokens":3,'
                           b'"output_tokens":1}}}'),
        (b"content_block_start", b'{"type":"content_block_start","index":0,"content_block":{"type":"tool_use",'
                                 b'"id":"toolu_9","name":"ls","input":{"path":"/"}}}'),
        (b"content_block_stop", b'{"type":"content_block_stop","index":0}'),
        (b"message_delta", b'{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":5}}'),
        (b"message_stop", b'{"type":"message_stop"}'),
    ]
    t = AnthropicStreamToOpenAI("m", 1, include_usage=True)
    frames = [f for event, data in events for f in t.feed(event, data)]
    assert frames[-1] == b"data: [DONE]\n\n"
    chunks = [orjson.loads(f[6:]) for f in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "toolu_9", "type": "function", "function": {"name": "ls", "arguments": ""}}]}
    assert chunks[1]["choices"][0]["delta"] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"path":"/"}'}}]}
    assert chunks[2]["choices"][0]["finish_reason"] == "tool_calls"
    assert t.usage["output_tokens"] == 5 and t.usage["input_tokens"] == 3
