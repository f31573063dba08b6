"""One client request to a provider: cache → route → upstream pool → response back to the client, with retries.

Theory of operation. `forward` builds the upstream request head once and sends it through the route's pool.
The response arrives in a `ForwardExchange` (cco/exchange.py), which streams a 2xx streaming answer to the
client as it arrives and buffers anything else until complete, which lets us retry:
connect errors, timeouts, a body that ended early and statuses 429/500/502/503/504/529 are retried up to the
route's `max_retries` with exponential backoff and jitter, honouring `retry-after` — only ever before the first
byte went to the client (SPEC §4). A request that fails on a reused keep-alive connection before any response
byte is resent once on a new connection, outside the retry budget. When the client goes away, the task running
`forward` is cancelled and the upstream connection is closed, never reused.

With a cache plan, a complete 2xx answer is stored, and the request's flight (single-flight, cco/cache/store.py)
hands the outcome to identical requests that waited: the entry, the same error, or "retry yourselves" when this
request's client went away first.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Callable

import orjson

from cco import wire
from cco.cache.message import message_bytes
from cco.cache.store import CacheEntry, Flight, FlightResult
from cco.errors import UpstreamError, error_body, sse_error_event
from cco.analytics.record import NO_COST, BatchUsage, usage_of_dict, usage_of_message
from cco.pricing import CallCost, PriceTable, Usage, call_cost
from cco import providers
from cco.providers import anthropic
from cco.exchange import ForwardExchange, Outcome, model_headers, new_request_id

if TYPE_CHECKING:
    from cco.app import App
    from cco.protocol import HttpProtocol, Request
    from cco.routing import Route

log = logging.getLogger("cco.pipeline")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504, 529})
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
# A retry-after longer than this is not waited out: the error goes back to the client, which can decide.
MAX_RETRY_AFTER_SECONDS = 60.0

CACHE_HIT = b"x-cco-cache: hit\r\n"
CACHE_MISS = b"x-cco-cache: miss\r\n"
CACHE_BYPASS = b"x-cco-cache: bypass\r\n"
CACHE_COALESCED = b"x-cco-cache: coalesced\r\n"


class CachePlan:
    """The cache's part in one request: its key, whether it may read, and the flight it leads (if any)."""

    __slots__ = ("key", "readable", "flight_key", "credential", "endpoint", "flight")
    BYPASS: CachePlan

    def __init__(self, key: bytes | None, readable: bool = False, flight_key: bytes | None = None,
                 credential: int = 0, endpoint: str = "") -> None:
        self.key = key
        self.readable = readable
        # The in-flight table key: the cache key for a trusted credential; for one not yet seen to succeed, the
        # key plus the credential, so that only requests with that same credential wait on its answer.
        self.flight_key = flight_key
        self.credential = credential
        self.endpoint = endpoint
        self.flight: Flight | None = None


CachePlan.BYPASS = CachePlan(None)


def retry_delay(attempt: int, headers: list[tuple[bytes, bytes]] | None) -> float | None:
    """Seconds to wait before retry number `attempt + 1`, or None when the upstream asked for too long a wait."""
    delay = min(BACKOFF_BASE_SECONDS * (2 ** attempt), BACKOFF_MAX_SECONDS) * random.uniform(0.75, 1.0)
    if headers:
        asked = _retry_after(headers)
        if asked is not None:
            if asked > MAX_RETRY_AFTER_SECONDS:
                return None
            delay = max(asked, 0.0)
    return delay


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    for name, value in headers:
        if name == b"retry-after-ms":
            try:
                return float(value) / 1000
            except ValueError:
                pass
    for name, value in headers:
        if name == b"retry-after":
            try:
                return float(value)
            except ValueError:
                try:
                    when = parsedate_to_datetime(value.decode("latin-1"))
                    return when.timestamp() - time.time()
                except (TypeError, ValueError):
                    return None
    return None


