"""What a call costs, what it would have cost without the proxy, and the difference (USD, never rounded).

Theory of operation
-------------------
`config/model-pricing.json` maps a model id, or a `*` pattern, to list prices in USD per million tokens. The
loader (`load_price_table`, the only function here that does I/O) validates the file once and builds an
immutable `PriceTable`; everything else is pure arithmetic on `Price` and `Usage`.

Lookup (`PriceTable.lookup`): the exact id, else the id without a date suffix (`claude-sonnet-4-5-20250929` →
`claude-sonnet-4-5`, `gpt-4o-2024-08-06` → `gpt-4o`), else the first `*` pattern in file order that matches
(`ollama/llama3.2` → `ollama/*`). Answers, misses included, are memoized per model name (bounded).

Cost of one call at one price (`cost_at`):

    input·p_in + output·p_out + 5-minute writes·p_cw + 1-hour writes·p_cw_1h + cache reads·p_cr   (÷ 1e6)

where the 5-minute writes are `cache_creation_tokens` minus their 1-hour part. When the entry has a
`long_context` tier and the prompt (input + cache writes + cache reads) is above its threshold, the tier's prices
apply to every token of the call, output included. A Message Batches call is then multiplied by
`1 - batch_discount`. A cache price missing from an entry (or from its tier) is billed at that entry's (tier's)
`input` price: explicit prices in the file are the rule, the fallback only keeps a sparse entry well-defined.

What a call would have cost (`call_cost`): the served model's own cost, except that a local model (an entry with
`savings_comparison`) is valued at its comparison model's prices, an override is valued at the requested model's
prices (the price difference on the tokens actually used: negative when the override is pricier), and a cache
hit or coalesced call costs 0 and saves what the original call cost. `savings = would_be_cost - cost`, always.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

PER_MILLION = 1_000_000.0
_DATE_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")
_FREE_HITS = frozenset(("hit", "coalesced"))
_PRICE_FIELDS = ("input", "output", "cache_write", "cache_write_1h", "cache_read")


class LongContext(msgspec.Struct, forbid_unknown_fields=True):
    """Prices for a whole call whose prompt is above `threshold` tokens; missing cache prices fall back to `input`."""

    threshold: int
    input: float
    output: float
    cache_write: float | None = None
    cache_write_1h: float | None = None
    cache_read: float | None = None


class Price(msgspec.Struct, forbid_unknown_fields=True):
    """One entry of the price table, USD per million tokens.

    `cache_write` is the 5-minute cache write, `cache_write_1h` the 1-hour one; a missing cache price is billed at
    `input`. `batch_discount` is the fraction taken off for Message Batches (0.5 = half price).
    `savings_comparison` marks a local model: its calls are valued at that model's prices.
    """

    input: float = 0.0
    output: float = 0.0
    cache_write: float | None = None
    cache_write_1h: float | None = None
    cache_read: float | None = None
    batch_discount: float = 0.0
    long_context: LongContext | None = None
    savings_comparison: str | None = None


class Usage(msgspec.Struct):
    """Token counts of one call. `cache_creation_1h_tokens` is the 1-hour part of `cache_creation_tokens`."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    cache_read_tokens: int = 0


class CallCost(msgspec.Struct):
    cost: float
    would_be_cost: float
    savings: float
    unpriced: bool


def _count(obj: Mapping[str, Any], name: str) -> int:
    value = obj.get(name)
    return value if type(value) is int and value > 0 else 0  # bool, float, str, None, negatives → 0


def usage_from_anthropic(obj: dict | None) -> Usage:
    """An Anthropic `usage` object as a `Usage`; missing, null or non-integer counts are 0.

    The 1-hour part comes from `cache_creation.ephemeral_1h_input_tokens`; when the breakdown adds up to more than
    `cache_creation_input_tokens` (or that total is absent) the breakdown's sum is the total.
    """
    if not isinstance(obj, dict):
        return Usage()
    creation = _count(obj, "cache_creation_input_tokens")
    one_hour = 0
    breakdown = obj.get("cache_creation")
    if isinstance(breakdown, dict):
        one_hour = _count(breakdown, "ephemeral_1h_input_tokens")
        creation = max(creation, _count(breakdown, "ephemeral_5m_input_tokens") + one_hour)
    return Usage(input_tokens=_count(obj, "input_tokens"), output_tokens=_count(obj, "output_tokens"),
                 cache_creation_tokens=creation, cache_creation_1h_tokens=one_hour,
                 cache_read_tokens=_count(obj, "cache_read_input_tokens"))


def cost_at(price: Price, usage: Usage, batch: bool = False) -> float:
    """USD cost of `usage` at `price` (long-context tier and batch discount applied); never rounded."""
    one_hour = usage.cache_creation_1h_tokens
    five_minute = max(usage.cache_creation_tokens - one_hour, 0)
    tier: Price | LongContext = price
    long_context = price.long_context
    if long_context is not None and (
            usage.input_tokens + five_minute + one_hour + usage.cache_read_tokens > long_context.threshold):
        tier = long_context
    p_in = tier.input
    p_cw = p_in if tier.cache_write is None else tier.cache_write
    p_cw_1h = p_in if tier.cache_write_1h is None else tier.cache_write_1h
    p_cr = p_in if tier.cache_read is None else tier.cache_read
    cost = (usage.input_tokens * p_in + usage.output_tokens * tier.output + five_minute * p_cw
            + one_hour * p_cw_1h + usage.cache_read_tokens * p_cr) / PER_MILLION
    return cost * (1.0 - price.batch_discount) if batch else cost


