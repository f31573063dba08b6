"""Ollama's native API: `/api/chat`, NDJSON streams (reference/protocols.md §5)."""

from __future__ import annotations

import msgspec
import orjson

from cco.providers.base import bearer_head, error_type_for
from cco.providers.translate.ollama_chat import (OllamaStreamToAnthropic, anthropic_to_ollama_request,
                                                 ollama_to_anthropic_response)

TRANSLATED = True
UPSTREAM_PATHS = {"/v1/messages": b"/api/chat", "/v1/chat/completions": b"/api/chat"}
TOKENIZE_PATH = None


def request_head(path: bytes, route, body_length: int, client_headers, stream: bool = False) -> bytes:
    return bearer_head(b"POST", path, route, body_length, client_headers,
                       b"application/x-ndjson" if stream else b"application/json", forward_client_key=False)


def request_body(pivot: dict, upstream_model: str, stream: bool) -> bytes:
    # Ollama streams unless told not to: `stream` is always sent explicitly.
    return orjson.dumps(anthropic_to_ollama_request(pivot, upstream_model, stream))


def response_message(body: bytes, model: str) -> dict:
    return ollama_to_anthropic_response(orjson.loads(body), model)


def stream_translator(model: str) -> OllamaStreamToAnthropic:
    return OllamaStreamToAnthropic(model)


class _ErrorBody(msgspec.Struct):
    error: str | None = None


def error_of(status: int, body: bytes) -> tuple[str, str]:
    try:
        message = msgspec.json.decode(body, type=_ErrorBody).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        message = None
    return error_type_for(status), message or body[:200].decode("utf-8", "replace") or f"upstream status {status}"
