"""An estimate of an Anthropic Messages request's input tokens, for count_tokens on backends with no tokenizer.

Theory of operation
-------------------
Claude Code compacts its context by the number count_tokens answers (SPEC §3), so an undercount overflows the
backend's context while an overcount only compacts a little early: every estimate here leans high, and every
block kind is counted. The estimate is a sum of non-negative terms, one per thing in the request, so adding any
block, message, tool or system text can never lower it (tested as a property).

* Text (`text_tokens`): per UTF-8 byte class, no tokenizer, a few C-speed `bytes.translate`/`count` passes
  (~2 ms for a 90 KB Claude Code request). ASCII letters and whitespace cost 1/3.6 token each; ASCII punctuation
  and digits 0.5 (code, JSON and numbers tokenize short); each case or letter/digit shift 0.75 more (identifiers,
  hashes, UUIDs and base64 tokenize in 1–2 character pieces); each non-ASCII byte 1/3 (≈ 0.67 per Cyrillic or
  Greek letter, 1 per CJK character) and a 4-byte character (emoji) 1 more. Calibrated against the Claude 2 BPE
  tokenizer that `anthropic` SDKs up to 0.38 shipped (`tokenizer.json`): 1.1–1.35× its count on English prose,
  Markdown, Python, JSON schemas and Claude Code's own system prompt and tools (1.2× on the whole Claude Code
  request), 1.0–1.2× on CJK, Cyrillic and numbers, 0.8–1.3× on file listings, hex, UUIDs, base64 and emoji. Today's
  Claude tokenizers need more tokens per character than that one (published comparisons put them 15–35% above
  other vendors' tokenizers, the newest higher still), which is why the prose rate sits above the old tokenizer.
* Framing: `_REQUEST` once, `_MESSAGE` per message, `_BLOCK` per content block; tool_use / tool_result blocks
  add `_TOOL_CALL` for their ids and markup; a request with tools adds Anthropic's tool-use system prompt
  (`_TOOL_PROMPT`, the documented 346 for Claude 4 models with tool_choice auto) and `_TOOL` per tool.
* Tools: name + description as text + the JSON schema serialized (or the whole definition for server tools).
* tool_use: name + the input serialized. tool_result: its string or its nested blocks (images included).
* Images — Anthropic's formula `width × height / 750`, after its resize rule (long edge ≤ 1568 px, ≤ ~1600 tokens),
  when the size can be read from the base64 PNG / JPEG / GIF / WebP header; otherwise (unreadable data, URL or
  file images) a flat `_IMAGE_FLAT` = 1600, the most a resized image costs.
* Documents: base64 PDF → `_PDF_PAGE` (3000: text plus the page image) per page, pages counted from `/Type /Page`
  objects; PDFs whose page objects sit in compressed object streams show none, and are counted by size
  (one page per `_PDF_PAGE_BYTES`, at least one). Text and content documents count their text; URL / file
  documents `_PDF_PAGE` (size unknown). Title and context count as text.
* Thinking blocks count their text; redacted thinking 1 token per 4 bytes of its data. Unknown block kinds count
  their serialized JSON, so nothing in the request is ever free.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from typing import Any

import orjson

_PLAIN_PER_TOKEN = 3.6  # ASCII letters and whitespace per token
_DENSE_TOKEN = 0.5  # tokens per ASCII punctuation or digit byte
_SHIFT_TOKEN = 0.75  # more per shift lower→upper case, letter→digit, digit→letter (ids, hashes, base64)
_NON_ASCII_TOKEN = 1 / 3  # tokens per non-ASCII UTF-8 byte
_FOUR_BYTE_EXTRA = 1.0  # more per 4-byte character (emoji and the like split into byte tokens)

_REQUEST = 3
_MESSAGE = 4
_BLOCK = 1
_TOOL_CALL = 8
_TOOL_PROMPT = 346
_TOOL = 4
_IMAGE_FLAT = 1600
_IMAGE_MAX_EDGE = 1568
_PDF_PAGE = 3000
_PDF_PAGE_BYTES = 60_000
_HEADER_B64_CHARS = 256 * 1024  # how much of an image's base64 is decoded to find its size (JPEG EXIF can be long)

_DENSE = bytes(b for b in range(0x21, 0x7F) if not chr(b).isalpha())
_HIGH = bytes(range(0x80, 0x100))
_LEAD4 = bytes(range(0xF0, 0xF8))
# Byte → class (a: lower, A: upper, 0: digit, space: anything else); shifts are counted as class pairs.
_CLASSES = bytes(0x61 if 0x61 <= b <= 0x7A else 0x41 if 0x41 <= b <= 0x5A else 0x30 if 0x30 <= b <= 0x39 else 0x20
                 for b in range(256))
_SHIFTS = (b"aA", b"a0", b"A0", b"0a", b"0A")


def text_tokens(text: str) -> float:
    """Estimated tokens of a piece of text (see the module doc for the calibration)."""
    if not text:
        return 0.0
    data = text.encode("utf-8", "surrogatepass")
    size = len(data)
    if data.isascii():
        non_ascii = four_byte = 0
        ascii_only = data
    else:
        ascii_only = data.translate(None, _HIGH)
        non_ascii = size - len(ascii_only)
        four_byte = size - len(data.translate(None, _LEAD4))
    dense = len(ascii_only) - len(ascii_only.translate(None, _DENSE))
    plain = size - non_ascii - dense
    classes = ascii_only.translate(_CLASSES)
    shifts = sum(classes.count(pair) for pair in _SHIFTS)  # a pair of distinct classes never overlaps itself
    return (plain / _PLAIN_PER_TOKEN + dense * _DENSE_TOKEN + shifts * _SHIFT_TOKEN
            + non_ascii * _NON_ASCII_TOKEN + four_byte * _FOUR_BYTE_EXTRA)


def _json_tokens(value: Any) -> float:
    try:
        return text_tokens(orjson.dumps(value).decode())
    except TypeError:  # not JSON-serializable (never from a decoded body): count its repr
        return text_tokens(repr(value))


def estimate_tokens(req: dict) -> int:
    """Estimated input tokens of an Anthropic Messages (or count_tokens) request body."""
    total = float(_REQUEST)
    system = req.get("system")
    if isinstance(system, str):
        total += text_tokens(system)
    elif isinstance(system, list):
        total += _blocks_tokens(system)
    tools = req.get("tools")
    if isinstance(tools, list) and tools:
        total += _TOOL_PROMPT
        for tool in tools:
            total += _TOOL + _tool_tokens(tool)
    messages = req.get("messages")
    if isinstance(messages, list):
        for message in messages:
            total += _MESSAGE
            if isinstance(message, dict):
                content = message.get("content")
                if isinstance(content, str):
                    total += text_tokens(content)
                elif isinstance(content, list):
                    total += _blocks_tokens(content)
    return math.ceil(total)


def _tool_tokens(tool: Any) -> float:
    if not isinstance(tool, dict):
        return _json_tokens(tool)
    schema = tool.get("input_schema")
    if schema is None:
        return _json_tokens(tool)  # a server tool: its definition is all there is
    name, description = tool.get("name"), tool.get("description")
    return (text_tokens(name if isinstance(name, str) else "")
            + text_tokens(description if isinstance(description, str) else "") + _json_tokens(schema))


def _blocks_tokens(blocks: list) -> float:
    total = 0.0
    for block in blocks:
        total += _BLOCK + _block_tokens(block)
    return total


def _block_tokens(block: Any) -> float:
    if isinstance(block, str):
        return text_tokens(block)
    if not isinstance(block, dict):
        return _json_tokens(block)
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return text_tokens(text) if isinstance(text, str) else _json_tokens(text)
    if kind == "image":
        return _image_tokens(block.get("source"))
    if kind == "tool_use" or kind == "server_tool_use":
        name = block.get("name")
        return (_TOOL_CALL + text_tokens(name if isinstance(name, str) else "")
                + _json_tokens(block.get("input", {})))
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return _TOOL_CALL + _blocks_tokens(content)
        if isinstance(content, str):
            return _TOOL_CALL + text_tokens(content)
        return _TOOL_CALL + (_json_tokens(content) if content is not None else 0.0)
    if kind == "thinking":
        thinking = block.get("thinking")
        return text_tokens(thinking) if isinstance(thinking, str) else 0.0
    if kind == "redacted_thinking":
        data = block.get("data")
        return len(data) / 4 if isinstance(data, str) else 0.0
    if kind == "document":
        return _document_tokens(block)
    return _json_tokens(block)  # search_result, web_search_tool_result, future kinds: count what is there


# Images ------------------------------------------------------------------------------------------------------------

def image_tokens(width: int, height: int) -> int:
    """Anthropic's documented cost of an image: scaled so its long edge is at most 1568 px, then w×h/750, at most
    ~1600 tokens (larger images are scaled down to that)."""
    if width <= 0 or height <= 0:
        return _IMAGE_FLAT
    scale = min(1.0, _IMAGE_MAX_EDGE / max(width, height))
    return min(_IMAGE_FLAT, math.ceil(width * scale * height * scale / 750))


def _image_tokens(source: Any) -> float:
    if isinstance(source, dict) and source.get("type") == "base64" and isinstance(source.get("data"), str):
        size = image_size(source["data"])
        if size is not None:
            return image_tokens(*size)
    return _IMAGE_FLAT


def image_size(data_b64: str) -> tuple[int, int] | None:
    """(width, height) from the header of a base64 PNG, JPEG, GIF or WebP; None when it cannot be read."""
    head = data_b64[:_HEADER_B64_CHARS]
    head = head[:len(head) - len(head) % 4]
    try:
        data = base64.b64decode(head)
    except (binascii.Error, ValueError):
        return None
    try:
        return _dimensions(data)
    except (struct.error, IndexError):
        return None


def _dimensions(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8 ":  # lossy: frame tag, start code, then 14-bit sizes
            width, height = struct.unpack("<HH", data[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L":  # lossless: signature 0x2f, then 14+14 bits of size-1
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":  # extended: 24-bit canvas size-1
            return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        return None
    if data[:2] == b"\xff\xd8":
        return _jpeg_dimensions(data)
    return None


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    pos = 2
    end = len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        # SOF0–SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header: malformed
            return None
        pos += 2 + length
    return None


# Documents ---------------------------------------------------------------------------------------------------------

_PDF_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![A-Za-z])")


def _document_tokens(block: dict) -> float:
    total = 0.0
    for key in ("title", "context"):
        if isinstance(block.get(key), str):
            total += text_tokens(block[key])
    source = block.get("source")
    if not isinstance(source, dict):
        return total + _PDF_PAGE
    kind = source.get("type")
    if kind == "text":
        data = source.get("data")
        return total + (text_tokens(data) if isinstance(data, str) else 0.0)
    if kind == "content":
        content = source.get("content")
        if isinstance(content, str):
            return total + text_tokens(content)
        if isinstance(content, list):
            return total + _blocks_tokens(content)
        return total
    if kind == "base64" and isinstance(source.get("data"), str):
        return total + _PDF_PAGE * pdf_pages(source["data"])
    return total + _PDF_PAGE  # URL or file: the size is unknown


def pdf_pages(data_b64: str) -> int:
    """Pages of a base64 PDF: its page objects when visible, else one per `_PDF_PAGE_BYTES`; at least 1."""
    by_size = max(1, math.ceil(len(data_b64) * 3 / 4 / _PDF_PAGE_BYTES))
    try:
        data = base64.b64decode(data_b64)
    except (binascii.Error, ValueError):
        return by_size
    pages = len(_PDF_PAGE_OBJECT.findall(data))
    return pages if pages else by_size
