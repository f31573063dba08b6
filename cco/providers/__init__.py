"""Provider adapters, one module per provider, looked up by name (a dict of import strings, not if/elif)."""

from __future__ import annotations

import importlib
from types import ModuleType

REGISTRY = {
    "anthropic": "cco.providers.anthropic",
}


def provider_module(name: str) -> ModuleType | None:
    target = REGISTRY.get(name)
    return importlib.import_module(target) if target else None
