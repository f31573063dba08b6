"""Operator-facing answers built from the proxy's own state: /health and the model lists."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec
import orjson

from cco import __version__
from cco._fast import IMPL
from cco.errors import InvalidRequest, NotFound
from cco.routing import display_name, model_created

if TYPE_CHECKING:
    from cco.app import App
    from cco.protocol import HttpProtocol, Request


def send_health(app: App, request: Request, client: HttpProtocol) -> None:
    pools = app.pools.pools.values()
    body = {
        "status": "draining" if app.draining else "ok",
        "version": __version__,
        "impl": IMPL,
        "uptime": time.time() - app.started,
        "requests": app.stats.requests,
        "upstream_retries": app.stats.retries,
        "connections": len(client.registry),
        "upstream_connections": sum(p.open for p in pools),
        "upstream_idle": sum(len(p.idle) for p in pools),
        "cache_enabled": app.cache is not None,
        "cache_hits": app.cache.hits if app.cache is not None else 0,
        "cache_misses": app.cache.misses if app.cache is not None else 0,
        "cache_coalesced": app.cache.coalesced if app.cache is not None else 0,
        "analytics_rows_written": app.analytics.written if app.analytics is not None else 0,
        "analytics_rows_pending": app.analytics.pending if app.analytics is not None else 0,
        "analytics_rows_dropped": app.analytics.dropped if app.analytics is not None else 0,
        "analytics_failing": app.analytics.failing if app.analytics is not None else False,
        "overrides_enabled": app.config.overrides.enabled,
        "override_rules": len(app.config.overrides.rules) + len(app.config.overrides.agents),
    }
    client.send(request, 200, b"", orjson.dumps(body))


def _query(request: Request) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(request.query.decode("latin-1")))


def _model_info(app: App, model: str, anthropic_shape: bool) -> dict:
    created = model_created(model, app.config.mtime)
    if anthropic_shape:
        return {"type": "model", "id": model, "display_name": display_name(model),
                "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ")}
    route = app.router.match(model)
    return {"id": model, "object": "model", "created": int(created.timestamp()),
            "owned_by": route.provider if route else "cco"}


def send_models(app: App, request: Request, client: HttpProtocol) -> None:
    ids = app.router.listed_models()
    if request.header(b"anthropic-version") is None:
        # The OpenAI SDK's models.list() sends no anthropic-version header.
        body = {"object": "list", "data": [_model_info(app, m, False) for m in ids]}
        client.send(request, 200, b"", orjson.dumps(body))
        return
    query = _query(request)
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise InvalidRequest("limit: expected an integer") from None
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit: must be between 1 and 1000")
    if "after_id" in query and query["after_id"] in ids:
        ids = ids[ids.index(query["after_id"]) + 1:]
        page = ids[:limit]
    elif "before_id" in query and query["before_id"] in ids:
        ids = ids[: ids.index(query["before_id"])]
        page = ids[-limit:]
    else:
        page = ids[:limit]
    body = {"data": [_model_info(app, m, True) for m in page], "has_more": len(ids) > len(page),
            "first_id": page[0] if page else None, "last_id": page[-1] if page else None}
    client.send(request, 200, b"", orjson.dumps(body))


def send_model(app: App, request: Request, client: HttpProtocol, model: str) -> None:
    if not model or app.router.match(model) is None:
        raise NotFound(f"model {model!r} is not served by any route")
    info = _model_info(app, model, request.header(b"anthropic-version") is not None)
    client.send(request, 200, b"", orjson.dumps(info))


def send_cache_stats(app: App, request: Request, client: HttpProtocol) -> None:
    client.send(request, 200, b"", orjson.dumps(_cache(app).stats()))


def clear_cache(app: App, request: Request, client: HttpProtocol) -> None:
    cleared = _cache(app).clear()
    client.send(request, 200, b"", orjson.dumps({"cleared": cleared}))


def send_top_prompts(app: App, request: Request, client: HttpProtocol) -> None:
    try:
        limit = int(_query(request).get("limit", "10"))
    except ValueError:
        raise InvalidRequest("limit: expected an integer") from None
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit: must be between 1 and 1000")
    client.send(request, 200, b"", orjson.dumps(_cache(app).top_prompts(limit)))


def _cache(app: App):
    if app.cache is None:
        raise NotFound("the cache is disabled (--no-cache)")
    return app.cache


def send_route_explanation(app: App, request: Request, client: HttpProtocol) -> None:
    """GET /api/route?model=M[&agent=A]: the decision for M, explained, without calling anything (SPEC §3)."""
    query = _query(request)
    requested = query.get("model")
    if not requested:
        raise InvalidRequest("model: a model name is required, e.g. /api/route?model=claude-sonnet-4-5")
    config = app.config
    agent = query.get("agent")
    decision = config.overrides.decide(requested, agent, lambda: query.get("system", ""))
    model = decision.model
    tried = []
    matched = None
    for route in app.router.routes:
        if route.regex.search(model):
            matched = route
            break
        tried.append(route.pattern)
    price = config.pricing.lookup(model)
    body = {
        "requested_model": requested,
        "override": {"enabled": config.overrides.enabled, "applied": decision.rule is not None,
                     "rule": decision.rule, "agent": decision.agent, "model": model},
        "route": None if matched is None else {
            "index": matched.index, "pattern": matched.pattern, "provider": matched.provider,
            "endpoint": matched.origin.display + matched.origin.base_path, "upstream_model": matched.upstream_model(model),
            "credentials": "proxy key" if matched.api_key is not None else "client's own",
            "timeout_ms": int(matched.timeout * 1000), "max_retries": matched.max_retries},
        "patterns_tried": tried,
        "fallback_chain": list(config.fallback_chain.get(model, [])),
        "price": None if price is None else orjson.loads(msgspec.json.encode(price)),
        "unpriced": price is None,
        "cache": {"enabled": app.cache is not None, "scope": config.cache.scope,
                  "ttl_seconds": app.cache.ttl if app.cache is not None else None},
    }
    if matched is None:
        body["error"] = f"no route serves {model!r}"
    client.send(request, 200, b"", orjson.dumps(body))
