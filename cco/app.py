"""The application: shared state (config, routes, pools, cache, counters) and the (method, path) → handler table.

`App.dispatch` is what the protocol calls for each request. A handler answers at once when it can (a cache hit,
an error, the admin endpoints) and returns None; when it must wait for an upstream it returns a coroutine, which
the protocol runs as the request's task. Paths may carry a project prefix `/p/{project}/…`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

import msgspec
import orjson

from cco import __version__, api, exchange, metrics
from cco._fast import IMPL, HitLane, JsonSyntaxError, scan_request
from cco.analytics.events import EventFeed
from cco.analytics.reader import Reader
from cco.analytics.record import Recorder
from cco.analytics.writer import AnalyticsWriter
from cco.cache.store import ResponseCache
from cco.config import Config
from cco.errors import InvalidRequest, MethodNotAllowed, NotFound, ServiceUnavailable
from cco.pipeline import (CachePlan, entry_cost, follow, forward, model_headers, serve_entry,
                          with_model)
from cco.pricing import CallCost, PriceTable, Usage
from cco.protocol import HttpProtocol, Request
from cco.providers import anthropic
from cco.routing import Route, Router
from cco.upstream.pool import PoolManager

log = logging.getLogger("cco.app")
access_log = logging.getLogger("cco.access")

Handler = Callable[["App", Request, HttpProtocol], "Awaitable[None] | None"]

DEFAULT_PROJECT = "default"


class Stats:
    """Process counters read by /health (and later /metrics); plain ints, no per-request allocation."""

    __slots__ = ("requests", "by_status_class", "retries", "fallbacks")

    def __init__(self) -> None:
        self.requests = 0
        self.by_status_class = [0, 0, 0, 0, 0, 0]
        self.retries = 0
        self.fallbacks = 0

    def count(self, status: int) -> None:
        self.requests += 1
        self.by_status_class[min(status // 100, 5)] += 1


class App:
    def __init__(self, config: Config, *, access_log_enabled: bool = False, cache: ResponseCache | None = None,
                 default_project: str = DEFAULT_PROJECT, analytics: AnalyticsWriter | None = None,
                 reader: Reader | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.router = Router(config)
        self.pools = PoolManager()
        self.stats = Stats()
        self.cache = cache
        if cache is not None:
            cache.cost_of = lambda entry: entry_cost(self.prices, entry)
        self.analytics = analytics
        self.reader = reader
        self.recorder = Recorder(analytics.record if analytics is not None else None, default_project)
        self.events = EventFeed()
        self.events.snapshot = self.snapshot
        self.metrics_registry = metrics.registry_for(self)
        self.hit_lane = HitLane(self, scan_request) if cache is not None else None
        if self.hit_lane is not None:
            self.hit_lane.request_id_prefix = exchange.REQUEST_ID_PREFIX
            self.hit_lane.request_counter = exchange.request_counter
            self.hit_lane.model_headers = model_headers
        self.config_loader: Callable[[], Config] | None = None  # set by the server: reads the config directory
        self.config_generation = 1
        self.last_reload: dict | None = None
        self.started = time.time()
        self.draining = False
        self.access_log = access_log_enabled
        self.default_project = default_project

    def dispatch(self, request: Request, client: HttpProtocol) -> Awaitable[None] | None:
        path = request.path
        if path.startswith(b"/p/"):
            project, _, rest = path[3:].partition(b"/")
            if project:
                request.project = project.decode("utf-8", "replace")
                request.prefix = path[:3 + len(project)]
                path = request.path = b"/" + rest
        handler = EXACT.get(path) or _prefix_handler(path)
        if handler is None:
            raise NotFound(f"no such endpoint: {request.method.decode()} {path.decode('utf-8', 'replace')}")
        return handler(self, request, client)

    def apply_config(self, config: Config) -> None:
        """Swaps routes, fallbacks, overrides and prices at once (a reference swap: requests in flight keep the
        objects they started with; pools are shared by origin, so no connection is dropped)."""
        router = Router(config)
        self.config = config
        self.router = router
        self.config_generation += 1

    async def reload(self) -> dict:
        """Reads the config directory again; an invalid config is refused and the running one stays."""
        from cco.config import ConfigError

        if self.config_loader is None:
            return {"status": "rejected", "error": "this process was not started from a config directory"}
        try:
            config = await self.loop.run_in_executor(None, self.config_loader)
        except ConfigError as exc:
            log.error("config reload refused, the running config stays: %s", exc)
            self.last_reload = {"status": "rejected", "error": str(exc), "at": time.time()}
            return self.last_reload
        self.apply_config(config)
        log.info("config reloaded: %d routes, %d fallback chains, %d price entries, overrides %s",
                 len(config.routes), len(config.fallback_chain), len(config.pricing),
                 "on" if config.overrides.enabled else "off")
        self.last_reload = {"status": "reloaded", "routes": len(config.routes),
                            "fallback_chains": len(config.fallback_chain), "price_entries": len(config.pricing),
                            "overrides_enabled": config.overrides.enabled, "generation": self.config_generation,
                            "at": time.time()}
        return self.last_reload

    def snapshot(self) -> dict:
        """The live counters the dashboard's feed sends after each batch of calls."""
        cache = self.cache
        writer = self.analytics
        return {"requests": self.stats.requests, "cacheHits": cache.hits if cache else 0,
                "cacheMisses": cache.misses if cache else 0, "cacheCoalesced": cache.coalesced if cache else 0,
                "savedCost": cache.saved_cost if cache else 0.0,
                "analyticsDropped": writer.dropped if writer else 0, "ts": time.time()}

    @property
    def prices(self) -> PriceTable:
        return self.config.pricing

    def record_call(self, request: Request, model: str, route: Route, endpoint: str, stream: bool, cache: str,
                    usage: Usage | None, cost: CallCost, *, batch: bool = False, error_type: str | None = None,
                    upstream_ms: float | None = None, fallback_depth: int = 0) -> None:
        """The one analytics row of a proxied request (SPEC §7), from the request path: O(1), no I/O."""
        self.recorder.record(request, self.project_of(request), request.requested_model or model, model,
                             route.provider, endpoint, stream, cache, usage, cost, batch, error_type, upstream_ms,
                             fallback_depth, request.override_rule)

    def log_access(self, request: Request) -> None:
        access_log.info("%s %s %d %.3f", request.method.decode(), request.path.decode("utf-8", "replace"),
                        request.status, (time.perf_counter() - request.received_at) * 1000)

    # helpers

    def route_for(self, model: str) -> Route:
        route = self.router.match(model)
        if route is None:
            raise NotFound(f"no route for model {model!r}; configured patterns: "
                           + ", ".join(self.router.patterns))
        return route

    def resolve_model(self, request: Request, requested: str, system_text: Callable[[], str]) -> str:
        """The model to serve after the override rules (SPEC §6); remembers what was asked and why it changed."""
        request.requested_model = requested
        overrides = self.config.overrides
        header = request.header(b"x-cco-agent")
        agent = header.decode("utf-8", "replace") if header else None
        if not overrides.enabled:
            request.agent = agent
            return requested
        decision = overrides.decide(requested, agent, system_text)
        request.agent = decision.agent
        request.override_rule = decision.rule
        if decision.rule is not None and overrides.log_overrides:
            log.debug("override %s: %s → %s", decision.rule, requested, decision.model)
        return decision.model

    def anthropic_route(self) -> Route:
        route = self.router.first_route("anthropic")
        if route is None:
            raise NotFound("no anthropic route is configured; batches need one")
        return route

    def project_of(self, request: Request) -> str:
        if request.project is None:
            header = request.header(b"x-cco-project")
            request.project = header.decode("utf-8", "replace") if header else self.default_project
        return request.project

    def public_base_url(self, request: Request) -> str:
        host = (request.header(b"x-forwarded-host") or request.header(b"host") or b"127.0.0.1").decode("latin-1")
        scheme = (request.header(b"x-forwarded-proto") or b"http").decode("latin-1")
        return f"{scheme}://{host}{request.prefix.decode('utf-8', 'replace')}"

    def cache_plan(self, request: Request, route: Route, model: str, scan, endpoint: bytes) -> CachePlan:
        """What the cache does for this request (SPEC §5): its key, whether it may read, lead or join a flight."""
        cache = self.cache
        if cache is None:
            return CachePlan.BYPASS
        control = request.header(b"x-cco-cache")
        refresh = False
        if control is not None:
            control = control.strip().lower()
            if control == b"bypass":
                cache.bypassed += 1
                return CachePlan.BYPASS
            refresh = control == b"refresh"
        cache_control = request.header(b"cache-control")
        if cache_control is not None:
            cache_control = cache_control.lower()
            if b"no-store" in cache_control:
                cache.bypassed += 1
                return CachePlan.BYPASS
            refresh = refresh or b"no-cache" in cache_control
        credential = cache.credential_hash(request)
        scope = cache.scope
        if scope == "global":
            scope_bytes = b"global"
        elif scope == "project":
            scope_bytes = b"project:" + self.project_of(request).encode()
        else:
            scope_bytes = b"key:%x" % credential
        context = b"\x00".join((model.encode(), route.provider_bytes, endpoint, scope_bytes,
                                request.header(b"anthropic-version") or b"",
                                request.header(b"anthropic-beta") or b""))
        # A route that forwards the client's own credential serves hits only to credentials seen to succeed.
        trusted = route.api_key is not None or cache.credential_verified(credential)
        lane = self.hit_lane
        key = lane.reuse_key(scan, context) if lane is not None else None
        if key is None:
            key = scan.key(context)
        flight_key = None if refresh else (key if trusted else key + b"%x" % credential)
        return CachePlan(key, readable=trusted and not refresh, flight_key=flight_key, credential=credential,
                         endpoint=endpoint.decode())


