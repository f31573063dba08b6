"""The analytics queries (cco.analytics.queries) over a known set of calls, every figure computed by hand.

The database is built here from the schema's migrations, rows inserted with INSERT_CALL and the rollups rebuilt
with `rebuild_rollups` (the writer is not involved).
"""

from __future__ import annotations

import csv
import io

import apsw
import pytest

from cco.analytics import queries as q
from cco.analytics.schema import COLUMNS, INSERT_CALL, MIGRATIONS

H0 = 1_749_999_600          # an hour start (2025-06-15T15:00:00Z)
NOW = H0 + 1800.5           # "now", half-way through that hour
HOUR, DAY = 3600, 86400
CUR = H0 - 23 * HOUR        # first bucket of the last 24 h
PREV = H0 - 47 * HOUR       # first bucket of the 24 h before

WEIRD_AGENT = 'weird, "agent"\nname'
WEIRD_MODEL = 'local, "llama"\n3'


def approx(x):
    return pytest.approx(x, abs=1e-12)


def call(ts, project, model, *, cache="miss", status=200, provider="anthropic", requested=None, tokens=(0, 0, 0, 0),
         cc1h=0, cost=0.0, would_be=None, savings=0.0, latency=0.0, error=None, override=None, agent=None,
         endpoint="/v1/messages", rid=None):
    inp, out, cw, cr = tokens
    values = {
        "ts": float(ts), "project": project, "agent": agent, "requested_model": requested or model, "model": model,
        "provider": provider, "endpoint": endpoint, "stream": 0, "status": status, "error_type": error,
        "cache": cache, "input_tokens": inp, "output_tokens": out, "cache_creation_tokens": cw,
        "cache_creation_1h_tokens": cc1h, "cache_read_tokens": cr, "batch": 0, "cost": float(cost),
        "would_be_cost": float(cost + savings if would_be is None else would_be),
        "savings": float(savings), "unpriced": 0,
        "latency_ms": float(latency), "ttfb_ms": None, "upstream_ms": None, "fallback_depth": 0,
        "override_rule": override, "request_id": rid or f"req-{project}-{ts}", "key_hash": None,
    }
    assert set(values) == set(COLUMNS)
    return tuple(values[c] for c in COLUMNS)


SONNET, HAIKU, OPUS = "claude-sonnet-4", "claude-haiku-3", "claude-opus-4"

# name -> row. Trend windows: A1-A5 and B5 are in the last 24 h, A6, A7 and B3 in the 24 h before.
ROWS = {
    "A1": call(NOW - 60, "alpha", SONNET, tokens=(100, 50, 10, 5), cc1h=4, cost=0.001, latency=1000,
               agent="claude-code"),
    "A2": call(NOW - 120, "alpha", SONNET, cache="hit", tokens=(100, 50, 10, 5), savings=0.001, latency=5),
    "A3": call(NOW - 2 * HOUR, "alpha", SONNET, cache="coalesced", tokens=(100, 50, 0, 0), savings=0.002,
               latency=200),
    "A4": call(NOW - 3 * HOUR, "alpha", SONNET, requested=OPUS, override="opus-to-sonnet", tokens=(1000, 200, 0, 0),
               cost=0.006, savings=0.024, latency=1500),
    "A5": call(CUR, "alpha", HAIKU, tokens=(200, 100, 0, 1000), cost=0.0004, latency=800),   # first bucket, current
    "A6": call(CUR - 0.001, "alpha", HAIKU, cache="bypass", status=500, error="api_error", tokens=(300, 0, 0, 0),
               cost=0.0003, latency=300),                                                    # last bucket, previous
    "A7": call(NOW - 30 * HOUR, "alpha", SONNET, tokens=(400, 100, 0, 0), cost=0.002, latency=600),
    "A8": call(NOW - 5 * DAY, "alpha", SONNET, cache="none", endpoint="/v1/messages/count_tokens",
               tokens=(50, 0, 0, 0), latency=50),
    "A9": call(NOW - 20 * DAY, "alpha", SONNET, requested=OPUS, override="opus-to-sonnet", tokens=(500, 100, 0, 0),
               cost=0.003, savings=0.012, latency=1200),
    "B1": call(NOW - 10 * DAY, "beta", "gpt-4o", provider="openai", tokens=(400, 100, 0, 0), cost=0.002,
               latency=900, agent=WEIRD_AGENT),
    "B2": call(NOW - 9 * DAY, "beta", WEIRD_MODEL, provider="ollama", tokens=(300, 200, 0, 0), savings=0.0015,
               latency=2000),
    "B3": call(PREV, "beta", "gpt-4o", provider="openai", cache="hit", tokens=(400, 100, 0, 0), savings=0.002,
               latency=10),                                                                  # first bucket, previous
    "B4": call(PREV - 1, "beta", HAIKU, requested=OPUS, override="opus-to-haiku", tokens=(800, 300, 0, 0),
               cost=0.0015, savings=0.03, latency=700),                                      # older
    "B5": call(NOW - 5 * HOUR, "beta", "gpt-4o", provider="openai", status=429, error="rate_limit_error",
               latency=20),
    "G1": call(NOW - 8 * DAY, "gamma", HAIKU, tokens=(100, 100, 0, 0), cost=0.0002, latency=400),
}
NAMES = list(ROWS)
TS = {name: row[COLUMNS.index("ts")] for name, row in ROWS.items()}


