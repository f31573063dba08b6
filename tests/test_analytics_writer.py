"""The analytics writer: migrations, batching, flush triggers, shutdown, failures and the rollups."""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path

import apsw
import pytest

from cco.analytics import writer as writer_mod
from cco.analytics.schema import COLUMNS, MIGRATIONS, VERSION
from cco.analytics.writer import AnalyticsDatabaseError, AnalyticsWriter, open_database

T0 = 1_700_000_000.0  # a fixed hour-aligned-enough base time; rows spread over several hours from here

DEFAULTS: dict[str, object] = {
    "ts": T0, "project": "proj", "agent": None, "requested_model": "claude-sonnet-4", "model": "claude-sonnet-4",
    "provider": "anthropic", "endpoint": "/v1/messages", "stream": 0, "status": 200, "error_type": None,
    "cache": "miss", "input_tokens": 100, "output_tokens": 20, "cache_creation_tokens": 0,
    "cache_creation_1h_tokens": 0, "cache_read_tokens": 0, "batch": 0, "cost": 0.001, "would_be_cost": 0.001,
    "savings": 0.0, "unpriced": 0, "latency_ms": 12.5, "ttfb_ms": 3.0, "upstream_ms": 10.0, "fallback_depth": 0,
    "override_rule": None, "request_id": "req_1", "key_hash": "abcd1234",
}
assert set(DEFAULTS) == set(COLUMNS)


def make_row(**kw: object) -> tuple:
    unknown = set(kw) - set(COLUMNS)
    assert not unknown, unknown
    values = {**DEFAULTS, **kw}
    return tuple(values[c] for c in COLUMNS)


# The rollup definitions of schema v2, as GROUP BY queries over api_calls.
HOURLY_FROM_CALLS = """
SELECT CAST(ts / 3600 AS INTEGER) * 3600, project, model, provider, COUNT(*),
       SUM(CASE WHEN cache IN ('hit', 'coalesced') THEN 0
                ELSE input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens END),
       SUM(cost), SUM(savings), SUM(CASE WHEN cache IN ('hit', 'coalesced') THEN savings ELSE 0 END),
       SUM(cache IN ('hit', 'coalesced')), SUM(cache = 'miss'), SUM(status >= 400), SUM(latency_ms), MAX(ts)
FROM api_calls GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
HOURLY = """
SELECT hour, project, model, provider, calls, tokens, cost, savings, cache_savings, hits, misses, errors,
       latency_ms, last_ts FROM hourly ORDER BY 1, 2, 3, 4
"""
OVERRIDES_FROM_CALLS = """
SELECT requested_model, model, COUNT(*), SUM(savings) FROM api_calls WHERE override_rule IS NOT NULL
GROUP BY 1, 2 ORDER BY 1, 2
"""
OVERRIDES = "SELECT requested_model, model, calls, cost_saved FROM overrides ORDER BY 1, 2"


def query(path: Path, sql: str) -> list[tuple]:
    conn = apsw.Connection(str(path))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count_calls(path: Path) -> int:
    return query(path, "SELECT COUNT(*) FROM api_calls")[0][0]


def assert_rows_equal(actual: list[tuple], expected: list[tuple]) -> None:
    """Equal row lists; floats compared to rounding error (batch sums add up in a different order)."""
    assert len(actual) == len(expected), (actual, expected)
    for a, e in zip(actual, expected):
        assert len(a) == len(e)
        for x, y in zip(a, e):
            if isinstance(x, float) or isinstance(y, float):
                assert x == pytest.approx(y, rel=1e-9, abs=1e-12), (a, e)
            else:
                assert x == y, (a, e)


def assert_rollups_match(path: Path) -> None:
    """hourly and overrides equal the GROUP BY over api_calls."""
    assert_rows_equal(query(path, HOURLY), query(path, HOURLY_FROM_CALLS))
    assert_rows_equal(query(path, OVERRIDES), query(path, OVERRIDES_FROM_CALLS))


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "analytics.db"


@pytest.fixture
def fast_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short busy timeout and back-off so lock tests take a fraction of a second."""
    monkeypatch.setattr(writer_mod, "BUSY_TIMEOUT_MS", 20)
    monkeypatch.setattr(writer_mod, "RETRY_FIRST", 0.02)
    monkeypatch.setattr(writer_mod, "RETRY_MAX", 0.05)