class Target:
    """One model to try: its route, upstream head and body, and the adapter when its wire format is not Anthropic's."""

    __slots__ = ("route", "model", "depth", "head", "body", "adapter", "pool", "cco_headers", "raw")

    def __init__(self, app: App, request: Request, route: Route, model: str, depth: int, path: bytes, body: bytes,
                 stream: bool, endpoint: str) -> None:
        self.route = route
        self.model = model
        self.depth = depth
        provider = route.provider
        # An OpenAI client of an OpenAI-compatible provider: its own request, passed through (model name aside).
        self.raw = request.openai is not None and provider == "openai"
        if self.raw:
            adapter = self.adapter = providers.adapter(provider)
            self.body = with_model(request.body, route.upstream_model(model))
            self.head = adapter.request_head(adapter.UPSTREAM_PATHS[endpoint], route, len(self.body),
                                             request.headers, stream)
        elif provider == "anthropic" or not model:
            self.adapter = None
            self.body = body
            self.head = anthropic.request_head(request.method, path, request.query, request.headers, route, len(body))
        else:
            adapter = self.adapter = providers.adapter(provider)
            self.body = adapter.request_body(request_pivot(request), route.upstream_model(model), stream)
            self.head = adapter.request_head(adapter.UPSTREAM_PATHS[endpoint], route, len(self.body),
                                             request.headers, stream)
        pool = route.pool
        if pool is None:
            pool = route.pool = app.pools.get(route.origin, route.max_connections)
        self.pool = pool
        self.cco_headers = model_headers(route, model)


def request_pivot(request: Request) -> dict:
    """The request as an Anthropic Messages dict (decoded once per request; set already for translated inbound)."""
    pivot = request.pivot
    if pivot is None:
        pivot = request.pivot = orjson.loads(request.body)
    return pivot


def with_model(body: bytes, model: str) -> bytes:
    """The Anthropic request body with its `model` replaced (override, fallback, strip_prefix)."""
    obj = orjson.loads(body)
    if obj.get("model") == model:
        return body
    obj["model"] = model
    return orjson.dumps(obj)


