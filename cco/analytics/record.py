"""From a finished request to an `api_calls` row, and the in-memory counters `/metrics` reads.

Theory of operation. Every request on a provider endpoint ends in exactly one `Recorder.record` call, on the event
loop thread, when its response is complete (or failed). It builds the row tuple (column order of
`cco.analytics.schema.COLUMNS`) and hands it to the writer's queue: no I/O, no formatting, no SQLite, no counter
updates on the request path (the /metrics counters are derived from the rows in the writer thread). Money is computed here, once, from the usage and the
price table (`cco.pricing`), so the `x-cco-cost-usd` header, the row and the counters always agree.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Callable

import msgspec

from cco.analytics.schema import COLUMNS
from cco.pricing import CallCost, PriceTable, Usage, call_cost

if TYPE_CHECKING:
    from cco.protocol import Request

# Upstream latency histogram buckets (seconds), Prometheus-style upper bounds.
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                                      120.0, 300.0)
NO_COST = CallCost(cost=0.0, would_be_cost=0.0, savings=0.0, unpriced=False)


class _CacheCreation(msgspec.Struct):
    ephemeral_1h_input_tokens: int | None = None


class _AnthropicUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: _CacheCreation | None = None


class _UsageEnvelope(msgspec.Struct):
    usage: _AnthropicUsage | None = None


_envelope_decoder = msgspec.json.Decoder(_UsageEnvelope)


def _usage(raw: _AnthropicUsage) -> Usage:
    creation = raw.cache_creation_input_tokens or 0
    one_hour = (raw.cache_creation.ephemeral_1h_input_tokens or 0) if raw.cache_creation is not None else 0
    return Usage(input_tokens=raw.input_tokens or 0, output_tokens=raw.output_tokens or 0,
                 cache_creation_tokens=creation, cache_creation_1h_tokens=min(one_hour, creation),
                 cache_read_tokens=raw.cache_read_input_tokens or 0)


def usage_of_message(body: bytes) -> Usage | None:
    """The usage of an Anthropic Message JSON body; only `usage` is decoded (the rest is skipped by msgspec)."""
    try:
        envelope = _envelope_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return _usage(envelope.usage) if envelope.usage is not None else None


def usage_of_dict(obj: object) -> Usage | None:
    """The usage of an Anthropic `usage` object already decoded (a stream's assembled message)."""
    if not isinstance(obj, dict):
        return None
    try:
        return _usage(msgspec.convert(obj, _AnthropicUsage))
    except msgspec.ValidationError:
        return None


_C = {name: i for i, name in enumerate(COLUMNS)}
_MODEL, _PROVIDER, _STATUS, _CACHE = _C["model"], _C["provider"], _C["status"], _C["cache"]
_REQUESTED, _OVERRIDE, _UPSTREAM_MS = _C["requested_model"], _C["override_rule"], _C["upstream_ms"]
_COST, _SAVINGS = _C["cost"], _C["savings"]
_TOKEN_COLUMNS = (("input", _C["input_tokens"]), ("output", _C["output_tokens"]),
                  ("cache_creation", _C["cache_creation_tokens"]), ("cache_read", _C["cache_read_tokens"]))


class Counters:
    """What /metrics exposes, kept as plain dicts keyed by label tuples.

    They are updated from the rows in the writer thread (`observe`, once per committed batch), not on the request
    path: a row already holds every figure, and the request path stays one tuple and one append. The dicts are
    read by the collector with `list(d.items())`, which runs under the GIL without yielding.
    """

    __slots__ = ("requests", "tokens", "cost", "savings", "latency", "overrides")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}  # (provider, model, status) → count
        self.tokens: dict[tuple[str, str, str], int] = {}  # (provider, model, kind) → tokens
        self.cost: dict[tuple[str, str], float] = {}  # (provider, model) → USD
        self.savings: dict[tuple[str, str], float] = {}
        # provider → [count per bucket (not cumulative)..., +Inf count, sum of seconds]
        self.latency: dict[str, list[float]] = {}
        self.overrides: dict[tuple[str, str], int] = {}  # (requested, served) → count

    def observe(self, rows: list[tuple]) -> None:
        """Adds committed rows. A run of consecutive rows with one (provider, model, status) — a burst of hits, say —
        is counted and summed first and added to the dicts once."""
        tokens = self.tokens
        label: tuple | None = None
        run = 0
        run_cost = run_savings = 0.0
        priced = False
        for row in rows:
            provider, model, status = row[_PROVIDER], row[_MODEL], row[_STATUS]
            if label is None or status != label[2] or model != label[1] or provider != label[0]:
                if label is not None:
                    self._add_run(label, run, priced, run_cost, run_savings)
                label = (provider, model, status)
                run = 0
                run_cost = run_savings = 0.0
                priced = False
            run += 1
            cost, savings = row[_COST], row[_SAVINGS]
            if cost or savings:
                priced = True
                run_cost += cost
                run_savings += savings
            cache = row[_CACHE]
            if cache != "hit" and cache != "coalesced":
                for kind, column in _TOKEN_COLUMNS:
                    if row[column]:
                        key = (provider, model, kind)
                        tokens[key] = tokens.get(key, 0) + row[column]
            if row[_UPSTREAM_MS] is not None:
                self._observe_upstream(provider, row[_UPSTREAM_MS] / 1000)
            if row[_OVERRIDE] is not None:
                pair = (row[_REQUESTED], model)
                self.overrides[pair] = self.overrides.get(pair, 0) + 1
        if label is not None:
            self._add_run(label, run, priced, run_cost, run_savings)

    def _add_run(self, label: tuple, calls: int, priced: bool, cost: float, savings: float) -> None:
        self.requests[label] = self.requests.get(label, 0) + calls
        if priced:
            pm = label[:2]
            self.cost[pm] = self.cost.get(pm, 0.0) + cost
            self.savings[pm] = self.savings.get(pm, 0.0) + savings

    def _observe_upstream(self, provider: str, seconds: float) -> None:
        series = self.latency.get(provider)
        if series is None:
            series = self.latency[provider] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        index = len(LATENCY_BUCKETS)
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                index = i
                break
        series[index] += 1
        series[-1] += seconds


