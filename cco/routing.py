"""Compiled routes: model name → the route that serves it (first regex match wins, SPEC §6)."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone

from cco.config import DEFAULT_ENDPOINTS, PROVIDERS, Config, RouteSpec
from cco.upstream.pool import Origin, Pool


class Route:
    """One route, ready for the hot path: regex compiled, origin parsed, header bytes built."""

    __slots__ = ("index", "pattern", "regex", "provider", "origin", "base_path", "api_key", "timeout",
                 "connect_timeout", "max_retries", "strip_prefix", "extra_headers", "extra_header_names",
                 "max_connections", "provider_bytes", "pool", "cco_headers")

    def __init__(self, index: int, spec: RouteSpec) -> None:
        self.index = index
        self.pattern = spec.pattern
        self.regex = re.compile(spec.pattern)
        self.provider = PROVIDERS[spec.provider]
        self.provider_bytes = self.provider.encode()
        self.origin = Origin(spec.endpoint or DEFAULT_ENDPOINTS[self.provider])
        self.base_path = self.origin.base_path.encode()
        # The proxy's own key is used only when the variable is set (SPEC §6); read once, at load.
        key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        self.api_key: bytes | None = key.encode() if key else None
        self.timeout = spec.timeout_ms / 1000
        self.connect_timeout = spec.connect_timeout_ms / 1000
        self.max_retries = spec.max_retries
        self.strip_prefix = spec.strip_prefix
        self.extra_headers = b"".join(k.lower().encode() + b": " + v.encode() + b"\r\n"
                                      for k, v in spec.headers.items())
        self.extra_header_names = frozenset(k.lower().encode() for k in spec.headers)
        self.max_connections = spec.max_connections
        self.pool: Pool | None = None  # set on first use by the pipeline
        self.cco_headers: dict[str, bytes] = {}  # model → the x-cco-provider/x-cco-model header lines

    def __repr__(self) -> str:
        return f"<Route {self.pattern!r} → {self.provider} {self.origin.display}>"

    def upstream_model(self, model: str) -> str:
        if self.strip_prefix and model.startswith(self.strip_prefix):
            return model[len(self.strip_prefix):]
        return model


class Router:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.routes = [Route(i, spec) for i, spec in enumerate(config.routes)]
        self.patterns = [r.pattern for r in self.routes]
        self.memo: dict[str, Route | None] = {}  # model → route (None: no route); read by the hit lane

    def match(self, model: str) -> Route | None:
        memo = self.memo
        route = memo.get(model, False)
        if route is False:
            route = next((r for r in self.routes if r.regex.search(model)), None)
            if len(memo) < 4096:  # model names are few; bound the memo against made-up names
                memo[model] = route
        return route  # type: ignore[return-value]

    def first_route(self, provider: str) -> Route | None:
        return next((r for r in self.routes if r.provider == provider), None)

    def listed_models(self) -> list[str]:
        """Model ids the config names (prices without patterns, fallbacks, override targets) that a route serves."""
        config = self.config
        names: list[str] = [m for m in config.pricing if "*" not in m and not m.startswith("re:")]
        for source, targets in config.fallback_chain.items():
            names.append(source)
            names.extend(targets)
        names.extend(config.override_targets())
        seen: set[str] = set()
        out = []
        for name in names:
            if name not in seen and self.match(name) is not None:
                seen.add(name)
                out.append(name)
        return out


_DATE_SUFFIX = re.compile(r"-(\d{4})(\d{2})(\d{2})$")


def model_created(model: str, fallback: float) -> datetime:
    """A model's creation time: the date in a dated id (`…-20250929`), else the config's modification time."""
    match = _DATE_SUFFIX.search(model)
    if match:
        try:
            return datetime(int(match[1]), int(match[2]), int(match[3]), tzinfo=timezone.utc)
        except ValueError:
            pass
    return datetime.fromtimestamp(int(fallback), tz=timezone.utc)


def display_name(model: str) -> str:
    """`claude-sonnet-4-5-20250929` → `Claude Sonnet 4.5`; other ids keep their spelling."""
    base = _DATE_SUFFIX.sub("", model)
    if not base.startswith("claude-"):
        return model
    words, version = [], []
    for part in base.split("-"):
        (version if part.isdigit() else words).append(part)
    return " ".join(w.capitalize() for w in words) + (" " + ".".join(version) if version else "")
