"""The application: shared state (config, routes, pools, counters) and the (method, path) → handler table.

`App.__call__` is what the protocol calls for each request. Paths may carry a project prefix `/p/{project}/…`.
Errors raised by handlers are `CcoError`s and are turned into responses here, in one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

import msgspec

from cco import __version__, wire
from cco._fast import IMPL
from cco.config import Config
from cco.errors import CcoError, InvalidRequest, MethodNotAllowed, NotFound, ProviderNotAvailable, ServiceUnavailable
from cco.pipeline import forward
from cco.protocol import HttpProtocol, Request
from cco.providers import anthropic
from cco.routing import Route, Router
from cco.upstream.pool import PoolManager

log = logging.getLogger("cco.app")
access_log = logging.getLogger("cco.access")

Handler = Callable[["App", Request, HttpProtocol], Awaitable[None]]


class MessagesView(msgspec.Struct):
    """The fields of a Messages request the proxy reads; everything else is forwarded untouched."""

    model: str
    stream: bool = False
    max_tokens: int | None = None


class CountTokensView(msgspec.Struct):
    model: str


_messages_decoder = msgspec.json.Decoder(MessagesView)
_count_tokens_decoder = msgspec.json.Decoder(CountTokensView)


class Stats:
    """Process counters read by /health (and later /metrics); plain ints, no per-request allocation."""

    __slots__ = ("requests", "by_status_class", "retries")

    def __init__(self) -> None:
        self.requests = 0
        self.by_status_class = [0, 0, 0, 0, 0, 0]
        self.retries = 0

    def count(self, status: int) -> None:
        self.requests += 1
        self.by_status_class[min(status // 100, 5)] += 1


class App:
    def __init__(self, config: Config, *, access_log_enabled: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.router = Router(config)
        self.pools = PoolManager()
        self.stats = Stats()
        self.started = time.time()
        self.draining = False
        self.access_log = access_log_enabled

    async def __call__(self, request: Request, client: HttpProtocol) -> None:
        path = request.path
        if path.startswith(b"/p/"):
            project, sep, rest = path[3:].partition(b"/")
            if project:
                request.project = project.decode("utf-8", "replace")
                path = request.path = b"/" + rest
        handler = EXACT.get(path)
        try:
            if handler is None:
                handler = _prefix_handler(path)
            if handler is None:
                raise NotFound(f"no such endpoint: {request.method.decode()} {path.decode('utf-8', 'replace')}")
            await handler(self, request, client)
        except CcoError as exc:
            headers = b""
            if isinstance(exc, MethodNotAllowed):
                headers = b"allow: " + getattr(exc, "allow", b"GET") + b"\r\n"
            client.send_error(request, exc.status, exc.error_type, exc.message, headers=headers)
        if self.access_log:
            access_log.info("%s %s %s", request.method.decode(), request.path.decode("utf-8", "replace"),
                            round((time.perf_counter() - request.received_at) * 1000, 3))

    # helpers

    def route_for(self, model: str) -> Route:
        route = self.router.match(model)
        if route is None:
            raise NotFound(f"no route for model {model!r}; configured patterns: "
                           + ", ".join(self.router.patterns))
        if route.provider != "anthropic":
            raise ProviderNotAvailable(f"model {model!r} routes to provider {route.provider!r} "
                                       f"({route.pattern!r}), which this version does not serve yet; "
                                       "only anthropic routes carry traffic")
        return route

    def anthropic_route(self) -> Route:
        route = self.router.first_route("anthropic")
        if route is None:
            raise NotFound("no anthropic route is configured; batches need one")
        return route

    def public_base_url(self, request: Request) -> str:
        host = (request.header(b"x-forwarded-host") or request.header(b"host") or b"127.0.0.1").decode("latin-1")
        scheme = (request.header(b"x-forwarded-proto") or b"http").decode("latin-1")
        prefix = f"/p/{request.project}" if request.project else ""
        return f"{scheme}://{host}{prefix}"


def _require(request: Request, *methods: bytes) -> None:
    if request.method not in methods and not (request.method == b"HEAD" and b"GET" in methods):
        exc = MethodNotAllowed(f"method {request.method.decode()} not allowed on {request.path.decode()}")
        exc.allow = b", ".join(methods)  # type: ignore[attr-defined]
        raise exc


def _decode(decoder: msgspec.json.Decoder, body: bytes):
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request body: {str(exc).replace('`', '')}") from None
    except msgspec.DecodeError as exc:
        message = str(exc)
        if "truncated" in message:  # msgspec gives no position for a body that ends early: it is the end
            message += f" (byte {len(body)})" if body else " (empty body)"
        raise InvalidRequest(f"invalid JSON body: {message}") from None


def _strip_model(body: bytes, route: Route, model: str) -> bytes:
    upstream_model = route.upstream_model(model)
    if upstream_model == model:
        return body
    import orjson

    obj = orjson.loads(body)
    obj["model"] = upstream_model
    return orjson.dumps(obj)


# Handlers


async def messages(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"POST")
    if app.draining:
        raise ServiceUnavailable("the proxy is shutting down")
    view = _decode(_messages_decoder, request.body)
    route = app.route_for(view.model)
    body = _strip_model(request.body, route, view.model)
    await forward(app, client, request, route, view.model, b"/v1/messages", body, stream_through=view.stream)


async def count_tokens(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"POST")
    view = _decode(_count_tokens_decoder, request.body)
    route = app.route_for(view.model)
    body = _strip_model(request.body, route, view.model)
    await forward(app, client, request, route, view.model, b"/v1/messages/count_tokens", body,
                  stream_through=False)


async def batches(app: App, request: Request, client: HttpProtocol) -> None:
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
    await forward(app, client, request, route, "", path, request.body, stream_through=results, rewrite=rewrite)


async def models(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"GET")
    from cco import admin

    admin.send_models(app, request, client)


async def model_by_id(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"GET")
    from cco import admin

    admin.send_model(app, request, client, request.path[len(b"/v1/models/"):].decode("utf-8", "replace"))


async def probe(app: App, request: Request, client: HttpProtocol) -> None:
    """HEAD / and HEAD|GET /api/hello: Claude Code's connectivity probes (a 405 breaks its preflight)."""
    _require(request, b"GET")
    client.send(request, 200, b"", b'{"ok":true}')


async def health(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"GET")
    from cco import admin

    admin.send_health(app, request, client)


async def ready(app: App, request: Request, client: HttpProtocol) -> None:
    _require(request, b"GET")
    if app.draining:
        client.send(request, 503, b"", b'{"status":"draining"}')
    else:
        client.send(request, 200, b"", b'{"status":"ready"}')


EXACT: dict[bytes, Handler] = {
    b"/v1/messages": messages,
    b"/v1/messages/count_tokens": count_tokens,
    b"/v1/messages/batches": batches,
    b"/v1/models": models,
    b"/": probe,
    b"/api/hello": probe,
    b"/health": health,
    b"/ready": ready,
}


def _prefix_handler(path: bytes) -> Handler | None:
    if path.startswith(b"/v1/messages/batches/"):
        return batches
    if path.startswith(b"/v1/models/") and len(path) > len(b"/v1/models/"):
        return model_by_id
    return None


def version_string() -> str:
    return f"cco-proxy {__version__} ({IMPL})"


__all__ = ["App", "version_string", "wire"]