async def forward(app: App, client: HttpProtocol, request: Request, route: Route, model: str, path: bytes,
                  body: bytes, *, stream_through: bool, rewrite: Callable[[bytes], bytes] | None = None,
                  cache: CachePlan = CachePlan.BYPASS, record_as: str = "", batch_results: bool = False,
                  chain: tuple[str, ...] = ()) -> None:
    """Sends `request` (with `body`) to `route` at `path` and answers the client with the result.

    `chain` is the fallback chain (SPEC §4): when the route's tries are spent on a retryable failure before any
    byte reached the client, the next model is tried, each by its own route; a fallback answer is served but not
    cached (the key is the requested model's). `record_as` names the endpoint in the call's analytics row;
    `batch_results` marks a batch results download, whose JSONL lines carry the usage of every request of the
    batch (priced with the batch discount)."""
    loop = app.loop
    target = Target(app, request, route, model, 0, path, body, stream_through, record_as)
    cache_label = "none"
    cache_line = b""
    if model:
        cache_line = CACHE_BYPASS if cache.key is None else CACHE_MISS
        cache_label = "bypass" if cache.key is None else "miss"
    flight = cache.flight
    upstream_seconds = 0.0
    exchange = None
    try:
        while True:
            attempt = 0
            while True:
                exchange = ForwardExchange(loop, client, request, target.route, stream_through,
                                           target.cco_headers + cache_line, flight, target.adapter, target.model,
                                           target.raw)
                if batch_results:
                    exchange.batch_usage = BatchUsage(app.prices)
                started = time.perf_counter()
                exchange.overhead_ms = max((started - request.received_at - upstream_seconds) * 1000, 0.0)
                await _attempt(target.pool, exchange, target.head, target.body, target.route)
                upstream_seconds += time.perf_counter() - started
                outcome = exchange.outcome
                if outcome.committed:
                    break
                retryable = outcome.error is not None or outcome.status in RETRYABLE_STATUS
                if retryable and attempt < target.route.max_retries:
                    delay = retry_delay(attempt, outcome.headers if outcome.error is None else None)
                    if delay is not None:
                        app.stats.retries += 1
                        await asyncio.sleep(delay)
                        attempt += 1
                        continue
                break
            failed = not outcome.committed and (outcome.error is not None or outcome.status in RETRYABLE_STATUS)
            if not failed or target.depth >= len(chain):
                break
            next_model = chain[target.depth]
            next_route = app.router.match(next_model)
            if next_route is None:  # validated at load; a reload may have removed it since
                break
            log.info("fallback: %s failed (%s), trying %s", target.model,
                     outcome.error.message if outcome.error is not None else outcome.status, next_model)
            app.stats.fallbacks += 1
            next_body = with_model(body, next_route.upstream_model(next_model))
            target = Target(app, request, next_route, next_model, target.depth + 1, path, next_body,
                            stream_through, record_as)
    except asyncio.CancelledError:
        if flight is not None:
            _abandon(flight)
        # The client left. An upstream call was made (and may be billed): the row says so, with what usage the
        # stream had reported (input tokens arrive in message_start).
        assembler = exchange.outcome.assembler if exchange is not None else None
        usage = usage_of_dict(assembler.usage) if assembler is not None else None
        app.record_call(request, target.model, target.route, record_as, stream_through, cache_label, usage,
                        _priced(app, request, target.model, usage), error_type="client_closed",
                        upstream_ms=upstream_seconds * 1000 or None, fallback_depth=target.depth)
        raise
    finally:
        if flight is not None:
            app.cache.end(flight)  # type: ignore[union-attr]
    route, served = target.route, target.model
    storable = cache if target.depth == 0 else CachePlan.BYPASS
    app.stats.count(outcome.status if outcome.error is None else outcome.error.status)
    error_type = outcome.error.error_type if outcome.error is not None else None
    if outcome.committed:
        entry = _remember_stream(app, request, route, served, storable, outcome)
        if flight is not None and flight.awaited:
            assembler = outcome.assembler
            if entry is not None:
                flight.finish(FlightResult(entry=entry))
            elif outcome.error is not None or (assembler is not None and not assembler.complete):
                message = f"upstream {route.provider}: the stream ended early"
                flight.finish(FlightResult(status=502, headers=wire.CONTENT_TYPE_JSON,
                                           body=error_body(502, "api_error", message)))
            else:
                flight.finish(FlightResult(retry=True))  # complete but not storable: followers ask themselves
        if batch_results:
            batch = exchange.batch_usage
            assert batch is not None
            batch.finish()
            app.record_call(request, batch.model or served, route, record_as, True, cache_label, batch.usage,
                            batch.cost, batch=True, error_type=error_type, upstream_ms=upstream_seconds * 1000)
        else:
            assembler = outcome.assembler
            usage = usage_of_dict(assembler.usage) if assembler is not None else None
            if error_type is None and assembler is not None and not assembler.complete:
                error_type = "incomplete_stream"
            app.record_call(request, served, route, record_as, True, cache_label, usage,
                            _priced(app, request, served, usage), error_type=error_type, upstream_ms=upstream_seconds * 1000,
                            fallback_depth=target.depth)
    else:
        usage = None
        openai_client = request.openai is not None
        if outcome.error is None and 200 <= outcome.status < 300 and record_as in MESSAGE_ENDPOINTS:
            chunks = outcome.chunks
            joined = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if target.raw:
                usage = _usage_of_openai(target, joined)
            else:
                if target.adapter is not None:
                    joined = _translated_message(target, joined)
                    outcome.headers = [(b"content-type", b"application/json")]
                usage = usage_of_message(joined)
                if openai_client:
                    joined = _as_openai_completion(joined, served)
                    outcome.headers = [(b"content-type", b"application/json")]
            outcome.chunks = [joined]
        elif outcome.error is None and not target.raw and (target.adapter is not None or openai_client):
            body_bytes = b"".join(outcome.chunks)
            if target.adapter is not None:
                etype, message = target.adapter.error_of(outcome.status, body_bytes)
            else:
                etype, message = anthropic.error_of(body_bytes)
                etype = etype or "api_error"
                message = message or f"upstream status {outcome.status}"
            outcome.chunks = [error_body(outcome.status, etype, message, shape=request.shape)]
            outcome.headers = [(b"content-type", b"application/json")]
        cost = _priced(app, request, served, usage)
        status, headers, response = _answer(client, request, outcome, target.cco_headers + cache_line,
                                            upstream_seconds, rewrite, cost.cost)
        if error_type is None and status >= 400:
            error_type = anthropic.error_type_of(response)
        app.record_call(request, served, route, record_as, stream_through, cache_label, usage, cost,
                        error_type=error_type, upstream_ms=upstream_seconds * 1000, fallback_depth=target.depth)
        entry = None
        if 200 <= status < 300 and outcome.error is None and app.cache is not None:
            app.cache.verify_credential(cache.credential)
            if storable.key is not None and _is_json(outcome.headers):
                entry = _store(app, route, served, storable, response)
        if flight is not None and flight.awaited:
            flight.finish(FlightResult(entry=entry) if entry is not None else
                          FlightResult(status=status, headers=headers, body=response, retry=200 <= status < 300))
    if client.flow is not None and client.flow.write_paused:
        await client.drain()  # a client that does not read holds up its next pipelined request, not our memory


MESSAGE_ENDPOINTS = frozenset({"/v1/messages", "/v1/chat/completions"})