def new_db(totals: bool = False, path: str = ":memory:") -> apsw.Connection:
    """A database at the current schema version, or at version 2 (no `totals`: the queries fall back to `hourly`)."""
    conn = apsw.Connection(path)
    for version, sql in enumerate(MIGRATIONS if totals else MIGRATIONS[:2], 1):
        with conn:
            conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {version}")
    return conn


# Every query test runs on the schema as it is (all-time figures from `hourly`) and with `totals`.
@pytest.fixture(params=["hourly", "totals"])
def schema(request) -> bool:
    return request.param == "totals"


@pytest.fixture
def empty(schema) -> apsw.Connection:
    conn = new_db(schema)
    yield conn
    conn.close()


@pytest.fixture
def db(schema) -> apsw.Connection:
    conn = new_db(schema)
    with conn:
        conn.executemany(INSERT_CALL, ROWS.values())
    q.rebuild_rollups(conn)
    yield conn
    conn.close()


def ids(*names: str) -> list[int]:
    return [NAMES.index(n) + 1 for n in names]


# ------------------------------------------------------------------------------------------------------ helpers

def test_iso_and_floor_hour():
    assert q.iso(H0) == "2025-06-15T15:00:00.000Z"
    assert q.iso(NOW) == "2025-06-15T15:30:00.500Z"
    assert q.iso(H0 - 0.0006) == "2025-06-15T14:59:59.999Z"
    assert q.iso(H0 - 0.0004) == "2025-06-15T15:00:00.000Z"  # rounds to the millisecond, carrying into seconds
    assert q.floor_hour(NOW) == H0 and q.floor_hour(H0) == H0 and q.floor_hour(H0 - 0.001) == H0 - HOUR


def test_rollups_match_migration_backfill():
    """rebuild_rollups produces what the version-2 migration's backfill produces from the same rows."""
    conn = apsw.Connection(":memory:")
    conn.execute(MIGRATIONS[0])
    v1_columns = [c for c in COLUMNS if c not in ("cache_creation_1h_tokens", "batch")]
    with conn:
        conn.executemany(f"INSERT INTO api_calls ({', '.join(v1_columns)}) VALUES ({', '.join('?' * len(v1_columns))})",
                         [tuple(v for c, v in zip(COLUMNS, row) if c in v1_columns) for row in ROWS.values()])
    conn.execute(MIGRATIONS[1])
    hourly = conn.execute("SELECT * FROM hourly ORDER BY 1, 2, 3, 4").fetchall()
    overrides = conn.execute("SELECT * FROM overrides ORDER BY 1, 2").fetchall()
    q.rebuild_rollups(conn)
    assert conn.execute("SELECT * FROM hourly ORDER BY 1, 2, 3, 4").fetchall() == hourly
    assert conn.execute("SELECT * FROM overrides ORDER BY 1, 2").fetchall() == overrides
    assert len(hourly) == 14 and len(overrides) == 2


