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


class Spy:
    """Wraps a lane and records what each entry returned: bytes answered by serve_data, serve's verdicts."""

    def __init__(self, lane) -> None:
        self.lane = lane
        self.answered: list[int] = []
        self.served: list[bool] = []

    def serve_data(self, *args):
        self.answered.append(self.lane.serve_data(*args))
        return self.answered[-1]

    def serve(self, *args):
        self.served.append(self.lane.serve(*args))
        return self.served[-1]

    def declined(self, body):
        return self.lane.declined(body)

    def reuse_scan(self, body):
        return self.lane.reuse_scan(body)

    def reuse_key(self, scan, context):
        return self.lane.reuse_key(scan, context)


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

    spy = Spy(s.lane)

    async def go():
        s.exchange(request(), lane=True)  # settle
        conn, transport = s.connection(lane=True)
        conn.lane = spy
        conn.data_received(data)
        handled = b"".join(transport.written).startswith(b"HTTP/1.1 ") or conn.task is not None
        conn.connection_lost(None)  # cancels a forward to the (unreachable) upstream
        await asyncio.sleep(0)
        return handled

    handled = run(go)
    assert spy.answered == [0] and spy.served in ([False], [])  # declined (or, for a broken request, never offered)
    assert handled  # and the general path took it: answered, or sent it upstream


def test_a_miss_read_whole_is_offered_to_the_lane_once(setup):
    """serve_data declines a miss it read whole; httptools then parses it, and the lane is not asked again (it
    would scan, key and look the body up a second time): the general path takes the lane's scan and key."""
    s, _ = setup
    spy = Spy(s.lane)
    miss = request(body=BODY.replace(b"hello lane", b"another prompt"))

    async def go():
        s.exchange(request(), lane=True)  # settle
        conn, transport = s.connection(lane=True)
        conn.lane = spy
        conn.data_received(miss)
        forwarded = conn.task is not None
        reused = s.lane.last_body is None and s.lane.last_scan is None  # both taken by the general path
        conn.connection_lost(None)
        await asyncio.sleep(0)
        return forwarded, reused

    forwarded, reused = run(go)
    assert spy.answered == [0] and spy.served == []
    assert forwarded and reused


def test_a_declined_body_is_kept_under_the_object_the_general_path_holds(setup):
    """declined() rebinds the kept scan to the body httptools built, so that reuse_scan matches it by identity
    (a 100 KB body would otherwise be compared twice)."""
    s, impl = setup
    lane = s.lane
    miss = BODY.replace(b"hello lane", b"another prompt")
    assert lane.serve_data(request(body=miss), FakeTransport(), Limits()) == 0
    kept = lane.last_body
    again = bytes(bytearray(miss))  # equal bytes, another object: as httptools makes it
    assert kept == again and kept is not again
    assert lane.declined(again) and lane.last_body is again
    scan = lane.reuse_scan(again)
    assert scan is not None and scan.key(b"x") == fast_module(impl, "key").scan_request(miss).key(b"x")
    assert not lane.declined(again) and lane.reuse_scan(again) is None  # taken once


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


# --- the lane reading request heads itself (serve_data) -----------------------------------------------------------

def settled_connection(s: Setup, limits: Limits | None = None):
    s.exchange(request(), lane=True)  # the first hit settles the entry: general path
    conn, transport = s.connection(lane=True)
    if limits is not None:
        conn.limits = limits
    spy = conn.lane = Spy(s.lane)
    return conn, transport, spy


def test_lane_reads_pipelined_heads_itself(setup, monkeypatch):
    s, _ = setup
    dispatched = []

    async def go():
        conn, transport, spy = settled_connection(s)
        monkeypatch.setattr(s.app, "dispatch", lambda req, c: dispatched.append(req))
        data = request() + request(target=b"/v1/messages?beta=true") + request()
        conn.data_received(data)
        return data, transport, spy

    data, transport, spy = run(go)
    assert spy.answered == [len(data)] and spy.served == [] and dispatched == []
    assert len(transport.written) == 3 and all(w.endswith(ANSWER) for w in transport.written)
    assert [r[COLUMNS.index("cache")] for r in s.rows.rows] == ["hit"] * 4


