"""Runs one scenario with the old `anthropic` SDK (0.x) against a proxy; prints one JSON line of observations.

Usage: python tests/sdk_old_client.py <scenario> <base_url>
The old SDK is found through PYTHONPATH (installed with `pip install --target <dir> anthropic==0.75.0`).
Scenarios: create, stream, tool_stream, count_tokens, models.
"""
from __future__ import annotations

import json
import sys

import anthropic

assert anthropic.__version__.startswith("0."), f"expected the old 0.x SDK, got {anthropic.__version__}"

MODEL = "claude-haiku-4-5"
TOOLS = [{"name": "bash", "description": "Run a shell command",
          "input_schema": {"type": "object", "properties": {"command": {"type": "string"},
                                                            "timeout": {"type": "integer"}}}}]


def text_of(message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def create(client) -> dict:
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi old sdk"}])
    msg = raw.parse()
    return {"text": text_of(msg), "stop_reason": msg.stop_reason, "output_tokens": msg.usage.output_tokens,
            "provider": raw.headers.get("x-cco-provider")}


def stream(client) -> dict:
    with client.messages.stream(model=MODEL, max_tokens=64,
                                messages=[{"role": "user", "content": "hi old stream"}]) as s:
        streamed = "".join(s.text_stream)
        msg = s.get_final_message()
    return {"text": text_of(msg), "streamed": streamed, "stop_reason": msg.stop_reason}


def tool_stream(client) -> dict:
    with client.messages.stream(model=MODEL, max_tokens=64, tools=TOOLS,
                                messages=[{"role": "user", "content": "list files"}],
                                extra_headers={"x-mock-mode": "tool"}) as s:
        msg = s.get_final_message()
    tool = next(b for b in msg.content if b.type == "tool_use")
    return {"stop_reason": msg.stop_reason, "tool_name": tool.name, "tool_input": tool.input,
            "tool_id": tool.id}


def count_tokens(client) -> dict:
    params = dict(model=MODEL, messages=[{"role": "user", "content": "count me"}])
    beta = getattr(getattr(client.beta, "messages", None), "count_tokens", None)
    if beta is not None:
        return {"resource": "beta", "input_tokens": beta(**params).input_tokens}
    return {"resource": "messages", "input_tokens": client.messages.count_tokens(**params).input_tokens}


def models(client) -> dict:
    models = list(client.models.list())  # iterating a page follows has_more / after_id through every page
    return {"ids": [m.id for m in models], "types": sorted({m.type for m in models})}


SCENARIOS = {f.__name__: f for f in (create, stream, tool_stream, count_tokens, models)}


def main() -> None:
    scenario, base_url = sys.argv[1], sys.argv[2]
    client = anthropic.Anthropic(api_key="sk-test", base_url=base_url, max_retries=0)
    out = SCENARIOS[scenario](client)
    out["version"] = anthropic.__version__
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