# ------------------------------------------------------------------------------------------------ project_stats

def test_project_stats_alpha(db):
    s = q.project_stats(db, "alpha", NOW)
    assert s["project"] == "alpha"
    assert s["cost"] == approx(0.0127)
    assert s["tokens"] == 4115                      # A2 (hit) and A3 (coalesced) not counted
    assert s["calls"] == 9
    assert s["savings"] == approx(0.039)
    assert s["avgLatencyMs"] == approx(5655 / 9)
    assert s["cacheHitRate"] == approx(2 / 7)       # hits A2 A3; misses A1 A4 A5 A7 A9; A6 bypass, A8 none
    # last 24 h: A1-A5; the 24 h before: A6, A7
    assert s["costTrend"] == approx(0.0074 - 0.0023)
    assert s["tokensTrend"] == 2665 - 800
    assert s["callsTrend"] == 5 - 2
    assert s["latencyTrend"] == approx(3505 / 5 - 900 / 2)
    assert [r["ts"] for r in s["recent"]] == [q.iso(TS[n]) for n in
                                              ("A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9")]
    assert s["recent"][0] == {"ts": q.iso(NOW - 60), "model": SONNET, "cache": "miss", "tokens": 165,
                              "cost": 0.001, "latencyMs": 1000.0, "status": 200}
    assert s["recent"][1]["tokens"] == 165 and s["recent"][1]["cache"] == "hit"   # a row's own four kinds
    assert s["recent"][2]["tokens"] == 150
    assert s["recent"][5] == {"ts": q.iso(CUR - 0.001), "model": HAIKU, "cache": "bypass", "tokens": 300,
                              "cost": 0.0003, "latencyMs": 300.0, "status": 500}


def test_project_stats_beta_and_gamma(db):
    s = q.project_stats(db, "beta", NOW)
    assert (s["cost"], s["tokens"], s["calls"]) == (approx(0.0035), 2100, 5)
    assert s["savings"] == approx(0.0335)
    assert s["avgLatencyMs"] == approx(3630 / 5)
    assert s["cacheHitRate"] == approx(1 / 5)
    # last 24 h: B5 only; the 24 h before: B3 (its first bucket); B4 one second earlier is older
    assert (s["costTrend"], s["tokensTrend"], s["callsTrend"]) == (0, 0, 0)
    assert s["latencyTrend"] == approx(20 - 10)
    assert [r["model"] for r in s["recent"]] == ["gpt-4o", "gpt-4o", HAIKU, WEIRD_MODEL, "gpt-4o"]

    g = q.project_stats(db, "gamma", NOW)
    assert g == {"project": "gamma", "cost": approx(0.0002), "costTrend": 0, "tokens": 200, "tokensTrend": 0,
                 "calls": 1, "callsTrend": 0, "avgLatencyMs": 400.0, "latencyTrend": 0, "cacheHitRate": 0,
                 "savings": 0, "recent": [{"ts": q.iso(TS["G1"]), "model": HAIKU, "cache": "miss", "tokens": 200,
                                           "cost": 0.0002, "latencyMs": 400.0, "status": 200}]}


def test_project_stats_recent_is_the_20_newest(empty):
    with empty:
        empty.executemany(INSERT_CALL, [call(NOW - i, "p", SONNET, latency=i) for i in range(30)]
                          + [call(NOW + 1, "other", SONNET)])
    q.rebuild_rollups(empty)
    s = q.project_stats(empty, "p", NOW)
    assert s["calls"] == 30
    assert [r["ts"] for r in s["recent"]] == [q.iso(NOW - i) for i in range(20)]


