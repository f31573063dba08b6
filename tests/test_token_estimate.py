"""The count_tokens estimate: every block kind counts, images by their real size, monotonic under any addition, and
plausible on a Claude-Code-sized request."""

from __future__ import annotations

import base64
import copy
import random
import struct
import zlib

import orjson
import pytest

from cco.providers.translate.estimate import estimate_tokens, image_size, image_tokens, pdf_pages, text_tokens


# Tiny real images, built here.

def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x00" * width for _ in range(height))  # filter byte + one gray byte per pixel
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b";"


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    exif = b"\xff\xe1" + struct.pack(">H", 2 + 3000) + b"\x00" * 3000  # a long segment before the frame header
    sof = b"\xff\xc2" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + exif + sof + b"\xff\xd9"


def webp(width: int, height: int, kind: str) -> bytes:
    if kind == "VP8X":
        payload = b"\x00" * 4 + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    elif kind == "VP8L":
        bits = (width - 1) | ((height - 1) << 14)
        payload = b"\x2f" + bits.to_bytes(4, "little")
    else:
        payload = b"\x00\x00\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    chunk = kind.encode().ljust(4) + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_block(data: bytes, media_type: str = "image/png") -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": b64(data)}}


def pdf(pages: int) -> bytes:
    objects = [b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj",
               b"2 0 obj << /Type /Pages /Count %d >> endobj" % pages]
    objects += [b"%d 0 obj << /Type /Page /Parent 2 0 R >> endobj" % (3 + i) for i in range(pages)]
    return b"%PDF-1.4\n" + b"\n".join(objects) + b"\n%%EOF\n"


BASE = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]}

BLOCKS = {
    "text": {"type": "text", "text": "Please look at the attached files and tell me what changed."},
    "image-base64": image_block(png(64, 48)),
    "image-url": {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
    "image-file": {"type": "image", "source": {"type": "file", "file_id": "file_abc"}},
    "tool_use": {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls -la /project"}},
    "tool_result-text": {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt\nb.txt\n"},
    "tool_result-blocks": {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
        {"type": "text", "text": "screenshot:"}, image_block(png(300, 200))]},
    "tool_result-empty": {"type": "tool_result", "tool_use_id": "toolu_1"},
    "thinking": {"type": "thinking", "thinking": "The user wants a diff; I should run git.", "signature": "c2ln"},
    "redacted_thinking": {"type": "redacted_thinking", "data": "EuYBCkQIBhgCIkB" * 20},
    "document-pdf": {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                    "data": b64(pdf(2))}},
    "document-text": {"type": "document", "title": "README",
                      "source": {"type": "text", "media_type": "text/plain", "data": "Install with pip."}},
    "document-url": {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
    "search_result": {"type": "search_result", "source": "https://example.com", "title": "Result",
                      "content": [{"type": "text", "text": "some found text"}]},
    "server_tool_use": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
                        "input": {"query": "ollama"}},
    "web_search_tool_result": {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1",
                               "content": [{"type": "web_search_result", "url": "https://x", "title": "X",
                                            "encrypted_content": "abc"}]},
}


def test_text_tokens_basics():
    assert text_tokens("") == 0
    prose = ("The quick brown fox jumps over the lazy dog while the proxy counts tokens for Claude Code. " * 11)[:1000]
    assert 240 <= text_tokens(prose) <= 330  # ~3.5 characters per token
    assert text_tokens(prose + prose) > text_tokens(prose)
    code = "def f(x):\n    return {'a': [x, x + 1]}\n" * 25
    assert text_tokens(code) / len(code) > text_tokens(prose) / len(prose)  # punctuation-dense text is denser
    cjk = "这是一个用于测试令牌估计的中文句子" * 10
    assert 0.8 * len(cjk) <= text_tokens(cjk) <= 1.3 * len(cjk)
    assert text_tokens("😀" * 10) >= 20
    random_id = base64.b64encode(bytes(range(0, 256, 3)) * 10).decode()
    assert text_tokens(random_id) > len(random_id) / 2.5  # ids and base64 tokenize short


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_every_block_kind_counts(kind):
    before = estimate_tokens(BASE)
    req = copy.deepcopy(BASE)
    req["messages"][0]["content"].append(copy.deepcopy(BLOCKS[kind]))
    assert estimate_tokens(req) > before


def test_system_tools_messages_count():
    before = estimate_tokens(BASE)
    assert estimate_tokens({**BASE, "system": "You are a careful engineer."}) > before
    assert estimate_tokens({**BASE, "system": [{"type": "text", "text": "You are careful."}]}) > before
    tool = {"name": "Read", "description": "Read a file from disk.", "input_schema": {
        "type": "object", "properties": {"file_path": {"type": "string", "description": "Absolute path"}},
        "required": ["file_path"]}}
    with_tool = estimate_tokens({**BASE, "tools": [tool]})
    assert with_tool > before + 346  # the tool-use system prompt plus the definition
    bigger = {**tool, "description": tool["description"] + " Lines are numbered; long files are cut." * 5}
    assert estimate_tokens({**BASE, "tools": [bigger]}) > with_tool
    assert estimate_tokens({**BASE, "tools": [tool, {"type": "web_search_20250305", "name": "web_search"}]}) > with_tool
    two = {**BASE, "messages": BASE["messages"] + [{"role": "assistant", "content": "hi"}]}
    assert estimate_tokens(two) > before
    empty = {**BASE, "messages": BASE["messages"] + [{"role": "assistant", "content": []}]}
    assert estimate_tokens(empty) > before  # even an empty message has framing


def test_tool_input_and_thinking_scale_with_size():
    def with_block(block):
        return estimate_tokens({"messages": [{"role": "assistant", "content": [block]}]})
    small = with_block({"type": "tool_use", "id": "t", "name": "Write", "input": {"content": "x"}})
    large = with_block({"type": "tool_use", "id": "t", "name": "Write", "input": {"content": "x = 1\n" * 2000}})
    assert large - small > 2000
    assert (with_block({"type": "thinking", "thinking": "hmm " * 1000, "signature": ""})
            - with_block({"type": "thinking", "thinking": "hmm", "signature": ""})) > 800


@pytest.mark.parametrize("make, media", [
    (png, "image/png"), (gif, "image/gif"), (jpeg, "image/jpeg"),
    (lambda w, h: webp(w, h, "VP8X"), "image/webp"), (lambda w, h: webp(w, h, "VP8L"), "image/webp"),
    (lambda w, h: webp(w, h, "VP8 "), "image/webp"),
])
def test_image_size_from_headers(make, media):
    for width, height in ((1, 1), (200, 100), (1092, 1092), (4000, 3000)):
        if make is png and width * height > 2_000_000:
            continue  # keep the test's own PNG encoder fast
        assert image_size(b64(make(width, height))) == (width, height)


def test_image_token_formula():
    assert image_tokens(200, 100) == 27  # 20000 / 750 = 26.7
    assert image_tokens(1000, 1000) == 1334
    assert image_tokens(1092, 1092) == 1590  # Anthropic's table: ~1590 for 1092×1092
    assert image_tokens(4000, 3000) == 1600  # scaled down to the ~1600 token cap
    assert image_tokens(0, 0) == 1600


def test_images_in_requests():
    def cost(block):
        return (estimate_tokens({"messages": [{"role": "user", "content": [block]}]})
                - estimate_tokens({"messages": [{"role": "user", "content": []}]}))
    assert 27 <= cost(image_block(png(200, 100))) <= 30
    assert 1590 <= cost(image_block(jpeg(1092, 1092), "image/jpeg")) <= 1595
    assert cost(BLOCKS["image-url"]) >= 1600  # size unknown: the flat figure
    broken = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "!!!notbase64"}}
    assert cost(broken) >= 1600
    inside = {"type": "tool_result", "tool_use_id": "t", "content": [image_block(png(300, 300))]}
    assert cost(inside) >= 120  # 300×300/750 = 120, counted inside a tool_result


