"""Integration tests of the response cache (SPEC §3 cache headers, §5, §7 /api/cache/*) against a real
cco-proxy per implementation (`cached_proxy`: compiled and pure, cache on, routed to the mock upstream).

The mock numbers its answers (`msg_mock_<n>`, one n per upstream request), so a hit is the SAME id as the miss
it replays. The cache is shared by every test of a module-scoped proxy: each test's request carries a uuid.
Options that need a dedicated proxy (size, TTL, scopes, persistence, --no-cache) and the `cco cache` CLI
are in test_cache_options.py.
"""
from __future__ import annotations

import json
import os
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import anthropic
import pytest

from tests.http_util import H11Response, connect, wait_for
from tests.mock_anthropic import TOOL_INPUT
from tests.test_http_server import one

pytestmark = pytest.mark.integration

MODEL = "claude-haiku-4-5"  # claude-sonnet-4-5 makes the SDK emit a DeprecationWarning (an error here)
MESSAGES = "/v1/messages"
TOOLS = [{"name": "bash", "description": "Run a shell command",
          "input_schema": {"type": "object", "properties": {"command": {"type": "string"},
                                                            "timeout": {"type": "integer"}}}}]
STATS_FIELDS = {"hits", "misses", "coalesced", "bypassed", "hitRate", "entries", "sizeBytes", "maxSizeBytes",
                "size", "maxSize", "evictions", "expirations", "savedCost"}
TOP_FIELDS = {"key", "model", "hits", "savedCost", "preview", "lastHit"}
MESSAGE_FIELDS = ("id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage")


# ----------------------------------------------------------------------------------------------- helpers


def uniq(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


def body(text: str, **fields) -> dict:
    return {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **fields}


def raw_post(path: str, payload: dict | bytes, headers: dict | None = None, key: str | None = "sk-test") -> bytes:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    fields = {"host": "127.0.0.1", "content-type": "application/json", "anthropic-version": "2023-06-01"}
    if key:
        fields["x-api-key"] = key
    fields.update(headers or {})
    fields["content-length"] = str(len(data))
    return (f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
            + "\r\n").encode() + data


def send(proxy, payload: dict | bytes, headers: dict | None = None, path: str = MESSAGES, key: str | None = "sk-test",
         timeout: float = 30.0) -> H11Response:
    """One request on its own connection, the answer parsed strictly with h11."""
    return one(proxy.port, raw_post(path, payload, headers, key), target=path, timeout=timeout)


def outcome(resp: H11Response) -> str:
    return resp.headers.get("x-cco-cache", "<none>")


def sse_events(data: bytes) -> list[tuple[str | None, dict]]:
    out = []
    for block in data.decode().replace("\r\n", "\n").split("\n\n"):
        name, lines = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                lines.append(line[5:].strip())
        if lines:
            out.append((name, json.loads("\n".join(lines))))
    return out


def sse_text(events) -> str:
    return "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")


def msg_id(resp: H11Response) -> str:
    assert resp.status == 200, (resp.status, resp.body)
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        return sse_events(resp.body)[0][1]["message"]["id"]
    return resp.json()["id"]


def get_json(proxy, path: str):
    with urllib.request.urlopen(proxy.url + path, timeout=10) as resp:
        return json.loads(resp.read())


def stats(proxy) -> dict:
    return get_json(proxy, "/api/cache/stats")


def clear(proxy) -> dict:
    req = urllib.request.Request(proxy.url + "/api/cache/clear", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def haiku_cost(usage: dict) -> float:
    """The bundled price of claude-haiku-4-5: input 1.0, output 5.0 USD per million tokens."""
    return usage["input_tokens"] * 1e-6 + usage["output_tokens"] * 5e-6


def as_message(msg) -> dict:
    dumped = msg.model_dump()
    return {k: dumped[k] for k in MESSAGE_FIELDS}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def sdk(cached_proxy, monkeypatch):
    """A factory of official SDK clients (2.x) for the cached proxy; closed at the end of the test."""
    for name in list(os.environ):
        if name.startswith("ANTHROPIC_"):
            monkeypatch.delenv(name)
    made = []

    def factory(api_key: str = "sk-test") -> anthropic.Anthropic:
        made.append(anthropic.Anthropic(api_key=api_key, base_url=cached_proxy.url, max_retries=0, timeout=30))
        return made[-1]

    yield factory
    for c in made:
        c.close()


@pytest.fixture
def trusted(cached_proxy, mock):
    """The cached proxy, once its default client key has succeeded upstream: a request with a credential not yet
    seen to succeed never leads a flight others may join (nor reads the cache)."""
    assert send(cached_proxy, body(uniq("verify the key"))).status == 200
    mock.reset()
    return cached_proxy


# ----------------------------------------------------------------------------------------------- 1. SDK


def test_sdk_hit_after_miss(sdk, mock):
    client, msgs = sdk(), user(uniq("sdk hit"))
    first = client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=msgs)
    second = client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=msgs)
    assert (first.headers["x-cco-cache"], second.headers["x-cco-cache"]) == ("miss", "hit")
    assert as_message(second.parse()) == as_message(first.parse())
    assert mock.count() == 1


