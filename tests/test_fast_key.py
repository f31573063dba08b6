"""The cache key, compiled and pure: golden keys over real-shaped requests, the canonical-form rules, parity."""

from __future__ import annotations

import json
import random

import pytest

from cco._fast import key_py
from tests.conftest import fast_module

CONTEXT = b"claude-sonnet-4-5\x00anthropic\x00/v1/messages\x00global\x002023-06-01\x00"


def dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def claude_code_request(turns: int = 6, stream: bool = True, session: str = "s-1") -> dict:
    """Synthetic, Claude-Code-shaped: fields in its order, system blocks, tools, thinking, tool round trips."""
    tools = [{"name": f"Tool{i}", "description": f"Does thing {i}.\nUse it \"carefully\" — ünïcode.",
              "input_schema": {"type": "object", "properties": {"command": {"type": "string"},
                                                                "timeout": {"type": "number", "minimum": 0}},
                               "required": ["command"], "additionalProperties": False}} for i in range(12)]
    messages = [{"role": "user", "content": [{"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                                             {"type": "text", "text": "fix the bug",
                                              "cache_control": {"type": "ephemeral"}}]}]
    for t in range(turns):
        messages.append({"role": "assistant", "content": [
            {"type": "thinking", "thinking": f"step {t}: look at\tthe code", "signature": "EuYB" + "x" * 40},
            {"type": "text", "text": f"Running check {t}."},
            {"type": "tool_use", "id": f"toolu_{t:04d}", "name": "Tool1", "input": {"command": f"pytest -k t{t}"}}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{t:04d}", "content": f"def f():\n    return {t}\n",
             "is_error": t % 2 == 0}]})
    body = {"model": "claude-sonnet-4-5", "messages": messages,
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
                       {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "tools": tools,
            "metadata": {"user_id": json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": session})},
            "max_tokens": 32000, "thinking": {"budget_tokens": 31999, "type": "enabled"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}}
    if stream:
        body["stream"] = True
    return body


CORPUS = {
    "small": dumps({"model": "claude-haiku-4-5", "max_tokens": 256, "system": "Be brief.",
                    "messages": [{"role": "user", "content": "hi"}]}),
    "claude_code": dumps(claude_code_request()),
    "claude_code_long": dumps(claude_code_request(turns=40)),
    "count_tokens": dumps({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "foo"}],
                           "tools": claude_code_request()["tools"]}),
    "pretty_printed": json.dumps(claude_code_request(turns=2), indent=2).encode(),
    "escapes": b'{"model":"m","messages":[{"role":"user","content":"a\\"b\\\\c\\u00e9\\ud83d\\ude00\\n"}]}',
}

# Pinned: a change here changes every key users have cached (and must be deliberate).
GOLDEN = {
    "claude_code": "207143dc3e585d1ceac455ae76405356",
    "claude_code_long": "973064a03523566e20c6b55386771190",
    "count_tokens": "ac134f1161901992b48c1575984b2cca",
    "escapes": "07795ed8236eb351e59282d83b430969",
    "pretty_printed": "c225bcb034fe92ed549091327e46a8e5",
    "small": "a21a77e4e6f8d74edb5049839fb51677",
}


@pytest.fixture
def key(impl):
    return fast_module(impl, "key")


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_golden_keys(key, name):
    assert key.scan_request(CORPUS[name]).key(CONTEXT).hex() == GOLDEN[name]


def reordered(body: dict) -> bytes:
    items = list(body.items())
    random.Random(3).shuffle(items)
    return dumps(dict(items))


def test_top_level_order_stream_and_metadata_do_not_matter(key):
    base = key.scan_request(dumps(claude_code_request())).key(CONTEXT)
    assert key.scan_request(reordered(claude_code_request())).key(CONTEXT) == base
    assert key.scan_request(dumps(claude_code_request(stream=False))).key(CONTEXT) == base
    assert key.scan_request(dumps(claude_code_request(session="other"))).key(CONTEXT) == base
    spaced = dumps(claude_code_request()).replace(b'{"model":', b' {  "model" :', 1) + b" \n"
    assert key.scan_request(spaced).key(CONTEXT) == base


