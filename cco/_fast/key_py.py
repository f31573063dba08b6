"""Cache key of a JSON request body (pure-Python twin of key_c.pyx: same keys, same accepted inputs).

The key is xxh3-128 over a canonical form: the caller's context (resolved model, provider, endpoint, scope,
`anthropic-version`, `anthropic-beta`), then every top-level member of the body except `stream` and
`metadata`, sorted by name, each as the exact bytes the client sent for its value. Top-level order therefore
does not matter; any other difference — whitespace inside a value, a field the proxy does not know — makes a
different key. Every piece is length-prefixed, so no two different inputs share a canonical form. A member
named twice counts once, with its last value (what JSON parsers, and the upstream, do).

`scan_request` validates the whole body as JSON (RFC 8259: UTF-8 text, UTF-16 surrogate pairs of escapes checked)
and keeps only the byte spans of the top-level values: nested content never becomes Python objects. Here msgspec
does the pass (and `bytes.decode` checks the UTF-8 of a body that is not ASCII); the compiled twin does it in one
pass of its own.
"""

from __future__ import annotations

import re
import struct
import sys

import msgspec
import xxhash

EXCLUDED = frozenset({b"stream", b"metadata"})
_members_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_u32 = struct.Struct("<I")


class JsonSyntaxError(ValueError):
    """The body is not a JSON object; `message` says why and where (byte offset)."""

    def __init__(self, message: str, position: int = -1) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


class RequestScan:
    """The top-level members of a JSON object body: name (UTF-8 bytes) → raw value bytes."""

    __slots__ = ("body", "_members")

    def __init__(self, body: bytes, members: dict[bytes, bytes]) -> None:
        self.body = body
        self._members = members

    def value(self, name: bytes) -> bytes | None:
        """The raw JSON of a top-level member, or None when absent."""
        return self._members.get(name)

    def names(self) -> list[bytes]:
        return list(self._members)

    def key(self, context: bytes) -> bytes:
        """16-byte xxh3-128 digest of the canonical form (see the module docstring)."""
        parts = [_u32.pack(len(context)), context]
        for name in sorted(self._members):
            if name in EXCLUDED:
                continue
            value = self._members[name]
            parts += (_u32.pack(len(name)), name, _u32.pack(len(value)), value)
        return xxhash.xxh3_128_digest(b"".join(parts))


def scan_request(body: bytes) -> RequestScan:
    try:
        decoded = _decode(body)
    except RecursionError:  # msgspec's depth is Python's recursion limit; the rule is MAX_DEPTH, exactly
        decoded = _decode_deep(body)
    if not body.isascii():  # msgspec steps over nested strings without checking their UTF-8
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonSyntaxError(f"JSON is malformed: invalid UTF-8 (byte {exc.start})", exc.start) from None
    return RequestScan(body, {name.encode(): bytes(raw) for name, raw in decoded.items()})


# Open containers allowed below the top-level object (the compiled scanner's CCO_MAX_DEPTH)
MAX_DEPTH = 1024
# a string, a quote that opens a string the body never closes, or a bracket
_BRACKETS_AND_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"|"|[][{}]', re.DOTALL)


def _decode(body: bytes) -> dict:
    try:
        return _members_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise JsonSyntaxError(f"expected a JSON object: {str(exc).replace('`', '')}", 0) from None
    except msgspec.DecodeError as exc:
        text = str(exc)
        if "truncated" in text:
            raise JsonSyntaxError(f"JSON is malformed: input ends early (byte {len(body)})", len(body)) from None
        if "JSON" not in text:  # msgspec ≥ 0.19 reports invalid UTF-8 without saying it is the JSON that is bad
            text = f"JSON is malformed: {text[:1].lower()}{text[1:]}"
        raise JsonSyntaxError(text, _position(text)) from None
    except UnicodeDecodeError as exc:
        raise JsonSyntaxError(f"JSON is malformed: a member name is not UTF-8 ({exc.reason})", -1) from None


def _decode_deep(body: bytes) -> dict:
    """A body nested deeper than msgspec went within Python's recursion limit: decoded again with room for
    MAX_DEPTH, and judged as the compiled scanner judges it: the first container past MAX_DEPTH is the error,
    unless the JSON breaks before it."""
    too_deep = _too_deep_at(body)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 2 * MAX_DEPTH)
    try:
        return _decode(body) if too_deep < 0 else _fail_before(body, too_deep)
    except RecursionError:
        pass
    finally:
        sys.setrecursionlimit(limit)
    raise JsonSyntaxError(f"JSON is malformed: nesting too deep (byte {too_deep})", too_deep)


def _fail_before(body: bytes, at: int) -> dict:
    """Raises the first error of body[:at]'s JSON when it breaks before `at` (not merely ends there), else the
    nesting error at `at`."""
    try:
        _decode(body)
    except JsonSyntaxError as exc:
        if 0 <= exc.position < at:
            raise
    raise JsonSyntaxError(f"JSON is malformed: nesting too deep (byte {at})", at)


def _too_deep_at(body: bytes) -> int:
    """The byte of the first container opened more than MAX_DEPTH below the top level (strings skipped), or -1,
    also when a string that is never closed comes first (that is the error, as for the compiled scanner)."""
    depth = 0
    for match in _BRACKETS_AND_STRINGS.finditer(body):
        token = match.group()
        if token == b'"':
            return -1
        if token in (b"{", b"["):
            depth += 1
            if depth > MAX_DEPTH + 1:
                return match.start()
        elif token in (b"}", b"]"):
            depth -= 1
    return -1


def _position(text: str) -> int:
    at = text.rfind("(byte ")
    if at < 0:
        return -1
    try:
        return int(text[at + 6:].rstrip(")"))
    except ValueError:
        return -1