def _require(request: Request, *methods: bytes) -> None:
    if request.method not in methods and not (request.method == b"HEAD" and b"GET" in methods):
        raise MethodNotAllowed(f"method {request.method.decode()} not allowed on {request.path.decode()}",
                               b", ".join(methods))


_str_decoder = msgspec.json.Decoder(str)
_bool_decoder = msgspec.json.Decoder(bool | None)
_optional_int_decoder = msgspec.json.Decoder(int | None)


def _scan(body: bytes):
    try:
        return scan_request(body)
    except JsonSyntaxError as exc:
        raise InvalidRequest(f"invalid JSON body: {exc.message}") from None


def _field(scan, name: bytes, decoder: msgspec.json.Decoder, expected: str, required: bool = False):
    """Decodes one top-level field the proxy reads; a wrong type is a 400 naming its JSON path."""
    raw = scan.value(name)
    if raw is None:
        if required:
            raise InvalidRequest(f"invalid request body: missing required field $.{name.decode()}")
        return None
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError:
        raise InvalidRequest(f"invalid request body: $.{name.decode()}: expected {expected}, "
                             f"got {raw[:40].decode('utf-8', 'replace')}") from None


_system_decoder = msgspec.json.Decoder(str | list[dict] | None)


def _system_text(scan) -> str:
    """The system prompt's text (string or text blocks), for agent detection."""
    raw = scan.value(b"system")
    if raw is None:
        return ""
    try:
        system = _system_decoder.decode(raw)
    except msgspec.ValidationError:
        return ""
    if isinstance(system, str):
        return system
    return "\n".join(b.get("text", "") for b in system or () if isinstance(b.get("text"), str))