@pytest.mark.parametrize("change", [
    lambda b: b.update(temperature=0.5),
    lambda b: b.update(max_tokens=31999),
    lambda b: b.update(unknown_field={"x": 1}),
    lambda b: b["messages"][0]["content"][1].update(text="fix the bug!"),
    lambda b: b["messages"][0]["content"][1].pop("cache_control"),
    lambda b: b["tools"].reverse(),
    lambda b: b.pop("thinking"),
])
def test_any_other_difference_is_a_different_key(key, change):
    body = claude_code_request()
    base = key.scan_request(dumps(body)).key(CONTEXT)
    change(body)
    assert key.scan_request(dumps(body)).key(CONTEXT) != base


def test_nested_whitespace_and_context_are_part_of_the_key(key):
    a = key.scan_request(b'{"model":"m","messages":[1,2]}')
    b = key.scan_request(b'{"model":"m","messages":[1, 2]}')
    assert a.key(CONTEXT) != b.key(CONTEXT)
    assert a.key(CONTEXT) != a.key(CONTEXT.replace(b"global", b"project:x"))
    assert a.key(b"ab") != a.key(b"a\x00b")


def test_members_and_values(key):
    scan = key.scan_request(b' {"model" : "claude-x", "stream":true, "n":-1.5e3, "a\\u0062":null, "model":"y"} ')
    assert scan.value(b"model") == b'"y"' and scan.value(b"stream") == b"true" and scan.value(b"n") == b"-1.5e3"
    assert scan.value(b"ab") == b"null" and scan.value(b"nope") is None
    assert sorted(scan.names()) == [b"ab", b"model", b"n", b"stream"]


INVALID = [b"", b"   ", b"[]", b'"s"', b"{", b'{"a"}', b'{"a":}', b'{"a":1,}', b'{"a":1 "b":2}', b'{"a":tru}',
           b'{"a":01}', b'{"a":1.}', b'{"a":-}', b'{"a":1e}', b'{"a":"\x01"}', b'{"a":"\\x"}', b'{"a":"\\u12"}',
           b'{"a":"\\udc00"}', b'{"a":"\\ud800x"}', b'{"a":"\\ud800\\u0041"}', b'{"a":[1 2]}', b'{"a":[1,]}',
           b'{"a":{"b" 1}}', b'{"a":{1:2}}', b'{"a":1} x', b'{"a":"unterminated}', b'{"a":NaN}', b"{'a':1}",
           b'{"a":[}', b'{"\xff":1}']


@pytest.mark.parametrize("body", INVALID)
def test_invalid_json_is_rejected_by_both(key, body):
    with pytest.raises(key_py.JsonSyntaxError) as info:
        key.scan_request(body)
    assert "JSON" in info.value.message or "object" in info.value.message


def test_error_positions(key):
    with pytest.raises(key_py.JsonSyntaxError) as info:
        key.scan_request(b'{"model": "m", "max_tokens": 1O}')
    assert info.value.position == 30 and "(byte 30)" in info.value.message
    with pytest.raises(key_py.JsonSyntaxError) as info:
        key.scan_request(b'{"model": "m", "max_tokens": ')
    assert info.value.position == 29


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([True, False, None])
    if kind == 1:
        return rng.choice([0, -1, 17, 3.25, -0.5e-7, 1e300, 12345678901234567890])
    if kind in (2, 3, 4):
        return "".join(rng.choice(['a', 'é', '"', '\\', '\n', '\t', '\x01', '😀', ' ', '/', '\u2028'])
                       for _ in range(rng.randrange(12)))
    if kind in (5, 6):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{rng.randrange(6)}": random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_twins_agree_on_random_documents():
    c, py = fast_module("compiled", "key"), fast_module("pure", "key")
    rng = random.Random(5)
    for _ in range(2000):
        doc = {f"k{rng.randrange(8)}": random_json(rng) for _ in range(rng.randrange(6))}
        text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
        body = text.encode()
        assert c.scan_request(body).key(CONTEXT) == py.scan_request(body).key(CONTEXT), body
        # a random corruption is accepted or rejected alike
        if body:
            pos = rng.randrange(len(body))
            broken = body[:pos] + bytes([rng.choice(b'{}[]":,\\x0 ')]) + body[pos + 1:]
            outcomes = []
            for mod in (c, py):
                try:
                    outcomes.append(mod.scan_request(broken).key(CONTEXT))
                except key_py.JsonSyntaxError:
                    outcomes.append("invalid")
            assert outcomes[0] == outcomes[1], broken