def _usage_of_openai(target: Target, body: bytes) -> Usage | None:
    try:
        return usage_of_dict(target.adapter.response_message(body, target.model).get("usage"))  # type: ignore
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _as_openai_completion(message: bytes, model: str) -> bytes:
    from cco.providers.translate.openai_chat import anthropic_to_openai_response

    try:
        return orjson.dumps(anthropic_to_openai_response(orjson.loads(message), model, int(time.time())))
    except (ValueError, KeyError, TypeError, AttributeError):
        return error_body(502, "api_error", "upstream answer could not be translated", shape="openai")


def _translated_message(target: Target, body: bytes) -> bytes:
    """A translated provider's 2xx answer as an Anthropic Message (an unreadable one is the provider's fault)."""
    try:
        return orjson.dumps(target.adapter.response_message(body, target.model))  # type: ignore[union-attr]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("upstream %s: unreadable answer: %s", target.route.provider, exc)
        return error_body(502, "api_error", f"upstream {target.route.provider}: unreadable answer")


def _priced(app: App, request: Request, model: str, usage: Usage | None) -> CallCost:
    """The call's cost; an overridden call would have cost the requested model's price (SPEC §7)."""
    if usage is None or not model:
        return NO_COST
    if request.override_rule is not None:
        return call_cost(app.prices, model, usage, requested_model=request.requested_model, overridden=True)
    return call_cost(app.prices, model, usage)


def _abandon(flight: Flight) -> None:
    """The leader's client went away (its upstream call is cancelled): attached stream followers get an error
    event, the others send their own request."""
    flight.stream_end(sse_error_event("api_error", "the shared upstream request was cancelled"))
    flight.subscribers.clear()
    flight.finish(FlightResult(retry=True))


def _answer(client: HttpProtocol, request: Request, outcome: Outcome, cco_headers: bytes, upstream_seconds: float,
            rewrite: Callable[[bytes], bytes] | None, cost: float) -> tuple[int, bytes, bytes]:
    """Writes a buffered upstream answer, or the proxy's error when no answer came; returns what was sent
    (status, the upstream header block, body)."""
    overhead = (time.perf_counter() - request.received_at - upstream_seconds) * 1000
    extra = cco_headers + b"x-cco-overhead-ms: %.3f\r\n" % max(overhead, 0.0) + cost_header(cost)
    if outcome.error is not None:
        err = outcome.error
        body = error_body(err.status, err.error_type, err.message, shape=request.shape)
        request.request_id = new_request_id()
        client.send(request, err.status, extra + b"request-id: " + request.request_id + b"\r\n", body)
        return err.status, wire.CONTENT_TYPE_JSON, body
    block, request_id = anthropic.response_headers(outcome.headers)
    if request_id is None:
        request_id = new_request_id()
        extra += b"request-id: " + request_id + b"\r\n"
    request.request_id = request_id
    chunks = outcome.chunks
    response = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if rewrite is not None and 200 <= outcome.status < 300:
        response = rewrite(response)
    client.send(request, outcome.status, block + extra, response, content_type=b"")
    return outcome.status, block, response


def _store(app: App, route: Route, model: str, cache: CachePlan, body: bytes) -> CacheEntry | None:
    """Stores a complete 2xx answer (the exact bytes served); returns the entry, or None when it does not fit."""
    assert app.cache is not None and cache.key is not None
    entry = CacheEntry(cache.key, body, model, cache.endpoint)
    return entry if app.cache.put(entry) else None


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.startswith(b"application/json")
    return False


def entry_cost(prices: PriceTable, entry: CacheEntry) -> tuple[Usage | None, CallCost]:
    """The usage of the call that produced `entry`, and what a hit on it costs (0) and saves (what that call
    cost at list prices; nothing for count_tokens, which is free)."""
    if entry.endpoint != "/v1/messages":
        return None, NO_COST
    usage = usage_of_message(entry.body)
    if usage is None:
        return None, NO_COST
    return usage, call_cost(prices, entry.model, usage, cache="hit")


def cost_header(cost: float) -> bytes:
    """x-cco-cost-usd with the full double-precision value (SPEC §7: money is never rounded)."""
    return b"x-cco-cost-usd: " + repr(cost).encode() + b"\r\n"


COST_ZERO = cost_header(0.0)


