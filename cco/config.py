"""The config directory (`model-routing.json`, `model-pricing.json`, `model-overrides.toml`), validated once.

Loading turns the files into typed objects (`Config`) or raises `ConfigError` naming the file, the JSON path and
what was wrong; the request path trusts what it gets. A file missing from the config directory falls back to
the bundled default of the same name.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import msgspec

from cco.overrides import Overrides
from cco.overrides import load_overrides as _load_overrides
from cco.pricing import PriceTable, load_price_table

PROVIDERS = {"anthropic": "anthropic", "openai": "openai", "ollama": "ollama",
             "vllm": "openai", "tgi": "openai", "localai": "openai", "groq": "openai"}
DEFAULT_ENDPOINTS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com/v1",
                     "ollama": "http://localhost:11434"}

ROUTING_FILE = "model-routing.json"
PRICING_FILE = "model-pricing.json"
OVERRIDES_FILE = "model-overrides.toml"
CACHE_FILE = "cache.toml"
CACHE_SCOPES = ("global", "project", "key")


class ConfigError(Exception):
    def __init__(self, file: str, path: str, message: str) -> None:
        super().__init__(f"{file}: {path}: {message}")
        self.file = file
        self.path = path


class RouteSpec(msgspec.Struct, forbid_unknown_fields=True):
    pattern: str
    provider: str
    endpoint: str | None = None
    api_key_env: str | None = None
    timeout_ms: int = 600_000
    connect_timeout_ms: int = 10_000
    max_retries: int = 2
    strip_prefix: str | None = None
    headers: dict[str, str] = {}
    max_connections: int = 256


class RoutingFile(msgspec.Struct, forbid_unknown_fields=True):
    routes: list[RouteSpec]
    fallback_chain: dict[str, list[str]] = {}


class CacheSection(msgspec.Struct, forbid_unknown_fields=True):
    scope: str = "global"
    persist: bool = False


class CacheFile(msgspec.Struct, forbid_unknown_fields=True):
    cache: CacheSection = msgspec.field(default_factory=CacheSection)


class Config(msgspec.Struct):
    """Everything read from the config directory."""

    directory: str
    routes: list[RouteSpec]
    fallback_chain: dict[str, list[str]]
    pricing: PriceTable
    overrides: Overrides
    mtime: float
    cache: CacheSection = msgspec.field(default_factory=CacheSection)

    def override_targets(self) -> list[str]:
        return self.overrides.targets()


def bundled_config_dir() -> Path:
    """Default config shipped in the package (`cco/_defaults`), or the checkout's `config/` in development."""
    here = Path(__file__).resolve().parent
    packaged = here / "_defaults"
    return packaged if (packaged / ROUTING_FILE).exists() else here.parent / "config"


def _file(config_dir: Path | None, name: str) -> Path:
    if config_dir is not None and (config_dir / name).exists():
        return config_dir / name
    return bundled_config_dir() / name


def _json_path_message(exc: msgspec.ValidationError | msgspec.DecodeError) -> tuple[str, str]:
    text = str(exc)
    match = re.search(r" - at `(\$[^`]*)`$", text)
    if match:
        return match.group(1), text[: match.start()].replace("`", "")
    return "$", text.replace("`", "")