def test_trends_with_one_window_empty(empty):
    """The average latency of a window without calls counts as 0; sums of an empty window are 0."""
    with empty:
        empty.executemany(INSERT_CALL, [call(NOW, "cur", SONNET, cost=0.5, tokens=(1, 2, 3, 4), latency=100),
                                        call(NOW - 24 * HOUR, "prev", SONNET, cost=0.25, tokens=(1, 0, 0, 0),
                                             latency=40)])
    q.rebuild_rollups(empty)
    cur = q.project_stats(empty, "cur", NOW)
    assert (cur["costTrend"], cur["tokensTrend"], cur["callsTrend"], cur["latencyTrend"]) == (0.5, 10, 1, 100)
    prev = q.project_stats(empty, "prev", NOW)
    assert (prev["costTrend"], prev["tokensTrend"], prev["callsTrend"], prev["latencyTrend"]) == (-0.25, -1, -1, -40)


def test_project_stats_unknown_and_empty(db, empty):
    zero = {"project": "nope", "cost": 0, "costTrend": 0, "tokens": 0, "tokensTrend": 0, "calls": 0, "callsTrend": 0,
            "avgLatencyMs": 0, "latencyTrend": 0, "cacheHitRate": 0, "savings": 0, "recent": []}
    assert q.project_stats(db, "nope", NOW) == zero
    assert q.project_stats(empty, "nope", NOW) == zero


# ----------------------------------------------------------------------------------------- projects, machine

EXPECTED_PROJECTS = [
    {"name": "alpha", "cost": approx(0.0127), "calls": 9, "tokens": 4115, "savings": approx(0.039),
     "lastActivity": q.iso(NOW - 60)},
    {"name": "beta", "cost": approx(0.0035), "calls": 5, "tokens": 2100, "savings": approx(0.0335),
     "lastActivity": q.iso(NOW - 5 * HOUR)},
    {"name": "gamma", "cost": approx(0.0002), "calls": 1, "tokens": 200, "savings": 0,
     "lastActivity": q.iso(NOW - 8 * DAY)},
]


def test_projects(db, empty):
    assert q.projects(db, NOW) == EXPECTED_PROJECTS
    assert q.projects(empty, NOW) == []


def test_machine_stats(db):
    m = q.machine_stats(db, NOW)
    assert m["totalCost"] == approx(0.0164)
    assert m["totalSavings"] == approx(0.0725)
    assert m["activeProjects"] == 2                 # gamma's only call is 8 days old
    assert m["totalCalls"] == 15
    assert m["totalTokens"] == 6415
    assert m["projects"] == EXPECTED_PROJECTS
    assert m["models"] == [
        {"model": SONNET, "provider": "anthropic", "calls": 7, "tokens": 2515, "cost": approx(0.012),
         "savings": approx(0.039)},
        {"model": HAIKU, "provider": "anthropic", "calls": 4, "tokens": 2900, "cost": approx(0.0024),
         "savings": approx(0.03)},
        {"model": "gpt-4o", "provider": "openai", "calls": 3, "tokens": 500, "cost": approx(0.002),
         "savings": approx(0.002)},
        {"model": WEIRD_MODEL, "provider": "ollama", "calls": 1, "tokens": 500, "cost": 0, "savings": approx(0.0015)},
    ]
    trend = m["costTrend"]
    assert len(trend) == 168
    assert [p["ts"] for p in trend] == [q.iso(H0 - (167 - i) * HOUR) for i in range(168)]
    costs = {i: p["cost"] for i, p in enumerate(trend) if p["cost"]}
    assert costs == {167: approx(0.001), 164: approx(0.006), 144: approx(0.0004), 143: approx(0.0003),
                     137: approx(0.002), 119: approx(0.0015)}
    assert all(p["cost"] == 0 for i, p in enumerate(trend) if i not in costs)


def test_machine_stats_active_projects_boundary(empty):
    with empty:
        empty.executemany(INSERT_CALL, [call(NOW - 7 * DAY, "edge", SONNET), call(NOW - 7 * DAY - 0.01, "old", SONNET)])
    q.rebuild_rollups(empty)
    assert q.machine_stats(empty, NOW)["activeProjects"] == 1


