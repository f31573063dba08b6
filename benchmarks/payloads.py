"""Deterministic request bodies for the CCO benchmarks.

Two Anthropic Messages API requests are built from synthetic text:

* ``small_request()``  -- ~1 KB: short system prompt, a user question, an
  assistant reply and a user follow-up.
* ``large_request()``  -- ~100 KB, shaped like a Claude Code request: a system
  array of 3 text blocks (~24 KB, cache_control), 25 tools with JSON-Schema
  input_schema (~42 KB), ~40 messages with thinking (with signatures),
  tool_use and tool_result blocks, metadata.user_id as a JSON string,
  max_tokens 32000 and extended thinking.

Both contain NONCE_PLACEHOLDER exactly once (in the last user message).  The
load generators overwrite it with a distinct fixed-width nonce per request so
that "distinct" rows never hit a response cache, while the content-length
stays the same.  Rows that want identical bodies simply send it untouched.

The text generator is a tiny self-contained PRNG (splitmix64) over a word
list, so the bytes are identical on every machine and Python version.

Run ``python benchmarks/payloads.py`` to print the sizes.
"""
from __future__ import annotations

import base64
import json

# 20 characters, JSON-safe, appears nowhere else.  Replaced by
# 8 hex run id + 2 digit thread/worker id + 10 digit counter = 20 characters.
NONCE_PLACEHOLDER = "__cco_bench_nonce___"
NONCE_WIDTH = len(NONCE_PLACEHOLDER)
MODEL = "claude-sonnet-4-5"

_WORDS = (
    "the a of to and in is for on with that this it as be by from at or are "
    "function module request response cache proxy token model stream buffer "
    "config parser router header payload client server handler latency retry "
    "upstream downstream session worker thread socket event loop queue frame "
    "value index schema field array object string number boolean null list "
    "file path directory test build commit branch merge diff patch review "
    "error warning exception trace debug info metric counter gauge histogram "
    "read write open close flush sync async await yield return raise import "
    "class method attribute property instance default optional required type "
    "input output result status code message content block text tool use "
    "should would could must may will can does did has have had not only "
    "first second third next previous last each every some many few all "
    "update create delete fetch store load save parse render compute check"
).split()

_IDENT = (
    "user order item cart price total count name state route rule entry node "
    "edge graph key token span chunk batch page limit offset cursor filter"
).split()


class Rng:
    """splitmix64: small, fast enough, and fully deterministic."""

    def __init__(self, seed: int) -> None:
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n

    def choice(self, seq):
        return seq[self.below(len(seq))]

    def token(self, n: int, alphabet: str) -> str:
        return "".join(alphabet[self.below(len(alphabet))] for _ in range(n))


_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def sentence(rng: Rng) -> str:
    words = [rng.choice(_WORDS) for _ in range(6 + rng.below(12))]
    return words[0].capitalize() + " " + " ".join(words[1:]) + "."


def prose(rng: Rng, size: int) -> str:
    """Paragraphs of synthetic sentences, about ``size`` characters."""
    out: list[str] = []
    n = 0
    while n < size:
        para = " ".join(sentence(rng) for _ in range(3 + rng.below(4)))
        if rng.below(4) == 0:
            para = "- " + para  # some bullet-ish lines, like real prompts
        out.append(para)
        n += len(para) + 2
    return "\n\n".join(out)[:size]


def code(rng: Rng, size: int) -> str:
    """Python-looking source lines (as returned by a Read tool), ~size chars."""
    lines: list[str] = []
    n = 0
    lineno = 1 + rng.below(200)
    while n < size:
        a, b = rng.choice(_IDENT), rng.choice(_IDENT)
        kind = rng.below(5)
        if kind == 0:
            s = f"def {a}_{b}(self, {a}: int, {b}: str | None = None) -> dict:"
        elif kind == 1:
            s = f"    {a} = self.{b}_cache.get({a!r}, {rng.below(1000)})"
        elif kind == 2:
            s = f"    if {a} is None or len({b}) > {rng.below(64)}:"
        elif kind == 3:
            s = f"        return {{{a!r}: {b}, 'status': {rng.below(600)}}}"
        else:
            s = "    # " + sentence(rng)
        s = f"{lineno:>6}\t{s}"
        lineno += 1
        lines.append(s)
        n += len(s) + 1
    return "\n".join(lines)[:size]


def tool_id(rng: Rng) -> str:
    return "toolu_01" + rng.token(22, _B62)


def signature(rng: Rng) -> str:
    raw = bytes(rng.below(256) for _ in range(240 + rng.below(200)))
    return base64.b64encode(raw).decode()


def dumps(obj) -> str:
    # Compact, like most SDKs send it; "stream":true is then spelled compactly.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------
# ~1 KB request
# --------------------------------------------------------------------------
def small_request(stream: bool = False) -> dict:
    body = {
        "model": MODEL,
        "max_tokens": 256,
        "system": "You are a concise assistant for a software team. Answer in "
                  "plain text, keep it short, and say when you are unsure. "
                  "Prefer concrete numbers and examples over general advice, "
                  "and mention the trade-offs of each option.",
        "messages": [
            {"role": "user", "content": "What is the difference between a "
             "process and a thread, and when should I prefer one over the "
             "other for an I/O-bound network service written in Python?"},
            {"role": "assistant", "content": "A process has its own memory "
             "space; threads share one. For I/O-bound Python services, an "
             "event loop (asyncio) or threads work well because the GIL is "
             "released while waiting on sockets. Use several processes when "
             "you need more than one CPU core for parsing or serialisation, "
             "or to isolate crashes."},
            {"role": "user", "content": "Thanks. How many worker processes "
             "would you start on a 2-core machine, and why? (ref "
             + NONCE_PLACEHOLDER + ")"},
        ],
    }
    if stream:
        body["stream"] = True
    return body


