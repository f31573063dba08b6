"""Timing of the analytics queries (cco.analytics.queries) over a large generated `api_calls` table.

    python benchmarks/bench_queries.py [--rows 10000000] [--db PATH] [--repeat 7] [--keep] [--no-totals]

Generates --rows realistic calls spread over the 30 days before now — 20 projects (skewed: the busiest has ~22 %
of the calls), 12 models of three providers with their prices, mixed cache outcomes (~55 % miss, 25 % hit, 4 %
coalesced, 8 % bypass, 8 % none), ~3 % errors (429/500/529), overrides on ~3 % of the calls, prompt-cache tokens
on Anthropic calls — entirely inside SQLite (a `WITH RECURSIVE` generator joined to small lookup tables, one
transaction per --chunk rows; ~60 k rows/s, where Python-built rows would be several times slower), then builds
the rollups once with `rebuild_rollups`. The schema comes from `cco.analytics.schema.MIGRATIONS`.

Each query function then runs --repeat times (exports fewer) on a fresh connection (cold SQLite page cache for the
first run, OS cache warm), twice: on the schema as it is, where all-time figures sum the `hourly` rollup, and after
adding the proposed `totals` table (`queries.TOTALS_MIGRATION`; skipped with --no-totals). The table shows the
median and the max in milliseconds; the results go to benchmarks/results/queries-<UTC stamp>.json. The dashboard's
calls (project_stats, projects, machine_stats, overrides_stats; marked *) are meant to answer in < 100 ms at 10
million rows; that target is reported, never asserted.

With --db PATH an existing database with rows is reused as is (no generation; timed once if it already has
`totals`); a new or empty one is filled and kept. Without --db a temporary file is used and removed at the end
unless --keep. 10 M rows take ~2.6 GB and ~4 minutes to generate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import apsw  # noqa: E402

from cco.analytics import queries  # noqa: E402
from cco.analytics.schema import COLUMNS, MIGRATIONS  # noqa: E402

HERE = Path(__file__).resolve().parent
SPAN = 30 * 86400
DASHBOARD_TARGET_MS = 100.0

PROJECTS = ["web-frontend", "api-gateway", "billing", "data-pipeline", "ml-research", "mobile-app", "docs-site",
            "infra-tools", "support-bot", "search", "analytics", "auth-service", "cli", "notebooks", "etl-jobs",
            "ci-bots", "marketing", "sandbox", "legacy-migration", "playground"]

# model, provider, weight (of 100), price per million tokens (input, output, cache write, cache read),
# the model an override rule rewrites to this one (or None), and for a local model the model its savings compare to.
MODELS = [
    ("claude-sonnet-4", "anthropic", 30, (3.0, 15.0, 3.75, 0.3), "claude-opus-4", None),
    ("claude-sonnet-4-5", "anthropic", 20, (3.0, 15.0, 3.75, 0.3), None, None),
    ("claude-3-5-haiku", "anthropic", 12, (0.8, 4.0, 1.0, 0.08), "claude-sonnet-4", None),
    ("claude-opus-4", "anthropic", 6, (15.0, 75.0, 18.75, 1.5), None, None),
    ("claude-opus-4-1", "anthropic", 4, (15.0, 75.0, 18.75, 1.5), None, None),
    ("claude-3-haiku", "anthropic", 5, (0.25, 1.25, 0.3, 0.03), None, None),
    ("gpt-4o", "openai", 7, (2.5, 10.0, 0.0, 1.25), None, None),
    ("gpt-4o-mini", "openai", 6, (0.15, 0.6, 0.0, 0.075), "gpt-4o", None),
    ("gpt-4.1", "openai", 3, (2.0, 8.0, 0.0, 0.5), None, None),
    ("o3-mini", "openai", 3, (1.1, 4.4, 0.0, 0.55), None, None),
    ("llama3.1:8b", "ollama", 2, (0.0, 0.0, 0.0, 0.0), None, "claude-3-5-haiku"),
    ("qwen2.5-coder:14b", "ollama", 2, (0.0, 0.0, 0.0, 0.0), None, "claude-sonnet-4"),
]
assert sum(m[2] for m in MODELS) == 100
PRICES = {m[0]: m[3] for m in MODELS}


def setup_tables(conn: apsw.Connection) -> None:
    """Temporary lookup tables the generator joins, each indexed by a uniform random integer, so that a row's
    outcome is a few primary-key lookups instead of chains of CASE expressions:

    bench_projects  0..255 → project (skewed: the first project ~22 % of the calls), its key hash
    bench_models    0..99  → model in proportion to its weight, with its prices, the comparison prices (what the call
                             would have cost: a local model's reference model) and the override source's extra price
    bench_kinds     0..999 → cache outcome and status (with the flags the money and token expressions multiply by)
    """
    conn.execute("""
        CREATE TEMP TABLE bench_projects (u INTEGER PRIMARY KEY, name TEXT, key_hash TEXT);
        CREATE TEMP TABLE bench_models (u INTEGER PRIMARY KEY, model TEXT, provider TEXT, endpoint TEXT,
            p_in REAL, p_out REAL, p_cw REAL, p_cr REAL,     -- the served model's prices
            c_in REAL, c_out REAL, c_cw REAL, c_cr REAL,     -- what a call would have cost (no cache, no override)
            d_in REAL, d_out REAL, d_cw REAL, d_cr REAL,     -- extra when it was overridden from o_from
            has_cw INTEGER, has_cr INTEGER, o_from TEXT, can_ovr INTEGER, rule TEXT);
        CREATE TEMP TABLE bench_kinds (u INTEGER PRIMARY KEY, cache TEXT, status INTEGER, error_type TEXT,
            hit INTEGER, ok INTEGER, nocache INTEGER, live_in INTEGER, live_out INTEGER, paid INTEGER,
            priced INTEGER, lat_kind INTEGER);
    """)
    conn.executemany("INSERT INTO bench_projects VALUES (?, ?, ?)",
                     [(u, PROJECTS[int(20 * (u / 256) ** 2)], f"{0x5eed0000 + int(20 * (u / 256) ** 2) % 7:08x}")
                      for u in range(256)])
    u = 0
    for model, provider, weight, price, o_from, compare in MODELS:
        cmp_price = PRICES[compare] if compare else price
        extra = tuple(o - c for o, c in zip(PRICES[o_from], cmp_price)) if o_from else (0.0,) * 4
        endpoint = "/v1/messages" if provider == "anthropic" else "/v1/chat/completions"
        for _ in range(weight):
            conn.execute("INSERT INTO bench_models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                         "?, ?)", (u, model, provider, endpoint, *price, *cmp_price, *extra, provider == "anthropic",
                                   provider != "ollama", o_from, o_from is not None, f"prefer-{model}"))
            u += 1
    assert u == 100
    rng = random.Random(20250615)
    outcomes = ["miss"] * 55 + ["hit"] * 25 + ["coalesced"] * 4 + ["bypass"] * 8 + ["none"] * 8
    errors = [(429, "rate_limit_error")] * 3 + [(500, "api_error")] * 2 + [(529, "overloaded_error")]
    for u in range(1000):
        cache = rng.choice(outcomes)
        hit, nocache = cache in ("hit", "coalesced"), cache == "none"
        err = not hit and rng.random() < 0.04
        status, error_type = rng.choice(errors) if err else (200, None)
        lat_kind = 1 if hit else 2 if err else 3 if nocache else 0
        conn.execute("INSERT INTO bench_kinds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (u, cache, status, error_type, hit, not err, nocache, not err, not (err or nocache),
                      not (hit or nocache), not nocache, lat_kind))


# r1..r3 are random 64-bit integers per row; their 16-bit fields `(r >> k) & 65535` give the token counts, latency
# and the small flags. Token counts are 0 where the outcome says so (an error has none, count_tokens no output),
# by multiplying with the 0/1 flags of bench_kinds: flat arithmetic over stored values is what SQLite evaluates
# fastest (derived columns in nested CTEs get inlined into each other and cost several times more).
_TIN = "(k.live_in * (200 + ((r1 >> 16) & 65535) % 30000))"
_TOUT = "(k.live_out * (20 + ((r1 >> 32) & 65535) % 3000))"
_TCW = "(k.live_out * m.has_cw * ((r1 >> 48) & 3 = 0) * ((r2 & 65535) % 40000))"
_TCR = "(k.live_out * m.has_cr * ((r1 >> 50) & 1) * (((r2 >> 16) & 65535) * 2))"
_OVR = "(m.can_ovr * k.live_out * ((r3 >> 32) & 15 = 0))"                 # ~6 % of the calls of three models
_SERVED = f"(({_TIN} * m.p_in + {_TOUT} * m.p_out + {_TCW} * m.p_cw + {_TCR} * m.p_cr) / 1e6)"
_REF = (f"(k.priced * ({_TIN} * (m.c_in + {_OVR} * m.d_in) + {_TOUT} * (m.c_out + {_OVR} * m.d_out)"
        f" + {_TCW} * (m.c_cw + {_OVR} * m.d_cw) + {_TCR} * (m.c_cr + {_OVR} * m.d_cr)) / 1e6)")
_COST = f"(k.paid * {_SERVED})"
_LAT = (f"(CASE k.lat_kind WHEN 0 THEN 400.0 + (r3 & 65535) % 1000 + {_TOUT} * 5.0 "
        "WHEN 1 THEN 0.2 + (r3 & 65535) % 40 / 10.0 WHEN 2 THEN 50.0 + (r3 & 65535) % 2000 "
        "ELSE 40.0 + (r3 & 65535) % 200 END)")

_EXPR = {
    "ts": ":t0 + (i + ((r3 >> 48) & 65535) / 65536.0) * :step",
    "project": "p.name",
    "agent": "CASE (r2 >> 32) & 3 WHEN 0 THEN 'claude-code' WHEN 1 THEN 'sdk-python' WHEN 2 THEN 'ci' END",
    "requested_model": f"CASE WHEN {_OVR} THEN m.o_from ELSE m.model END",
    "model": "m.model",
    "provider": "m.provider",
    "endpoint": "CASE WHEN k.nocache THEN '/v1/messages/count_tokens' ELSE m.endpoint END",
    "stream": "(r2 >> 34) & 1",
    "status": "k.status",
    "error_type": "k.error_type",
    "cache": "k.cache",
    "input_tokens": _TIN,
    "output_tokens": _TOUT,
    "cache_creation_tokens": _TCW,
    "cache_creation_1h_tokens": f"((r2 >> 36) & 3 = 0) * {_TCW}",
    "cache_read_tokens": _TCR,
    "batch": "(r2 >> 38) & 63 = 0",
    "cost": _COST,
    "would_be_cost": _REF,
    "savings": f"{_REF} - {_COST}",
    "unpriced": "0",
    "latency_ms": _LAT,
    "ttfb_ms": f"CASE WHEN k.hit THEN {_LAT} ELSE {_LAT} * 0.25 END",
    "upstream_ms": f"CASE WHEN k.hit THEN NULL ELSE {_LAT} * 0.97 END",
    "fallback_depth": "k.ok * ((r2 >> 44) & 255 < 3)",
    "override_rule": f"CASE WHEN {_OVR} THEN m.rule END",
    "request_id": "'req_' || (r3 & 281474976710655)",
    "key_hash": "p.key_hash",
}
assert set(_EXPR) == set(COLUMNS)

GENERATE = f"""
WITH RECURSIVE seq(i, pu, mu, ku, r1, r2, r3) AS (
    SELECT :start, random() & 255, (random() & 65535) % 100, (random() & 65535) % 1000, random(), random(), random()
    UNION ALL
    SELECT i + 1, random() & 255, (random() & 65535) % 100, (random() & 65535) % 1000, random(), random(), random()
    FROM seq WHERE i + 1 < :end
)
INSERT INTO api_calls ({', '.join(COLUMNS)})
SELECT {', '.join(_EXPR[c] for c in COLUMNS)}
FROM seq CROSS JOIN bench_projects p ON p.u = seq.pu
         CROSS JOIN bench_models m ON m.u = seq.mu
         CROSS JOIN bench_kinds k ON k.u = seq.ku
"""


def open_db(path: str) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def migrate(conn: apsw.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for v in range(version, len(MIGRATIONS)):
        with conn:
            conn.execute(MIGRATIONS[v])
            conn.execute(f"PRAGMA user_version = {v + 1}")


def generate(path: str, rows: int, chunk: int, now: float) -> dict:
    conn = open_db(path)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")   # 1 GB of page cache while building
    conn.execute("PRAGMA temp_store = MEMORY")
    migrate(conn)
    setup_tables(conn)
    step = SPAN / rows
    t0 = now - SPAN
    started = time.perf_counter()
    last_print = started
    for start in range(0, rows, chunk):
        end = min(rows, start + chunk)
        with conn:
            conn.execute(GENERATE, {"start": start, "end": end, "t0": t0, "step": step})
        t = time.perf_counter()
        if t - last_print >= 5 or end == rows:
            last_print = t
            print(f"  {end:>11,} rows  {t - started:6.1f} s  ({end / (t - started):,.0f} rows/s)", flush=True)
    inserted = time.perf_counter() - started
    print("  building the rollups ...", flush=True)
    t = time.perf_counter()
    queries.rebuild_rollups(conn)
    rollups = time.perf_counter() - t
    conn.execute("PRAGMA journal_mode = WAL")   # as the proxy runs it
    conn.close()
    return {"insert_s": inserted, "rollups_s": rollups, "total_s": inserted + rollups}


def timed(fn, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": statistics.median(times), "max_ms": max(times), "min_ms": min(times), "runs": repeat}


def has_totals(conn: apsw.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'totals'").fetchone() is not None


def measure(path: str, now: float, repeat: int) -> tuple[dict, dict]:
    """Times every query on a fresh connection: ({case name: timings}, facts about the data)."""
    conn = open_db(path)
    by_calls = conn.execute("SELECT project FROM hourly GROUP BY project ORDER BY SUM(calls) DESC").fetchall()
    busiest = by_calls[0][0] if by_calls else "none"
    quietest = by_calls[-1][0] if by_calls else "none"
    one_day = conn.execute("SELECT count(*) FROM api_calls WHERE project = ? AND ts >= ?",
                           (busiest, now - 86400)).fetchone()[0]
    conn.close()
    conn = open_db(path)   # cold page cache for the first run of the first query
    export_repeat = max(3, repeat // 2)
    cases = [
        ("project_stats (busiest)", True, lambda: queries.project_stats(conn, busiest, now), repeat),
        ("project_stats (quietest)", True, lambda: queries.project_stats(conn, quietest, now), repeat),
        ("projects", True, lambda: queries.projects(conn, now), repeat),
        ("machine_stats", True, lambda: queries.machine_stats(conn, now), repeat),
        ("overrides_stats", True, lambda: queries.overrides_stats(conn), repeat),
        ("recent_calls (100)", False, lambda: queries.recent_calls(conn, 100), repeat),
        ("export_analytics (1 day, busiest)", False, lambda: queries.export_analytics(conn, 1, now, busiest),
         export_repeat),
        ("csv_export (1 day, busiest)", False,
         lambda: sum(map(len, queries.csv_export(queries.export_rows(conn, now - 86400, busiest)))), export_repeat),
    ]
    results = {}
    for name, dashboard, fn, n in cases:
        r = timed(fn, n)
        r["dashboard"] = dashboard
        results[name] = r
    conn.close()
    return results, {"busiest_project": busiest, "busiest_one_day_rows": one_day}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--db", help="database file (kept); default a temporary file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary database")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=100_000, help="rows per generation transaction")
    ap.add_argument("--no-totals", action="store_true", help="do not add the proposed `totals` table")
    ap.add_argument("--results-dir", default=str(HERE / "results"))
    args = ap.parse_args()

    if args.db:
        path, temporary = args.db, False
    else:
        fd, path = tempfile.mkstemp(prefix="cco-bench-", suffix=".db")
        os.close(fd)
        os.unlink(path)
        temporary = True
    now = time.time()
    try:
        conn = open_db(path)
        existing = 0
        if conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'api_calls'").fetchone()[0]:
            existing = conn.execute("SELECT max(id) FROM api_calls").fetchone()[0] or 0
        conn.close()
        generation = None
        if existing:
            print(f"reusing {path} ({existing:,} rows)")
            rows = existing
        else:
            print(f"generating {args.rows:,} rows into {path}")
            generation = generate(path, args.rows, args.chunk, now)
            rows = args.rows
            print(f"generated in {generation['total_s']:.1f} s "
                  f"(insert {generation['insert_s']:.1f} s, rollups {generation['rollups_s']:.1f} s)")
        conn = open_db(path)
        now = max(now, conn.execute("SELECT max(ts) FROM api_calls").fetchone()[0] or now)
        hourly_rows = conn.execute("SELECT count(*) FROM hourly").fetchone()[0]
        totals_present = has_totals(conn)
        conn.close()
        db_bytes = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        print(f"db {db_bytes / 1e9:.2f} GB, {hourly_rows:,} hourly rows\n")

        modes: dict[str, dict] = {}
        facts: dict = {}
        totals_s = None
        if not totals_present:
            print("timing on the schema as it is (all-time figures from `hourly`) ...", flush=True)
            modes["hourly"], facts = measure(path, now, args.repeat)
            if not args.no_totals:
                conn = open_db(path)
                t = time.perf_counter()
                with conn:
                    conn.execute(queries.TOTALS_MIGRATION)
                totals_s = time.perf_counter() - t
                conn.close()
                totals_present = True
                print(f"added the proposed `totals` table in {totals_s * 1000:.0f} ms")
        if totals_present:
            print("timing with `totals` ...", flush=True)
            modes["totals"], facts = measure(path, now, args.repeat)

        names = list(next(iter(modes.values())))
        width = max(len(n) for n in names)
        print(f"\n{rows:,} rows; busiest project {facts['busiest_project']!r} has "
              f"{facts['busiest_one_day_rows']:,} calls in the last day; target {DASHBOARD_TARGET_MS:.0f} ms "
              "for the dashboard's calls (*)\n")
        header = "".join(f"  {mode + ' median':>15}  {mode + ' max':>12}" for mode in modes)
        print(f"{'query':<{width + 4}}{header}")
        print(f"{'-' * (width + 4)}" + "".join(f"  {'-' * 15}  {'-' * 12}" for _ in modes))
        for name in names:
            star = " (*)" if modes[next(iter(modes))][name]["dashboard"] else "    "
            cells = "".join(f"  {modes[m][name]['median_ms']:>15.2f}  {modes[m][name]['max_ms']:>12.2f}"
                            for m in modes)
            print(f"{name + star:<{width + 4}}{cells}")

        out_dir = Path(args.results_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        out = out_dir / f"queries-{stamp}.json"
        out.write_text(json.dumps({
            "benchmark": "queries", "started": stamp, "rows": rows, "db_bytes": db_bytes, "hourly_rows": hourly_rows,
            "generation": generation, "totals_migration_s": totals_s, "target_ms": DASHBOARD_TARGET_MS,
            "sqlite": apsw.sqlite_lib_version(), "apsw": apsw.apsw_version(), "python": sys.version.split()[0],
            "cpus": os.cpu_count(), **facts, "queries": modes,
        }, indent=2) + "\n")
        print(f"\nresults: {out}")
    finally:
        if temporary and not args.keep:
            for p in (path, path + "-wal", path + "-shm", path + "-journal"):
                if os.path.exists(p):
                    os.unlink(p)
        elif temporary:
            print(f"database kept: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