def test_sdk_stream_after_non_stream(sdk, mock):
    client, msgs = sdk(), user(uniq("stream after plain"))
    plain = client.messages.create(model=MODEL, max_tokens=64, messages=msgs)
    with client.messages.stream(model=MODEL, max_tokens=64, messages=msgs) as stream:
        assert stream.response.headers["x-cco-cache"] == "hit"
        final = stream.get_final_message()
    assert as_message(final) == as_message(plain)
    assert mock.count() == 1


def test_sdk_non_stream_after_stream(sdk, mock):
    client, msgs = sdk(), user(uniq("plain after stream"))
    with client.messages.stream(model=MODEL, max_tokens=64, messages=msgs) as stream:
        assert stream.response.headers["x-cco-cache"] == "miss"
        streamed = stream.get_final_message()
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=msgs)
    assert raw.headers["x-cco-cache"] == "hit"
    assert as_message(raw.parse()) == as_message(streamed)
    assert streamed.usage.output_tokens == 7
    assert mock.count() == 1


def test_sdk_tool_use_stream_miss_then_hits(sdk, mock):
    client, msgs = sdk(), user(uniq("tool"))
    kwargs = dict(model=MODEL, max_tokens=64, messages=msgs, tools=TOOLS, extra_headers={"x-mock-mode": "tool"})

    def tool_input(message) -> dict:
        [block] = [b for b in message.content if b.type == "tool_use"]
        return block.input

    with client.messages.stream(**kwargs) as stream:
        assert stream.response.headers["x-cco-cache"] == "miss"
        streamed = stream.get_final_message()
    raw = client.messages.with_raw_response.create(**kwargs)
    assert raw.headers["x-cco-cache"] == "hit"
    with client.messages.stream(**kwargs) as stream:
        assert stream.response.headers["x-cco-cache"] == "hit"
        replayed = stream.get_final_message()
    assert tool_input(streamed) == tool_input(raw.parse()) == tool_input(replayed) == TOOL_INPUT
    assert streamed.stop_reason == raw.parse().stop_reason == replayed.stop_reason == "tool_use"
    assert as_message(replayed) == as_message(streamed)
    assert mock.count() == 1


# ----------------------------------------------------------------------------------------------- 2. key rules


def test_key_different_temperature_is_a_miss(cached_proxy, mock):
    text = uniq("temperature")
    a = send(cached_proxy, body(text, temperature=0.2))
    b = send(cached_proxy, body(text, temperature=0.7))
    assert (outcome(a), outcome(b)) == ("miss", "miss")
    assert msg_id(a) != msg_id(b) and mock.count() == 2


def test_key_ignores_metadata(cached_proxy, mock):
    text = uniq("metadata")
    a = send(cached_proxy, body(text, metadata={"user_id": "alice"}))
    b = send(cached_proxy, body(text, metadata={"user_id": "bob"}))
    assert (outcome(a), outcome(b)) == ("miss", "hit")
    assert msg_id(a) == msg_id(b) and mock.count() == 1


def test_key_includes_anthropic_beta(sdk, mock):
    client, msgs = sdk(), user(uniq("beta"))
    outcomes = []
    for beta in ("beta-one-2025", "beta-two-2025", "beta-one-2025"):
        raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=msgs,
                                                       extra_headers={"anthropic-beta": beta})
        outcomes.append(raw.headers["x-cco-cache"])
    assert outcomes == ["miss", "miss", "hit"]
    assert mock.count() == 2


def test_key_ignores_top_level_field_order(cached_proxy, mock):
    # same value bytes, other member order and spacing between members (the value bytes themselves are keyed)
    messages = json.dumps(user(uniq("order"))).encode()
    a = b'{"model": "%s", "max_tokens": 64, "messages": %s}' % (MODEL.encode(), messages)
    b = b'{\n  "messages":%s,\n  "max_tokens":64,"model":"%s"}' % (messages, MODEL.encode())
    ra, rb = send(cached_proxy, a), send(cached_proxy, b)
    assert (outcome(ra), outcome(rb)) == ("miss", "hit")
    assert msg_id(ra) == msg_id(rb) and mock.count() == 1


