"""The cache key, compiled and pure: golden keys over real-shaped requests, the canonical-form rules, parity."""

from __future__ import annotations

import itertools
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


# The compiled twin finds string ends two ways, the map built in one or two encodings (key_c.scan_variants: "map",
# "map-sse2" where the CPU has AVX, "skip"): each runs every test here.
KEY_IMPLS = [f"compiled:{variant}" for variant in fast_module("compiled", "key").scan_variants()] + ["pure"]


@pytest.fixture(params=KEY_IMPLS)
def key(request):
    impl, _, variant = request.param.partition(":")
    module = fast_module(impl, "key")
    if not variant:
        yield module
        return
    module.use_scan_variant(variant)
    try:
        yield module
    finally:
        module.use_scan_variant("map")


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


# --- the compiled plain-body path (key_c.scan_members): string-end map and per-string skipping ---------------------


def outcome(module, body: bytes):
    try:
        return module.scan_request(body).key(CONTEXT)
    except key_py.JsonSyntaxError:
        return "invalid"


def compiled_outcomes(body: bytes) -> dict:
    """Per compiled variant: the key (or "invalid") and what the plain-body path made of the body."""
    c = fast_module("compiled", "key")
    found = {}
    try:
        for variant in c.scan_variants():
            c.use_scan_variant(variant)
            found[variant] = (outcome(c, body), c.plain_member_count(body))
    finally:
        c.use_scan_variant("map")
    return found


def test_the_keys_xxh3_equals_the_xxhash_package_at_every_length_and_split():
    """The compiled key hashes with its own XXH3-128 (xxh3.h), fed piece by piece. Against the xxhash package, for
    every accumulation kind this CPU runs: every length up to 2,100 bytes (the short inputs the package hashes, the
    240/241 edge, stripes, the 1,024-byte blocks and their scrambles) and long ones, each split into pieces at
    random places (pieces that end inside the kept bytes, top them up, or start a stripe that reaches back)."""
    import xxhash

    c = fast_module("compiled", "key")
    rng = random.Random(5)
    lengths = list(range(0, 2100)) + [4095, 4096, 4097, 16_383, 16_384, 16_385, 65_537, 99_000, 250_001]
    try:
        for kind in c.xxh3_kinds():
            c.use_xxh3_kind(kind)
            for length in lengths:
                data = rng.randbytes(length)
                expected = xxhash.xxh3_128_digest(data)
                assert c.xxh3_128_of_pieces([data]) == expected, (kind, length)
                cuts = sorted(rng.sample(range(length + 1), min(length + 1, rng.choice([1, 2, 5, 12]))))
                pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [length])]
                assert c.xxh3_128_of_pieces(pieces) == expected, (kind, [len(p) for p in pieces])
            for length in (241, 300, 1100, 5000):  # one byte at a time, and pieces of every size up to 70
                data = rng.randbytes(length)
                expected = xxhash.xxh3_128_digest(data)
                assert c.xxh3_128_of_pieces([bytes([x]) for x in data]) == expected, (kind, length)
                for size in range(1, 71):
                    pieces = [data[at:at + size] for at in range(0, length, size)]
                    assert c.xxh3_128_of_pieces(pieces) == expected, (kind, length, size)
    finally:
        c.use_xxh3_kind(c.xxh3_kinds()[0])


def test_keys_agree_across_hash_kinds():
    """The golden corpus keys the same whichever way the compiled hash accumulates (the VEX, SSE2, portable C)."""
    c = fast_module("compiled", "key")
    try:
        for kind in c.xxh3_kinds():
            c.use_xxh3_kind(kind)
            for name, body in CORPUS.items():
                assert c.scan_request(body).key(CONTEXT).hex() == GOLDEN[name], (kind, name)
                assert c.plain_key(body, CONTEXT) in (None, bytes.fromhex(GOLDEN[name])), (kind, name)
    finally:
        c.use_xxh3_kind(c.xxh3_kinds()[0])