_NO_USAGE = Usage()


class Recorder:
    def __init__(self, sink: Callable[[tuple], None] | None, default_project: str) -> None:
        self.sink = sink  # the writer's record(); None when analytics are off
        self.default_project = default_project
        self.counters = Counters()
        self.key_hashes: dict[bytes, str] = {}

    def _key_hash(self, request: Request) -> str | None:
        return self.key_hash_of(request.header(b"x-api-key") or request.header(b"authorization"))

    def key_hash_of(self, credential: bytes | None) -> str | None:
        """The first 8 hex digits of the credential's SHA-256 (memoized: a process sees few credentials)."""
        if not credential:
            return None
        prefix = self.key_hashes.get(credential)
        if prefix is None:
            if len(self.key_hashes) > 4096:
                self.key_hashes.clear()
            prefix = self.key_hashes[credential] = hashlib.sha256(credential).hexdigest()[:8]
        return prefix

    def record(self, request: Request, project: str, requested_model: str, model: str, provider: str,
               endpoint: str, stream: bool, cache: str, usage: Usage | None, cost: CallCost, batch: bool,
               error_type: str | None, upstream_ms: float | None, fallback_depth: int = 0,
               override_rule: str | None = None) -> None:
        sink = self.sink
        if sink is None:
            return
        received = request.received_at
        latency_ms = (time.perf_counter() - received) * 1000
        responded = request.responded_at
        agent = request.agent
        if agent is None:
            header = request.header(b"x-cco-agent")
            agent = header.decode("utf-8", "replace") if header else None
        u = usage if usage is not None else _NO_USAGE
        request_id = request.request_id
        sink((
            time.time() - latency_ms / 1000, project, agent,
            requested_model, model, provider, endpoint, int(stream),
            request.status or 499,  # nothing was sent: the client went away first (nginx's 499)
            error_type, cache, u.input_tokens, u.output_tokens, u.cache_creation_tokens, u.cache_creation_1h_tokens,
            u.cache_read_tokens, int(batch), cost.cost, cost.would_be_cost, cost.savings, int(cost.unpriced),
            latency_ms, (responded - received) * 1000 if responded else None, upstream_ms, fallback_depth,
            override_rule, request_id.decode("latin-1") if request_id else None, self._key_hash(request),
        ))


class _BatchMessage(msgspec.Struct):
    model: str | None = None
    usage: _AnthropicUsage | None = None


class _BatchResult(msgspec.Struct):
    type: str | None = None
    message: _BatchMessage | None = None


class _BatchLine(msgspec.Struct):
    result: _BatchResult | None = None


_batch_line_decoder = msgspec.json.Decoder(_BatchLine)


class BatchUsage:
    """Sums the usage and cost of a batch's results (JSONL, one line per request) as they stream through.

    Each succeeded result is priced at its own model's batch price; the row names the first result's model.
    """

    __slots__ = ("prices", "usage", "cost", "model", "_tail")

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        self.usage = Usage()
        self.cost = NO_COST
        self.model = ""
        self._tail = b""

    def feed(self, data: bytes) -> None:
        lines = (self._tail + data).split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            self._line(line)

    def finish(self) -> None:
        if self._tail.strip():
            self._line(self._tail)
        self._tail = b""

    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            parsed = _batch_line_decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        result = parsed.result
        if result is None or result.type != "succeeded" or result.message is None or result.message.usage is None:
            return
        model = result.message.model or ""
        usage = _usage(result.message.usage)
        total = self.usage
        total.input_tokens += usage.input_tokens
        total.output_tokens += usage.output_tokens
        total.cache_creation_tokens += usage.cache_creation_tokens
        total.cache_creation_1h_tokens += usage.cache_creation_1h_tokens
        total.cache_read_tokens += usage.cache_read_tokens
        if not self.model:
            self.model = model
        if model:
            line_cost = call_cost(self.prices, model, usage, batch=True)
            self.cost = CallCost(cost=self.cost.cost + line_cost.cost,
                                 would_be_cost=self.cost.would_be_cost + line_cost.would_be_cost,
                                 savings=self.cost.savings + line_cost.savings,
                                 unpriced=self.cost.unpriced or line_cost.unpriced)