# Handlers


def messages(app: App, request: Request, client: HttpProtocol):
    _require(request, b"POST")
    if app.draining:
        raise ServiceUnavailable("the proxy is shutting down")
    lane = app.hit_lane
    scan = lane.reuse_scan(request.body) if lane is not None else None
    if scan is None:
        scan = _scan(request.body)
    requested = _field(scan, b"model", _str_decoder, "a string", required=True)
    stream = _field(scan, b"stream", _bool_decoder, "a boolean") or False
    _field(scan, b"max_tokens", _optional_int_decoder, "an integer")
    model = app.resolve_model(request, requested, lambda: _system_text(scan))
    route = app.route_for(model)
    return _cached_forward(app, request, client, route, model, scan, b"/v1/messages", stream,
                           lambda: messages(app, request, client))


def count_tokens(app: App, request: Request, client: HttpProtocol):
    _require(request, b"POST")
    lane = app.hit_lane
    scan = lane.reuse_scan(request.body) if lane is not None else None
    if scan is None:
        scan = _scan(request.body)
    requested = _field(scan, b"model", _str_decoder, "a string", required=True)
    model = app.resolve_model(request, requested, lambda: _system_text(scan))
    route = app.route_for(model)
    if route.provider != "anthropic":
        from cco.tokens import count_tokens_locally

        return count_tokens_locally(app, client, request, route, model)
    return _cached_forward(app, request, client, route, model, scan, b"/v1/messages/count_tokens", False,
                           lambda: count_tokens(app, request, client))


def _cached_forward(app: App, request: Request, client: HttpProtocol, route: Route, model: str, scan,
                    endpoint: bytes, stream: bool, again: Callable):
    plan = app.cache_plan(request, route, model, scan, endpoint)
    cache = app.cache
    if plan.readable:
        assert cache is not None
        entry = cache.get(plan.key, model, plan.endpoint, request.body)
        if entry is not None:
            cache.hits += 1
            serve_entry(app, client, request, route, model, entry, stream, b"hit")
            return None
    if plan.flight_key is not None:
        assert cache is not None
        flight = cache.inflight.get(plan.flight_key)
        if flight is not None:
            return follow(app, client, request, route, model, flight, stream, again)
    if plan.key is not None:
        assert cache is not None
        cache.misses += 1
        if plan.flight_key is not None:
            plan.flight = cache.begin(plan.flight_key, app.loop)
    upstream_model = route.upstream_model(model)
    body = request.body if upstream_model == request.requested_model else with_model(request.body, upstream_model)
    return forward(app, client, request, route, model, endpoint, body, stream_through=stream, cache=plan,
                   record_as=plan.endpoint or endpoint.decode(), chain=tuple(app.config.fallback_chain.get(model, ())))