@pytest.fixture
def writers():
    made: list[AnalyticsWriter] = []

    def make(path: Path, **kw) -> AnalyticsWriter:
        w = AnalyticsWriter(path, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


# --- open_database and migrations ---------------------------------------------------------------------------------

def test_open_creates_directory_and_migrates_empty_database(db: Path) -> None:
    conn = open_database(db)
    try:
        assert db.parent.is_dir()
        assert conn.pragma("user_version") == VERSION
        assert conn.pragma("journal_mode") == "wal"
        assert conn.pragma("synchronous") == 1  # NORMAL
        assert conn.pragma("busy_timeout") == writer_mod.BUSY_TIMEOUT_MS
        names = {(t, n) for t, n in conn.execute("SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'")}
        assert {("table", "api_calls"), ("table", "hourly"), ("table", "overrides"),
                ("index", "api_calls_ts"), ("index", "api_calls_project_ts")} <= names
        cols = [r[1] for r in conn.execute("PRAGMA table_info(api_calls)")]
        assert sorted(cols) == sorted(["id", *COLUMNS])  # v2 columns are appended by ALTER TABLE
    finally:
        conn.close()
    # Opening again is a no-op migration.
    open_database(db).close()
    assert query(db, "PRAGMA user_version") == [(VERSION,)]


def test_reader_is_read_only_and_needs_current_schema(db: Path) -> None:
    with pytest.raises(apsw.CantOpenError):
        open_database(db, readonly=True)
    db.parent.mkdir(parents=True)
    v1 = apsw.Connection(str(db))
    v1.execute(MIGRATIONS[0])
    v1.pragma("user_version", 1)
    v1.close()
    with pytest.raises(AnalyticsDatabaseError, match="start the proxy"):
        open_database(db, readonly=True)
    open_database(db).close()
    reader = open_database(db, readonly=True)
    try:
        assert reader.execute("SELECT COUNT(*) FROM hourly").fetchall() == [(0,)]
        with pytest.raises(apsw.ReadOnlyError):
            reader.execute("DELETE FROM hourly")
    finally:
        reader.close()


def test_newer_database_is_refused(db: Path, writers) -> None:
    db.parent.mkdir(parents=True)
    conn = apsw.Connection(str(db))
    conn.pragma("user_version", VERSION + 1)
    conn.close()
    with pytest.raises(AnalyticsDatabaseError, match="newer"):
        open_database(db)
    with pytest.raises(AnalyticsDatabaseError, match="newer"):
        open_database(db, readonly=True)
    w = writers(db)
    with pytest.raises(AnalyticsDatabaseError, match="newer"):
        w.start()
    assert query(db, "PRAGMA user_version") == [(VERSION + 1,)]
    w.record(make_row())
    assert w.dropped == 1


def test_unopenable_path_fails_start_with_clear_error(tmp_path: Path, writers) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    w = writers(blocker / "sub" / "analytics.db")
    with pytest.raises(AnalyticsDatabaseError, match="cannot open analytics database"):
        w.start()


V1_COLUMNS = ("ts", "project", "agent", "requested_model", "model", "provider", "endpoint", "stream", "status",
              "error_type", "cache", "input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens",
              "cost", "would_be_cost", "savings", "unpriced", "latency_ms", "ttfb_ms", "upstream_ms",
              "fallback_depth", "override_rule", "request_id", "key_hash")
V1_INSERT = f"INSERT INTO api_calls ({', '.join(V1_COLUMNS)}) VALUES ({', '.join('?' for _ in V1_COLUMNS)})"


def test_migration_from_v1_backfills_rollups(db: Path, writers) -> None:
    db.parent.mkdir(parents=True)
    conn = apsw.Connection(str(db))
    with conn:
        conn.execute(MIGRATIONS[0])
        conn.pragma("user_version", 1)
    h0 = int(T0 // 3600) * 3600
    old = [
        # ts, project, cache, status, in, out, cw, cr, cost, savings, latency, override
        (h0 + 10, "a", "miss", 200, 100, 50, 10, 5, 0.5, 0.0, 100.0, None),
        (h0 + 20, "a", "hit", 200, 100, 50, 10, 5, 0.0, 0.5, 2.0, None),
        (h0 + 30, "a", "coalesced", 200, 100, 50, 0, 0, 0.0, 0.25, 3.0, None),
        (h0 + 40, "a", "bypass", 500, 7, 0, 0, 0, 0.0, 0.0, 9.0, None),
        (h0 + 50, "a", "miss", 200, 10, 10, 0, 0, 0.1, 0.3, 20.0, "cheap"),
        (h0 + 3600 + 5, "b", "none", 429, 1, 2, 3, 4, 0.01, 0.0, 1.0, None),
    ]
    with conn:
        for ts, project, cache, status, i, o, cw, cr, cost, savings, lat, rule in old:
            values = {**{c: DEFAULTS[c] for c in V1_COLUMNS}, "ts": ts, "project": project, "cache": cache,
                      "status": status, "input_tokens": i, "output_tokens": o, "cache_creation_tokens": cw,
                      "cache_read_tokens": cr, "cost": cost, "would_be_cost": cost + savings, "savings": savings,
                      "latency_ms": lat, "override_rule": rule}
            conn.execute(V1_INSERT, tuple(values[c] for c in V1_COLUMNS))
    conn.close()

    w = writers(db, flush_interval=0.05)
    w.start()
    assert query(db, "PRAGMA user_version") == [(VERSION,)]
    assert query(db, "SELECT cache_creation_1h_tokens, batch FROM api_calls LIMIT 1") == [(0, 0)]
    m, p = DEFAULTS["model"], DEFAULTS["provider"]
    # Sums by hand. Tokens count only the calls that reached a provider (not hit / coalesced).
    expected_hourly = [
        (h0, "a", m, p, 5, 165 + 7 + 20, 0.6, 1.05, 0.75, 2, 2, 1, 134.0, h0 + 50),
        (h0 + 3600, "b", m, p, 1, 10, 0.01, 0.0, 0.0, 0, 0, 1, 1.0, h0 + 3605),
    ]
    assert_rows_equal(query(db, HOURLY), expected_hourly)
    assert_rows_equal(query(db, OVERRIDES), [(DEFAULTS["requested_model"], m, 1, 0.3)])

    # New rows add to the backfilled rollups.
    w.record(make_row(ts=h0 + 100, project="a", cache="hit", cost=0.0, savings=1.0, latency_ms=1.0))
    w.record(make_row(ts=h0 + 200, project="a", cache="miss", override_rule="cheap", savings=0.5, cost=0.2,
                      latency_ms=4.0, status=200, cache_creation_tokens=30, cache_creation_1h_tokens=30))
    assert w.flush()
    expected_hourly[0] = (h0, "a", m, p, 7, 192 + 150, 0.8, 2.55, 1.75, 3, 3, 1, 139.0, h0 + 200)
    assert_rows_equal(query(db, HOURLY), expected_hourly)
    assert_rows_equal(query(db, OVERRIDES), [(DEFAULTS["requested_model"], m, 2, 0.8)])
    assert_rollups_match(db)


# --- batching and flush triggers ----------------------------------------------------------------------------------

def test_rows_recorded_at_once_are_written_in_batches_of_at_most_batch_rows(db: Path, writers) -> None:
    sizes: list[int] = []
    w = writers(db, flush_interval=0.05, on_flush=lambda rows: sizes.append(len(rows)))
    for i in range(1200):  # queued before the thread starts: one wake-up finds all 1,200 waiting
        w.record(make_row(request_id=f"r{i}"))
    w.start()
    assert w.flush()
    assert sizes == [500, 500, 200]
    assert w.written == 1200 and w.pending == 0 and w.dropped == 0
    assert count_calls(db) == 1200


@pytest.mark.parametrize("n", [1, 7, 127, 128, 129, 300, 500])
def test_a_batch_is_inserted_by_cacheable_statements_in_row_order(n: int) -> None:
    rows = [make_row(request_id=f"r{i}") for i in range(n)]
    statements = writer_mod.insert_statements(rows)
    # APSW caches prepared statements of at most 16 KiB of SQL; a longer one is compiled again on every batch
    assert {sql for sql, _ in statements} <= {writer_mod._INSERT_SQL[size] for size in writer_mod.STATEMENT_ROWS}
    assert all(len(sql) <= 16384 for sql, _ in statements)
    assert len(statements) <= 3 + 3 + 7 + n // 128
    flat = [value for _, bindings in statements for value in bindings]
    assert flat == [value for row in rows for value in row]


def test_batch_rows_land_in_order_with_the_statement_sizes(db: Path, writers) -> None:
    w = writers(db, flush_interval=0.05)
    for i in range(300):
        w.record(make_row(request_id=f"r{i}"))
    w.start()
    assert w.flush()
    assert [r[0] for r in query(db, "SELECT request_id FROM api_calls ORDER BY id")] == [f"r{i}" for i in range(300)]


def test_batches_while_the_writer_is_running(db: Path, writers) -> None:
    sizes: list[int] = []
    w = writers(db, flush_interval=0.05, batch_rows=100, on_flush=lambda rows: sizes.append(len(rows)))
    w.start()
    for i in range(1050):
        w.record(make_row(request_id=f"r{i}"))
    assert w.flush()
    assert sum(sizes) == 1050 and max(sizes) <= 100 and len(sizes) >= 11
    assert count_calls(db) == 1050


def test_single_row_is_written_within_the_flush_interval(db: Path, writers) -> None:
    w = writers(db, flush_interval=0.05)
    w.start()
    w.record(make_row())
    assert wait_until(lambda: w.written == 1, timeout=5.0)  # no flush() call: the timer alone writes it
    assert count_calls(db) == 1


def test_batch_rows_waiting_triggers_an_early_write(db: Path, writers) -> None:
    w = writers(db, flush_interval=60.0, batch_rows=10)
    w.start()
    for _ in range(9):
        w.record(make_row())
    time.sleep(0.1)
    assert w.written == 0  # below batch_rows, and the interval is a minute away
    w.record(make_row())
    assert wait_until(lambda: w.written == 10, timeout=5.0)


def test_close_writes_everything_queued(db: Path) -> None:
    w = AnalyticsWriter(db, flush_interval=0.05)
    w.start()
    rows = [make_row(ts=T0 + i * 7.3, project=f"p{i % 3}", cache=("miss", "hit")[i % 2], savings=0.01 * (i % 2),
                     input_tokens=i) for i in range(5000)]
    for row in rows:
        w.record(row)
    assert w.close() is True
    assert w.written == 5000 and w.pending == 0 and w.dropped == 0
    assert count_calls(db) == 5000
    assert query(db, "SELECT SUM(calls), SUM(tokens), SUM(hits), SUM(misses) FROM hourly") == [
        (5000, sum(i + 20 for i in range(0, 5000, 2)), 2500, 2500)]
    assert_rollups_match(db)
    # Idempotent, and closed means closed.
    assert w.close() is True
    w.record(make_row())
    assert w.dropped == 1
    assert w.flush(timeout=0.5) is True


def test_close_before_start_counts_queued_rows_as_dropped(db: Path) -> None:
    w = AnalyticsWriter(db)
    w.record(make_row())
    assert w.close() is False
    assert w.dropped == 1 and w.pending == 0


# --- failures -----------------------------------------------------------------------------------------------------

def test_locked_database_never_blocks_record_and_loses_nothing(db: Path, writers, fast_failures, caplog) -> None:
    caplog.set_level(logging.WARNING, "cco.analytics")
    w = writers(db, flush_interval=0.02)
    w.start()
    locker = apsw.Connection(str(db))
    locker.execute("BEGIN EXCLUSIVE")
    try:
        w.record(make_row(request_id="first"))
        assert wait_until(lambda: w.failing)
        assert "BusyError" in (w.last_error or "")
        rows = [make_row(request_id=f"r{i}") for i in range(2000)]
        started = time.perf_counter()
        for row in rows:
            w.record(row)
        assert time.perf_counter() - started < 0.5  # 2,000 appends; SQLite is never touched on this thread
        time.sleep(0.2)  # several retries fail meanwhile
        assert w.failing and w.written == 0 and w.pending == 2001
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert w.flush(timeout=10.0)
    assert not w.failing and w.written == 2001 and w.dropped == 0
    assert count_calls(db) == 2001
    assert_rollups_match(db)
    warnings = [r for r in caplog.records if "write to" in r.getMessage()]
    assert len(warnings) == 1  # one per failure kind, not per retry or row
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_queue_overflow_while_locked_counts_drops_exactly(db: Path, writers, fast_failures) -> None:
    w = writers(db, flush_interval=0.02, max_queue=10)
    w.start()
    locker = apsw.Connection(str(db))
    locker.execute("BEGIN EXCLUSIVE")
    try:
        w.record(make_row(request_id="held"))
        assert wait_until(lambda: w.failing)  # the writer holds that one row and retries it
        for i in range(25):
            w.record(make_row(request_id=f"r{i}"))
        assert w.dropped == 15
        assert w.pending == 11
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert w.flush(timeout=10.0)
    assert w.written == 11 and w.dropped == 15
    assert [r[0] for r in query(db, "SELECT request_id FROM api_calls ORDER BY id")] == [
        "held", *(f"r{i}" for i in range(10))]


def test_close_gives_up_after_its_timeout_when_the_database_stays_locked(db: Path, fast_failures) -> None:
    w = AnalyticsWriter(db, flush_interval=0.02)
    w.start()
    locker = apsw.Connection(str(db))
    locker.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(3):
            w.record(make_row())
        assert wait_until(lambda: w.failing)
        w.record(make_row())
        assert w.close(timeout=0.2) is False
        assert w.dropped == 4 and w.written == 0 and w.pending == 0
    finally:
        locker.execute("COMMIT")
        locker.close()


def test_on_flush_exception_does_not_stop_the_writer(db: Path, writers, caplog) -> None:
    caplog.set_level(logging.ERROR, "cco.analytics")
    calls: list[int] = []

    def on_flush(rows: list[tuple]) -> None:
        calls.append(len(rows))
        raise RuntimeError("live feed is broken")

    w = writers(db, flush_interval=0.02, on_flush=on_flush)
    w.start()
    w.record(make_row())
    assert w.flush()
    w.record(make_row())
    w.record(make_row())
    assert w.flush()
    assert sum(calls) == 3 and w.written == 3
    assert count_calls(db) == 3
    assert sum("on_flush" in r.getMessage() for r in caplog.records) == 1


def test_malformed_row_is_dropped_alone(db: Path, writers, caplog) -> None:
    caplog.set_level(logging.ERROR, "cco.analytics")
    w = writers(db, flush_interval=0.05)
    for i in range(5):
        w.record(make_row(request_id=f"r{i}"))
    w.record(make_row(project=None))   # NOT NULL constraint
    w.record(make_row()[:-1])          # wrong number of values
    w.record(make_row(request_id="last"))
    w.start()
    w.flush()
    assert w.written == 6 and w.dropped == 2 and w.pending == 0 and not w.failing
    assert [r[0] for r in query(db, "SELECT request_id FROM api_calls ORDER BY id")] == [
        *(f"r{i}" for i in range(5)), "last"]
    assert_rollups_match(db)
    logged = [r.getMessage() for r in caplog.records if "row dropped" in r.getMessage()]
    assert len(logged) == 2 and any("ConstraintError" in m for m in logged)  # one per kind of failure


# --- rollups ------------------------------------------------------------------------------------------------------

def test_rollups_equal_group_by_over_random_calls(db: Path, writers) -> None:
    rng = random.Random(7)
    w = writers(db, flush_interval=0.02, batch_rows=137)
    w.start()
    for i in range(2000):
        cache = rng.choice(["hit", "miss", "coalesced", "bypass", "none"])
        served = cache in ("hit", "coalesced")
        would_be = rng.random() / 10
        override = rng.random() < 0.2
        cost = 0.0 if served else would_be * (0.4 if override else 1.0)
        w.record(make_row(
            ts=T0 + rng.uniform(0, 6 * 3600), project=rng.choice(["alpha", "beta", "gamma"]),
            requested_model=rng.choice(["claude-opus-4", "claude-sonnet-4"]),
            model=rng.choice(["claude-sonnet-4", "claude-haiku-4", "llama3"]),
            provider=rng.choice(["anthropic", "ollama"]), cache=cache,
            status=rng.choice([200, 200, 200, 400, 429, 500, 529]),
            input_tokens=rng.randrange(5000), output_tokens=rng.randrange(2000),
            cache_creation_tokens=rng.randrange(100), cache_read_tokens=rng.randrange(100),
            cost=cost, would_be_cost=would_be, savings=would_be - cost, latency_ms=rng.uniform(1, 2000),
            override_rule="rule" if override else None, request_id=f"r{i}"))
        if i % 500 == 0:
            time.sleep(0.03)  # let some batches land mid-stream so rollup rows get updated, not just inserted
    assert w.flush()
    assert count_calls(db) == 2000
    hourly = query(db, HOURLY)
    assert len(hourly) > 20 and sum(r[4] for r in hourly) == 2000
    assert_rollups_match(db)


def test_record_is_safe_from_another_thread_while_writing(db: Path, writers) -> None:
    w = writers(db, flush_interval=0.01, batch_rows=50)
    w.start()

    def produce() -> None:
        for i in range(3000):
            w.record(make_row(request_id=f"r{i}"))

    t = threading.Thread(target=produce)
    t.start()
    t.join()
    assert w.flush()
    assert w.written == 3000 and count_calls(db) == 3000


def test_metrics_counters_equal_a_row_by_row_count_over_random_calls() -> None:
    from cco.analytics.record import Counters

    rng = random.Random(11)
    rows = []
    for i in range(3000):
        cache = rng.choice(["hit", "hit", "hit", "miss", "coalesced", "none"])
        served = cache in ("hit", "coalesced")
        rows.append(make_row(
            model=rng.choice(["claude-sonnet-4", "claude-haiku-4"]), provider=rng.choice(["anthropic", "ollama"]),
            status=rng.choice([200, 200, 200, 200, 429, 529]), cache=cache,
            input_tokens=rng.randrange(3), output_tokens=rng.randrange(5), cost=0.0 if served else rng.random(),
            savings=rng.choice([0.0, rng.random()]), upstream_ms=None if served else rng.uniform(1, 900),
            override_rule=rng.choice([None, None, "r"]), request_id=f"r{i}"))
        if rng.random() < 0.7 and rows:  # runs of identical calls, as bursts of hits make
            rows.extend([rows[-1]] * rng.randrange(1, 6))
    counters = Counters()
    for start in range(0, len(rows), 97):
        counters.observe(rows[start:start + 97])
    col = COLUMNS.index
    requests: dict = {}
    tokens: dict = {}
    cost: dict = {}
    savings: dict = {}
    for row in rows:
        p, m = row[col("provider")], row[col("model")]
        requests[(p, m, row[col("status")])] = requests.get((p, m, row[col("status")]), 0) + 1
        if row[col("cache")] not in ("hit", "coalesced"):
            for kind in ("input", "output"):
                if row[col(f"{kind}_tokens")]:
                    tokens[(p, m, kind)] = tokens.get((p, m, kind), 0) + row[col(f"{kind}_tokens")]
        if row[col("cost")] or row[col("savings")]:
            cost[(p, m)] = cost.get((p, m), 0.0) + row[col("cost")]
            savings[(p, m)] = savings.get((p, m), 0.0) + row[col("savings")]
    assert counters.requests == requests and counters.tokens == tokens
    assert counters.cost.keys() == cost.keys() and counters.savings.keys() == savings.keys()
    for key in cost:
        assert counters.cost[key] == pytest.approx(cost[key], rel=1e-12)
        assert counters.savings[key] == pytest.approx(savings[key], rel=1e-12)
    assert sum(series[-2] + sum(series[:-2]) for series in counters.latency.values()) == \
        sum(1 for row in rows if row[col("upstream_ms")] is not None)
    assert sum(counters.overrides.values()) == sum(1 for row in rows if row[col("override_rule")] is not None)


def write_2000_rows(db: Path, writers, monkeypatch, checkpoint_pages: int) -> tuple[AnalyticsWriter, int]:
    """A running writer with the given checkpoint threshold that has committed 2,000 rows; and the database file's
    size before them."""
    monkeypatch.setattr(writer_mod, "CHECKPOINT_PAGES", checkpoint_pages)
    w = writers(db, flush_interval=0.02, batch_rows=200)
    w.start()
    before = db.stat().st_size
    for i in range(2000):
        w.record(make_row(request_id=f"r{i}", project=f"p{i % 7}"))
    assert w.flush()
    return w, before


def test_the_writer_checkpoints_the_wal_itself_between_batches(db: Path, writers, monkeypatch) -> None:
    """SQLite's automatic checkpoint (inside a commit) is replaced by the writer's own, run after a batch once the
    WAL holds CHECKPOINT_PAGES pages: the database file grows while the writer runs, not only at close."""
    w, before = write_2000_rows(db, writers, monkeypatch, checkpoint_pages=30)
    deadline = time.monotonic() + 5
    while db.stat().st_size <= before and time.monotonic() < deadline:
        w.record(make_row(request_id="nudge"))
        time.sleep(0.05)
    assert db.stat().st_size > before
    assert count_calls(db) >= 2000


def test_without_the_writers_checkpoint_the_wal_only_grows(db: Path, writers, monkeypatch) -> None:
    """The control for the test above: with the threshold out of reach nothing reaches the database file."""
    w, before = write_2000_rows(db, writers, monkeypatch, checkpoint_pages=10**9)
    time.sleep(0.2)
    assert db.stat().st_size == before
    assert Path(f"{db}-wal").stat().st_size > 100_000


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread names are read from Linux's /proc")
def test_the_writer_thread_is_named_in_the_os(db: Path, writers) -> None:
    """benchmarks/run.py tells the analytics thread's CPU from the event loop's by this name (`top -H` shows it)."""
    w = writers(db)
    w.start()
    native_id = w._thread.native_id
    assert (Path(f"/proc/self/task/{native_id}/comm").read_text().strip() == writer_mod.OS_THREAD_NAME
            == "cco-analytics")
    # the calling thread keeps its own name
    assert (Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()
            != writer_mod.OS_THREAD_NAME)
