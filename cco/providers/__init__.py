"""Provider adapters, one module per provider, found through a registry of import strings (loaded on first use).

Each adapter module offers the same small interface (see `cco.providers.base`): the upstream path of an endpoint,
the upstream request head, and for translated providers the request, response, stream and error transforms
between its wire format and the Anthropic Messages format, which is the proxy's pivot.
"""

from __future__ import annotations

import importlib
from types import ModuleType

REGISTRY: dict[str, str] = {
    "anthropic": "cco.providers.anthropic",
    "openai": "cco.providers.openai",
    "ollama": "cco.providers.ollama",
}

_loaded: dict[str, ModuleType] = {}


def adapter(provider: str) -> ModuleType:
    module = _loaded.get(provider)
    if module is None:
        module = _loaded[provider] = importlib.import_module(REGISTRY[provider])
    return module
