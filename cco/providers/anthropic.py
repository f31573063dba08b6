"""Anthropic Messages API: upstream request heads, response headers, stream observation, batch URL rewriting.

Pure functions over bytes; the pipeline does the I/O. The body is forwarded as the client sent it (new fields
appear constantly and strict proxies broke on them, see reference/protocols.md §1.3).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec
import orjson

from cco.routing import Route
from cco.wire import HOP_BY_HOP

# Never forwarded upstream besides hop-by-hop headers: the client's Accept-Encoding (we must be able to read and
# cache what comes back, and compressed SSE has broken proxies: reference/protocols.md §2 pitfall 3) and the
# proxy's own control headers (every `x-cco-*`).
_DROP_UPSTREAM = HOP_BY_HOP | {b"accept-encoding"}
_CREDENTIALS = frozenset({b"x-api-key", b"authorization"})
# Response headers we set ourselves (framing) or that describe the upstream connection.
_DROP_DOWNSTREAM = HOP_BY_HOP


def request_head(method: bytes, path: bytes, query: bytes, headers: list[tuple[bytes, bytes]], route: Route,
                 body_length: int) -> bytes:
    """The upstream request line and headers, built once per client request and reused for its retries."""
    target = route.base_path + path
    if query:
        target += b"?" + query
    parts = [method, b" ", target, b" HTTP/1.1\r\nhost: ", route.origin.host_header, b"\r\n"]
    drop = _DROP_UPSTREAM
    proxy_key = route.api_key
    extra_names = route.extra_header_names
    connection_options: list[bytes] | None = None
    for name, value in headers:
        if name in drop or name in extra_names or name.startswith(b"x-cco-"):
            if name == b"connection":
                connection_options = [t.strip().lower() for t in value.split(b",")]
            continue
        if proxy_key is not None and name in _CREDENTIALS:
            continue
        parts += (name, b": ", value, b"\r\n")
    if connection_options and any(o not in (b"keep-alive", b"close", b"") for o in connection_options):
        # RFC 9110 §7.6.1: "a proxy … MUST parse the Connection header field … and remove any header field(s)
        # from the message with the same name as a connection option" (rare: rebuilt without them).
        listed = frozenset(connection_options) | {b"connection"}
        return request_head(method, path, query, [(n, v) for n, v in headers if n not in listed], route,
                            body_length)
    if proxy_key is not None:
        parts += (b"x-api-key: ", proxy_key, b"\r\n")
    parts.append(route.extra_headers)
    if body_length or method == b"POST":
        parts.append(b"content-length: %d\r\n" % body_length)
    parts.append(b"\r\n")
    return b"".join(parts)


def response_headers(headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes | None]:
    """Upstream response headers to pass to the client, as a block, and the upstream request-id."""
    parts = []
    request_id = None
    drop = _DROP_DOWNSTREAM
    for name, value in headers:
        if name in drop:
            continue
        if name == b"request-id":
            request_id = value
        parts += (name, b": ", value, b"\r\n")
    return b"".join(parts), request_id


def rewrite_results_urls(body: bytes, base_url: str, route: Route) -> bytes:
    """Points every `results_url` of a MessageBatch (or a page of them) at the proxy.

    The SDK fetches `results_url` as given (an absolute URL on the provider): left alone, results would
    bypass the proxy (reference/protocols.md §1.1 pitfall).
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    batches = obj.get("data") if isinstance(obj, dict) and isinstance(obj.get("data"), list) else [obj]
    changed = False
    base_path = route.base_path.decode()
    for batch in batches:
        if isinstance(batch, dict) and isinstance(batch.get("results_url"), str):
            parts = urlsplit(batch["results_url"])
            path = parts.path
            if base_path and path.startswith(base_path):
                path = path[len(base_path):]
            batch["results_url"] = base_url + path + (f"?{parts.query}" if parts.query else "")
            changed = True
    return orjson.dumps(obj) if changed else body


class _ErrorDetail(msgspec.Struct):
    type: str | None = None
    message: str | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorDetail | None = None


_error_decoder = msgspec.json.Decoder(_ErrorEnvelope)


def error_of(body: bytes) -> tuple[str | None, str | None]:
    """`error.type` and `error.message` of an Anthropic error body (`{"type": "error", "error": {…}}`)."""
    try:
        envelope = _error_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, None
    error = envelope.error
    return (error.type, error.message) if error is not None else (None, None)


def error_type_of(body: bytes) -> str | None:
    return error_of(body)[0]