def batches(app: App, request: Request, client: HttpProtocol):
    """The /v1/messages/batches family, passed through to the first anthropic route."""
    path = request.path
    rest = path[len(b"/v1/messages/batches"):]
    segments = [s for s in rest.split(b"/") if s]
    if not segments:
        _require(request, b"GET", b"POST")
    elif len(segments) == 1:
        _require(request, b"GET", b"DELETE")
    elif len(segments) == 2 and segments[1] == b"cancel":
        _require(request, b"POST")
    elif len(segments) == 2 and segments[1] == b"results":
        _require(request, b"GET")
    else:
        raise NotFound(f"no such endpoint: {path.decode('utf-8', 'replace')}")
    route = app.anthropic_route()
    results = len(segments) == 2 and segments[1] == b"results"
    base_url = app.public_base_url(request)
    rewrite = None if results else (lambda body: anthropic.rewrite_results_urls(body, base_url, route))
    return forward(app, client, request, route, "", path, request.body, stream_through=results, rewrite=rewrite,
                   record_as="/v1/messages/batches/results" if results else "/v1/messages/batches",
                   batch_results=results)


def models(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"GET")
    from cco import admin

    admin.send_models(app, request, client)


def model_by_id(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"GET")
    from cco import admin

    admin.send_model(app, request, client, request.path[len(b"/v1/models/"):].decode("utf-8", "replace"))


def probe(app: App, request: Request, client: HttpProtocol) -> None:
    """HEAD / and HEAD|GET /api/hello: Claude Code's connectivity probes (a 405 breaks its preflight)."""
    _require(request, b"GET")
    client.send(request, 200, b"", b'{"ok":true}')


def health(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"GET")
    from cco import admin

    admin.send_health(app, request, client)


def ready(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"GET")
    if app.draining:
        client.send(request, 503, b"", b'{"status":"draining"}')
    else:
        client.send(request, 200, b"", b'{"status":"ready"}')


def cache_stats(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"GET")
    from cco import admin

    admin.send_cache_stats(app, request, client)


def cache_clear(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"POST")
    from cco import admin

    admin.clear_cache(app, request, client)


def cache_top_prompts(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"GET")
    from cco import admin

    admin.send_top_prompts(app, request, client)


def _get(handler: Handler) -> Handler:
    def checked(app: App, request: Request, client: HttpProtocol):
        _require(request, b"GET")
        return handler(app, request, client)

    return checked


async def _reload(app: App, request: Request, client: HttpProtocol) -> None:
    result = await app.reload()
    client.send(request, 200 if result["status"] == "reloaded" else 422, b"", orjson.dumps(result))


def config_reload(app: App, request: Request, client: HttpProtocol):
    _require(request, b"POST")
    return _reload(app, request, client)


def route_explain(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"GET")
    from cco import admin

    admin.send_route_explanation(app, request, client)


def chat_completions(app: App, request: Request, client: HttpProtocol):
    from cco.chat import chat_completions as handle

    return handle(app, request, client)


EXACT: dict[bytes, Handler] = {
    b"/v1/chat/completions": chat_completions,
    b"/api/config/reload": config_reload,
    b"/api/route": route_explain,
    b"/api/project/stats": _get(api.project_stats),
    b"/api/projects": _get(api.projects),
    b"/api/machine/stats": _get(api.machine_stats),
    b"/api/overrides/stats": _get(api.overrides_stats),
    b"/api/export/analytics": _get(api.export_analytics),
    b"/api/export/csv": _get(api.export_csv),
    b"/api/events": _get(api.events),
    b"/api/logs": _get(api.logs),
    b"/metrics": _get(api.metrics_text),
    b"/v1/messages": messages,
    b"/v1/messages/count_tokens": count_tokens,
    b"/v1/messages/batches": batches,
    b"/v1/models": models,
    b"/": probe,
    b"/api/hello": probe,
    b"/health": health,
    b"/ready": ready,
    b"/api/cache/stats": cache_stats,
    b"/api/cache/clear": cache_clear,
    b"/api/cache/top-prompts": cache_top_prompts,
}


def _prefix_handler(path: bytes) -> Handler | None:
    if path.startswith(b"/v1/messages/batches/"):
        return batches
    if path.startswith(b"/v1/models/") and len(path) > len(b"/v1/models/"):
        return model_by_id
    if path.startswith(b"/api/export/project/") and len(path) > len(b"/api/export/project/"):
        return _EXPORT_PROJECT
    return None


_EXPORT_PROJECT = _get(api.export_project)


def version_string() -> str:
    return f"cco-proxy {__version__} ({IMPL})"


__all__ = ["App", "version_string"]
