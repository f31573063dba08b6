"""`cco config validate` and `cco config show`: exit codes, messages, and secrets never printed."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cco.cli import cco_main


def write_config(tmp_path, routes, overrides: str | None = None):
    (tmp_path / "model-routing.json").write_text(json.dumps({"routes": routes, "fallback_chain": {}}))
    if overrides is not None:
        (tmp_path / "model-overrides.toml").write_text(overrides)
    return str(tmp_path)


def test_validate_accepts_the_bundled_and_a_valid_config(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cco_main, ["config", "validate"]).exit_code == 0
    config_dir = write_config(tmp_path, [{"pattern": "^claude-", "provider": "anthropic"}])
    result = runner.invoke(cco_main, ["config", "validate", "--config-dir", config_dir])
    assert result.exit_code == 0, result.output


def test_validate_names_file_and_path(tmp_path):
    config_dir = write_config(tmp_path, [{"pattern": "^claude-", "provider": "anthropic"}],
                              overrides='[overrides]\nenabled = true\nrules = [["a", "mistral-nowhere"]]\n')
    result = CliRunner().invoke(cco_main, ["config", "validate", "--config-dir", config_dir])
    assert result.exit_code == 2
    assert 'model-overrides.toml: $.overrides.rules[0][1]: no route serves "mistral-nowhere"' in result.output


def test_show_masks_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("CCO_TEST_SECRET_KEY", "sk-very-secret-value")
    config_dir = write_config(tmp_path, [{"pattern": "^gpt-", "provider": "openai", "api_key_env": "CCO_TEST_SECRET_KEY",
                                          "headers": {"Authorization": "Bearer sk-header-secret", "x-team": "blue"}}])
    result = CliRunner().invoke(cco_main, ["config", "show", "--config-dir", config_dir])
    assert result.exit_code == 0, result.output
    assert "sk-very-secret-value" not in result.output and "sk-header-secret" not in result.output
    shown = json.loads(result.output)
    route = shown["routes"][0]
    assert route["api_key"] == "set (masked)" and route["headers"] == {"Authorization": "***", "x-team": "blue"}
    assert shown["pricing"]["claude-sonnet-4-5"]["input"] > 0
