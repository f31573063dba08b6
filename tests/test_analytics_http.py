"""The cost ledger end to end: a real cco-proxy, the mock upstream, and every figure checked by hand.

Prices come from a test price table so that each expected figure is simple arithmetic written in the test.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import apsw
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.http_util import connect, wait_for
from tests.test_cache import raw_post, send

pytestmark = pytest.mark.integration

MODEL = "claude-ledger-1"
OTHER = "claude-ledger-2"
PRICES = {
    "_source": "test prices",
    "pricing": {
        MODEL: {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_write_1h": 6.0, "cache_read": 0.3,
                "batch_discount": 0.5},
        OTHER: {"input": 1.0, "output": 5.0, "cache_write": 1.25, "cache_write_1h": 2.0, "cache_read": 0.1,
                "batch_discount": 0.5},
    },
}


def price(model: str, usage: dict, batch: bool = False) -> float:
    p = PRICES["pricing"][model]
    creation = usage.get("cache_creation_input_tokens", 0)
    one_hour = (usage.get("cache_creation") or {}).get("ephemeral_1h_input_tokens", 0)
    cost = (usage.get("input_tokens", 0) * p["input"] + usage.get("output_tokens", 0) * p["output"]
            + (creation - one_hour) * p["cache_write"] + one_hour * p["cache_write_1h"]
            + usage.get("cache_read_input_tokens", 0) * p["cache_read"]) / 1e6
    return cost * (1 - p["batch_discount"]) if batch else cost


def tokens(usage: dict) -> int:
    return (usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
            + usage.get("cache_creation_input_tokens", 0) + usage.get("cache_read_input_tokens", 0))


@pytest.fixture
def ledger(make_proxy):
    proc = make_proxy(start=False)
    (proc.config_dir / "model-pricing.json").write_text(json.dumps(PRICES))
    return proc.start()


def get_json(proxy, path: str):
    with urllib.request.urlopen(proxy.url + path, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def get_text(proxy, path: str) -> tuple[dict, str]:
    with urllib.request.urlopen(proxy.url + path, timeout=10) as resp:
        return dict(resp.headers), resp.read().decode()


def request_body(text: str, model: str = MODEL, **fields) -> dict:
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **fields}


def wait_calls(proxy, count: int, project: str | None = None) -> None:
    path = f"/api/project/stats?project={project}" if project else "/api/machine/stats"
    key = "calls" if project else "totalCalls"
    assert wait_for(lambda: get_json(proxy, path)[key] >= count, timeout=10), get_json(proxy, path)


USAGE_A = {"input_tokens": 1200, "output_tokens": 300, "cache_creation_input_tokens": 1000,
           "cache_read_input_tokens": 5000, "cache_creation": {"ephemeral_5m_input_tokens": 600,
                                                                "ephemeral_1h_input_tokens": 400}}
USAGE_B = {"input_tokens": 40, "output_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
USAGE_C = {"input_tokens": 2000, "output_tokens": 1000, "cache_creation_input_tokens": 0,
           "cache_read_input_tokens": 0}


def test_known_sequence_gives_hand_computed_figures(ledger):
    a = request_body(f"a {uuid.uuid4().hex}")
    first = send(ledger, a, {"x-mock-usage": json.dumps(USAGE_A)})
    assert first.status == 200 and first.headers["x-cco-cache"] == "miss"
    assert float(first.headers["x-cco-cost-usd"]) == pytest.approx(price(MODEL, USAGE_A), abs=1e-12)
    hit = send(ledger, a)
    assert hit.headers["x-cco-cache"] == "hit"
    assert float(hit.headers["x-cco-cost-usd"]) == 0.0
    second = send(ledger, request_body(f"b {uuid.uuid4().hex}", model=OTHER), {"x-mock-usage": json.dumps(USAGE_B)})
    assert second.status == 200
    failed = send(ledger, request_body(f"e {uuid.uuid4().hex}"), {"x-mock-mode": "error-500"})
    assert failed.status == 500
    # another project, by path prefix, and one by header
    beta = send(ledger, request_body(f"c {uuid.uuid4().hex}"), {"x-mock-usage": json.dumps(USAGE_C)},
                path="/p/beta/v1/messages")
    assert beta.status == 200
    gamma = send(ledger, request_body(f"d {uuid.uuid4().hex}", model=OTHER),
                 {"x-mock-usage": json.dumps(USAGE_B), "x-cco-project": "gamma", "x-cco-agent": "tester"})
    assert gamma.status == 200
    wait_calls(ledger, 6)

    cost_a, cost_b, cost_c = price(MODEL, USAGE_A), price(OTHER, USAGE_B), price(MODEL, USAGE_C)
    default = get_json(ledger, "/api/project/stats?project=default")
    assert default["project"] == "default"
    assert default["calls"] == 4
    assert default["cost"] == pytest.approx(cost_a + cost_b, abs=1e-12)
    # the hit saves what the original call cost; its tokens did not reach a provider
    assert default["savings"] == pytest.approx(cost_a, abs=1e-12)
    assert default["tokens"] == tokens(USAGE_A) + tokens(USAGE_B) + 0  # the failed call reported no usage
    assert default["cacheHitRate"] == pytest.approx(1 / 4)  # 1 hit, 3 misses (the error was a miss too)
    assert default["callsTrend"] == 4
    recent = default["recent"]
    assert len(recent) == 4
    assert [r["cache"] for r in recent] == ["miss", "miss", "hit", "miss"]  # newest first
    assert [r["status"] for r in recent] == [500, 200, 200, 200]
    assert recent[2]["cost"] == 0

    beta_stats = get_json(ledger, "/api/project/stats?project=beta")
    assert beta_stats["calls"] == 1 and beta_stats["cost"] == pytest.approx(cost_c, abs=1e-12)

    projects = {p["name"]: p for p in get_json(ledger, "/api/projects")}
    assert set(projects) == {"default", "beta", "gamma"}
    assert projects["gamma"]["cost"] == pytest.approx(cost_b, abs=1e-12)
    assert projects["gamma"]["tokens"] == tokens(USAGE_B)

    machine = get_json(ledger, "/api/machine/stats")
    assert machine["totalCalls"] == 6
    assert machine["totalCost"] == pytest.approx(cost_a + 2 * cost_b + cost_c, abs=1e-12)
    assert machine["totalSavings"] == pytest.approx(cost_a, abs=1e-12)
    assert machine["activeProjects"] == 3
    models = {m["model"]: m for m in machine["models"]}
    assert models[MODEL]["calls"] == 4 and models[OTHER]["calls"] == 2
    assert len(machine["costTrend"]) == 168
    assert sum(point["cost"] for point in machine["costTrend"]) == pytest.approx(machine["totalCost"], abs=1e-12)

    overrides = get_json(ledger, "/api/overrides/stats")
    assert overrides == {"total_overrides": 0, "overrides_by_model": {}}

    # exports: one row per call, full precision, no credential
    headers, text = get_text(ledger, "/api/export/csv?days=1")
    assert headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 6
    assert sum(float(r["cost"]) for r in rows) == pytest.approx(machine["totalCost"], abs=1e-12)
    assert {r["project"] for r in rows} == {"default", "beta", "gamma"}
    assert [r["agent"] for r in rows if r["project"] == "gamma"] == ["tester"]
    assert "sk-test" not in text
    assert all(len(r["key_hash"]) == 8 for r in rows)
    exported = get_json(ledger, "/api/export/analytics?days=7")
    assert exported["days"] == 7 and len(exported["calls"]) == 6
    assert exported["summary"]["calls"] == 6
    assert exported["summary"]["cost"] == pytest.approx(machine["totalCost"], abs=1e-12)
    assert exported["summary"]["cacheSavings"] == pytest.approx(cost_a, abs=1e-12)
    beta_export = get_json(ledger, "/api/export/project/beta?format=json")
    assert [c["project"] for c in beta_export["calls"]] == ["beta"]
    _, beta_csv = get_text(ledger, "/api/export/project/beta?format=csv&days=2")
    assert len(list(csv.DictReader(io.StringIO(beta_csv)))) == 1


def test_stream_and_batch_usage_are_recorded(ledger):
    usage = {"input_tokens": 500, "output_tokens": 20, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 100}
    resp = send(ledger, request_body(f"s {uuid.uuid4().hex}", stream=True), {"x-mock-usage": json.dumps(usage)})
    assert resp.status == 200 and b"message_stop" in resp.body
    assert "x-cco-cost-usd" not in resp.headers  # streams carry no cost header: the total is known at the end

    created = send(ledger, {"requests": [{"custom_id": "one", "params": request_body("x")},
                                         {"custom_id": "two", "params": request_body("y")}]},
                   path="/v1/messages/batches")
    assert created.status == 200
    batch_id = json.loads(created.body)["id"]
    req = urllib.request.Request(f"{ledger.url}/v1/messages/batches/{batch_id}/results",
                                 headers={"x-api-key": "sk-test", "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(req, timeout=10) as r:
        results = [json.loads(line) for line in r.read().splitlines() if line.strip()]
    assert len(results) == 2
    wait_calls(ledger, 3)
    calls = get_json(ledger, "/api/export/analytics?days=1")["calls"]
    streamed = [c for c in calls if c["endpoint"] == "/v1/messages"]
    assert len(streamed) == 1 and streamed[0]["stream"] == 1
    assert streamed[0]["input_tokens"] == 500 and streamed[0]["output_tokens"] == 20
    assert streamed[0]["cache_read_tokens"] == 100
    assert streamed[0]["cost"] == pytest.approx(price(MODEL, usage), abs=1e-12)
    batch_rows = [c for c in calls if c["endpoint"] == "/v1/messages/batches/results"]
    assert len(batch_rows) == 1 and batch_rows[0]["batch"] == 1
    expected = sum(price(MODEL, r["result"]["message"]["usage"], batch=True) for r in results)
    assert batch_rows[0]["cost"] == pytest.approx(expected, abs=1e-12)
    assert batch_rows[0]["input_tokens"] == sum(r["result"]["message"]["usage"]["input_tokens"] for r in results)


def test_metrics_parse_and_count(ledger):
    a = request_body(f"m {uuid.uuid4().hex}")
    send(ledger, a, {"x-mock-usage": json.dumps(USAGE_B)})
    send(ledger, a)
    # the request counters are derived from the committed rows, right after each batch
    assert wait_for(lambda: 'cco_requests_total{model="%s",provider="anthropic",status="200"} 2.0' % MODEL
                    in get_text(ledger, "/metrics")[1], timeout=10)
    headers, text = get_text(ledger, "/metrics")
    assert headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    value = {f.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in f.samples}
             for f in families.values()}
    assert value["cco_cache_hits"][("cco_cache_hits_total", ())] == 1
    assert value["cco_cache_misses"][("cco_cache_misses_total", ())] == 1
    assert value["cco_cache_entries"][("cco_cache_entries", ())] == 1
    requests = value["cco_requests"]
    assert requests[("cco_requests_total", (("model", MODEL), ("provider", "anthropic"), ("status", "200")))] == 2
    assert value["cco_tokens"][("cco_tokens_total", (("kind", "input"), ("model", MODEL),
                                                     ("provider", "anthropic")))] == 40
    assert value["cco_cost_usd"][("cco_cost_usd_total", (("model", MODEL), ("provider", "anthropic")))] == \
        pytest.approx(price(MODEL, USAGE_B), abs=1e-15)
    latency = value["cco_upstream_latency_seconds"]
    assert latency[("cco_upstream_latency_seconds_count", (("provider", "anthropic"),))] == 1
    assert ("cco_analytics_rows_dropped_total", ()) in value["cco_analytics_rows_dropped"]


def test_live_events_and_logs(ledger):
    sock = connect(ledger.port)
    sock.sendall(b"GET /api/events HTTP/1.1\r\nhost: x\r\n\r\n")
    received = bytearray()
    sock.settimeout(10)
    while b"event: stats" not in received:
        received += sock.recv(65536)
    assert b"text/event-stream" in received
    send(ledger, request_body(f"live {uuid.uuid4().hex}"))
    deadline = time.monotonic() + 10
    while b"event: call" not in received and time.monotonic() < deadline:
        received += sock.recv(65536)
    sock.close()
    call = received[received.index(b"event: call"):].split(b"\n")[1]
    assert json.loads(call[len(b"data: "):])["model"] == MODEL
    logs = get_json(ledger, "/api/logs?limit=50")
    assert any("listening on" in entry["message"] for entry in logs)
    with pytest.raises(urllib.error.HTTPError) as err:
        get_json(ledger, "/api/logs?limit=0")
    assert err.value.code == 400


def test_sigterm_after_300_requests_writes_300_rows(ledger):
    """Every finished request's row is on disk after a graceful stop (SPEC §9), written in batches."""
    total = 300

    def client(worker: int) -> None:
        with connect(ledger.port, timeout=30) as sock:
            for i in range(total // 3):
                sock.sendall(raw_post("/v1/messages", request_body(f"w{worker} {i} {uuid.uuid4().hex}")))
                data = b""
                while b"\r\n\r\n" not in data:
                    data += sock.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")][0])
                while len(rest) < length:
                    rest += sock.recv(65536)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert ledger.stop(signal.SIGTERM) == 0, ledger.log()
    conn = apsw.Connection(str(ledger.workdir / "data" / "analytics.db"))
    assert next(conn.execute("SELECT COUNT(*) FROM api_calls"))[0] == total
    assert next(conn.execute("SELECT SUM(calls) FROM hourly"))[0] == total


def test_cli_stats_and_export_with_and_without_a_proxy(ledger, tmp_path):
    send(ledger, request_body(f"cli {uuid.uuid4().hex}"), {"x-mock-usage": json.dumps(USAGE_C)})
    wait_calls(ledger, 1)
    cco = [str(Path(sys.executable).parent / "cco")]
    data_dir = str(ledger.workdir / "data")
    live = subprocess.run(cco + ["stats", "--json", "--url", ledger.url], capture_output=True, text=True, timeout=30)
    assert live.returncode == 0, live.stderr
    assert json.loads(live.stdout)["totalCost"] == pytest.approx(price(MODEL, USAGE_C), abs=1e-12)
    out = tmp_path / "calls.csv"
    exported = subprocess.run(cco + ["export", "--days", "1", "--format", "csv", "-o", str(out), "--url", ledger.url],
                              capture_output=True, text=True, timeout=30)
    assert exported.returncode == 0, exported.stderr
    assert len(list(csv.DictReader(out.open()))) == 1
    assert ledger.stop() == 0
    # no proxy: straight from the database
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{s.getsockname()[1]}"
    offline = subprocess.run(cco + ["stats", "--json", "--url", dead_url, "--data-dir", data_dir, "--project",
                                    "default"], capture_output=True, text=True, timeout=30)
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["calls"] == 1
    out_json = tmp_path / "calls.json"
    offline_export = subprocess.run(cco + ["export", "--days", "1", "-o", str(out_json), "--url", dead_url,
                                           "--data-dir", data_dir], capture_output=True, text=True, timeout=30)
    assert offline_export.returncode == 0, offline_export.stderr
    document = json.loads(out_json.read_text())
    assert len(document["calls"]) == 1 and document["summary"]["calls"] == 1
