"""The interface every translated provider module implements (Anthropic is the pivot and passes through).

Functions, not classes: a provider is a module with
- `TRANSLATED = True` and `UPSTREAM_PATHS`: proxy endpoint → upstream path (appended to the route's endpoint);
- `request_head(path, route, body_length, client_headers) -> bytes`: request line and headers;
- `request_body(pivot: dict, upstream_model: str, stream: bool) -> bytes`: an Anthropic Messages request → its own;
- `response_message(body: bytes, model: str) -> dict`: its non-streamed answer → an Anthropic Message;
- `stream_translator(model: str)`: an object with `feed(bytes) -> list[(event, data)]` and `finish()`, turning its
  stream into Anthropic SSE events;
- `error_of(status, body) -> (error_type, message)`: its error body in Anthropic terms.
"""

from __future__ import annotations

from typing import Protocol


class StreamTranslator(Protocol):
    def feed(self, data: bytes) -> list[tuple[str, bytes]]: ...

    def finish(self) -> list[tuple[str, bytes]]: ...


STATUS_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                      404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                      529: "overloaded_error"}


def error_type_for(status: int) -> str:
    return STATUS_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def bearer_head(method: bytes, path: bytes, route, body_length: int, client_headers, accept: bytes,
                forward_client_key: bool) -> bytes:
    """Request head for providers that take `Authorization: Bearer`: the route's key when configured, else (when
    `forward_client_key`) the client's own Authorization header — never its x-api-key, which is an Anthropic key."""
    parts = [method, b" ", route.base_path + path, b" HTTP/1.1\r\nhost: ", route.origin.host_header,
             b"\r\ncontent-type: application/json\r\naccept: ", accept, b"\r\n"]
    if route.api_key is not None:
        parts += (b"authorization: Bearer ", route.api_key, b"\r\n")
    elif forward_client_key:
        for name, value in client_headers:
            if name == b"authorization":
                parts += (b"authorization: ", value, b"\r\n")
                break
    parts.append(route.extra_headers)
    parts.append(b"content-length: %d\r\n\r\n" % body_length)
    return b"".join(parts)
