"""Model overrides (`config/model-overrides.toml`, SPEC §6): rewrite the requested model before cache and routing.

Order of decision, when `[overrides] enabled = true`:
1. the agent: the `x-cco-agent` header, else the first `[agent_detection]` pattern (a regex, searched in file order)
   that matches the request's system prompt;
2. an `[agents]` entry for that agent names the model (rule label `agent:<name>`);
3. else the first rule of `[overrides] rules` whose source matches: an exact model id, or `re:<regex>` searched in
   the model id (rule label: the source as written).
The agent is recorded whether or not it changes the model. Validation happens once, at load and on reload.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Callable

import msgspec


class OverrideRule(msgspec.Struct, frozen=True):
    source: str  # as written: an exact id or "re:<regex>"
    target: str
    regex: re.Pattern | None = None

    def matches(self, model: str) -> bool:
        return self.regex.search(model) is not None if self.regex is not None else model == self.source


class Decision(msgspec.Struct, frozen=True):
    model: str  # the model to serve
    rule: str | None  # the rule that rewrote it, None when unchanged
    agent: str | None  # the agent named or detected


class Overrides:
    def __init__(self, enabled: bool = False, rules: list[OverrideRule] | None = None,
                 agents: dict[str, str] | None = None, detection: list[tuple[str, re.Pattern]] | None = None,
                 log_overrides: bool = True, raw: dict[str, Any] | None = None) -> None:
        self.enabled = enabled
        self.rules = rules or []
        self.agents = agents or {}
        self.detection = detection or []
        self.log_overrides = log_overrides
        self.raw = raw or {}
        self._memo: dict[str, tuple[str, str | None]] = {}

    @property
    def needs_system_prompt(self) -> bool:
        return self.enabled and bool(self.detection)

    def targets(self) -> list[str]:
        return [rule.target for rule in self.rules] + list(self.agents.values())

    def decide(self, model: str, agent: str | None, system_prompt: Callable[[], str]) -> Decision:
        """What to serve for `model`; `system_prompt` is called only when detection patterns exist."""
        if not self.enabled:
            return Decision(model, None, agent)
        if agent is None and self.detection:
            text = system_prompt()
            for name, pattern in self.detection:
                if pattern.search(text):
                    agent = name
                    break
        if agent is not None:
            target = self.agents.get(agent)
            if target is not None:
                return Decision(target, f"agent:{agent}", agent) if target != model else Decision(model, None, agent)
        found = self._memo.get(model)
        if found is None:
            found = (model, None)
            for rule in self.rules:
                if rule.matches(model):
                    found = (rule.target, rule.source) if rule.target != model else (model, None)
                    break
            if len(self._memo) < 4096:
                self._memo[model] = found
        return Decision(found[0], found[1], agent)


def load_overrides(path: Path, error: Callable[[str, str], Exception]) -> Overrides:
    """Parses and validates the file; `error(json_path, message)` builds the config error to raise."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise error("$", f"invalid TOML: {exc}") from exc
    except OSError as exc:
        raise error("$", f"cannot read {path}: {exc.strerror}") from exc
    for key in data:
        if key not in ("overrides", "agents", "agent_detection", "analytics"):
            raise error(f"$.{key}", "unknown section; expected overrides, agents, agent_detection, analytics")
    section = data.get("overrides", {})
    if not isinstance(section, dict):
        raise error("$.overrides", "expected a table")
    enabled = section.get("enabled", False)
    if not isinstance(enabled, bool):
        raise error("$.overrides.enabled", f"expected true or false, got {enabled!r}")
    raw_rules = section.get("rules", [])
    if not isinstance(raw_rules, list):
        raise error("$.overrides.rules", "expected a list of [from, to] pairs")
    rules = []
    for i, rule in enumerate(raw_rules):
        if not (isinstance(rule, list) and len(rule) == 2 and all(isinstance(x, str) and x for x in rule)):
            raise error(f"$.overrides.rules[{i}]", f"expected [from, to] strings, got {rule!r}")
        source, target = rule
        regex = None
        if source.startswith("re:"):
            try:
                regex = re.compile(source[3:])
            except re.error as exc:
                raise error(f"$.overrides.rules[{i}][0]", f"invalid regex {source[3:]!r}: {exc}") from exc
        rules.append(OverrideRule(source, target, regex))
    agents = data.get("agents", {})
    if not isinstance(agents, dict) or not all(isinstance(v, str) and v for v in agents.values()):
        raise error("$.agents", "expected a table of agent name = model id")
    detection = []
    for name, pattern in (data.get("agent_detection") or {}).items():
        if not isinstance(pattern, str):
            raise error(f'$.agent_detection["{name}"]', f"expected a regex string, got {pattern!r}")
        try:
            detection.append((name, re.compile(pattern)))
        except re.error as exc:
            raise error(f'$.agent_detection["{name}"]', f"invalid regex {pattern!r}: {exc}") from exc
    log_overrides = (data.get("analytics") or {}).get("log_overrides", True)
    return Overrides(enabled, rules, dict(agents), detection, bool(log_overrides), data)