def test_lane_stops_at_the_first_request_it_does_not_own_and_order_is_kept(setup):
    s, _ = setup

    async def go():
        conn, transport, spy = settled_connection(s)
        first = request(headers={b"x-cco-agent": b"one"})
        data = first + request(headers={b"cache-control": b"max-age=60", b"x-cco-agent": b"two"}) \
            + request(headers={b"x-cco-agent": b"three"})
        conn.data_received(data)
        return first, transport, spy

    first, transport, spy = run(go)
    # the lane answered the first; httptools parsed the rest: `serve` declined the second (the general path answered
    # it) and answered the third
    assert spy.answered == [len(first)] and spy.served == [False, True]
    assert len(transport.written) == 3 and all(b"x-cco-cache: hit" in w for w in transport.written)
    assert [r[COLUMNS.index("agent")] for r in s.rows.rows[1:]] == ["one", "two", "three"]


def test_body_arriving_in_pieces_is_answered_through_httptools_the_same(setup):
    s, _ = setup

    async def go():
        conn, transport, spy = settled_connection(s)
        data = request()
        conn.data_received(data[:-10])
        conn.data_received(data[-10:])
        whole = s.exchange(data, lane=True)
        return transport, spy, whole

    transport, spy, whole = run(go)
    assert spy.answered == [0] and spy.served == [True]
    assert normal(b"".join(transport.written)) == normal(whole)


def test_lane_reads_header_names_in_any_case_and_keep_alive(setup):
    s, _ = setup

    async def go():
        conn, transport, spy = settled_connection(s)
        data = request(headers={b"Connection": b"Keep-Alive", b"X-CCO-Project": b"alpha"})
        data = data.replace(b"x-api-key: sk-lane-test\r\n", b"X-Api-Key: sk-lane-test\r\nx-api-key: sk-second\r\n")
        conn.data_received(data)
        return transport, spy

    transport, spy = run(go)
    assert spy.answered and spy.answered[0] > 0 and transport.written[0].endswith(ANSWER)
    assert s.rows.rows[-1][COLUMNS.index("project")] == "alpha"


def _raw(head: bytes, body: bytes = BODY) -> bytes:
    return head + body


@pytest.mark.parametrize("data", [
    request().replace(b"HTTP/1.1\r\n", b"HTTP/1.0\r\n", 1),
    request().replace(b"content-length: %d\r\n" % len(BODY), b"transfer-encoding: chunked\r\n").replace(
        b"\r\n\r\n" + BODY, b"\r\n\r\n%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"),
    request(headers={b"content-length": b"%d" % len(BODY)}),
    request(headers={b"connection": b"close"}),
    request(headers={b"expect": b"100-continue"}),
    request(headers={b"x-note": b"folded"}).replace(b"x-note: folded\r\n", b"x-note: folded\r\n continued\r\n"),
    request(headers={b"x-note": b"bad\x01byte"}),
    request(headers={b"x-note ": b"space before colon"}),
    request(headers={b"x-api-key": KEY + b" "}),
    request(headers={b"x-note": b"bare\nline-feed"}),
    request().replace(b"content-length: %d" % len(BODY), b"content-length: +%d" % len(BODY)),
    request(method=b"post"),
    request(target=b"/v1/messages/"),
], ids=["http-1.0", "chunked", "duplicate-length", "connection-close", "expect", "obs-fold", "control-byte",
        "space-before-colon", "trailing-space-in-key", "bare-lf", "signed-length", "lower-case-method",
        "trailing-slash"])
def test_lane_leaves_unusual_heads_to_httptools(setup, data):
    s, _ = setup

    async def go():
        conn, transport, spy = settled_connection(s)
        conn.data_received(data)
        out = b"".join(transport.written)
        handled = out.startswith(b"HTTP/1.1 ") or conn.task is not None
        conn.connection_lost(None)
        await asyncio.sleep(0)
        reference = s.exchange(data, lane=False)
        return spy, handled, out, reference

    spy, handled, out, reference = run(go)
    assert spy.answered == [0]  # the raw reader declined; httptools parsed it
    assert handled
    if out and reference:
        assert normal(out) == normal(reference)