# --------------------------------------------------------------------------
# ~100 KB Claude-Code-shaped request
# --------------------------------------------------------------------------
_TOOL_NAMES = [
    "Task", "Bash", "Glob", "Grep", "ExitPlanMode", "Read", "Edit", "Write",
    "NotebookEdit", "WebFetch", "TodoWrite", "WebSearch", "BashOutput",
    "KillShell", "SlashCommand", "MultiEdit", "LS", "NotebookRead",
    "mcp__ide__getDiagnostics", "mcp__ide__executeCode",
    "mcp__github__search_code", "mcp__github__get_pull_request",
    "mcp__github__list_issues", "mcp__db__query", "mcp__db__describe_table",
]


def _schema_property(rng: Rng, name: str) -> dict:
    kind = rng.below(5)
    desc = prose(rng, 40 + rng.below(100))
    if kind == 0:
        return {"type": "string", "description": desc}
    if kind == 1:
        return {"type": "number", "description": desc, "minimum": 0,
                "maximum": 10 ** (1 + rng.below(6))}
    if kind == 2:
        return {"type": "boolean", "description": desc}
    if kind == 3:
        return {"type": "string", "enum": [rng.choice(_IDENT) + str(i)
                                           for i in range(2 + rng.below(4))],
                "description": desc}
    return {"type": "array", "description": desc, "items": {
        "type": "object", "additionalProperties": False,
        "required": ["name"],
        "properties": {"name": {"type": "string"},
                       name + "_value": {"type": "string",
                                         "description": prose(rng, 60)}}}}


def _tools(rng: Rng) -> list:
    tools = []
    for name in _TOOL_NAMES:
        props = {}
        for i in range(3 + rng.below(4)):
            pname = f"{rng.choice(_IDENT)}_{rng.choice(_IDENT)}{i}"
            props[pname] = _schema_property(rng, pname)
        tools.append({
            "name": name,
            "description": prose(rng, 400 + rng.below(350)),
            "input_schema": {
                "type": "object",
                "properties": props,
                "required": list(props)[:2],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        })
    return tools


def _system(rng: Rng) -> list:
    return [
        {"type": "text", "text": "You are Claude Code, Anthropic's official "
                                 "CLI for Claude."},
        {"type": "text", "text": prose(rng, 19_500),
         "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "<env>\nWorking directory: /home/dev/project"
         "\nIs directory a git repo: Yes\nPlatform: linux\n</env>\n"
         + prose(rng, 4_200), "cache_control": {"type": "ephemeral"}},
    ]


def _messages(rng: Rng, turns: int = 19) -> list:
    msgs: list = [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\n" + prose(rng, 700)
         + "\n</system-reminder>"},
        {"type": "text", "text": "Please refactor the retry logic in the "
         "router module and add tests for the fallback chain."},
    ]}]
    for turn in range(turns):
        tid = tool_id(rng)
        blocks: list = []
        if turn % 2 == 0:  # thinking on every other assistant turn
            blocks.append({"type": "thinking", "thinking": prose(rng, 260),
                           "signature": signature(rng)})
        blocks.append({"type": "text", "text": sentence(rng)})
        name = rng.choice(_TOOL_NAMES)
        blocks.append({"type": "tool_use", "id": tid, "name": name, "input": {
            "file_path": f"/home/dev/project/src/{rng.choice(_IDENT)}.py",
            "pattern": rng.choice(_IDENT) + ".*" + rng.choice(_IDENT)}})
        msgs.append({"role": "assistant", "content": blocks})
        result = (code(rng, 500 + rng.below(900)) if rng.below(2)
                  else prose(rng, 300 + rng.below(600)))
        msgs.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": tid, "content": result}]})
    # Final user turn: carries the nonce and a cache breakpoint.
    msgs[-1]["content"].append({
        "type": "text", "text": "Continue. (ref " + NONCE_PLACEHOLDER + ")",
        "cache_control": {"type": "ephemeral"}})
    return msgs


def large_request(stream: bool = False) -> dict:
    rng = Rng(0xCC0BE7C4)
    user_id = dumps({
        "device_id": rng.token(64, "0123456789abcdef"),
        "account_uuid": "0b6a7f4e-3c1d-4e59-9a8f-2d7c5b1e6f30",
        "session_id": "5f2c9d1a-7e4b-4c3a-8d6f-1a2b3c4d5e6f",
    })
    body = {
        "model": MODEL,
        "messages": _messages(rng),
        "system": _system(rng),
        "tools": _tools(rng),
        "metadata": {"user_id": user_id},
        "max_tokens": 32000,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
    }
    if stream:
        body["stream"] = True
    return body


def encode(body: dict) -> bytes:
    data = dumps(body).encode()
    assert data.count(NONCE_PLACEHOLDER.encode()) == 1
    return data


def build(name: str) -> bytes:
    """Body bytes by short name: 1k, 1k-stream, 100k, 100k-stream."""
    size, _, stream = name.partition("-")
    fn = {"1k": small_request, "100k": large_request}[size]
    return encode(fn(stream=stream == "stream"))


if __name__ == "__main__":
    for n in ("1k", "1k-stream", "100k", "100k-stream"):
        print(f"{n:12} {len(build(n)):>7} bytes")
    big = large_request()
    for key in ("system", "tools", "messages"):
        print(f"  100k.{key:9} {len(dumps(big[key])):>7} bytes"
              + (f" ({len(big[key])} items)"))
