"""The cache-hit lane (cco/_fast/hit_c.pyx and its twin hit_py.py) against the general path it short-cuts.

Each test builds the real App in-process with a settled cache entry and feeds byte-literal requests through the
real protocol into a fake transport, once with the lane and once without: the answers must be the same bytes
(request-id and timing aside) and the analytics rows the same values; and every case the lane must decline goes
to the general path untouched.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from cco.analytics.schema import COLUMNS
from cco.app import App
from cco.cache.store import CacheEntry, ResponseCache
from cco.config import load_config
from cco.protocol import HttpProtocol, Limits
from cco.server import ConnectionRegistry
from tests.conftest import fast_module
from tests.fakes import FakeTransport

MODEL = "claude-sonnet-4-5"
KEY = b"sk-lane-test"
ANSWER = json.dumps({"id": "msg_lane", "type": "message", "role": "assistant", "model": MODEL,
                     "content": [{"type": "text", "text": "cached"}], "stop_reason": "end_turn",
                     "stop_sequence": None, "usage": {"input_tokens": 1200, "output_tokens": 300,
                                                      "cache_creation_input_tokens": 0,
                                                      "cache_read_input_tokens": 40}}).encode()
BODY = json.dumps({"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hello lane"}]},
                  separators=(",", ":")).encode()
VOLATILE = re.compile(rb"(request-id: req_cco_[0-9a-f]+|x-cco-overhead-ms: [0-9.]+)")


def request(body: bytes = BODY, target: bytes = b"/v1/messages", method: bytes = b"POST",
            headers: dict | None = None) -> bytes:
    fields = {b"host": b"127.0.0.1", b"content-type": b"application/json", b"anthropic-version": b"2023-06-01",
              b"x-api-key": KEY}
    fields.update(headers or {})
    head = b"".join(k + b": " + v + b"\r\n" for k, v in fields.items())
    return method + b" " + target + b" HTTP/1.1\r\n" + head + b"content-length: %d\r\n\r\n" % len(body) + body


class Rows:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def record(self, row: tuple) -> None:
        self.rows.append(row)


class Setup:
    """One App with a cache holding ANSWER for BODY (settled by a first hit) and a recording sink."""

    def __init__(self, impl: str, tmp_path, overrides: str | None = None) -> None:
        config_dir = tmp_path / "config"
        config_dir.mkdir(exist_ok=True)
        (config_dir / "model-routing.json").write_text(json.dumps(
            {"routes": [{"pattern": "^claude-", "provider": "anthropic", "endpoint": "http://127.0.0.1:9"}]}))
        if overrides is not None:
            (config_dir / "model-overrides.toml").write_text(overrides)
        self.cache = ResponseCache(64 * 1024 * 1024, 3600)
        self.rows = Rows()
        self.app = App(load_config(config_dir), cache=self.cache, analytics=self.rows)  # type: ignore[arg-type]
        lane = fast_module(impl, "hit").HitLane(self.app, fast_module(impl, "key").scan_request)
        lane.request_id_prefix = self.app.hit_lane.request_id_prefix
        lane.request_counter = self.app.hit_lane.request_counter
        lane.model_headers = self.app.hit_lane.model_headers
        self.lane = lane
        self.cache.verify_credential(self.cache.credential_hash(_FakeRequest(KEY)))
        plan_scan = fast_module(impl, "key").scan_request(BODY)
        route = self.app.route_for(MODEL)
        context = b"\x00".join((MODEL.encode(), b"anthropic", b"/v1/messages", b"global", b"2023-06-01", b""))
        self.cache.put(CacheEntry(plan_scan.key(context), ANSWER, MODEL, "/v1/messages"))
        assert route is not None

    def connection(self, lane: bool) -> tuple[HttpProtocol, FakeTransport]:
        self.app.hit_lane = self.lane if lane else None
        conn = HttpProtocol(self.app, ConnectionRegistry(), Limits())
        transport = FakeTransport()
        conn.connection_made(transport)
        return conn, transport

    def exchange(self, data: bytes, lane: bool) -> bytes:
        conn, transport = self.connection(lane)
        conn.data_received(data)
        return b"".join(transport.written)


class _FakeRequest:
    def __init__(self, key: bytes) -> None:
        self.key = key

    def header(self, name: bytes):
        return self.key if name == b"x-api-key" else None


def normal(response: bytes) -> bytes:
    return VOLATILE.sub(lambda m: m.group(0).split(b":")[0] + b": *", response)


def row_dict(row: tuple) -> dict:
    out = dict(zip(COLUMNS, row))
    for volatile in ("ts", "latency_ms", "ttfb_ms", "request_id"):
        out.pop(volatile)
    return out


@pytest.fixture
def setup(impl, tmp_path):
    async def build():
        return Setup(impl, tmp_path)

    return asyncio.run(build()), impl


def run(coro_fn):
    return asyncio.run(coro_fn())


def test_lane_answers_exactly_like_the_general_path(setup):
    s, _ = setup

    async def go():
        first = s.exchange(request(), lane=True)  # the first hit settles the entry's stats: general path
        assert b"x-cco-cache: hit" in first
        hits_before = s.cache.hits
        slow = s.exchange(request(), lane=False)
        fast = s.exchange(request(), lane=True)
        assert s.cache.hits == hits_before + 2
        return first, slow, fast

    first, slow, fast = run(go)
    assert normal(fast) == normal(slow) == normal(first)
    assert fast.endswith(ANSWER) and b"x-cco-cost-usd: 0.0\r\n" in fast
    rows = [row_dict(r) for r in s.rows.rows]
    assert len(rows) == 3 and rows[1] == rows[2] == rows[0]
    assert rows[2]["cache"] == "hit" and rows[2]["input_tokens"] == 1200 and rows[2]["savings"] > 0


def test_lane_is_taken_after_the_first_hit(setup, monkeypatch):
    s, _ = setup
    calls = []

    async def go():
        s.exchange(request(), lane=True)
        original = s.app.dispatch
        monkeypatch.setattr(s.app, "dispatch", lambda req, conn: calls.append(req) or original(req, conn))
        s.exchange(request(), lane=True)
        s.exchange(request(target=b"/v1/messages?beta=true"), lane=True)

    run(go)
    assert calls == []  # both answered by the lane, never dispatched


@pytest.mark.parametrize("data", [
    request(headers={b"x-cco-cache": b"refresh"}),
    request(headers={b"cache-control": b"no-cache"}),
    request(body=BODY.replace(b'"max_tokens":64', b'"max_tokens":64,"stream":true')),
    request(body=BODY.replace(b'"claude-sonnet-4-5"', b'"claude-sonnet-4\\u002d5"')),
    request(headers={b"x-api-key": b"sk-never-seen"}),
    request(target=b"/p/team/v1/messages"),
    request(target=b"/v1/messages?x=1"),
    request(body=BODY.replace(b"hello lane", b"another prompt")),
    request(body=b"{not json"),
    request(method=b"PUT"),
], ids=["x-cco-cache", "cache-control", "stream", "escaped-model", "unverified-key", "project-prefix", "query",
        "miss", "invalid-json", "method"])
def test_lane_declines_what_it_does_not_own(setup, data):
    s, _ = setup

    lane = s.lane
    results: list[bool] = []

    class Spy:
        def serve(self, *args):
            results.append(lane.serve(*args))
            return results[-1]

    async def go():
        s.exchange(request(), lane=True)  # settle
        conn, transport = s.connection(lane=True)
        conn.lane = Spy()
        conn.data_received(data)
        handled = b"".join(transport.written).startswith(b"HTTP/1.1 ") or conn.task is not None
        conn.connection_lost(None)  # cancels a forward to the (unreachable) upstream
        await asyncio.sleep(0)
        return handled

    handled = run(go)
    assert results in ([False], [])  # declined (or, for a broken request, never offered)
    assert handled  # and the general path took it: answered, or sent it upstream


def test_lane_declines_when_overrides_are_enabled(impl, tmp_path):
    async def go():
        s = Setup(impl, tmp_path, overrides='[overrides]\nenabled = true\nrules = []\n')
        s.exchange(request(), lane=True)
        conn, transport = s.connection(lane=True)
        assert s.lane.serve(b"POST", b"/v1/messages", [(b"x-api-key", KEY), (b"anthropic-version", b"2023-06-01")],
                            BODY, 0.0, transport) is False

    run(go)


def test_lane_serves_any_header_order_and_duplicate_first_value(setup):
    s, _ = setup

    async def go():
        s.exchange(request(), lane=True)
        transport = FakeTransport()
        headers = [(b"anthropic-version", b"2023-06-01"), (b"x-api-key", KEY), (b"x-api-key", b"sk-other"),
                   (b"x-cco-agent", b"reviewer")]
        assert s.lane.serve(b"POST", b"/v1/messages", headers, BODY, 0.0, transport) is True
        return transport

    transport = run(go)
    assert transport.written[0].endswith(ANSWER)
    assert s.rows.rows[-1][COLUMNS.index("agent")] == "reviewer"
