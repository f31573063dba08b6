"""The cache's memory bound holds for the whole process: 2,000 distinct ~50 KB answers through a 20 MB cache
grow the proxy's resident memory by less than 60 MB (SPEC §5: "within the bound plus a fixed baseline")."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.conftest import IMPLS

ANSWER_BYTES = 50_000
REQUESTS = 2000


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def ask(conn: http.client.HTTPConnection, i: int) -> bytes:
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 10,
                       "messages": [{"role": "user", "content": f"distinct question number {i}"}]})
    conn.request("POST", "/v1/messages", body=body, headers={
        "content-type": "application/json", "x-api-key": "sk-test", "anthropic-version": "2023-06-01",
        "x-mock-answer-bytes": str(ANSWER_BYTES)})
    response = conn.getresponse()
    data = response.read()
    assert response.status == 200, data[:200]
    assert response.getheader("x-cco-cache") == "miss"
    return data


@pytest.mark.parametrize("impl", IMPLS)
def test_rss_stays_within_the_cache_bound(make_proxy, impl):
    proxy = make_proxy(impl, args=["--cache-size", "20"])
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    for i in range(5):  # warm up: the upstream pool, first buffers
        assert len(ask(conn, i)) > ANSWER_BYTES
    baseline = rss_bytes(proxy.proc.pid)
    for i in range(5, REQUESTS):
        ask(conn, i)
    conn.close()
    grown = rss_bytes(proxy.proc.pid) - baseline
    admin = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    admin.request("GET", "/api/cache/stats")
    stats = json.loads(admin.getresponse().read())
    admin.close()
    assert stats["sizeBytes"] <= stats["maxSizeBytes"] == 20 * 1024 * 1024
    assert stats["evictions"] > 1000  # the bound was actually exercised
    print(f"{impl}: RSS grew by {grown / 1e6:.1f} MB over {REQUESTS - 5} answers")
    assert grown < 60 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB"