def test_machine_stats_empty(empty):
    m = q.machine_stats(empty, NOW)
    assert {k: v for k, v in m.items() if k != "costTrend"} == {
        "totalCost": 0, "totalSavings": 0, "activeProjects": 0, "totalCalls": 0, "totalTokens": 0,
        "projects": [], "models": []}
    assert len(m["costTrend"]) == 168 and all(p["cost"] == 0 for p in m["costTrend"])
    assert m["costTrend"][-1]["ts"] == q.iso(H0) and m["costTrend"][0]["ts"] == q.iso(H0 - 167 * HOUR)


# ---------------------------------------------------------------------------------------------------- overrides

def test_overrides_stats(db, empty):
    assert q.overrides_stats(db) == {
        "total_overrides": 3,
        "overrides_by_model": {OPUS: {"overridden_to": SONNET, "count": 3, "percentage": approx(100 * 3 / 15),
                                      "cost_saved": approx(0.066)}},
    }
    assert q.overrides_stats(empty) == {"total_overrides": 0, "overrides_by_model": {}}


def test_overrides_stats_several_models(empty):
    rows = [call(NOW - i, "p", "small", requested="big", override="r", savings=0.5) for i in range(3)]
    rows += [call(NOW - 10, "p", "tiny", requested="big", override="r2", savings=0.25)]
    rows += [call(NOW - 20, "p", "a", requested="mid", override="r3", savings=0.125)]
    rows += [call(NOW - 30, "p", "b", requested="mid", override="r3", savings=0.0625)]   # tie: first by name
    rows += [call(NOW - 40 - i, "p", "x") for i in range(4)]                                # not overridden
    with empty:
        empty.executemany(INSERT_CALL, rows)
    q.rebuild_rollups(empty)
    assert q.overrides_stats(empty) == {
        "total_overrides": 6,
        "overrides_by_model": {
            "big": {"overridden_to": "small", "count": 4, "percentage": 40.0, "cost_saved": 1.75},
            "mid": {"overridden_to": "a", "count": 2, "percentage": 20.0, "cost_saved": 0.1875},
        },
    }


# ------------------------------------------------------------------------------------------------------ exports

def expected_row(name: str) -> dict:
    row = dict(zip(COLUMNS, ROWS[name]))
    row["ts"] = q.iso(row["ts"])
    return {"id": NAMES.index(name) + 1, **row}


SINCE_PREV = ["B3", "A7", "A6", "A5", "B5", "A4", "A3", "A2", "A1"]


def test_export_rows(db, empty):
    rows = list(q.export_rows(db, PREV))
    assert rows == [expected_row(n) for n in SINCE_PREV]
    assert list(rows[0]) == ["id", *COLUMNS]
    assert [r["id"] for r in q.export_rows(db, PREV, "alpha")] == ids("A7", "A6", "A5", "A4", "A3", "A2", "A1")
    assert [r["id"] for r in q.export_rows(db, 0)] == ids("A9", "B1", "B2", "G1", "A8", "B4", *SINCE_PREV)
    assert list(q.export_rows(db, 0, "nope")) == []
    assert list(q.export_rows(empty, 0)) == []


def test_export_rows_same_ts_ordered_by_id(empty):
    with empty:
        empty.executemany(INSERT_CALL, [call(NOW, "p", f"m{i}") for i in range(5)])
    assert [r["model"] for r in q.export_rows(empty, NOW)] == [f"m{i}" for i in range(5)]
    assert [r["model"] for r in q.recent_calls(empty, 5)] == [f"m{i}" for i in reversed(range(5))]


def test_export_rows_streams(db):
    it = q.export_rows(db, 0)
    assert next(it)["id"] == ids("A9")[0]  # a generator: rows come one at a time
    it.close()


