"""Config validation (file + JSON path in every message) and route matching."""

from __future__ import annotations

import json

import pytest

from cco.config import ConfigError, load_config
from cco.routing import Router, display_name, model_created


def write(tmp_path, routing, pricing=None, overrides=None):
    (tmp_path / "model-routing.json").write_text(routing if isinstance(routing, str) else json.dumps(routing))
    if pricing is not None:
        (tmp_path / "model-pricing.json").write_text(json.dumps(pricing))
    if overrides is not None:
        (tmp_path / "model-overrides.toml").write_text(overrides)
    return tmp_path


ROUTE = {"pattern": "^claude-", "provider": "anthropic", "endpoint": "http://127.0.0.1:1"}


@pytest.mark.parametrize("routing, path, words", [
    ({"routes": [{**ROUTE, "provider": "nope"}]}, "$.routes[0].provider", "unknown provider"),
    ({"routes": [{**ROUTE, "pattern": "("}]}, "$.routes[0].pattern", "invalid regex"),
    ({"routes": [{**ROUTE, "timeout_ms": "x"}]}, "$.routes[0].timeout_ms", "Expected int"),
    ({"routes": [{**ROUTE, "timeout_ms": 0}]}, "$.routes[0].timeout_ms", "positive"),
    ({"routes": [{**ROUTE, "max_retries": -1}]}, "$.routes[0].max_retries", "between"),
    ({"routes": [{**ROUTE, "endpoint": "api.anthropic.com"}]}, "$.routes[0].endpoint", "http(s) URL"),
    ({"routes": [{**ROUTE, "colour": "red"}]}, "$.routes[0]", "unknown field"),
    ({"routes": []}, "$.routes", "at least one"),
    ({"routes": [ROUTE], "fallback_chain": {"claude-a": ["mistral-nowhere"]}},
     '$.fallback_chain["claude-a"][0]', 'no route serves "mistral-nowhere"'),
    ({"routes": [ROUTE], "fallback_chain": {"gpt-4o": ["claude-a"]}}, '$.fallback_chain["gpt-4o"]', "no route"),
    ({"routes": [ROUTE], "fallback_chain": {"claude-a": ["claude-b"], "claude-b": ["claude-a"]}},
     '$.fallback_chain["claude-a"]', "cycle"),
    ("{not json", "$", "malformed"),
])
def test_invalid_routing_names_file_and_json_path(tmp_path, routing, path, words):
    write(tmp_path, routing)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    message = str(info.value)
    assert message.startswith(f"model-routing.json: {path}:"), message
    assert words.lower() in message.lower()


def test_invalid_pricing_and_overrides_are_reported(tmp_path):
    write(tmp_path, {"routes": [ROUTE]}, pricing={"prices": {}})
    with pytest.raises(ConfigError, match=r"model-pricing.json: \$.pricing"):
        load_config(tmp_path)
    write(tmp_path, {"routes": [ROUTE]}, pricing={"pricing": {}}, overrides="[overrides]\nrules = [[\"a\"]]\n")
    with pytest.raises(ConfigError, match=r"model-overrides.toml: \$.overrides.rules\[0\]"):
        load_config(tmp_path)


def test_bundled_defaults_fill_missing_files_and_are_valid(tmp_path):
    write(tmp_path, {"routes": [ROUTE]})
    config = load_config(tmp_path)
    assert "claude-sonnet-4-5" in config.pricing
    default = load_config(None)
    assert [r.provider for r in default.routes][:1] == ["anthropic"]


def test_routes_match_in_order_and_list_served_models(tmp_path):
    routing = {"routes": [{**ROUTE, "pattern": "^claude-haiku"}, ROUTE,
                          {"pattern": "^ollama/", "provider": "ollama", "strip_prefix": "ollama/"}],
               "fallback_chain": {"claude-opus-4-1": ["claude-sonnet-4-5"]}}
    write(tmp_path, routing, pricing={"pricing": {"claude-haiku-4-5": {}, "gpt-4o": {}, "ollama/*": {}}},
          overrides='[overrides]\nrules = [["claude-opus-4-1", "claude-haiku-4-5"]]\n[agents]\n"t" = "ollama/llama3"\n')
    router = Router(load_config(tmp_path))
    assert router.match("claude-haiku-4-5").index == 0
    assert router.match("claude-sonnet-4-5").index == 1
    assert router.match("mistral") is None
    assert router.match("ollama/llama3").upstream_model("ollama/llama3") == "llama3"
    assert router.listed_models() == ["claude-haiku-4-5", "claude-opus-4-1", "claude-sonnet-4-5", "ollama/llama3"]


def test_api_key_env_is_read_only_when_set(tmp_path, monkeypatch):
    write(tmp_path, {"routes": [{**ROUTE, "api_key_env": "CCO_TEST_KEY_X"}]})
    monkeypatch.delenv("CCO_TEST_KEY_X", raising=False)
    assert Router(load_config(tmp_path)).routes[0].api_key is None
    monkeypatch.setenv("CCO_TEST_KEY_X", "sk-proxy")
    assert Router(load_config(tmp_path)).routes[0].api_key == b"sk-proxy"


def test_model_display_and_created():
    assert display_name("claude-sonnet-4-5-20250929") == "Claude Sonnet 4.5"
    assert display_name("claude-3-7-sonnet-latest") == "Claude Sonnet Latest 3.7"
    assert display_name("gpt-4o") == "gpt-4o"
    assert model_created("claude-haiku-4-5-20251001", 0).date().isoformat() == "2025-10-01"
    assert model_created("claude-haiku-4-5", 86400).date().isoformat() == "1970-01-02"
