"""`POST /v1/chat/completions`: OpenAI Chat Completions in and out, routed by the same routes as /v1/messages.

An OpenAI-compatible route gets the request as sent (only the model name may change: override, strip_prefix);
an Anthropic or Ollama route gets it translated through the Anthropic Messages format, the proxy's pivot, and the
answer — JSON or stream — is translated back (SPEC §3, reference/protocols.md §4). Errors are in OpenAI's shape.
These answers are not cached (`x-cco-cache: bypass`): the cache holds Anthropic Messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from cco.errors import InvalidRequest, MethodNotAllowed, ServiceUnavailable
from cco.pipeline import forward

if TYPE_CHECKING:
    from cco.app import App
    from cco.protocol import HttpProtocol, Request

# Anthropic routes get the version every Anthropic API accepts; the OpenAI client's own headers say nothing of it.
PINNED_VERSION = b"2023-06-01"
_NOT_FOR_ANTHROPIC = frozenset({b"anthropic-version", b"anthropic-beta"})


def _system_text(obj: dict) -> str:
    parts = []
    for message in obj.get("messages") or ():
        if isinstance(message, dict) and message.get("role") in ("system", "developer"):
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(parts)


def chat_completions(app: App, request: Request, client: HttpProtocol):
    request.shape = "openai"
    if request.method != b"POST":
        raise MethodNotAllowed(f"method {request.method.decode()} not allowed on /v1/chat/completions", b"POST")
    if app.draining:
        raise ServiceUnavailable("the proxy is shutting down")
    try:
        obj = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"invalid JSON body: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidRequest("invalid request body: expected a JSON object")
    requested = obj.get("model")
    if not isinstance(requested, str) or not requested:
        raise InvalidRequest("invalid request body: $.model: expected a non-empty string")
    if not isinstance(obj.get("messages"), list):
        raise InvalidRequest("invalid request body: $.messages: expected an array")
    stream = obj.get("stream") is True
    options = obj.get("stream_options")
    request.openai = options if isinstance(options, dict) else {}
    model = app.resolve_model(request, requested, lambda: _system_text(obj))
    route = app.route_for(model)
    chain = tuple(app.config.fallback_chain.get(model, ()))
    if route.provider == "openai" and not chain:
        if stream and not request.openai.get("include_usage"):
            # Ask for the usage chunk anyway (the ledger needs the tokens) and keep it from the client.
            obj["stream_options"] = dict(request.openai, include_usage=True)
            request.body = orjson.dumps(obj)
            request.openai = dict(request.openai, _strip_usage=True)
        return forward(app, client, request, route, model, b"/v1/chat/completions", request.body,
                       stream_through=stream, record_as="/v1/chat/completions")
    from cco.providers.translate.openai_chat import openai_to_anthropic_request

    try:
        pivot = openai_to_anthropic_request(obj)
    except ValueError as exc:
        raise InvalidRequest(f"invalid request body: {exc}") from None
    pivot["model"] = model
    request.pivot = pivot
    # Headers forwarded to an Anthropic route: the client's, with the pinned API version.
    request.headers = [(n, v) for n, v in request.headers if n not in _NOT_FOR_ANTHROPIC]
    request.headers.append((b"anthropic-version", PINNED_VERSION))
    request.reset_header_map()
    body = orjson.dumps(dict(pivot, model=route.upstream_model(model)))
    return forward(app, client, request, route, model, b"/v1/messages", body, stream_through=stream,
                   record_as="/v1/chat/completions", chain=chain)