def test_export_analytics(db):
    e = q.export_analytics(db, 2, NOW)   # since NOW - 2 days = H0 - 170999.5: B4 (H0 - 169201) in, A8 out
    assert e["days"] == 2
    assert e["generatedAt"] == "2025-06-15T15:30:00.500Z"
    assert e["summary"] == {"calls": 10, "cost": approx(0.0112), "savings": approx(0.059),
                            "cacheSavings": approx(0.005), "tokens": 4565, "hitRate": approx(3 / 9)}
    assert e["calls"] == [expected_row(n) for n in ("B4", *SINCE_PREV)]

    one_hour = q.export_analytics(db, 1 / 24, NOW)   # since H0 - 1799.5: A1, A2
    assert one_hour["summary"] == {"calls": 2, "cost": approx(0.001), "savings": approx(0.001),
                                   "cacheSavings": approx(0.001), "tokens": 165, "hitRate": 0.5}
    assert one_hour["days"] == 1 / 24 and [r["id"] for r in one_hour["calls"]] == ids("A2", "A1")

    a = q.export_analytics(db, 2, NOW, project="alpha")
    assert a["summary"] == {"calls": 7, "cost": approx(0.0097), "savings": approx(0.027),
                            "cacheSavings": approx(0.003), "tokens": 3465, "hitRate": approx(2 / 6)}
    assert [r["id"] for r in a["calls"]] == ids("A7", "A6", "A5", "A4", "A3", "A2", "A1")

    everything = q.export_analytics(db, 365, NOW)
    assert everything["summary"] == {"calls": 15, "cost": approx(0.0164), "savings": approx(0.0725),
                                     "cacheSavings": approx(0.005), "tokens": 6415, "hitRate": approx(3 / 13)}
    assert len(everything["calls"]) == 15


def test_export_analytics_empty(empty):
    assert q.export_analytics(empty, 7, NOW) == {
        "days": 7, "generatedAt": q.iso(NOW), "calls": [],
        "summary": {"calls": 0, "cost": 0, "savings": 0, "cacheSavings": 0, "tokens": 0, "hitRate": 0}}


def test_csv_round_trip(db):
    text = "".join(q.csv_export(q.export_rows(db, 0)))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert reader.fieldnames == ["id", *COLUMNS]
    parsed = list(reader)
    assert len(parsed) == 15
    by_id = {int(r["id"]): r for r in parsed}
    b1, b2 = by_id[ids("B1")[0]], by_id[ids("B2")[0]]
    assert b1["agent"] == WEIRD_AGENT and b1["model"] == "gpt-4o"
    assert b2["model"] == WEIRD_MODEL and b2["requested_model"] == WEIRD_MODEL and b2["provider"] == "ollama"
    for name in NAMES:
        want = expected_row(name)
        got = by_id[want["id"]]
        for col in ["id", *COLUMNS]:
            value = want[col]
            if value is None:
                assert got[col] == "", (name, col)
            elif isinstance(value, float):
                assert float(got[col]) == value, (name, col)   # full precision, no rounding
            else:
                assert got[col] == str(value), (name, col)
    assert by_id[ids("A1")[0]]["ts"] == q.iso(NOW - 60)


def test_csv_incremental_and_empty():
    header = ",".join(["id", *COLUMNS]) + "\r\n"
    assert list(q.csv_export([])) == [header]
    row = dict.fromkeys(["id", *COLUMNS], "x" * 100)
    chunks = list(q.csv_export(iter([row] * 1000), chunk_size=4096))
    assert len(chunks) > 10 and all(len(c) < 4096 + 4000 for c in chunks)
    assert len(list(csv.DictReader(io.StringIO("".join(chunks), newline="")))) == 1000


def test_recent_calls(db, empty):
    assert q.recent_calls(db, 3) == [expected_row(n) for n in ("A1", "A2", "A3")]
    assert [r["id"] for r in q.recent_calls(db, 100)] == ids(*SINCE_PREV[::-1], "B4", "A8", "G1", "B2", "B1",
                                                            "A9")
    assert q.recent_calls(db, 0) == []
    assert q.recent_calls(empty, 10) == []


def test_read_only_connection(tmp_path, schema):
    """The reader opens the store read-only; every function works there (read transactions only)."""
    path = str(tmp_path / "analytics.db")
    conn = new_db(schema, path)
    with conn:
        conn.executemany(INSERT_CALL, ROWS.values())
    q.rebuild_rollups(conn)
    conn.close()
    ro = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    assert q.project_stats(ro, "alpha", NOW)["calls"] == 9
    assert q.projects(ro, NOW) == EXPECTED_PROJECTS
    assert q.machine_stats(ro, NOW)["totalCalls"] == 15
    assert q.overrides_stats(ro)["total_overrides"] == 3
    assert q.export_analytics(ro, 2, NOW)["summary"]["calls"] == 10
    assert len(q.recent_calls(ro, 5)) == 5
    ro.close()


