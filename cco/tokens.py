"""count_tokens for routes whose provider is not Anthropic (SPEC §3).

Claude Code compacts its context by this number, so an undercount breaks it. A backend with a tokenizer endpoint
(vLLM's `POST /tokenize` at the server root) is asked with the translated messages; otherwise — or when that call
fails — the answer is an estimate that counts every block (`cco.providers.translate.estimate`), and says so in
`x-cco-token-count: estimated`. A route whose tokenizer answered 404 once is not asked again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import orjson

from cco import providers
from cco.analytics.record import NO_COST
from cco.errors import UpstreamError
from cco.pipeline import model_headers, new_request_id, request_pivot
from cco.providers.translate.estimate import estimate_tokens
from cco.upstream.connection import Exchange

if TYPE_CHECKING:
    from cco.app import App
    from cco.protocol import HttpProtocol, Request
    from cco.routing import Route

log = logging.getLogger("cco.tokens")

TOKENIZE_TIMEOUT_SECONDS = 10.0
_no_tokenizer: set[tuple[str, str, int]] = set()  # origins whose /tokenize answered 404


class _Collect(Exchange):
    __slots__ = ("status", "chunks", "done")

    def __init__(self, loop: asyncio.AbstractEventLoop, provider: str) -> None:
        super().__init__(provider, TOKENIZE_TIMEOUT_SECONDS)
        self.status = 0
        self.chunks: list[bytes] = []
        self.done: asyncio.Future[UpstreamError | None] = loop.create_future()

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status

    def on_body(self, data: bytes) -> None:
        self.chunks.append(data)

    def on_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def on_error(self, exc: UpstreamError) -> None:
        if not self.done.done():
            self.done.set_result(exc)


async def _tokenize(app: App, route: Route, model: str, pivot: dict) -> int | None:
    from cco.providers.translate.openai_chat import anthropic_to_openai_request

    translated = anthropic_to_openai_request(pivot, route.upstream_model(model))
    body = orjson.dumps({"model": translated["model"], "messages": translated["messages"],
                         **({"tools": translated["tools"]} if translated.get("tools") else {})})
    head = (b"POST /tokenize HTTP/1.1\r\nhost: " + route.origin.host_header
            + b"\r\ncontent-type: application/json\r\naccept: application/json\r\n"
            + (b"authorization: Bearer " + route.api_key + b"\r\n" if route.api_key else b"")
            + route.extra_headers + b"content-length: %d\r\n\r\n" % len(body))
    pool = route.pool
    if pool is None:
        pool = route.pool = app.pools.get(route.origin, route.max_connections)
    exchange = _Collect(app.loop, route.provider)
    try:
        conn, _ = await pool.acquire(route.connect_timeout, route.provider)
    except UpstreamError:
        return None
    conn.start(exchange, head, body)
    try:
        error = await exchange.done
    except asyncio.CancelledError:
        if exchange.conn is not None:
            exchange.conn.detach()
        raise
    if error is not None:
        return None
    if exchange.status == 404:
        _no_tokenizer.add(route.origin.key)
        return None
    if exchange.status != 200:
        return None
    try:
        count = orjson.loads(b"".join(exchange.chunks)).get("count")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return count if isinstance(count, int) and count >= 0 else None


async def count_tokens_locally(app: App, client: HttpProtocol, request: Request, route: Route, model: str) -> None:
    pivot = request_pivot(request)
    count = None
    adapter = providers.adapter(route.provider)
    if adapter.TOKENIZE_PATH is not None and route.origin.key not in _no_tokenizer:
        count = await _tokenize(app, route, model, pivot)
    how = b"tokenizer" if count is not None else b"estimated"
    if count is None:
        count = estimate_tokens(pivot)
    request.request_id = new_request_id()
    client.send(request, 200, model_headers(route, model) + b"x-cco-cache: bypass\r\nx-cco-token-count: " + how
                + b"\r\nx-cco-cost-usd: 0.0\r\nrequest-id: " + request.request_id + b"\r\n",
                orjson.dumps({"input_tokens": count}))
    app.record_call(request, model, route, "/v1/messages/count_tokens", False, "none", None, NO_COST)
