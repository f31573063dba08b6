"""Anthropic ⇄ Ollama /api/chat: request translation, non-streamed answers, and the NDJSON → SSE state machine fed
whole, one byte at a time, in random cuts, with CRLF and blank lines, and with trailing data after the end."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import orjson
import pytest

from cco.providers.translate.ollama_chat import (OllamaStreamToAnthropic, anthropic_to_ollama_request,
                                                 map_stop_reason, ollama_to_anthropic_response, tool_use_id)

FIXTURES = Path(__file__).parent / "fixtures" / "ollama"
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# The checker: every rule of protocols.md §1.5 / SPEC §4, then the message the events add up to.

def check_events(events: list[tuple[str, bytes]]) -> dict:
    """Assert the Anthropic SSE sequence rules; return {content, stop_reason, usage, error, id, model}."""
    assert events, "no events"
    decoded = []
    for name, data in events:
        assert isinstance(name, str) and isinstance(data, bytes)
        payload = orjson.loads(data)
        assert payload["type"] == name, "the data's type must equal the event name"
        decoded.append(payload)
    result: dict = {"content": [], "stop_reason": None, "usage": None, "error": None, "id": None, "model": None}
    if decoded[-1]["type"] == "error":
        assert [p["type"] for p in decoded].count("error") == 1
        result["error"] = decoded[-1]["error"]
        assert result["error"]["type"] == "api_error" and result["error"]["message"]
        decoded = decoded[:-1]
        if not decoded:
            return result
    assert decoded[0]["type"] == "message_start", "message_start must come first"
    start = decoded[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["role"] == "assistant"
    assert start["id"].startswith("msg_") and "input_tokens" in start["usage"]
    result["id"], result["model"] = start["id"], start["model"]
    open_index = None
    partial: dict[int, list[str]] = {}
    deltas = 0
    stopped = False
    for payload in decoded[1:]:
        kind = payload["type"]
        assert not stopped, "nothing may follow message_stop"
        if kind == "message_start":
            raise AssertionError("a second message_start")
        if kind == "ping":
            continue
        if kind == "content_block_start":
            assert open_index is None, "blocks must not overlap"
            assert payload["index"] == len(result["content"]), "indexes are positions, in order"
            assert result["stop_reason"] is None
            block = payload["content_block"]
            if block["type"] == "tool_use":
                assert block["input"] == {} and block["id"] and block["name"]
                partial[payload["index"]] = []
            else:
                assert block == {"type": "text", "text": ""}
            result["content"].append(dict(block))
            open_index = payload["index"]
        elif kind == "content_block_delta":
            assert payload["index"] == open_index, "a delta only into the open block"
            block = result["content"][open_index]
            delta = payload["delta"]
            if delta["type"] == "text_delta":
                assert block["type"] == "text"
                block["text"] += delta["text"]
            else:
                assert delta["type"] == "input_json_delta" and block["type"] == "tool_use"
                partial[open_index].append(delta["partial_json"])
        elif kind == "content_block_stop":
            assert payload["index"] == open_index
            if open_index in partial:
                assert partial[open_index], "tool input must come as input_json_delta pieces"
                result["content"][open_index]["input"] = orjson.loads("".join(partial[open_index]))
            open_index = None
        elif kind == "message_delta":
            assert open_index is None, "every block closed before message_delta"
            assert deltas == 0, "exactly one message_delta"
            deltas += 1
            assert payload["delta"]["stop_reason"] is not None
            result["stop_reason"] = payload["delta"]["stop_reason"]
            result["usage"] = payload["usage"]
        elif kind == "message_stop":
            assert deltas == 1, "message_stop after one message_delta"
            stopped = True
        else:
            raise AssertionError(f"unexpected event {kind}")
    if result["error"] is None:
        assert stopped, "a complete stream ends with message_stop"
    else:
        assert not stopped
    return result


def run(pieces, **kwargs) -> tuple[list, OllamaStreamToAnthropic]:
    translator = OllamaStreamToAnthropic("claude-sonnet-4-5", message_id="msg_test01", **kwargs)
    events = []
    for piece in pieces:
        events += translator.feed(piece)
    events += translator.finish()
    return events, translator


def splits(data: bytes, seed: int = 7):
    """Whole, one byte at a time, random cuts, CRLF line ends, and blank lines between records."""
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), min(12, len(data) - 1)))
    yield "whole", [data]
    yield "bytes", [data[i:i + 1] for i in range(len(data))]
    yield "random", [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    yield "crlf", [data.replace(b"\n", b"\r\n")[i:i + 5] for i in range(0, len(data) * 2, 5)]
    yield "blank-lines", [b"\n\r\n", data.replace(b"\n", b"\n\n  \n")]


# Request translation -----------------------------------------------------------------------------------------------

def test_request_system_text_and_options():
    req = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "temperature": 0.2, "top_p": 0.9, "top_k": 40,
           "stop_sequences": ["\n\nHuman:", "END"],
           "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in English.",
                                                                   "cache_control": {"type": "ephemeral"}}],
           "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    before = copy.deepcopy(req)
    body = anthropic_to_ollama_request(req, "qwen3:8b", True)
    assert req == before, "the pivot request is not mutated"
    assert body["model"] == "qwen3:8b" and body["stream"] is True
    assert body["messages"] == [
        {"role": "system", "content": "You are terse.\n\nAnswer in English."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "a\n\nb"},
    ]
    assert body["options"] == {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "num_predict": 1024,
                               "stop": ["\n\nHuman:", "END"]}
    assert "think" not in body and "tools" not in body


def test_request_minimal_has_explicit_stream_false_and_no_options():
    body = anthropic_to_ollama_request({"messages": [{"role": "user", "content": "x"}]}, "m", False)
    assert body == {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": False}
    body = anthropic_to_ollama_request({"system": "S", "messages": []}, "m", False)
    assert body["messages"] == [{"role": "system", "content": "S"}]


def test_request_images_base64_and_url():
    req = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]}]}
    body = anthropic_to_ollama_request(req, "llava", False)
    assert body["messages"] == [{"role": "user", "content": "What is in these?\n\n[image: https://example.com/cat.jpg]",
                                 "images": [PNG_B64]}]


def test_request_documents_and_unknown_blocks():
    req = {"messages": [{"role": "user", "content": [
        {"type": "document", "title": "notes", "source": {"type": "text", "media_type": "text/plain", "data": "N1"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
        {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "found"}]},
    ]}]}
    content = anthropic_to_ollama_request(req, "m", False)["messages"][0]["content"]
    assert content.startswith("[document: notes]\nN1\n\n[document: application/pdf")
    assert content.endswith("found")


def test_request_tools_and_tool_choice():
    tools = [{"name": "get_weather", "description": "Weather for a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
             {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
             {"name": "noargs", "input_schema": {"type": "object"}}]
    body = anthropic_to_ollama_request({"messages": [], "tools": tools}, "m", True)
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                          "parameters": tools[0]["input_schema"]}},
        {"type": "function", "function": {"name": "noargs", "parameters": {"type": "object"}}},
    ]
    body = anthropic_to_ollama_request({"messages": [], "tools": tools, "tool_choice": {"type": "none"}}, "m", True)
    assert "tools" not in body


def test_request_tool_round_trip():
    req = {"messages": [
        {"role": "user", "content": "weather in Paris and Tokyo?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "two calls", "signature": "c2ln"},
            {"type": "redacted_thinking", "data": "xyz"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {"city": "Tokyo"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C sunny",
             "cache_control": {"type": "ephemeral"}},
            {"type": "tool_result", "tool_use_id": "toolu_02", "is_error": True,
             "content": [{"type": "text", "text": "timeout"},
                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}]},
            {"type": "tool_result", "tool_use_id": "toolu_unknown", "content": "orphan"},
            {"type": "text", "text": "thanks"},
        ]},
    ]}
    messages = anthropic_to_ollama_request(req, "m", False)["messages"]
    assert messages == [
        {"role": "user", "content": "weather in Paris and Tokyo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_01", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"id": "toolu_02", "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}]},
        {"role": "tool", "content": "18C sunny", "tool_name": "get_weather", "tool_call_id": "toolu_01"},
        {"role": "tool", "content": "Error: timeout", "tool_name": "get_weather", "tool_call_id": "toolu_02",
         "images": [PNG_B64]},
        {"role": "tool", "content": "orphan", "tool_call_id": "toolu_unknown"},
        {"role": "user", "content": "thanks"},
    ]
    # arguments stay objects (Ollama wants an object, not a JSON string)
    assert isinstance(messages[1]["tool_calls"][0]["function"]["arguments"], dict)


def test_request_assistant_with_only_thinking_is_dropped():
    req = {"messages": [{"role": "user", "content": "q"},
                        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}]}]}
    assert anthropic_to_ollama_request(req, "m", False)["messages"] == [{"role": "user", "content": "q"}]


# Non-streamed answers ----------------------------------------------------------------------------------------------

def test_response_text():
    resp = {"model": "qwen3:8b", "message": {"role": "assistant", "content": "Hi there"}, "done": True,
            "done_reason": "stop", "prompt_eval_count": 12, "eval_count": 3}
    msg = ollama_to_anthropic_response(resp, "claude-x", message_id="msg_abc")
    assert msg == {"id": "msg_abc", "type": "message", "role": "assistant", "model": "claude-x",
                   "content": [{"type": "text", "text": "Hi there"}], "stop_reason": "end_turn",
                   "stop_sequence": None,
                   "usage": {"input_tokens": 12, "output_tokens": 3, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 0}}
    generated = ollama_to_anthropic_response(resp, "claude-x")
    assert generated["id"].startswith("msg_") and generated["id"] != ollama_to_anthropic_response(resp, "c")["id"]


def test_response_tool_calls_object_and_string_arguments():
    resp = orjson.loads(fixture("chat-nonstream-tools.json"))
    msg = ollama_to_anthropic_response(resp, "claude-x", message_id="msg_abc")
    assert msg["content"] == [
        {"type": "text", "text": "Checking both cities."},
        {"type": "tool_use", "id": "toolu_abc_0", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_abc_1", "name": "get_weather", "input": {"city": "Tokyo"}},
    ]
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"]["input_tokens"] == 300 and msg["usage"]["output_tokens"] == 45
    assert all(block["type"] != "thinking" for block in msg["content"])
    # deterministic ids: the same answer with the same message id gives the same blocks
    assert ollama_to_anthropic_response(resp, "claude-x", message_id="msg_abc") == msg


def test_response_tool_call_id_single_object_and_bad_arguments():
    resp = {"message": {"content": "", "tool_calls": {"id": "call_9", "function": {"name": "f", "arguments": "{oops"}}},
            "done": True}
    msg = ollama_to_anthropic_response(resp, "c", message_id="msg_q")
    assert msg["content"] == [{"type": "tool_use", "id": "call_9", "name": "f", "input": {}}]
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"]["input_tokens"] == 0 and msg["usage"]["output_tokens"] == 0


@pytest.mark.parametrize("done_reason, tools, expected", [
    ("stop", False, "end_turn"), ("stop", True, "tool_use"), ("length", False, "max_tokens"),
    ("length", True, "max_tokens"), ("load", False, "end_turn"), ("unload", False, "end_turn"),
    (None, False, "end_turn"), (None, True, "tool_use"), ("weird", False, "end_turn"),
])
def test_done_reason_mapping(done_reason, tools, expected):
    assert map_stop_reason(done_reason, tools) == expected
    message = {"role": "assistant", "content": "x"}
    if tools:
        message["tool_calls"] = [{"function": {"name": "f", "arguments": {}}}]
    resp = {"message": message, "done": True, "done_reason": done_reason}
    assert ollama_to_anthropic_response(resp, "c")["stop_reason"] == expected


def test_response_empty_and_unreadable():
    msg = ollama_to_anthropic_response({"message": {"role": "assistant", "content": ""}, "done": True}, "c")
    assert msg["content"] == [] and msg["stop_reason"] == "end_turn"
    with pytest.raises(ValueError):
        ollama_to_anthropic_response({"error": "model 'x' not found"}, "c")
    with pytest.raises(ValueError):
        ollama_to_anthropic_response([1, 2], "c")  # type: ignore[arg-type]


# Streams -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how, pieces", list(splits(fixture("chat-text.ndjson"))))
def test_stream_text(how, pieces):
    events, translator = run(pieces)
    result = check_events(events)
    assert result["content"] == [{"type": "text", "text": "Hello, wörld ✓\n"}]
    assert result["stop_reason"] == "end_turn"
    assert result["usage"] == {"input_tokens": 26, "output_tokens": 5, "cache_creation_input_tokens": 0,
                               "cache_read_input_tokens": 0}
    assert result["id"] == "msg_test01" and result["model"] == "claude-sonnet-4-5"
    assert translator.done and translator.ended and translator.error is None
    assert translator.usage == result["usage"] and translator.stop_reason == "end_turn"


def test_stream_events_are_the_same_however_split():
    data = fixture("chat-tool-late-line.ndjson")
    outputs = [run(pieces)[0] for _, pieces in splits(data)]
    assert all(out == outputs[0] for out in outputs)


@pytest.mark.parametrize("how, pieces", list(splits(fixture("chat-tool-late-line.ndjson"))))
def test_stream_tool_call_in_a_late_line(how, pieces):
    events, _ = run(pieces)
    result = check_events(events)
    assert result["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": tool_use_id("msg_test01", 0), "name": "get_weather",
         "input": {"city": "Toronto", "units": "celsius"}},
    ]
    assert result["stop_reason"] == "tool_use"
    assert result["usage"]["input_tokens"] == 212 and result["usage"]["output_tokens"] == 31
    names = [name for name, _ in events]
    assert "ping" in names, "thinking-only lines keep the client's stall watchdog fed"
    assert b"thinking" not in b"".join(data for _, data in events), "thinking is dropped"


@pytest.mark.parametrize("how, pieces", list(splits(fixture("chat-tool-in-done.ndjson"))))
def test_stream_tool_calls_in_the_done_line(how, pieces):
    events, _ = run(pieces)
    result = check_events(events)
    assert result["content"] == [
        {"type": "tool_use", "id": "toolu_test01_0", "name": "Bash",
         "input": {"command": "echo cco-ok", "description": "Print a marker"}},
        {"type": "tool_use", "id": "call_x1", "name": "Read", "input": {"file_path": "/project/a.txt"}},
    ]
    assert result["stop_reason"] == "tool_use"
    assert result["usage"]["input_tokens"] == 1500 and result["usage"]["output_tokens"] == 40


def test_stream_length():
    result = check_events(run([fixture("chat-length.ndjson")])[0])
    assert result["content"] == [{"type": "text", "text": "one two three"}]
    assert result["stop_reason"] == "max_tokens"


def test_stream_trailing_data_after_done_is_ignored():
    data = fixture("chat-text.ndjson")
    trailing = data + b'{"model":"x","message":{"content":"AFTER"},"done":false}\n' + b"garbage\n" + b'{"unterminated'
    for _, pieces in splits(trailing):
        events, translator = run(pieces)
        result = check_events(events)
        assert result["content"] == [{"type": "text", "text": "Hello, wörld ✓\n"}]
        assert translator.feed(b'{"message":{"content":"more"}}\n') == []
        assert translator.finish() == []


def test_stream_final_line_without_newline():
    events, translator = run([fixture("chat-length.ndjson").rstrip(b"\n")])
    assert check_events(events)["stop_reason"] == "max_tokens" and translator.done


@pytest.mark.parametrize("how, pieces", list(splits(fixture("chat-error.ndjson"))))
def test_stream_error_line(how, pieces):
    events, translator = run(pieces)
    result = check_events(events)
    assert result["error"] == {"type": "api_error",
                               "message": "an error was encountered while running the model: unexpected EOF"}
    assert result["content"] == [{"type": "text", "text": "Partial"}]
    assert not translator.done and translator.ended and translator.error
    assert events[-1][0] == "error"


def test_stream_error_first_is_a_lone_error_event():
    events, _ = run([b'{"error":"model \\"nope\\" not found, try pulling it first"}\n'])
    assert [name for name, _ in events] == ["error"]
    assert check_events(events)["error"]["message"].startswith("model \"nope\" not found")


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.98])
def test_stream_cut_off_is_an_error(cut):
    data = fixture("chat-tool-late-line.ndjson")
    data = data[:int(len(data) * cut)]
    events, translator = run([data[i:i + 3] for i in range(0, len(data), 3)])
    result = check_events(events)
    assert result["error"] is not None and "ended before" in result["error"]["message"]
    assert result["stop_reason"] is None and not translator.done


def test_stream_nothing_at_all_is_an_error():
    events, _ = run([])
    assert [name for name, _ in events] == ["error"]


@pytest.mark.parametrize("line", [b"not json\n", b"[1,2]\n"])
def test_stream_unreadable_line_is_an_error(line):
    text = fixture("chat-text.ndjson").split(b"\n", 1)[0] + b"\n"
    events, _ = run([text, line, fixture("chat-text.ndjson")])
    result = check_events(events)
    assert result["error"] is not None and result["content"] == [{"type": "text", "text": "Hel"}]


def test_stream_input_token_estimate_and_missing_counts():
    lines = b'{"message":{"content":"a"},"done":false}\n{"message":{"content":""},"done":true}\n'
    events, translator = run([lines], input_tokens=77)
    start = orjson.loads(events[0][1])
    assert start["message"]["usage"]["input_tokens"] == 77
    result = check_events(events)
    assert result["usage"]["input_tokens"] == 77 and result["usage"]["output_tokens"] == 0
    assert translator.usage["input_tokens"] == 77


def test_stream_text_after_tool_call_opens_a_new_block():
    lines = (b'{"message":{"content":"a"}}\n'
             b'{"message":{"content":"","tool_calls":[{"function":{"name":"f","arguments":{"x":1}}}]}}\n'
             b'{"message":{"content":"b"}}\n'
             b'{"message":{"content":"","tool_calls":[{"function":{"name":"g","arguments":null}}]}}\n'
             b'{"done":true,"done_reason":"stop","eval_count":4}\n')
    result = check_events(run([lines])[0])
    assert [(b["type"], b.get("text") or b.get("name")) for b in result["content"]] == [
        ("text", "a"), ("tool_use", "f"), ("text", "b"), ("tool_use", "g")]
    assert result["content"][3]["input"] == {}
    ids = [b["id"] for b in result["content"] if b["type"] == "tool_use"]
    assert len(set(ids)) == 2


def test_stream_through_the_sdk_accumulator():
    accumulate = pytest.importorskip("anthropic.lib.streaming._messages").accumulate_event
    for name in ("chat-text.ndjson", "chat-tool-late-line.ndjson", "chat-tool-in-done.ndjson"):
        events, _ = run([fixture(name)])
        snapshot = None
        json_bufs: dict = {}
        for _, data in events:
            payload = orjson.loads(data)
            if payload["type"] == "ping":
                continue
            snapshot = accumulate(event=payload, current_snapshot=snapshot, json_bufs=json_bufs)
        expected = check_events(events)
        assert snapshot is not None and snapshot.stop_reason == expected["stop_reason"]
        got = [block.model_dump(exclude_none=True) for block in snapshot.content]
        for block in got:
            block.pop("citations", None)
            block.pop("caller", None)
        assert got == expected["content"]