# ------------------------------------------------------------------------------------ the proposed totals table

_SUMS = ("calls", "tokens", "cost", "savings", "cache_savings", "hits", "misses", "errors", "latency_ms")
_HOURLY_UPSERT = f"""
INSERT INTO hourly (hour, project, model, provider, {', '.join(_SUMS)}, last_ts)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (hour, project, model, provider) DO UPDATE SET
    {', '.join(f'{c} = {c} + excluded.{c}' for c in _SUMS)}, last_ts = max(last_ts, excluded.last_ts)
"""


def hourly_values(row: tuple) -> tuple:
    r = dict(zip(COLUMNS, row))
    served = r["cache"] in ("hit", "coalesced")
    tokens = 0 if served else (r["input_tokens"] + r["output_tokens"] + r["cache_creation_tokens"]
                               + r["cache_read_tokens"])
    return (q.floor_hour(r["ts"]), r["project"], r["model"], r["provider"], 1, tokens, r["cost"], r["savings"],
            r["savings"] if served else 0.0, int(served), int(r["cache"] == "miss"), int(r["status"] >= 400),
            r["latency_ms"], r["ts"])


def assert_totals_match(conn: apsw.Connection) -> None:
    want = conn.execute(f"SELECT project, model, provider, {', '.join(f'SUM({c})' for c in _SUMS)}, MAX(last_ts) "
                        "FROM hourly GROUP BY 1, 2, 3 ORDER BY 1, 2, 3").fetchall()
    got = conn.execute(f"SELECT project, model, provider, {', '.join(_SUMS)}, last_ts FROM totals "
                       "WHERE calls > 0 ORDER BY 1, 2, 3").fetchall()
    assert [r[:3] for r in got] == [r[:3] for r in want]
    for g, w in zip(got, want):
        assert list(g[3:-1]) == [pytest.approx(x, abs=1e-12) for x in w[3:-1]]
        assert g[-1] >= w[-1]   # last_ts only grows


def test_totals_follow_hourly_upserts_deletes_and_rebuilds():
    conn = new_db(totals=True)
    rows = list(ROWS.values())
    for i in range(0, len(rows), 4):   # writer-like batches: rows plus hourly upserts, one transaction each
        with conn:
            conn.executemany(INSERT_CALL, rows[i:i + 4])
            conn.executemany(_HOURLY_UPSERT, [hourly_values(r) for r in rows[i:i + 4]])
        assert_totals_match(conn)
    with conn:   # the same calls once more: every hourly row is updated in place
        conn.executemany(_HOURLY_UPSERT, [hourly_values(r) for r in rows])
    assert_totals_match(conn)
    assert conn.execute("SELECT calls FROM totals WHERE project = 'alpha' AND model = ?", (SONNET,)).fetchone() == (14,)
    with conn:   # a repair moving rows to another project, then pruning old hours
        conn.execute("UPDATE hourly SET project = 'gamma' WHERE project = 'beta' AND model = 'gpt-4o'")
    assert_totals_match(conn)
    with conn:
        conn.execute("DELETE FROM hourly WHERE hour < ?", (PREV,))
    assert_totals_match(conn)
    q.rebuild_rollups(conn)   # back to exactly the rows
    assert_totals_match(conn)
    assert conn.execute("SELECT SUM(calls) FROM totals").fetchone() == (15,)
    assert q.projects(conn, NOW) == EXPECTED_PROJECTS


def test_totals_migration_backfills_from_hourly():
    conn = new_db()
    with conn:
        conn.executemany(INSERT_CALL, ROWS.values())
    q.rebuild_rollups(conn)
    with conn:
        conn.execute(q.TOTALS_MIGRATION)
    assert_totals_match(conn)
    assert conn.execute("SELECT count(*) FROM totals").fetchone() == (6,)