def load_routing(path: Path) -> RoutingFile:
    name = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(name, "$", f"cannot read {path}: {exc.strerror}") from exc
    try:
        routing = msgspec.json.decode(raw, type=RoutingFile)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        json_path, message = _json_path_message(exc)
        raise ConfigError(name, json_path, message) from exc
    if not routing.routes:
        raise ConfigError(name, "$.routes", "at least one route is required")
    compiled = []
    for i, route in enumerate(routing.routes):
        at = f"$.routes[{i}]"
        try:
            compiled.append(re.compile(route.pattern))
        except re.error as exc:
            raise ConfigError(name, f"{at}.pattern", f"invalid regex {route.pattern!r}: {exc}") from exc
        if route.provider not in PROVIDERS:
            raise ConfigError(name, f"{at}.provider", f"unknown provider {route.provider!r}; expected one of "
                              + ", ".join(sorted(PROVIDERS)))
        endpoint = route.endpoint or DEFAULT_ENDPOINTS[PROVIDERS[route.provider]]
        if not re.match(r"^https?://[^/\s:]+(:\d+)?(/\S*)?$", endpoint) and not re.match(
                r"^https?://\[[0-9a-fA-F:]+\](:\d+)?(/\S*)?$", endpoint):
            raise ConfigError(name, f"{at}.endpoint", f"expected an http(s) URL, got {endpoint!r}")
        for field in ("timeout_ms", "connect_timeout_ms", "max_connections"):
            if getattr(route, field) <= 0:
                raise ConfigError(name, f"{at}.{field}", f"must be positive, got {getattr(route, field)}")
        if route.max_retries < 0 or route.max_retries > 10:
            raise ConfigError(name, f"{at}.max_retries", f"must be between 0 and 10, got {route.max_retries}")
        if route.api_key_env is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", route.api_key_env):
            raise ConfigError(name, f"{at}.api_key_env", f"not an environment variable name: {route.api_key_env!r}")
        for header, value in route.headers.items():
            if not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", header) or "\n" in value or "\r" in value:
                raise ConfigError(name, f"{at}.headers[{header!r}]", "invalid header name or value")

    def served(model: str) -> bool:
        return any(p.search(model) for p in compiled)

    for source, targets in routing.fallback_chain.items():
        if not served(source):
            raise ConfigError(name, f'$.fallback_chain["{source}"]', f'no route serves "{source}"')
        for j, target in enumerate(targets):
            if not served(target):
                raise ConfigError(name, f'$.fallback_chain["{source}"][{j}]', f'no route serves "{target}"')
    _check_cycles(name, routing.fallback_chain)
    return routing


def _check_cycles(name: str, chain: dict[str, list[str]]) -> None:
    # A cycle is a model reachable from itself through fallback edges.
    for start in chain:
        seen: set[str] = set()
        stack = list(chain[start])
        while stack:
            model = stack.pop()
            if model == start:
                raise ConfigError(name, f'$.fallback_chain["{start}"]', f'fallback cycle back to "{start}"')
            if model not in seen:
                seen.add(model)
                stack.extend(chain.get(model, []))


def load_pricing(path: Path) -> PriceTable:
    """The validated price table (errors name the file and JSON path; see `cco.pricing.load_price_table`)."""
    return load_price_table(path)


def load_overrides(path: Path) -> Overrides:
    return _load_overrides(path, lambda json_path, message: ConfigError(path.name, json_path, message))


def load_cache(path: Path) -> CacheSection:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        section = msgspec.convert(data, CacheFile).cache
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path.name, "$", f"invalid TOML: {exc}") from exc
    except msgspec.ValidationError as exc:
        json_path, message = _json_path_message(exc)
        raise ConfigError(path.name, json_path, message) from exc
    except OSError as exc:
        raise ConfigError(path.name, "$", f"cannot read {path}: {exc.strerror}") from exc
    if section.scope not in CACHE_SCOPES:
        raise ConfigError(path.name, "$.cache.scope", f"expected one of {', '.join(CACHE_SCOPES)}, got "
                          f"{section.scope!r}")
    return section


def load_config(config_dir: str | os.PathLike | None) -> Config:
    directory = Path(config_dir) if config_dir else None
    if directory is not None and not directory.is_dir():
        raise ConfigError(str(directory), "$", "config directory does not exist")
    routing_path = _file(directory, ROUTING_FILE)
    routing = load_routing(routing_path)
    pricing = load_pricing(_file(directory, PRICING_FILE))
    overrides = load_overrides(_file(directory, OVERRIDES_FILE))
    cache = load_cache(_file(directory, CACHE_FILE))
    served = [re.compile(route.pattern) for route in routing.routes]
    for i, rule in enumerate(overrides.rules):
        if not any(p.search(rule.target) for p in served):
            raise ConfigError(OVERRIDES_FILE, f"$.overrides.rules[{i}][1]", f'no route serves "{rule.target}"')
    for agent, target in overrides.agents.items():
        if not any(p.search(target) for p in served):
            raise ConfigError(OVERRIDES_FILE, f'$.agents["{agent}"]', f'no route serves "{target}"')
    return Config(directory=str(directory or bundled_config_dir()), routes=routing.routes,
                  fallback_chain=routing.fallback_chain, pricing=pricing, overrides=overrides,
                  mtime=routing_path.stat().st_mtime, cache=cache)
