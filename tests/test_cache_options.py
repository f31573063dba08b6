"""Integration tests of the cache options, each on a dedicated cco-proxy per implementation (`make_proxy`):
--no-cache, --cache-ttl, --cache-size, `cache.scope` (project, key), `cache.persist` in cache.toml; and the
`cco cache stats|clear` CLI.

Helpers come from test_cache.py (same conventions: a uuid per request body, `msg_mock_<n>` ids show hits).
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.test_cache import body, msg_id, outcome, send, stats, uniq

pytestmark = pytest.mark.integration


def with_cache_toml(make_proxy, impl: str, toml: str, **kwargs):
    proc = make_proxy(impl, start=False, **kwargs)
    (proc.config_dir / "cache.toml").write_text(toml)
    return proc.start()


def test_no_cache_bypasses_everything(make_proxy, impl, mock):
    proc = make_proxy(impl, args=["--no-cache"])
    payload = body(uniq("no cache"))
    answers = [send(proc, payload) for _ in range(2)] + [send(proc, dict(payload, stream=True))]
    assert [outcome(r) for r in answers] == ["bypass"] * 3
    assert len({msg_id(r) for r in answers}) == 3 and mock.count() == 3
    try:
        assert stats(proc)["entries"] == 0
    except urllib.error.HTTPError as exc:  # or no cache API at all while the cache is off
        assert exc.code == 404


def test_ttl_expires_entries(make_proxy, impl, mock):
    proc = make_proxy(impl, args=["--cache-ttl", "1"])
    payload = body(uniq("ttl"))
    first = send(proc, payload)
    assert outcome(first) == "miss" and stats(proc)["entries"] == 1
    time.sleep(1.5)
    later = send(proc, payload)
    assert outcome(later) == "miss" and msg_id(later) != msg_id(first)
    assert stats(proc)["expirations"] >= 1
    assert mock.count() == 2


def test_size_bound_evicts(make_proxy, impl, mock):
    proc = make_proxy(impl, args=["--cache-size", "0.01"])  # 10 KB: room for a handful of entries
    limit = stats(proc)["maxSizeBytes"]
    assert limit == int(0.01 * 1024 * 1024)
    for i in range(30):
        assert outcome(send(proc, body(uniq(f"size {i}")))) == "miss"
        current = stats(proc)
        assert 0 < current["sizeBytes"] <= limit, current
    assert current["evictions"] > 0 and current["entries"] < 30


def test_size_bound_keeps_recent_entry(make_proxy, impl, mock):
    proc = make_proxy(impl, args=["--cache-size", "0.01"])
    payloads = [body(uniq(f"lru {i}")) for i in range(30)]
    for payload in payloads:
        send(proc, payload)
    assert outcome(send(proc, payloads[-1])) == "hit"
    assert outcome(send(proc, payloads[0])) == "miss"
    assert stats(proc)["sizeBytes"] <= stats(proc)["maxSizeBytes"]


def test_scope_project(make_proxy, impl, mock):
    proc = with_cache_toml(make_proxy, impl, '[cache]\nscope = "project"\n')
    payload = body(uniq("project scope"))
    alpha = send(proc, payload, path="/p/alpha/v1/messages")
    beta = send(proc, payload, path="/p/beta/v1/messages")
    alpha_again = send(proc, payload, path="/p/alpha/v1/messages")
    assert [outcome(r) for r in (alpha, beta, alpha_again)] == ["miss", "miss", "hit"]
    assert msg_id(alpha_again) == msg_id(alpha) != msg_id(beta)
    assert mock.count() == 2


def test_scope_key(make_proxy, impl, mock):
    proc = with_cache_toml(make_proxy, impl, '[cache]\nscope = "key"\n')
    payload = body(uniq("key scope"))
    a = send(proc, payload, key="sk-key-a")
    verify_c = send(proc, body(uniq("verifies key c")), key="sk-key-c")  # C has succeeded upstream once
    c = send(proc, payload, key="sk-key-c")
    c_again = send(proc, payload, key="sk-key-c")
    a_again = send(proc, payload, key="sk-key-a")
    assert [outcome(r) for r in (a, verify_c, c, c_again, a_again)] == ["miss", "miss", "miss", "hit", "hit"]
    assert msg_id(c) != msg_id(a) and msg_id(c_again) == msg_id(c) and msg_id(a_again) == msg_id(a)
    assert mock.count() == 3


@pytest.mark.parametrize("own_key", [False, True], ids=["client-key", "proxy-key"])
def test_persist_across_restart(make_proxy, impl, mock, own_key):
    kwargs = {}
    if own_key:  # a route with the proxy's own key: every client may read its entries at once
        kwargs = dict(routes=[{"pattern": "^claude-", "provider": "anthropic", "endpoint": mock.url,
                               "max_retries": 0, "api_key_env": "CCO_TEST_UPSTREAM_KEY"}],
                      env={"CCO_TEST_UPSTREAM_KEY": "sk-proxy-own"})
    proc = with_cache_toml(make_proxy, impl, '[cache]\npersist = true\n', **kwargs)
    payload = body(uniq("persist"))
    stored = send(proc, payload)
    assert outcome(stored) == "miss"
    assert proc.stop() == 0, proc.log()
    proc.start()
    assert stats(proc)["entries"] == 1
    calls = mock.count()
    if not own_key:
        # credentials seen to succeed are kept in memory only: the client's key is verified again first
        assert outcome(send(proc, body(uniq("verify again")))) == "miss"
        calls += 1
    again = send(proc, payload)
    assert outcome(again) == "hit"
    assert again.body == stored.body
    assert mock.count() == calls
    assert proc.stop() == 0, proc.log()


# ----------------------------------------------------------------------------------------------- CLI


def cco_cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "cco"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)


def test_cli_cache_stats_and_clear(make_proxy, impl, mock):
    proxy = make_proxy(impl)
    payload = body(uniq("cli"))
    assert [outcome(send(proxy, payload)) for _ in range(2)] == ["miss", "hit"]
    current = stats(proxy)
    shown = cco_cli("cache", "stats", "--url", proxy.url)
    assert shown.returncode == 0, shown.stderr
    for word in ("hits", "misses", "coalesced", "entries", "evictions"):
        assert word in shown.stdout
    for name in ("hits", "misses", "entries"):
        assert re.search(rf"\b{name}\s+{current[name]}\b", shown.stdout), (name, shown.stdout)
    cleared = cco_cli("cache", "clear", "--url", proxy.url)
    assert cleared.returncode == 0, cleared.stderr
    assert stats(proxy)["entries"] == 0
    assert outcome(send(proxy, payload)) == "miss"


def test_cli_without_proxy_exits_1():
    url = f"http://127.0.0.1:{free_port()}"
    for command in ("stats", "clear"):
        result = cco_cli("cache", command, "--url", url)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert url in result.stdout + result.stderr
