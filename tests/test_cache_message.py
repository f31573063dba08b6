"""Stored messages: assembled from upstream SSE, replayed as SSE, and checked against the official SDK's accumulator.

Streams are bytes, fed through the proxy's own SSE splitter (both twins) whole, one byte at a time and in random
cuts. Replays are read back three ways: our assembler, the SDK's `accumulate_event`, and the SDK end to end
(`messages.stream().get_final_message()`) against a loopback `http.server` serving the synthesized bytes.
"""

from __future__ import annotations

import os
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import orjson
import pytest

from cco.cache.message import StreamAssembler, last_user_preview, message_bytes, synthesize_sse
from tests.conftest import fast_module

MODEL = "claude-haiku-4-5"  # older names make the SDK warn, and warnings are errors here


def ev(name: str, **fields) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **fields}) + b"\n\n"


def start(msg_id: str, usage: dict, **extra) -> bytes:
    return ev("message_start", message={"id": msg_id, "type": "message", "role": "assistant", "model": MODEL,
                                        "content": [], "stop_reason": None, "stop_sequence": None,
                                        **extra, "usage": usage})


def block_start(i: int, block: dict) -> bytes:
    return ev("content_block_start", index=i, content_block=block)


def delta(i: int, **d) -> bytes:
    return ev("content_block_delta", index=i, delta=d)


def stop(i: int) -> bytes:
    return ev("content_block_stop", index=i)


PING = ev("ping")
MESSAGE_STOP = ev("message_stop")
USAGE_START = {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
               "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
               "output_tokens": 1, "service_tier": "standard"}


def message(msg_id: str, content: list, stop_reason: str, usage: dict, stop_sequence=None, **extra) -> dict:
    return {"id": msg_id, "type": "message", "role": "assistant", "model": MODEL, "content": content,
            "stop_reason": stop_reason, "stop_sequence": stop_sequence, **extra, "usage": usage}


# ------------------------------------------------------------------ upstream streams and the messages they make