def test_key_ignores_stream_flag(cached_proxy, mock):
    text = uniq("stream flag")
    plain = send(cached_proxy, body(text, stream=False))
    streamed = send(cached_proxy, body(text, stream=True))
    assert (outcome(plain), outcome(streamed)) == ("miss", "hit")
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.body)
    assert msg_id(streamed) == msg_id(plain) and mock.count() == 1
    assert sse_text(events) == plain.json()["content"][0]["text"]
    assert [n for n, _ in events][-2:] == ["message_delta", "message_stop"]


# ----------------------------------------------------------------------------------------------- 3. credentials


def test_made_up_key_never_reads_the_cache(sdk, mock):
    msgs = user(uniq("credential"))
    good = sdk().messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=msgs)
    assert good.headers["x-cco-cache"] == "miss"
    bad = sdk(api_key="sk-made-up-" + uuid.uuid4().hex)
    for attempt in (2, 3):
        with pytest.raises(anthropic.AuthenticationError) as info:
            bad.messages.create(model=MODEL, max_tokens=64, messages=msgs, extra_headers={"x-mock-mode": "error-401"})
        assert info.value.status_code == 401
        assert info.value.body["error"]["message"] == "mock 401"  # the upstream's error, passed through
        assert info.value.response.headers.get("x-cco-cache") != "hit"
        assert mock.count() == attempt
    again = sdk().messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=msgs)
    assert again.headers["x-cco-cache"] == "hit"
    assert again.parse().id == good.parse().id and mock.count() == 3


# ----------------------------------------------------------------------------------------------- 4. single-flight


def concurrently(proxy, mock, n: int, payload: dict, headers: dict) -> list[H11Response]:
    """Sends one request, waits until the mock holds it, then n-1 identical ones at once; leader's answer first."""
    with ThreadPoolExecutor(n) as pool:
        leader = pool.submit(send, proxy, payload, headers)
        assert wait_for(lambda: mock.count() >= 1, timeout=10)
        followers = [pool.submit(send, proxy, payload, headers) for _ in range(n - 1)]
        return [leader.result(timeout=60)] + [f.result(timeout=60) for f in followers]


def test_single_flight_for_a_credential_not_yet_verified(cached_proxy, mock):
    """A new key's identical concurrent requests share its one call; another new key never joins that flight."""
    fresh = "sk-" + uniq("fresh")
    payload = body(uniq("unverified"))
    headers = {"x-mock-delay-ms": "1000"}
    with ThreadPoolExecutor(6) as pool:
        leader = pool.submit(send, cached_proxy, payload, headers, key=fresh)
        assert wait_for(lambda: mock.count() >= 1, timeout=10)
        same_key = [pool.submit(send, cached_proxy, payload, headers, key=fresh) for _ in range(4)]
        other_key = pool.submit(send, cached_proxy, payload, headers, key="sk-" + uniq("other"))
        answers = [leader.result(timeout=60)] + [f.result(timeout=60) for f in same_key]
        stranger = other_key.result(timeout=60)
    assert [outcome(r) for r in answers] == ["miss"] + ["coalesced"] * 4
    assert outcome(stranger) == "miss"  # a different unverified key gets its own upstream call
    assert mock.count() == 2


def test_single_flight_non_stream(trusted, mock):
    before = stats(trusted)
    answers = concurrently(trusted, mock, 20, body(uniq("flight")), {"x-mock-delay-ms": "1000"})
    assert mock.count() == 1
    assert [outcome(r) for r in answers] == ["miss"] + ["coalesced"] * 19
    assert all(r.status == 200 for r in answers)
    assert len({r.body for r in answers}) == 1
    after = stats(trusted)
    assert (after["misses"] - before["misses"], after["coalesced"] - before["coalesced"]) == (1, 19)
    saved = 19 * haiku_cost(answers[0].json()["usage"])  # coalesced requests save what the one call cost
    assert after["savedCost"] - before["savedCost"] == pytest.approx(saved, rel=1e-9)