def test_lane_leaves_oversized_heads_to_the_431_answer(setup):
    s, _ = setup

    async def go():
        conn, transport, spy = settled_connection(s, Limits(max_header_bytes=200))
        conn.data_received(request(headers={b"x-note": b"n" * 300}))
        return transport, spy

    transport, spy = run(go)
    assert spy.answered == [0] and transport.written[0].startswith(b"HTTP/1.1 431 ")


def test_rows_follow_the_caller_across_consecutive_hits(setup):
    """The compiled lane reuses the last hit's row template: a change of project, agent or credential shows."""
    s, _ = setup
    other = b"sk-lane-other"

    async def go():
        s.cache.verify_credential(s.cache.credential_hash(_FakeRequest(other)))
        conn, transport, spy = settled_connection(s)
        for project, agent, key in [(b"a", None, KEY), (b"b", None, KEY), (b"b", b"rev", KEY), (b"b", b"rev", other),
                                    (b"a", None, KEY)]:
            headers = {b"x-cco-project": project, b"x-api-key": key}
            if agent:
                headers[b"x-cco-agent"] = agent
            conn.data_received(request(headers=headers))
        return spy

    spy = run(go)
    assert all(n > 0 for n in spy.answered)
    rows = s.rows.rows[-5:]
    col = COLUMNS.index
    assert [(r[col("project")], r[col("agent")]) for r in rows] == [
        ("a", None), ("b", None), ("b", "rev"), ("b", "rev"), ("a", None)]
    hashes = [r[col("key_hash")] for r in rows]
    assert hashes[0] == hashes[1] == hashes[2] == hashes[4] != hashes[3]
    assert len({r[col("request_id")] for r in rows}) == 5 and all(r[col("latency_ms")] > 0 for r in rows)


STREAM_BODY = BODY.replace(b'"max_tokens":64', b'"max_tokens":64,"stream":true')


def test_lane_answers_stream_hits_like_the_general_path_once_the_stream_form_is_kept(setup):
    s, _ = setup

    async def go():
        s.exchange(request(), lane=True)  # settle the entry
        conn, transport, spy = settled_connection(s)
        conn.data_received(request(body=STREAM_BODY))  # first stream hit: synthesized by the general path, kept
        first = b"".join(transport.written)
        slow = s.exchange(request(body=STREAM_BODY), lane=False)
        conn2, transport2, spy2 = settled_connection(s)
        conn2.data_received(request(body=STREAM_BODY))
        return spy, first, slow, spy2, b"".join(transport2.written)

    spy, first, slow, spy2, fast = run(go)
    assert spy.answered == [0] and spy2.answered and spy2.answered[0] > 0  # declined first, answered after
    assert b"content-type: text/event-stream" in fast and b"x-cco-cost-usd" not in fast
    assert normal(fast) == normal(slow) == normal(first)
    assert fast.split(b"\r\n\r\n", 1)[1] == s.cache.streams.get(s.cache.lru.items()[0][0])
    rows = [row_dict(r) for r in s.rows.rows]
    stream_rows = [r for r in rows if r["stream"] == 1]
    assert len(stream_rows) == 3 and stream_rows[0] == stream_rows[1] == stream_rows[2]
    assert stream_rows[2]["cache"] == "hit" and stream_rows[2]["input_tokens"] == 1200


def test_lane_leaves_streams_on_count_tokens_to_the_general_path(setup):
    s, _ = setup

    async def go():
        s.exchange(request(), lane=True)
        conn, transport, spy = settled_connection(s)
        conn.data_received(request(body=STREAM_BODY, target=b"/v1/messages/count_tokens"))
        conn.connection_lost(None)
        await asyncio.sleep(0)
        return spy

    spy = run(go)
    assert spy.answered == [0]