TEXT_STREAM = b"".join([
    start("msg_text", USAGE_START),
    block_start(0, {"type": "text", "text": ""}),
    PING,
    delta(0, type="text_delta", text="Hello"),
    delta(0, type="text_delta", text=", wörld 👋\n\n"),
    delta(0, type="text_delta", text="bye."),
    stop(0),
    ev("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None}, usage={"output_tokens": 15}),
    MESSAGE_STOP,
])
TEXT_MESSAGE = message("msg_text", [{"type": "text", "text": "Hello, wörld 👋\n\nbye."}], "end_turn",
                       {**USAGE_START, "output_tokens": 15})

TOOL_STREAM = b"".join([
    start("msg_tool", USAGE_START),
    block_start(0, {"type": "text", "text": ""}),
    delta(0, type="text_delta", text="Let me check the weather."),
    stop(0),
    block_start(1, {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}),
    delta(1, type="input_json_delta", partial_json=""),
    delta(1, type="input_json_delta", partial_json='{"location": "San Fra'),
    delta(1, type="input_json_delta", partial_json='ncisco, CA", "unit": "cel'),
    delta(1, type="input_json_delta", partial_json='sius", "days": [1, 2.5]}'),
    stop(1),
    ev("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None}, usage={"output_tokens": 89}),
    MESSAGE_STOP,
])
TOOL_MESSAGE = message("msg_tool", [
    {"type": "text", "text": "Let me check the weather."},
    {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
     "input": {"location": "San Francisco, CA", "unit": "celsius", "days": [1, 2.5]}},
], "tool_use", {**USAGE_START, "output_tokens": 89})

THINKING_STREAM = b"".join([
    start("msg_think", USAGE_START),
    block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    delta(0, type="thinking_delta", thinking="Let me solve this step by step:\n\n1. First break down 27 * 453"),
    delta(0, type="thinking_delta", thinking="\n2. 453 = 400 + 50 + 3"),
    delta(0, type="signature_delta", signature="EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"),
    stop(0),
    block_start(1, {"type": "text", "text": ""}),
    delta(1, type="text_delta", text="27 * 453 = 12,231"),
    stop(1),
    ev("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None}, usage={"output_tokens": 42}),
    MESSAGE_STOP,
])
THINKING_MESSAGE = message("msg_think", [
    {"type": "thinking", "thinking": "Let me solve this step by step:\n\n1. First break down 27 * 453\n"
                                     "2. 453 = 400 + 50 + 3",
     "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
    {"type": "text", "text": "27 * 453 = 12,231"},
], "end_turn", {**USAGE_START, "output_tokens": 42})

PARALLEL_STREAM = b"".join([
    start("msg_par", USAGE_START),
    block_start(0, {"type": "tool_use", "id": "toolu_a", "name": "bash", "input": {}}),
    delta(0, type="input_json_delta", partial_json=""),
    delta(0, type="input_json_delta", partial_json='{"command": "ls'),
    delta(0, type="input_json_delta", partial_json=' -la"}'),
    stop(0),
    block_start(1, {"type": "tool_use", "id": "toolu_b", "name": "bash", "input": {}}),
    delta(1, type="input_json_delta", partial_json='{"command": "pwd", "timeout": 5}'),
    stop(1),
    block_start(2, {"type": "tool_use", "id": "toolu_c", "name": "noargs", "input": {}}),
    delta(2, type="input_json_delta", partial_json=""),
    stop(2),
    ev("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None}, usage={"output_tokens": 70}),
    MESSAGE_STOP,
])
PARALLEL_MESSAGE = message("msg_par", [
    {"type": "tool_use", "id": "toolu_a", "name": "bash", "input": {"command": "ls -la"}},
    {"type": "tool_use", "id": "toolu_b", "name": "bash", "input": {"command": "pwd", "timeout": 5}},
    {"type": "tool_use", "id": "toolu_c", "name": "noargs", "input": {}},
], "tool_use", {**USAGE_START, "output_tokens": 70})

CONTAINER = {"id": "container_011", "expires_at": "2026-06-05T12:00:00Z"}
USAGE_STREAM = b"".join([
    start("msg_usage", {"input_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                        "output_tokens": 1, "service_tier": "standard"}, container=CONTAINER),
    block_start(0, {"type": "text", "text": ""}),
    delta(0, type="text_delta", text="STOP"),
    stop(0),
    ev("message_delta", delta={"stop_reason": "max_tokens", "stop_sequence": None},
       usage={"output_tokens": 4}),
    ev("future_event", anything=[1, 2]),
    ev("message_delta", delta={"stop_reason": "stop_sequence", "stop_sequence": "END"},
       usage={"input_tokens": 1200, "cache_creation_input_tokens": None, "cache_read_input_tokens": 9000,
              "output_tokens": 7, "server_tool_use": {"web_search_requests": 1}}),
    MESSAGE_STOP,
])
USAGE_MESSAGE = message("msg_usage", [{"type": "text", "text": "STOP"}], "stop_sequence",
                        {"input_tokens": 1200, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 9000,
                         "output_tokens": 7, "service_tier": "standard",
                         "server_tool_use": {"web_search_requests": 1}},
                        stop_sequence="END", container=CONTAINER)

CITATION = {"type": "web_search_result_location", "cited_text": "The sky is blue because of Rayleigh scattering.",
            "url": "https://example.com/sky", "title": "Why is the sky blue", "encrypted_index": "Eo8BCioIAhgB"}
SEARCH_RESULT = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01",
                 "content": [{"type": "web_search_result", "title": "Why is the sky blue",
                              "url": "https://example.com/sky", "encrypted_content": "EqgfCioIARgB",
                              "page_age": None}]}
CITATIONS_STREAM = b"".join([
    start("msg_cite", USAGE_START),
    block_start(0, {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {}}),
    delta(0, type="input_json_delta", partial_json='{"query": "why is the sky blue"}'),
    stop(0),
    block_start(1, SEARCH_RESULT),
    stop(1),
    block_start(2, {"type": "text", "text": "", "citations": []}),
    delta(2, type="citations_delta", citation=CITATION),
    delta(2, type="text_delta", text="Rayleigh "),
    delta(2, type="citations_delta", citation={**CITATION, "cited_text": "Shorter wavelengths scatter more."}),
    delta(2, type="text_delta", text="scattering."),
    stop(2),
    block_start(3, {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}),
    delta(3, type="some_future_delta", payload="ignored"),
    stop(3),
    ev("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None},
       usage={"output_tokens": 120, "server_tool_use": {"web_search_requests": 1}}),
    MESSAGE_STOP,
])
CITATIONS_MESSAGE = message("msg_cite", [
    {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {"query": "why is the sky blue"}},
    SEARCH_RESULT,
    {"type": "text", "text": "Rayleigh scattering.",
     "citations": [CITATION, {**CITATION, "cited_text": "Shorter wavelengths scatter more."}]},
    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
], "end_turn", {**USAGE_START, "output_tokens": 120, "server_tool_use": {"web_search_requests": 1}})

CASES = {
    "text": (TEXT_STREAM, TEXT_MESSAGE),
    "tool_use": (TOOL_STREAM, TOOL_MESSAGE),
    "thinking": (THINKING_STREAM, THINKING_MESSAGE),
    "parallel_tools": (PARALLEL_STREAM, PARALLEL_MESSAGE),
    "usage_overwritten": (USAGE_STREAM, USAGE_MESSAGE),
    "citations": (CITATIONS_STREAM, CITATIONS_MESSAGE),
}
# Messages that only need to survive the round trip (e.g. stored from a non-streaming JSON answer).
EXTRA_MESSAGES = {
    "empty_content": message("msg_empty", [], "end_turn", {"input_tokens": 5, "output_tokens": 0}),
    "unknown_fields": message("msg_x", [{"type": "text", "text": "x" * 1000, "citations": None},
                                        {"type": "future_block", "payload": {"a": [1, None]}}],
                              "refusal", {"input_tokens": 5, "output_tokens": 2, "inference_geo": "us"},
                              stop_details={"type": "refusal", "category": "cyber", "explanation": "no"},
                              diagnostics={"trace": "t"}),
}
ROUND_TRIP = {**{name: msg for name, (_, msg) in CASES.items()}, **EXTRA_MESSAGES}


# ------------------------------------------------------------------ helpers


@pytest.fixture
def sse(impl):
    return fast_module(impl, "sse")


def assemble(sse_mod, pieces) -> StreamAssembler:
    splitter = sse_mod.SseSplitter()
    asm = StreamAssembler()
    for piece in pieces:
        for block in splitter.feed(piece):
            asm.feed(*sse_mod.parse_event(block))
    return asm


def random_cuts(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 30)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


def events_of(data: bytes) -> list[tuple[str, dict]]:
    sse_mod = fast_module("pure", "sse")
    splitter = sse_mod.SseSplitter()
    blocks = splitter.feed(data)
    assert splitter.pending == b""
    out = []
    for block in blocks:
        name, payload = sse_mod.parse_event(block)
        out.append((name.decode(), orjson.loads(payload)))
    return out


def drop_none(value):
    """The SDK's models cannot tell an absent optional field from a null one; compare without either."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def sdk_dump(msg) -> dict:
    # warnings=False: the SDK builds a block type it does not know as its first union member (a text block), and
    # pydantic warns when serialising it; the values are kept all the same.
    return drop_none(msg.model_dump(mode="json", exclude_none=True, warnings=False))


def same_instant(a: str, b: str) -> bool:
    from datetime import datetime

    return datetime.fromisoformat(a.replace("Z", "+00:00")) == datetime.fromisoformat(b.replace("Z", "+00:00"))


def assert_sdk_equal(got: dict, want: dict) -> None:
    want = drop_none(want)
    # The SDK types container.expires_at as a datetime; it may print the same instant differently.
    if "container" in want:
        assert same_instant(got["container"].pop("expires_at"), want["container"]["expires_at"])
        want = {**want, "container": {k: v for k, v in want["container"].items() if k != "expires_at"}}
    assert got == want


# ------------------------------------------------------------------ (a) assembling upstream streams


@pytest.mark.parametrize("case", CASES)
def test_assemble_whole(sse, case):
    stream, expected = CASES[case]
    asm = assemble(sse, [stream])
    assert asm.complete and not asm.failed
    assert asm.message() == expected
    assert list(asm.message()) == list(expected)  # key order, as the API returns it
    for got, want in zip(asm.message()["content"], expected["content"]):
        assert list(got)[0] == "type" and list(got) == list(want)


@pytest.mark.parametrize("case", CASES)
def test_assemble_one_byte_at_a_time(sse, case):
    stream, expected = CASES[case]
    asm = assemble(sse, [stream[i:i + 1] for i in range(len(stream))])
    assert asm.complete
    assert asm.message() == expected


@pytest.mark.parametrize("case", CASES)
def test_assemble_random_cuts(sse, case):
    stream, expected = CASES[case]
    rng = random.Random(case)
    for _ in range(50):
        asm = assemble(sse, random_cuts(stream, rng))
        assert asm.complete
        assert asm.message() == expected


def test_crlf_stream(sse):
    asm = assemble(sse, [TOOL_STREAM.replace(b"\n", b"\r\n")])
    assert asm.complete and asm.message() == TOOL_MESSAGE


def test_events_without_event_lines_use_data_type(sse):
    stream = b"".join(b"data:" + block.split(b"data:", 1)[1] for block in TOOL_STREAM.split(b"event: ")[1:])
    asm = assemble(sse, [stream])
    assert asm.complete and asm.message() == TOOL_MESSAGE


def test_message_is_a_fresh_copy():
    asm = assemble(fast_module("pure", "sse"), [CITATIONS_STREAM])
    first = asm.message()
    first["content"][2]["citations"].append("junk")
    first["usage"]["output_tokens"] = -1
    assert asm.message() == CITATIONS_MESSAGE


def test_partial_message_while_streaming():
    asm = StreamAssembler()
    assert asm.message() == {} and not asm.complete and not asm.failed
    events = events_of(TEXT_STREAM)
    for name, data in events[:5]:
        asm.feed(name.encode(), orjson.dumps(data))
    assert asm.message()["content"] == [{"type": "text", "text": "Hello, wörld 👋\n\n"}]
    assert not asm.complete


# ------------------------------------------------------------------ (b) incomplete and broken streams


def cut_event(stream: bytes, name: bytes) -> bytes:
    return b"\n\n".join(b for b in stream.split(b"\n\n") if not b.startswith(b"event: " + name + b"\n")) + b"\n\n"


BROKEN = {
    "no_message_stop": (cut_event(TEXT_STREAM, b"message_stop"), False),
    "no_message_delta": (cut_event(TEXT_STREAM, b"message_delta"), False),
    "error_event": (TEXT_STREAM.replace(
        MESSAGE_STOP, ev("error", error={"type": "overloaded_error", "message": "Overloaded"})), True),
    "error_before_stop": (TEXT_STREAM.replace(
        stop(0), ev("error", error={"type": "overloaded_error", "message": "Overloaded"}) + stop(0)), True),
    "block_never_stopped": (TOOL_STREAM.replace(stop(1), b""), False),
    "only_message_start": (start("msg_x", USAGE_START), False),
    "empty": (b"", False),
    "garbage_data": (TEXT_STREAM.replace(delta(0, type="text_delta", text="bye."),
                                         b"event: content_block_delta\ndata: {not json\n\n"), True),
    "data_not_an_object": (TEXT_STREAM.replace(stop(0), b"event: content_block_stop\ndata: [0]\n\n"), True),
    "bad_tool_json": (TOOL_STREAM.replace(b'sius\\", \\"days', b'sius\\" \\"days'), True),
    "delta_before_start": (start("m", USAGE_START) + delta(0, type="text_delta", text="x") + TEXT_STREAM, True),
    "content_before_message_start": (block_start(0, {"type": "text", "text": ""}) + TEXT_STREAM, True),
    "two_message_starts": (start("m", USAGE_START) + TEXT_STREAM, True),
    "block_index_skipped": (TEXT_STREAM.replace(b'"index":0', b'"index":1'), True),
    "delta_after_stop": (TEXT_STREAM.replace(stop(0), stop(0) + delta(0, type="text_delta", text="!")), True),
    "stopped_twice": (TEXT_STREAM.replace(stop(0), stop(0) + stop(0)), True),
    "event_name_mismatch": (TEXT_STREAM.replace(b"event: content_block_stop", b"event: message_stop"), True),
    "text_not_a_string": (TEXT_STREAM.replace(b'"text":"bye."', b'"text":7'), True),
    "null_stop_reason": (TEXT_STREAM.replace(b'"stop_reason":"end_turn"', b'"stop_reason":null'), False),
    "event_after_message_stop": (TEXT_STREAM + block_start(1, {"type": "text", "text": ""}), True),
    "truncated_mid_event": (TEXT_STREAM[:-10], False),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_streams_are_not_complete(sse, case):
    stream, failed = BROKEN[case]
    for pieces in ([stream], [stream[i:i + 1] for i in range(len(stream))]):
        asm = assemble(sse, pieces)
        assert not asm.complete
        assert asm.failed is failed
        asm.message()  # never raises


@pytest.mark.parametrize("event, data", [
    (b"message_start", b""), (b"message_start", b"null"), (b"message_start", b'{"type":"message_start"}'),
    (b"message_start", b'{"type":"message_start","message":{"usage":[]}}'), (b"message_delta", b"\xff\xfe"),
    (b"", b"{}"), (b"", b'{"type":"error"}'), (b"content_block_delta", b'{"type":"content_block_delta"}'),
])
def test_garbage_never_raises(event, data):
    asm = StreamAssembler()
    asm.feed(event, data)
    asm.feed(*fast_module("pure", "sse").parse_event(b"event: message_stop\ndata: {\"type\":\"message_stop\"}"))
    assert not asm.complete
    assert isinstance(asm.message(), dict)


def test_random_garbage_never_raises():
    rng = random.Random(3)
    blocks = TOOL_STREAM.split(b"\n\n")
    for _ in range(300):
        noisy = bytearray(b"\n\n".join(blocks))
        for _ in range(rng.randint(1, 5)):
            noisy[rng.randrange(len(noisy))] = rng.randrange(256)
        asm = assemble(fast_module("pure", "sse"), [bytes(noisy)])
        asm.message()


def test_unknown_events_and_pings_are_ignored(sse):
    stream = TEXT_STREAM.replace(PING, PING + b"event: brand_new\ndata: not even json\n\n" + PING)
    asm = assemble(sse, [stream])
    assert asm.complete and asm.message() == TEXT_MESSAGE


# ------------------------------------------------------------------ (c) round trip through synthesize_sse


def check_event_rules(data: bytes) -> list[tuple[str, dict]]:
    """SPEC §4 on the synthesized bytes; returns the parsed events."""
    assert data.endswith(b"\n\n")
    for block in data[:-2].split(b"\n\n"):
        lines = block.split(b"\n")
        assert len(lines) == 2 and lines[0].startswith(b"event: ") and lines[1].startswith(b"data: ")
    events = events_of(data)
    for name, payload in events:
        assert payload["type"] == name and list(payload)[0] == "type"
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names.count("message_start") == 1
    assert names[-1] == "message_stop" and names.count("message_stop") == 1
    assert names.count("message_delta") == 1 and names[-2] == "message_delta"
    assert events[-2][1]["delta"]["stop_reason"] is not None
    started, stopped = [], []
    for name, payload in events:
        if name == "content_block_start":
            assert payload["index"] == len(started) and not stopped[len(started):]
            started.append(payload["content_block"])
        elif name == "content_block_delta":
            assert payload["index"] < len(started) and payload["index"] not in stopped
        elif name == "content_block_stop":
            assert payload["index"] < len(started) and payload["index"] not in stopped
            stopped.append(payload["index"])
    assert sorted(stopped) == list(range(len(started)))
    for index, block in enumerate(started):
        deltas = [p["delta"] for n, p in events if n == "content_block_delta" and p["index"] == index]
        if block["type"] in ("tool_use", "server_tool_use"):
            assert block["input"] == {}  # Claude Code builds tool input only from the deltas
            assert deltas and all(d["type"] == "input_json_delta" for d in deltas)
        if block["type"] == "thinking":
            assert [d["type"] for d in deltas][-1] == "signature_delta"
            assert [d["type"] for d in deltas].count("signature_delta") == 1
    return events


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_synthesized_stream_follows_the_rules(name):
    events = check_event_rules(synthesize_sse(ROUND_TRIP[name]))
    start_message = events[0][1]["message"]
    assert start_message["content"] == [] and start_message["stop_reason"] is None
    assert start_message["stop_sequence"] is None


def test_long_text_and_tool_input_are_split():
    events = events_of(synthesize_sse(ROUND_TRIP["unknown_fields"]))
    text = [p["delta"]["text"] for n, p in events if n == "content_block_delta" and p["index"] == 0]
    assert len(text) == 3 and "".join(text) == "x" * 1000
    events = events_of(synthesize_sse(TOOL_MESSAGE))
    pieces = [p["delta"]["partial_json"] for n, p in events if n == "content_block_delta" and p["index"] == 1]
    assert len(pieces) >= 3 and pieces[0] == ""
    assert orjson.loads("".join(pieces)) == TOOL_MESSAGE["content"][1]["input"]


def test_text_is_split_on_character_boundaries():
    msg = message("m", [{"type": "text", "text": "👋é漢" * 7}], "end_turn", {"input_tokens": 1, "output_tokens": 1})
    data = synthesize_sse(msg)
    data.decode("utf-8")  # every piece is whole characters, so the stream is valid UTF-8
    assert assemble(fast_module("pure", "sse"), [data]).message() == msg


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_round_trip_through_assembler(sse, name):
    msg = ROUND_TRIP[name]
    data = synthesize_sse(msg)
    for pieces in ([data], [data[i:i + 1] for i in range(len(data))]):
        asm = assemble(sse, pieces)
        assert asm.complete
        assert asm.message() == msg
        assert list(asm.message()) == list(msg)


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_round_trip_through_sdk_accumulator(name):
    from anthropic.lib.streaming._messages import accumulate_event

    msg = ROUND_TRIP[name]
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for _, payload in events_of(synthesize_sse(msg)):
        snapshot = accumulate_event(event=payload, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    assert_sdk_equal(sdk_dump(snapshot), msg)


def test_json_body_matches_the_message():
    for msg in ROUND_TRIP.values():
        assert orjson.loads(message_bytes(msg)) == msg


# The SDK end to end: its SSE decoder, event-name checks and accumulator, over real HTTP on loopback.


class _SseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    payload = b""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(self.server.payload)))  # type: ignore[attr-defined]
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(self.server.payload)  # type: ignore[attr-defined]

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def sse_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SseHandler)
    server.daemon_threads = True
    server.payload = b""  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def sdk_client(sse_server, monkeypatch):
    for key in list(os.environ):
        if key.startswith("ANTHROPIC_"):
            monkeypatch.delenv(key)
    client = anthropic.Anthropic(api_key="x", base_url=f"http://127.0.0.1:{sse_server.server_address[1]}",
                                 max_retries=0)
    yield client
    client.close()


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_round_trip_through_sdk_stream(sse_server, sdk_client, name):
    msg = ROUND_TRIP[name]
    sse_server.payload = synthesize_sse(msg)
    with sdk_client.messages.stream(model=MODEL, max_tokens=64,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_message()
    assert_sdk_equal(sdk_dump(final), msg)


# ------------------------------------------------------------------ (d) last_user_preview


def body(*messages, **extra) -> bytes:
    return orjson.dumps({"model": MODEL, "max_tokens": 10, "messages": list(messages), **extra})


@pytest.mark.parametrize("request_body, limit, expected", [
    (body({"role": "user", "content": "What is  the\n\tweather?"}), 80, "What is the weather?"),
    (body({"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
          {"role": "user", "content": "second"}), 80, "second"),
    (body({"role": "user", "content": [{"type": "text", "text": "Look at"},
                                       {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                                       {"type": "text", "text": " this\nimage "}]}), 80, "Look at this image"),
    (body({"role": "user", "content": "a" * 200}), 80, "a" * 80),
    (body({"role": "user", "content": "héllo wörld 👋 again"}), 13, "héllo wörld 👋"),
    (body({"role": "user", "content": "one two three"}), 4, "one"),
    # an agent loop: the last user turn only carries tool results, so the prompt before it is shown
    (body({"role": "user", "content": "run ls"},
          {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "bash", "input": {}}]},
          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "a.txt"}]}),
     80, "run ls"),
    (body({"role": "assistant", "content": "prefill only"}), 80, ""),
    (body(), 80, ""),
    (body({"role": "user", "content": "   "}), 80, ""),
    (body({"role": "user", "content": None}, "junk", {"role": "user", "content": [1, {"type": "text"}]}), 80, ""),
    (b'{"messages": "nope"}', 80, ""),
    (b"[1, 2]", 80, ""),
    (b"not json", 80, ""),
    (b"", 80, ""),
])
def test_last_user_preview(request_body, limit, expected):
    assert last_user_preview(request_body, limit) == expected


def test_last_user_preview_default_limit():
    assert last_user_preview(body({"role": "user", "content": "word " * 100})) == ("word " * 16).strip()