def test_pdf_pages():
    assert pdf_pages(b64(pdf(3))) == 3
    assert pdf_pages(b64(pdf(1))) == 1
    opaque = b"%PDF-1.7\n" + bytes(range(256)) * 800  # page objects hidden (compressed): by size
    assert pdf_pages(b64(opaque)) >= 3
    three = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(pdf(3))}}
    assert estimate_tokens({"messages": [{"role": "user", "content": [three]}]}) >= 9000


def test_junk_never_crashes():
    odd = {"system": 5, "tools": [None, "x", {"name": 3}], "messages": [
        None, "text", {"role": "user"}, {"content": 7},
        {"role": "user", "content": [None, 3, "loose string", {"type": "text", "text": None},
                                     {"type": "image"}, {"type": "image", "source": {"type": "base64", "data": ""}},
                                     {"type": "document"}, {"type": "tool_result", "content": {"odd": True}}]}]}
    assert estimate_tokens(odd) > 0
    assert estimate_tokens({}) > 0


# Monotonicity: adding anything anywhere never lowers the estimate.

WORDS = ["alpha", "Beta", "ß", "日本語", "x=1;", "{\"k\": [1, 2]}", "\n", "    ", "😀", "id_9f8A7b", "done."]


def random_text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30)))


def random_block(rng: random.Random, depth: int = 0) -> dict:
    kind = rng.choice(["text", "image", "tool_use", "tool_result", "thinking", "document", "other"])
    if kind == "text":
        return {"type": "text", "text": random_text(rng)}
    if kind == "image":
        if rng.random() < 0.5:
            return image_block(rng.choice([png, gif, jpeg])(rng.randint(1, 900), rng.randint(1, 900)))
        return {"type": "image", "source": {"type": "url", "url": "https://e.x/" + random_text(rng)}}
    if kind == "tool_use":
        return {"type": "tool_use", "id": "toolu_x", "name": rng.choice(["Bash", "Read"]),
                "input": {"arg": random_text(rng), "n": rng.randint(0, 10**6)}}
    if kind == "tool_result":
        if depth or rng.random() < 0.5:
            return {"type": "tool_result", "tool_use_id": "toolu_x", "content": random_text(rng)}
        return {"type": "tool_result", "tool_use_id": "toolu_x",
                "content": [random_block(rng, depth + 1) for _ in range(rng.randint(0, 3))]}
    if kind == "thinking":
        return {"type": "thinking", "thinking": random_text(rng), "signature": "sig"}
    if kind == "document":
        return {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": random_text(rng)}}
    return {"type": "future_block", "payload": random_text(rng)}


def random_request(rng: random.Random) -> dict:
    req: dict = {"model": "m", "messages": []}
    if rng.random() < 0.5:
        req["system"] = [{"type": "text", "text": random_text(rng)} for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.5:
        req["tools"] = [{"name": f"t{i}", "description": random_text(rng),
                         "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}}}
                        for i in range(rng.randint(1, 3))]
    for i in range(rng.randint(0, 4)):
        content = random_text(rng) if rng.random() < 0.3 else [random_block(rng) for _ in range(rng.randint(0, 4))]
        req["messages"].append({"role": "user" if i % 2 == 0 else "assistant", "content": content})
    return req


def grow(rng: random.Random, req: dict) -> dict:
    """The same request with one more thing added somewhere."""
    req = copy.deepcopy(req)
    where = rng.choice(["block", "message", "tool", "system", "nested"])
    lists = [m["content"] for m in req["messages"] if isinstance(m["content"], list)]
    if where == "block" and lists:
        target = rng.choice(lists)
        target.insert(rng.randint(0, len(target)), random_block(rng))
    elif where == "nested" and any(b.get("type") == "tool_result" and isinstance(b.get("content"), list)
                                   for content in lists for b in content):
        results = [b for content in lists for b in content
                   if b.get("type") == "tool_result" and isinstance(b.get("content"), list)]
        rng.choice(results)["content"].append(random_block(rng, 1))
    elif where == "tool":
        req.setdefault("tools", []).append({"name": "new", "input_schema": {"type": "object"}})
    elif where == "system":
        system = req.setdefault("system", [])
        system.append({"type": "text", "text": random_text(rng)})
    else:
        req["messages"].insert(rng.randint(0, len(req["messages"])),
                               {"role": "user", "content": [random_block(rng)]})
    return req


def test_monotonic_under_any_addition():
    rng = random.Random(20260501)
    for _ in range(400):
        req = random_request(rng)
        value = estimate_tokens(req)
        for _ in range(3):
            bigger = grow(rng, req)
            grown = estimate_tokens(bigger)
            assert grown >= value, (req, bigger)
            req, value = bigger, grown


def test_deterministic():
    rng = random.Random(3)
    req = random_request(rng)
    assert estimate_tokens(req) == estimate_tokens(copy.deepcopy(req))


# A Claude-Code-sized request.

def synthetic_claude_code_request() -> dict:
    """The shape of Claude Code's first request (system blocks, a dozen tools, ~90 KB), with our own text."""
    rng = random.Random(11)
    sentence = ("When the user asks for a change, read the relevant files first, keep edits minimal, run the "
                "tests with `pytest -q`, and report what changed in `src/app/module_{}.py` (line {}).\n")
    prose = "".join(sentence.format(i, rng.randint(1, 999)) for i in range(150))
    tools = [{"name": f"Tool{i}", "description": prose[: 1500 + 300 * i],
              "input_schema": {"type": "object", "$schema": "http://json-schema.org/draft-07/schema#",
                               "additionalProperties": False, "required": ["path"],
                               "properties": {"path": {"type": "string", "description": "Absolute path to use"},
                                              "limit": {"type": "number", "description": "Lines to read"}}}}
               for i in range(12)]
    reminders = [{"type": "text", "text": f"<system-reminder>\n{prose[:2000]}\n</system-reminder>"} for _ in range(8)]
    return {"model": "claude-sonnet-4-5", "max_tokens": 32000,
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=0.0.0.abc;"},
                       {"type": "text", "text": prose, "cache_control": {"type": "ephemeral"}},
                       {"type": "text", "text": prose[:8000], "cache_control": {"type": "ephemeral"}}],
            "tools": tools, "messages": [{"role": "user", "content": reminders + [{"type": "text", "text": "say hi"}]}],
            "thinking": {"type": "enabled", "budget_tokens": 31999}, "stream": True}


def plausible(req: dict) -> None:
    size = len(orjson.dumps(req))
    estimate = estimate_tokens(req)
    assert 0.5 * size / 4 <= estimate <= 2 * size / 4, (estimate, size / 4)


def test_synthetic_claude_code_request_is_plausible():
    request = synthetic_claude_code_request()
    plausible(request)
    assert estimate_tokens(request) > 5000  # Claude Code's tools alone are thousands of tokens