def test_canonical_pieces_of_every_size_key_like_the_pure_twin():
    """The compiled key feeds the canonical form to its hash piece by piece: length prefixes, names and values of
    any size (the old 4 KiB and 8 KiB edges of an earlier buffered design kept as cases), canonical forms of 240
    bytes or fewer (hashed by the xxhash package) and just over, many small members, a long context. Each gives
    the pure twin's key, on both the general path (RequestScan.key) and the hit lane's (plain_key)."""
    c = fast_module("compiled", "key")
    bodies = []
    for size in (0, 1, 60, 63, 64, 65, 120, 150, 200, 4085, 4096, 4097, 8179, 8192, 12_000, 70_000):
        bodies.append(dumps({"model": "m", "messages": "x" * size, "max_tokens": 1}))
        bodies.append(dumps({"a" * 7: "y" * size, "z": "x" * (size // 2), "model": "m"}))
    for count in (50, 63):  # the buffer fills with small members and is flushed midway
        bodies.append(dumps({f"field{i:02d}": "v" * (150 + i) for i in range(count)}))
        bodies.append(dumps({**{f"field{i:02d}": "v" * (150 + i) for i in range(count - 1)}, "big": "w" * 5000}))
    for body in bodies:
        for context in (CONTEXT, b"c" * 8187, b"c" * 9000):
            expected = key_py.scan_request(body).key(context)
            assert c.scan_request(body).key(context) == expected
            assert c.plain_key(body, context) == expected


ESCAPES = [b'\\"', b"\\\\", b'\\\\\\"', b"\\u0041", b"\\ud83d\\ude00", b"\\/", b"\\t",
           # invalid ones
           b"\\ud83d", b"\\udc00", b"\\ud83dx", b"\\u00", b"\\x", b"\x01", b'"', b"\\\\\\"]


@pytest.mark.parametrize("escape", ESCAPES)
def test_escapes_at_every_offset_around_block_edges(escape):
    """The map is built 64 bytes at a time: an escape (or a stray quote, or a control byte) is placed across every
    block edge, in a long string and in a nested one, and every variant must judge and key the body as the pure
    twin does."""
    for before in range(40, 140):
        for tail in (b"", b"zzz", b"z" * 70):
            body = b'{"a":"' + b"y" * before + escape + tail + b'","b":[1,{"c":"' + escape + b'"}],"d":true}'
            expected = outcome(key_py, body)
            found = compiled_outcomes(body)
            assert {result for result, _ in found.values()} == {expected}, body
            assert (found["map"][1] >= 0) == (expected != "invalid"), body
            assert found["map"] == found.get("map-sse2", found["map"]), body


# UTF-8 sequences: every length and the edges of each range RFC 3629 allows; then each way of not being UTF-8
UTF8_VALID = ["é".encode(), "—".encode(), "😀".encode(), b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80",
              b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbf", b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf"]
UTF8_INVALID = [b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xed\xa0\x80",
                b"\xed\xbf\xbf", b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
                b"\xff", b"\xfe", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xe2\x82A", b"\xc3\xa9\xa9"]


def utf8_error(module, body: bytes):
    try:
        module.scan_request(body)
    except key_py.JsonSyntaxError as exc:
        return exc.message, exc.position
    return None


@pytest.mark.parametrize("sequence", UTF8_VALID + UTF8_INVALID)
def test_utf8_is_checked_everywhere_and_across_block_edges(sequence):
    """JSON text is UTF-8 (RFC 8259 §8.1): a body that is not is a 400, wherever the bad sequence is (a nested
    string, a long one, the last bytes of the body). The check runs 64 bytes at a time (inside the string-end
    map's pass, or on its own), so each sequence is placed across every block edge; every way of scanning and of
    checking (SSSE3 table lookups, SSE2 compares) must judge it like the pure twin and name the same byte."""
    valid = sequence in UTF8_VALID
    c = fast_module("compiled", "key")
    for before in range(50, 135):
        for body in (b'{"a":"' + b"y" * before + sequence + b'","b":[1,{"c":"' + sequence + b'"}],"d":true}',
                     b'{"a":[{"b":"' + b"y" * before + b'"},"' + sequence + b'"]}',
                     b'{"model":"m","a":"' + b"y" * before + sequence):  # cut short inside the string
            expected = utf8_error(key_py, body)
            try:
                for variant, check in itertools.product(c.scan_variants(), c.utf8_variants()):
                    c.use_scan_variant(variant)
                    c.use_utf8_variant(check)
                    found = utf8_error(c, body)
                    if body.endswith(b"}"):
                        assert found == expected, (variant, check, body)
                        assert c.string_map_accepts(body) == (expected is None), (variant, check, body)
                    else:  # cut short: both reject it, each in its own words for a body that ends early
                        assert found is not None and expected is not None, (variant, check, body)
                    assert (c.plain_member_count(body) >= 0) == (expected is None), (variant, check, body)
            finally:
                c.use_scan_variant("map")
                c.use_utf8_variant(c.utf8_variants()[0])
            if body.endswith(b"}"):
                assert (expected is None) == valid, body
                if not valid:
                    with pytest.raises(UnicodeDecodeError) as bad:
                        sequence.decode("utf-8")
                    at = body.index(sequence) + bad.value.start
                    assert expected == (f"JSON is malformed: invalid UTF-8 (byte {at})", at), body


@pytest.mark.parametrize("text", ["naïve café — 😀 ", "日本語のテキスト、中文文本。", "한국어 텍스트 ", "हिन्दी पाठ ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 "])
def test_valid_utf8_keeps_the_string_end_map(text):
    """Non-ASCII text is common in requests (two-, three- and four-byte sequences: Latin, CJK, Hangul near the
    surrogate range, Devanagari after E0, mathematical letters): it is checked inside the map's pass, not by
    refusing the map; cut short anywhere, it is refused."""
    body = dumps({"model": "m", "messages": [{"role": "user", "content": text * 40}]})
    c = fast_module("compiled", "key")
    try:
        for check in c.utf8_variants():
            c.use_utf8_variant(check)
            assert c.string_map_accepts(body) and c.plain_member_count(body) == 2
            assert c.scan_request(body).key(CONTEXT) == key_py.scan_request(body).key(CONTEXT)
            encoded = text.encode()
            start = body.index(encoded)
            for cut in range(1, len(encoded)):
                if encoded[cut] & 0xC0 == 0x80:  # inside a sequence: drop its tail
                    end = cut + 1
                    while end < len(encoded) and encoded[end] & 0xC0 == 0x80:
                        end += 1
                    broken = body[:start + cut] + body[start + end:]
                    assert not c.string_map_accepts(broken), (check, broken[start:start + 20])
                    assert utf8_error(c, broken) == utf8_error(key_py, broken) is not None
    finally:
        c.use_utf8_variant(c.utf8_variants()[0])


def test_a_control_byte_or_bad_escape_anywhere_leaves_the_map_to_skipping():
    """The map is refused for the whole body; the skipping variant then judges it (valid: whitespace between
    tokens; invalid: a raw control byte inside a string)."""
    pretty = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 200}]}, indent=2).encode()
    assert b"\n" in pretty
    found = compiled_outcomes(pretty)
    assert set(found.values()) == {(outcome(key_py, pretty), 2)}
    broken = b'{"model":"m","messages":[{"content":"' + b"x" * 100 + b'\x07"}]}'
    assert set(compiled_outcomes(broken).values()) == {("invalid", -1)}


def map_accepts(body: bytes) -> set[bool]:
    """string_map_accepts under each build of the map (AVX and baseline where the CPU has both)."""
    c = fast_module("compiled", "key")
    try:
        found = set()
        for variant in c.scan_variants():
            if variant != "skip":
                c.use_scan_variant(variant)
                found.add(c.string_map_accepts(body))
        return found
    finally:
        c.use_scan_variant("map")


@pytest.mark.parametrize("tail", [b"\n", b"\r\n", b" \t\r\n", b"\n" * 70, b" " * 63 + b"\n", b"\t" * 130])
def test_trailing_whitespace_keeps_the_string_end_map(tail):
    """A body written with a final newline (or any run of JSON whitespace after its value) keeps the map: its
    control bytes are in no string. The run is placed across every block edge. A raw control byte anywhere before
    it still leaves the body to the other variant, which rejects it; a last string that never ends, the run
    inside it, is rejected by the walk over the map (it finds no closing quote)."""
    base = dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    for pad in range(0, 140):
        body = base[:-4] + b"y" * pad + base[-4:]  # the value grows inside its last string
        wide = body + tail
        assert map_accepts(wide) == {True}, (pad, wide)
        found = compiled_outcomes(wide)
        assert set(found.values()) == {(outcome(key_py, wide), 2)} and outcome(key_py, wide) == outcome(key_py, body)
        for bad in (body[:-4] + b"\x07" + body[-4:] + tail,  # a control byte in the last string
                    body[:-4] + tail + body[-4:]):  # the run inside the string, before its quote
            assert map_accepts(bad) == {False}, (pad, bad)
            assert set(compiled_outcomes(bad).values()) == {("invalid", -1)} and outcome(key_py, bad) == "invalid"
        never_ends = body[:-4] + tail  # the map takes it (its run holds no quote); the walk finds no string end
        assert set(compiled_outcomes(never_ends).values()) == {("invalid", -1)}
        assert outcome(key_py, never_ends) == "invalid"


def test_a_body_larger_than_the_stack_map():
    """Past 128 KiB the map lives on the heap."""
    body = dumps(claude_code_request(turns=1500))
    assert len(body) > 300_000
    found = compiled_outcomes(body)
    assert {result for result, _ in found.values()} == {outcome(key_py, body)} and found["map"][1] > 0


def test_unterminated_strings_and_cut_bodies_at_every_length():
    """Every prefix of a request is rejected by every variant (a string end past the body is no end)."""
    body = dumps({"model": "m", "messages": [{"role": "user", "content": 'a\\"b' + "c" * 90 + '\\u00e9'}],
                  "max_tokens": 12, "stream": False})
    for cut in range(len(body)):
        assert set(compiled_outcomes(body[:cut]).values()) == {("invalid", -1)}, body[:cut]


def test_variants_agree_with_the_pure_twin_on_random_long_strings():
    """Random documents with strings of lengths around the 16/32/64-byte steps, escapes and control bytes, shifted
    against the block grid, and random corruptions of them."""
    rng = random.Random(11)
    alphabet = ["a", "é", '"', "\\", "\n", "\t", "\x01", "😀", " ", "/", "\u2028", "\x1f", "\x7f"]

    def text():
        size = rng.choice([0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 130, 700])
        return "".join(rng.choice(alphabet) if rng.random() < 0.2 else "b" for _ in range(size))

    def value(depth=0):
        kind = rng.randrange(7 if depth < 4 else 4)
        if kind == 0:
            return rng.choice([True, False, None, 0, -1.5e-3, 12345678901234567890])
        if kind in (1, 2, 3):
            return text()
        if kind in (4, 5):
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {text()[:8]: value(depth + 1) for _ in range(rng.randrange(4))}

    for _ in range(400):
        doc = {f"k{rng.randrange(8)}": value() for _ in range(rng.randrange(1, 6))}
        body = b" " * rng.randrange(64) + json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()
        for candidate in [body] + [body[:at] + bytes([rng.choice(b'{}[]":,\\u0 \x01')]) + body[at + 1:]
                                   for at in rng.sample(range(len(body)), 3)]:
            expected = outcome(key_py, candidate)
            found = compiled_outcomes(candidate)
            assert {result for result, _ in found.values()} == {expected}, candidate
            assert found["map"] == found.get("map-sse2", found["map"]), candidate
            if expected == "invalid":
                assert {count for _, count in found.values()} == {-1}, candidate


def test_the_twins_share_the_nesting_limit_exactly():
    """The pure twin's msgspec stops where Python's recursion limit does (about 1,000 deep, less in a deep call
    stack); it then judges the body by the compiled scanner's rule: at most 1,024 open containers below the top
    level, the first one past it named, unless the JSON breaks before it."""
    import sys

    c = fast_module("compiled", "key")
    limit = sys.getrecursionlimit()
    bodies = [b'{"model":"m","x":' + b"[" * d + b"]" * d + b"}" for d in (900, 990, 1000, 1023, 1024, 1025, 1100, 5000)]
    bodies += [b'{"x":[{"y":' * 500 + b"1" + b"}]" * 500 + b"}",                         # 1,000 deep, objects
               b'{"x":[{"y":' * 513 + b"1" + b"}]" * 513 + b"}",                         # 1,026 deep
               b'{"x":' + b"[" * 1000 + b"1 2" + b"]" * 1000 + b"}",                     # breaks first
               b'{"x":' + b"[" * 1030 + b"1 2" + b"]" * 1030 + b"}",                     # too deep first
               b'{"x":[1 2,' + b"[" * 1100 + b"]" * 1100 + b"]}",                        # breaks early
               b'{"x":"[[[' + b'\\\"' + b'",' + b'"y":' + b"[" * 1024 + b"]" * 1024 + b"}"]  # brackets in strings
    for body in bodies:
        expected = outcome_and_message(c, body)
        assert outcome_and_message(key_py, body) == expected, body[:40]
    # a string never closed, brackets after or inside it, deep enough for the recursion limit: the string is the
    # error, at the byte the body ends (each twin in its own words for a body that ends early), unless a container
    # past the limit comes before it
    for body, first in ((b'{"x":' + b"[" * 1000 + b'"abc' + b"[" * 100, "unterminated"),
                        (b'{"x":' + b"[" * 1020 + b'"a[[[[[[[[[[bc', "unterminated"),
                        (b'{"x":' + b"[" * 1000 + b'"a\\"b[[' + b"[" * 100, "unterminated"),
                        (b'{"x":' + b"[" * 1030 + b'"abc[[', "nesting too deep")):
        compiled, pure = outcome_and_message(c, body), outcome_and_message(key_py, body)
        assert first in compiled[0] and compiled[1] == pure[1], (compiled, pure)
        assert ("nesting too deep" in pure[0]) == (first == "nesting too deep"), pure
    assert sys.getrecursionlimit() == limit


def outcome_and_message(module, body: bytes):
    try:
        return module.scan_request(body).key(CONTEXT)
    except key_py.JsonSyntaxError as exc:
        return exc.message, exc.position


@pytest.mark.parametrize("variant", fast_module("compiled", "key").scan_variants())
def test_nesting_limit_of_the_compiled_scanner(variant):
    """At most 1,024 open containers below the top level, an empty one included (either way the same)."""
    c = fast_module("compiled", "key")
    c.use_scan_variant(variant)
    try:
        assert c.plain_member_count(b'{"a":' + b"[" * 1024 + b"]" * 1024 + b"}") == 1
        for body in (b'{"a":' + b"[" * 1024 + b"[]" + b"]" * 1024 + b"}",
                     b'{"a":' + b"[" * 1025 + b"]" * 1025 + b"}"):
            assert c.plain_member_count(body) == -1
            with pytest.raises(key_py.JsonSyntaxError, match=r"nesting too deep \(byte 1029\)"):
                c.scan_request(body)
    finally:
        c.use_scan_variant("map")