def _remember_stream(app: App, request: Request, route: Route, model: str, cache: CachePlan,
                     outcome: Outcome) -> CacheEntry | None:
    assembler = outcome.assembler
    if outcome.error is not None or assembler is None or not assembler.complete:
        return None  # cut off, failed or not SSE: never stored (SPEC §5)
    if app.cache is not None:
        app.cache.verify_credential(cache.credential)
    if cache.key is None or not (200 <= outcome.status < 300):
        return None
    return _store(app, route, model, cache, message_bytes(assembler.message()))


def serve_entry(app: App, client: HttpProtocol, request: Request, route: Route, model: str, entry: CacheEntry,
                stream: bool, how: bytes) -> None:
    """Answers from a stored entry, as JSON or as a synthesized SSE stream, whichever the request asked for."""
    request_id = request.request_id = new_request_id()
    headers = (model_headers(route, model) + (CACHE_HIT if how == b"hit" else CACHE_COALESCED)
               + b"request-id: " + request_id + b"\r\nx-cco-overhead-ms: %.3f\r\n"
               % ((time.perf_counter() - request.received_at) * 1000))
    if stream and entry.endpoint == "/v1/messages":
        client.send(request, 200, headers + wire.NO_BUFFERING + b"cache-control: no-cache\r\n",
                    app.cache.stream_body(entry), content_type=wire.CONTENT_TYPE_SSE)
    else:
        client.send(request, 200, headers + COST_ZERO, entry.body)
    stats = entry.stats
    app.record_call(request, model, route, entry.endpoint, stream, "hit" if how == b"hit" else "coalesced",
                    stats.usage if stats is not None else None,
                    stats.hit_cost if stats is not None and stats.hit_cost is not None else NO_COST)


async def follow(app: App, client: HttpProtocol, request: Request, route: Route, model: str, flight: Flight,
                 stream: bool, again: Callable) -> None:
    """An identical request is already upstream: wait for it (streams receive its bytes as they come)."""
    cache = app.cache
    assert cache is not None
    subscriber = None
    if stream:
        request.request_id = new_request_id()
        own = model_headers(route, model) + CACHE_COALESCED + b"request-id: " + request.request_id + b"\r\n"
        if flight.head is not None:  # the leader's stream already started: catch up, then follow live
            status, block = flight.head
            client.write_stream(client.stream_head(request, status, block + own), list(flight.chunks))
        subscriber = (client, request, own)
        flight.subscribers.append(subscriber)
    try:
        result = await asyncio.shield(flight.done)
    finally:
        if subscriber is not None and subscriber in flight.subscribers:
            flight.subscribers.remove(subscriber)
    if request.status:  # attached to the leader's stream, which has written everything
        stats = cache.count_coalesced(result.entry, request.body)
        app.record_call(request, model, route, "/v1/messages", True, "coalesced",
                        stats.usage if stats is not None else None,
                        stats.hit_cost if stats is not None and stats.hit_cost is not None else NO_COST,
                        error_type=None if result.entry is not None else "api_error")
        return
    if result.retry:
        pending = again()  # the leader gave up before answering: send our own request
        if pending is not None:
            await pending
        return
    cache.count_coalesced(result.entry, request.body)
    if result.entry is not None:
        serve_entry(app, client, request, route, model, result.entry, stream, b"coalesced")
    else:
        request.request_id = new_request_id()
        headers = (model_headers(route, model) + CACHE_COALESCED + COST_ZERO + b"request-id: " + request.request_id
                   + b"\r\n")
        client.send(request, result.status, result.headers + headers, result.body, content_type=b"")
        app.record_call(request, model, route, "/v1/messages", stream, "coalesced", None, NO_COST,
                        error_type=anthropic.error_type_of(result.body))


async def _attempt(pool, exchange: ForwardExchange, head: bytes, body: bytes, route: Route) -> None:
    """One try, plus the single resend allowed when a reused connection failed before answering."""
    for fresh in (False, True):
        try:
            conn, reused = await pool.acquire(route.connect_timeout, route.provider, fresh=fresh)
        except UpstreamError as exc:
            exchange.outcome.error = exc
            return
        conn.start(exchange, head, body)
        try:
            await exchange.done
        except asyncio.CancelledError:
            if exchange.conn is not None:
                exchange.conn.detach()
            raise
        error = exchange.outcome.error
        if error is None or not (error.before_response and reused) or exchange.outcome.committed or fresh:
            return
        # The keep-alive connection was closed by the server before it read our request: resend once.
        log.debug("resending on a new connection after %s", error.cause)
        exchange.outcome = Outcome()
        exchange.done = exchange.loop.create_future()
