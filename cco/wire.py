"""HTTP/1.1 bytes built once: status lines, fixed header lines, the chunk terminator, hop-by-hop names."""

from __future__ import annotations

from http import HTTPStatus

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_REASONS[529] = "Site Overloaded"
_REASONS[499] = "Client Closed Request"


def _status_line(code: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (code, _REASONS.get(code, "Unknown").encode())


STATUS_LINES: dict[int, bytes] = {code: _status_line(code) for code in list(_REASONS) + list(range(100, 600))}

CONTENT_TYPE_JSON = b"content-type: application/json\r\n"
CONTENT_TYPE_SSE = b"content-type: text/event-stream\r\n"
CHUNKED = b"transfer-encoding: chunked\r\n"
CONNECTION_CLOSE = b"connection: close\r\n"
NO_BUFFERING = b"x-accel-buffering: no\r\n"
CHUNK_END = b"0\r\n\r\n"

# Headers that describe one connection (RFC 9110 §7.6.1) or the framing we redo ourselves; never forwarded.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
    b"te", b"trailer", b"transfer-encoding", b"upgrade", b"content-length", b"host",
})


def status_line(code: int) -> bytes:
    line = STATUS_LINES.get(code)
    return line if line is not None else _status_line(code)