@pytest.mark.parametrize("leader_streams", [True, False], ids=["stream-leader", "json-leader"])
def test_single_flight_mixed_forms(trusted, mock, leader_streams):
    text = uniq("flight mixed")
    headers = {"x-mock-mode": "stream-slow", "x-mock-delay-ms": "500"}
    with ThreadPoolExecutor(3) as pool:
        leader = pool.submit(send, trusted, body(text, stream=leader_streams), headers)
        assert wait_for(lambda: mock.count() >= 1, timeout=10)
        as_json = pool.submit(send, trusted, body(text), headers)
        as_stream = pool.submit(send, trusted, body(text, stream=True), headers)
        leader, as_json, as_stream = (f.result(timeout=60) for f in (leader, as_json, as_stream))
    assert mock.count() == 1
    assert [outcome(r) for r in (leader, as_json, as_stream)] == ["miss", "coalesced", "coalesced"]
    assert msg_id(leader) == msg_id(as_json) == msg_id(as_stream)
    events = sse_events(as_stream.body)
    assert [n for n, _ in events][-2:] == ["message_delta", "message_stop"]
    assert sse_text(events) == as_json.json()["content"][0]["text"] == "Hello from mock: " + text[:40]


def test_single_flight_leader_gone_follower_asks_itself(trusted, mock):
    text = uniq("leader gone")
    with ThreadPoolExecutor(1) as pool, connect(trusted.port) as sock:
        sock.sendall(raw_post(MESSAGES, body(text, stream=True), {"x-mock-mode": "stream-slow"}))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        follower = pool.submit(send, trusted, body(text))  # joins the flight, which then loses its client
        wait_for(lambda: trusted.health()["connections"] >= 3, timeout=10)  # best effort: it is in
        sock.close()
        resp = follower.result(timeout=60)
    assert resp.status == 200 and resp.json()["content"][0]["text"] == "Hello from mock: " + text[:40]
    assert outcome(resp) == "miss" and mock.count() == 2


def test_single_flight_stream_followers(trusted, mock):
    text = uniq("flight stream")
    answers = concurrently(trusted, mock, 5, body(text, stream=True),
                           {"x-mock-mode": "stream-slow", "x-mock-delay-ms": "300"})
    assert mock.count() == 1
    assert [outcome(r) for r in answers] == ["miss"] + ["coalesced"] * 4
    leader = sse_events(answers[0].body)
    assert [n for n, _ in leader] == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 3 + [
        "content_block_stop", "message_delta", "message_stop"]
    assert sse_text(leader) == "Hello from mock: " + text[:40]
    for resp in answers[1:]:
        assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp.body)
        assert [n for n, _ in events] == [n for n, _ in leader]
        assert sse_text(events) == sse_text(leader)
        assert events[0][1]["message"]["id"] == leader[0][1]["message"]["id"]


def test_single_flight_error_reaches_every_waiter(trusted, mock):
    answers = concurrently(trusted, mock, 5, body(uniq("flight error")),
                           {"x-mock-mode": "error-500", "x-mock-delay-ms": "1000"})
    assert mock.count() == 1
    assert [r.status for r in answers] == [500] * 5
    assert [outcome(r) for r in answers] == ["miss"] + ["coalesced"] * 4
    assert len({r.body for r in answers}) == 1
    assert answers[0].json()["error"] == {"type": "api_error", "message": "mock 500"}


# ----------------------------------------------------------------------------------------------- 5. never stored


def test_upstream_error_not_stored(trusted, mock):
    payload = body(uniq("error not stored"))
    failed = send(trusted, payload, {"x-mock-mode": "error-500"})
    assert failed.status == 500
    ok = send(trusted, payload)
    assert (outcome(failed), outcome(ok)) == ("miss", "miss")
    assert ok.status == 200 and mock.count() == 2


def test_client_gone_mid_stream_not_stored(trusted, mock):
    text = uniq("client gone")
    before = trusted.health()["connections"]
    with connect(trusted.port) as sock:
        sock.sendall(raw_post(MESSAGES, body(text, stream=True), {"x-mock-mode": "stream-slow"}))
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
    # bounded wait for the proxy to see the disconnect (it cancels the upstream call then)
    wait_for(lambda: trusted.health()["connections"] <= before, timeout=10)
    after = send(trusted, body(text))
    assert outcome(after) == "miss", after.headers
    assert after.status == 200 and mock.count() == 2


def test_cut_stream_not_stored(trusted, mock):
    payload = body(uniq("dropped"), stream=True)
    cut = send(trusted, payload, {"x-mock-mode": "drop-mid-stream"})
    assert cut.status == 200
    assert [n for n, _ in sse_events(cut.body)][-1] == "error"
    again = send(trusted, payload)
    assert (outcome(cut), outcome(again)) == ("miss", "miss")
    assert [n for n, _ in sse_events(again.body)][-1] == "message_stop"
    assert mock.count() == 2


# ----------------------------------------------------------------------------------------------- 6. control


