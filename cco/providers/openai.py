"""OpenAI-compatible servers (OpenAI, vLLM, TGI, LocalAI, Groq, llama.cpp): Chat Completions on the wire."""

from __future__ import annotations

import msgspec
import orjson

from cco.providers.base import bearer_head, error_type_for
from cco.providers.translate.openai_chat import (OpenAIStreamToAnthropic, anthropic_to_openai_request,
                                                 openai_to_anthropic_response)

TRANSLATED = True
UPSTREAM_PATHS = {"/v1/messages": b"/chat/completions", "/v1/chat/completions": b"/chat/completions"}
# vLLM serves its tokenizer at the server root, beside /v1 (reference/protocols.md §6).
TOKENIZE_PATH = b"/tokenize"


def request_head(path: bytes, route, body_length: int, client_headers, stream: bool = False) -> bytes:
    return bearer_head(b"POST", path, route, body_length, client_headers,
                       b"text/event-stream" if stream else b"application/json", forward_client_key=True)


def request_body(pivot: dict, upstream_model: str, stream: bool) -> bytes:
    body = anthropic_to_openai_request(pivot, upstream_model)
    if not stream:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return orjson.dumps(body)


def response_message(body: bytes, model: str) -> dict:
    return openai_to_anthropic_response(orjson.loads(body), model)


def stream_translator(model: str) -> OpenAIStreamToAnthropic:
    return OpenAIStreamToAnthropic(model, None)


class _Error(msgspec.Struct):
    message: str | None = None
    type: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _Error | str | None = None


def error_of(status: int, body: bytes) -> tuple[str, str]:
    try:
        parsed = msgspec.json.decode(body, type=_ErrorBody)
        error = parsed.error
        message = error if isinstance(error, str) else (error.message if error is not None else None)
    except (msgspec.DecodeError, msgspec.ValidationError):
        message = None
    return error_type_for(status), message or body[:200].decode("utf-8", "replace") or f"upstream status {status}"