class PriceTable:
    """Model id → `Price`, resolved by exact id, then dateless id, then the first matching `*` pattern."""

    __slots__ = ("_entries", "_patterns", "_memo", "_memo_size")

    def __init__(self, entries: Mapping[str, Price], memo_size: int = 4096) -> None:
        self._entries: dict[str, Price] = dict(entries)
        self._patterns = [(key, price) for key, price in self._entries.items() if "*" in key]
        self._memo: dict[str, Price | None] = {}
        self._memo_size = memo_size

    def lookup(self, model: str) -> Price | None:
        memo = self._memo
        try:
            return memo[model]
        except KeyError:
            pass
        price = self._resolve(model)
        if len(memo) >= self._memo_size:  # made-up model names must not grow the memo without bound
            try:
                del memo[next(iter(memo))]
            except (KeyError, StopIteration, RuntimeError):
                memo.clear()
        memo[model] = price
        return price

    price_of = lookup

    def _resolve(self, model: str) -> Price | None:
        entries = self._entries
        price = entries.get(model)
        if price is None:
            base = _DATE_SUFFIX.sub("", model)
            if base != model:
                price = entries.get(base)
        if price is None:
            price = next((p for pattern, p in self._patterns if fnmatch.fnmatchcase(model, pattern)), None)
        return price

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"PriceTable({len(self._entries)} entries)"

    @property
    def entries(self) -> Mapping[str, Price]:
        return self._entries

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """The table as plain JSON-able data (unset optional prices left out), e.g. for `config show`."""
        return {key: _builtins(price) for key, price in self._entries.items()}


def _builtins(struct: msgspec.Struct) -> dict[str, Any]:
    return {k: v for k, v in msgspec.to_builtins(struct).items() if v is not None}


def call_cost(table: PriceTable, model: str, usage: Usage, *, cache: str = "miss", batch: bool = False,
              requested_model: str | None = None, overridden: bool = False) -> CallCost:
    """Cost, would-be cost and savings of one call served by `model` (see the module docstring for the rules)."""
    price = table.lookup(model)
    served = cost_at(price, usage, batch) if price is not None else 0.0
    original = served  # what the call costs at list prices without the proxy's help
    if price is not None and price.savings_comparison is not None:
        comparison = table.lookup(price.savings_comparison)
        if comparison is not None:
            original = cost_at(comparison, usage, batch)
    if cache in _FREE_HITS:
        return CallCost(cost=0.0, would_be_cost=original, savings=original, unpriced=price is None)
    would_be = original
    if overridden and requested_model:
        requested = table.lookup(requested_model)
        if requested is not None:
            would_be = cost_at(requested, usage, batch)
    return CallCost(cost=served, would_be_cost=would_be, savings=would_be - served, unpriced=price is None)


def _fmt(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value == int(value) else repr(value)


def _check_entry(file: str, at: str, price: Price, error: type[Exception]) -> None:
    tiers: list[tuple[str, Price | LongContext]] = [(at, price)]
    if price.long_context is not None:
        tiers.append((f"{at}.long_context", price.long_context))
        if price.long_context.threshold <= 0:
            raise error(file, f"{at}.long_context.threshold",
                        f"must be > 0, got {price.long_context.threshold}")
    for where, tier in tiers:
        for name in _PRICE_FIELDS:
            value = getattr(tier, name)
            if value is None:
                continue
            if not math.isfinite(value):
                raise error(file, f"{where}.{name}", f"price must be a finite number, got {value!r}")
            if value < 0:
                raise error(file, f"{where}.{name}", f"price must be >= 0, got {_fmt(value)}")
    if not (0.0 <= price.batch_discount < 1.0):
        raise error(file, f"{at}.batch_discount", f"must be in [0, 1), got {_fmt(price.batch_discount)}")


def load_price_table(path: Path) -> PriceTable:
    """Read and validate a `model-pricing.json`; raise `ConfigError(file, json_path, message)` on any problem."""
    from cco.config import ConfigError, _json_path_message  # lazy: cco.config imports this module

    name = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(name, "$", f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = msgspec.json.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        json_path, message = _json_path_message(exc)
        raise ConfigError(name, json_path, f"invalid JSON: {message}") from exc
    if not isinstance(data, dict):
        raise ConfigError(name, "$", "expected an object with a `pricing` object")
    pricing = data.get("pricing")
    if not isinstance(pricing, dict):
        raise ConfigError(name, "$.pricing", "expected an object of model id → prices")
    for key in data:
        if key != "pricing" and not key.startswith("_"):
            raise ConfigError(name, f"$.{key}", "unknown field (only `pricing` and `_`-prefixed comments)")

    entries: dict[str, Price] = {}
    for key, value in pricing.items():
        at = f"$.pricing[{_quote(key)}]"
        if not key:
            raise ConfigError(name, at, "model id must not be empty")
        try:
            price = msgspec.convert(value, Price)
        except msgspec.ValidationError as exc:
            rel, message = _json_path_message(exc)
            raise ConfigError(name, at + rel[1:], message) from exc
        _check_entry(name, at, price, ConfigError)
        entries[key] = price

    table = PriceTable(entries)
    for key, price in entries.items():
        target_name = price.savings_comparison
        if target_name is None:
            continue
        target = table.lookup(target_name)
        if target is None or target.savings_comparison is not None:
            raise ConfigError(name, f"$.pricing[{_quote(key)}].savings_comparison",
                              f"{_quote(target_name)} names no priced (non-local) entry")
    return table


def _quote(key: str) -> str:
    return msgspec.json.encode(key).decode()
