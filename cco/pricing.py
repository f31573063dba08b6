"""Price lookup and cost arithmetic over `model-pricing.json` (USD per million tokens). Pure functions.

A model id matches its own entry, else its base id without a date suffix (`claude-sonnet-4-5-20250929` →
`claude-sonnet-4-5`), else the first `*` pattern that matches. An unknown model costs 0.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

_DATE_SUFFIX = re.compile(r"-\d{8}$")


def price_entry(pricing: dict[str, Any], model: str) -> dict[str, Any] | None:
    entry = pricing.get(model)
    if entry is None:
        entry = pricing.get(_DATE_SUFFIX.sub("", model))
    if entry is None:
        for pattern, candidate in pricing.items():
            if "*" in pattern and fnmatch.fnmatchcase(model, pattern):
                return candidate
    return entry if isinstance(entry, dict) else None


def usage_cost(pricing: dict[str, Any], model: str, usage: dict[str, Any]) -> float:
    """USD cost of an Anthropic `usage` object at the model's list prices (0 when unpriced)."""
    entry = price_entry(pricing, model)
    if entry is None:
        return 0.0

    def tokens(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) else 0

    creation = usage.get("cache_creation")
    write_1h = creation.get("ephemeral_1h_input_tokens", 0) if isinstance(creation, dict) else 0
    write_1h = write_1h if isinstance(write_1h, int) else 0
    write_5m = tokens("cache_creation_input_tokens") - write_1h
    return (tokens("input_tokens") * entry.get("input", 0.0)
            + tokens("output_tokens") * entry.get("output", 0.0)
            + write_5m * entry.get("cache_write", entry.get("input", 0.0))
            + write_1h * entry.get("cache_write_1h", entry.get("cache_write", entry.get("input", 0.0)))
            + tokens("cache_read_input_tokens") * entry.get("cache_read", entry.get("input", 0.0))) / 1_000_000