@pytest.mark.parametrize("name,value", [("x-cco-cache", "bypass"), ("cache-control", "no-store")])
def test_bypass_neither_reads_nor_writes(cached_proxy, mock, name, value):
    payload = body(uniq("bypass"))
    first = send(cached_proxy, payload, {name: value})
    normal = send(cached_proxy, payload)
    third = send(cached_proxy, payload, {name: value})
    assert [outcome(r) for r in (first, normal, third)] == ["bypass", "miss", "bypass"]
    assert len({msg_id(first), msg_id(normal), msg_id(third)}) == 3 and mock.count() == 3


@pytest.mark.parametrize("name,value", [("x-cco-cache", "refresh"), ("cache-control", "no-cache")])
def test_refresh_skips_read_and_stores(cached_proxy, mock, name, value):
    payload = body(uniq("refresh"))
    old = send(cached_proxy, payload)
    fresh = send(cached_proxy, payload, {name: value})
    later = send(cached_proxy, payload)
    assert [outcome(r) for r in (old, fresh, later)] == ["miss", "miss", "hit"]
    assert msg_id(fresh) != msg_id(old) and msg_id(later) == msg_id(fresh)
    assert mock.count() == 2


def test_default_scope_is_global_across_projects(cached_proxy, mock):
    payload = body(uniq("global scope"))
    alpha = send(cached_proxy, payload, path="/p/alpha/v1/messages")
    beta = send(cached_proxy, payload, path="/p/beta/v1/messages")
    assert (outcome(alpha), outcome(beta)) == ("miss", "hit")
    assert msg_id(alpha) == msg_id(beta) and mock.count() == 1


# ----------------------------------------------------------------------------------------------- 7. API and CLI


def test_stats_fields_and_counters(cached_proxy, mock):
    before, health_before = stats(cached_proxy), cached_proxy.health()
    payload = body(uniq("stats"))
    miss, hit = send(cached_proxy, payload), send(cached_proxy, payload)
    assert (outcome(miss), outcome(hit)) == ("miss", "hit")
    after, health_after = stats(cached_proxy), cached_proxy.health()
    assert set(after) == STATS_FIELDS
    delta = {k: after[k] - before[k] for k in ("hits", "misses", "coalesced", "bypassed", "entries", "evictions")}
    assert delta == {"hits": 1, "misses": 1, "coalesced": 0, "bypassed": 0, "entries": 1, "evictions": 0}
    assert after["sizeBytes"] > before["sizeBytes"]
    assert after["savedCost"] - before["savedCost"] == pytest.approx(haiku_cost(miss.json()["usage"]), rel=1e-9)
    assert 0 < after["hitRate"] <= 1
    assert after["maxSizeBytes"] == 500 * 1024 * 1024 and after["maxSize"] == pytest.approx(500)
    assert after["size"] == pytest.approx(after["sizeBytes"] / (1024 * 1024))
    assert health_after["cache_hits"] - health_before["cache_hits"] == 1
    assert health_after["cache_misses"] - health_before["cache_misses"] == 1


def test_top_prompts(cached_proxy, mock):
    clear(cached_proxy)
    long_text = uniq("most hit prompt") + " " + "word " * 40
    short_text = uniq("second prompt")
    costs = {}
    for text, times in ((short_text, 3), (long_text, 4)):
        answers = [send(cached_proxy, body(text), key="sk-secret-key-123") for _ in range(times)]
        assert [outcome(r) for r in answers] == ["miss"] + ["hit"] * (times - 1)
        costs[text] = haiku_cost(answers[0].json()["usage"])
    tops = get_json(cached_proxy, "/api/cache/top-prompts?limit=5")
    assert len(tops) == 2 and all(set(t) == TOP_FIELDS for t in tops)
    assert [t["hits"] for t in tops] == [3, 2]
    assert [t["model"] for t in tops] == [MODEL, MODEL]
    assert all(t["lastHit"] for t in tops)
    assert 0 < len(tops[0]["preview"]) < len(long_text) and " ".join(long_text.split()).startswith(tops[0]["preview"])
    assert tops[1]["preview"] == short_text
    assert tops[0]["savedCost"] == pytest.approx(3 * costs[long_text], rel=1e-9)
    assert tops[1]["savedCost"] == pytest.approx(2 * costs[short_text], rel=1e-9)
    assert "sk-secret-key-123" not in json.dumps(tops)
    assert len(get_json(cached_proxy, "/api/cache/top-prompts?limit=1")) == 1


def test_clear_empties(cached_proxy, mock):
    payload = body(uniq("clear"))
    assert [outcome(send(cached_proxy, payload)) for _ in range(2)] == ["miss", "hit"]
    assert clear(cached_proxy)["cleared"] >= 1
    assert stats(cached_proxy)["entries"] == 0
    assert outcome(send(cached_proxy, payload)) == "miss"
    assert mock.count() == 2

