"""The read side of the analytics store: the figures of the JSON API (SPEC §7), as plain dicts and lists.

Every function takes an open `apsw.Connection` and only reads through it (use a connection of its own, not the
writer's). Functions that depend on the clock take `now` (unix seconds) explicitly, so results are reproducible.

Definitions (the same everywhere):

- "tokens" = input + output + cache_creation + cache_read tokens of the calls that reached a provider, i.e. rows
  whose `cache` is not `hit` / `coalesced`. `hourly.tokens` holds exactly that. The `tokens` of one call in
  `recent` is that row's own four kinds, whatever its cache outcome.
- Hour buckets start at `floor_hour(ts) = floor(ts / 3600) * 3600` (unix seconds, UTC).
- A "trend" is the value over the last 24 h minus the value over the 24 h before, on hour buckets: with
  `h = floor_hour(now)`, the last 24 h are the buckets with `hour >= h - 23*3600`, the 24 h before are the 24
  buckets before those (`h - 47*3600 <= hour < h - 23*3600`).
- cacheHitRate / hitRate = hits / (hits + misses), where hits count `hit` and `coalesced`, misses count `miss`
  (`bypass` and `none` are not lookups); 0 when there was no lookup.
- avgLatencyMs = sum of latency_ms / calls (0 without calls). latencyTrend = average over the last 24 h minus the
  average over the 24 h before, the average of a window without calls counting as 0.
- Money (USD) is never rounded: figures are the full doubles SQLite sums (SUM/TOTAL use compensated summation).
- Timestamps in results are ISO-8601 UTC strings with millisecond precision and a `Z` suffix.

Speed: the dashboard's functions (`project_stats`, `projects`, `machine_stats`, `overrides_stats`) never read
`api_calls` except for the 20 newest rows of one project (index `api_calls_project_ts`). All-time figures come from
the `totals` rollup when the database has it (TOTALS_MIGRATION below, proposed as schema version 3) and otherwise
from `hourly` (correct, but its ~170 k rows at 10 M calls make a full sum cost 100-300 ms); windows (trends, the
7-day cost chart) read a range of `hourly`'s primary key, whose first column is the hour. Exports and the live log
read `api_calls` through its `ts` / `(project, ts)` indexes, in index order (no sort), streaming rows from a cursor.
Functions issuing several statements run them in one read transaction, so their figures come from one snapshot and
never disagree.
"""

from __future__ import annotations

import csv
import io
import operator
import time
from typing import Any, Iterable, Iterator

import apsw

from cco.analytics.schema import COLUMNS, MIGRATIONS, REBUILD_HOURLY, REBUILD_OVERRIDES

HOUR = 3600
DAY = 86400
RECENT_LIMIT = 20        # rows in project_stats()["recent"]
TREND_HOURS = 7 * 24     # buckets in machine_stats()["costTrend"]
ACTIVE_WINDOW = 7 * DAY  # a project with a call this recent is active

EXPORT_FIELDS: tuple[str, ...] = ("id", *COLUMNS)  # keys of an export row, and the CSV header
_SELECT_CALLS = f"SELECT {', '.join(EXPORT_FIELDS)} FROM api_calls"
_TS = EXPORT_FIELDS.index("ts")

TOTALS_MIGRATION = MIGRATIONS[2]  # schema version 3: the `totals` rollup

def floor_hour(ts: float) -> int:
    """Unix seconds of the start of the hour holding `ts`."""
    return int(ts // HOUR) * HOUR


# iso() formats about one timestamp per exported row: string pieces are looked up rather than formatted.
_DAY_PREFIX: dict[int, str] = {}                                 # day number -> "YYYY-MM-DDT"
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(60))
_MILLIS = tuple(f".{n:03d}Z" for n in range(1000))


def iso(ts: float) -> str:
    """`ts` (unix seconds) as ISO-8601 UTC with milliseconds and `Z`, e.g. 2025-06-15T14:00:00.000Z."""
    seconds, ms = divmod(round(ts * 1000), 1000)
    day, second_of_day = divmod(seconds, DAY)
    prefix = _DAY_PREFIX.get(day)
    if prefix is None:
        if len(_DAY_PREFIX) >= 4096:
            _DAY_PREFIX.clear()
        prefix = _DAY_PREFIX[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * DAY))
    hours, rest = divmod(second_of_day, HOUR)
    minutes, secs = divmod(rest, 60)
    two = _TWO_DIGITS
    return prefix + two[hours] + ":" + two[minutes] + ":" + two[secs] + _MILLIS[ms]


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def rebuild_rollups(conn: apsw.Connection) -> None:
    """Recompute `hourly` and `overrides` (and `totals`, when present) from `api_calls`, in one transaction
    (tests, benchmarks, repairs)."""
    with conn:
        has_totals = _all_time_table(conn) == "totals"
        conn.execute("DELETE FROM hourly")
        conn.execute("DELETE FROM overrides")
        if has_totals:
            conn.execute("DELETE FROM totals")   # its triggers refill it from the new hourly rows
        conn.execute(REBUILD_HOURLY)
        conn.execute(REBUILD_OVERRIDES)


# --------------------------------------------------------------------------------------------------- dashboard

def _all_time_table(conn: apsw.Connection) -> str:
    """`totals` when the database has it (TOTALS_MIGRATION), else `hourly`: same columns, hour aside."""
    found = conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'totals'").fetchone()
    return "totals" if found else "hourly"


_ALL_TIME_PROJECT = """
SELECT TOTAL(cost), COALESCE(SUM(tokens), 0), COALESCE(SUM(calls), 0), TOTAL(latency_ms), TOTAL(savings),
       COALESCE(SUM(hits), 0), COALESCE(SUM(misses), 0)
FROM {table} WHERE project = ?
"""

# The two trend windows, on hour buckets: a range of the primary key (hour first), at most 48 hours of rows.
# `+project` keeps the planner on that range (with ANALYZE statistics it may prefer a skip-scan over every hour).
_PROJECT_WINDOWS = """
SELECT TOTAL(CASE WHEN hour >= :cur THEN cost END),
       COALESCE(SUM(CASE WHEN hour >= :cur THEN tokens END), 0),
       COALESCE(SUM(CASE WHEN hour >= :cur THEN calls END), 0),
       TOTAL(CASE WHEN hour >= :cur THEN latency_ms END),
       TOTAL(CASE WHEN hour < :cur THEN cost END),
       COALESCE(SUM(CASE WHEN hour < :cur THEN tokens END), 0),
       COALESCE(SUM(CASE WHEN hour < :cur THEN calls END), 0),
       TOTAL(CASE WHEN hour < :cur THEN latency_ms END)
FROM hourly WHERE hour >= :prev AND +project = :project
"""

_PROJECT_RECENT = """
SELECT ts, model, cache, input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens, cost,
       latency_ms, status
FROM api_calls WHERE project = ? ORDER BY ts DESC, id DESC LIMIT ?
"""


def project_stats(conn: apsw.Connection, project: str, now: float) -> dict[str, Any]:
    """`GET /api/project/stats?project=P`: all-time totals of one project, 24 h trends, its 20 newest calls."""
    cur = floor_hour(now) - 23 * HOUR
    with conn:
        table = _all_time_table(conn)
        cost, tokens, calls, latency, savings, hits, misses = conn.execute(
            _ALL_TIME_PROJECT.format(table=table), (project,)).fetchone()
        cost1, tokens1, calls1, latency1, cost0, tokens0, calls0, latency0 = conn.execute(
            _PROJECT_WINDOWS, {"project": project, "cur": cur, "prev": cur - 24 * HOUR}).fetchone()
        recent = [{"ts": iso(ts), "model": model, "cache": cache, "tokens": tok, "cost": c, "latencyMs": lat,
                   "status": status}
                  for ts, model, cache, tok, c, lat, status
                  in conn.execute(_PROJECT_RECENT, (project, RECENT_LIMIT))]
    return {
        "project": project,
        "cost": cost,
        "costTrend": cost1 - cost0,
        "tokens": tokens,
        "tokensTrend": tokens1 - tokens0,
        "calls": calls,
        "callsTrend": calls1 - calls0,
        "avgLatencyMs": _ratio(latency, calls),
        "latencyTrend": _ratio(latency1, calls1) - _ratio(latency0, calls0),
        "cacheHitRate": _ratio(hits, hits + misses),
        "savings": savings,
        "recent": recent,
    }


# One pass over the all-time rows yields both the per-project and the per-model lists (a few hundred groups).
_GROUPS = """
SELECT project, model, provider, SUM(calls), SUM(tokens), TOTAL(cost), TOTAL(savings), MAX(last_ts)
FROM {table} GROUP BY project, model, provider HAVING SUM(calls) > 0
"""

_COST_TREND = "SELECT hour, TOTAL(cost) FROM hourly WHERE hour >= ? AND hour <= ? GROUP BY hour"


def _groups(conn: apsw.Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[float]]:
    """(projects list, models list, last activity ts of each project) from the all-time rollup."""
    projects: dict[str, list] = {}
    models: dict[tuple[str, str], list] = {}
    for project, model, provider, calls, tokens, cost, savings, last_ts in conn.execute(
            _GROUPS.format(table=_all_time_table(conn))):
        p = projects.get(project)
        if p is None:
            projects[project] = [cost, calls, tokens, savings, last_ts]
        else:
            p[0] += cost
            p[1] += calls
            p[2] += tokens
            p[3] += savings
            if last_ts > p[4]:
                p[4] = last_ts
        m = models.get((model, provider))
        if m is None:
            models[(model, provider)] = [calls, tokens, cost, savings]
        else:
            m[0] += calls
            m[1] += tokens
            m[2] += cost
            m[3] += savings
    by_activity = sorted(projects.items(), key=lambda kv: (-kv[1][4], kv[0]))
    project_list = [{"name": name, "cost": cost, "calls": calls, "tokens": tokens, "savings": savings,
                     "lastActivity": iso(last_ts)}
                    for name, (cost, calls, tokens, savings, last_ts) in by_activity]
    by_calls = sorted(models.items(), key=lambda kv: (-kv[1][0], kv[0]))
    model_list = [{"model": model, "provider": provider, "calls": calls, "tokens": tokens, "cost": cost,
                   "savings": savings}
                  for (model, provider), (calls, tokens, cost, savings) in by_calls]
    return project_list, model_list, [v[4] for _, v in by_activity]


def projects(conn: apsw.Connection, now: float) -> list[dict[str, Any]]:
    """`GET /api/projects`: every project's all-time totals, most recently active first (ties by name).

    `now` is accepted for symmetry with the other functions; all-time totals do not depend on it.
    """
    with conn:
        return _groups(conn)[0]


def machine_stats(conn: apsw.Connection, now: float) -> dict[str, Any]:
    """`GET /api/machine/stats`: totals over every project, per-project and per-model lists (models by calls,
    descending), and the cost of each of the last 168 hours (oldest first, the current hour last, zero-filled)."""
    last = floor_hour(now)
    first = last - (TREND_HOURS - 1) * HOUR
    with conn:
        project_list, model_list, last_seen = _groups(conn)
        by_hour = dict(conn.execute(_COST_TREND, (first, last)))
    active_since = now - ACTIVE_WINDOW
    return {
        "totalCost": sum(p["cost"] for p in project_list),
        "totalSavings": sum(p["savings"] for p in project_list),
        "activeProjects": sum(1 for ts in last_seen if ts >= active_since),
        "totalCalls": sum(p["calls"] for p in project_list),
        "totalTokens": sum(p["tokens"] for p in project_list),
        "projects": project_list,
        "models": model_list,
        "costTrend": [{"ts": iso(hour), "cost": by_hour.get(hour, 0.0)} for hour in range(first, last + 1, HOUR)],
    }


def overrides_stats(conn: apsw.Connection) -> dict[str, Any]:
    """`GET /api/overrides/stats`: the calls each requested model was overridden on, and what that saved.

    `count` and `cost_saved` sum over every served model a requested model was rewritten to; `overridden_to` is the
    most frequent of them (ties: the first by name); `percentage` = 100 × count / every call recorded.
    """
    with conn:
        rows = conn.execute("SELECT requested_model, model, calls, cost_saved FROM overrides "
                            "ORDER BY requested_model, calls DESC, model").fetchall()
        total_calls = conn.execute(
            f"SELECT COALESCE(SUM(calls), 0) FROM {_all_time_table(conn)}").fetchone()[0]
    by_model: dict[str, dict[str, Any]] = {}
    total = 0
    for requested, model, calls, saved in rows:
        total += calls
        entry = by_model.get(requested)
        if entry is None:  # the first row of a requested model is its most frequent target
            by_model[requested] = {"overridden_to": model, "count": calls, "percentage": 0.0, "cost_saved": saved}
        else:
            entry["count"] += calls
            entry["cost_saved"] += saved
    for entry in by_model.values():
        entry["percentage"] = _ratio(100 * entry["count"], total_calls)
    return {"total_overrides": total, "overrides_by_model": by_model}


# ------------------------------------------------------------------------------------------------------ exports

def _row_dict(row: tuple) -> dict[str, Any]:
    out = dict(zip(EXPORT_FIELDS, row))
    out["ts"] = iso(row[_TS])
    return out


def export_rows(conn: apsw.Connection, since_ts: float, project: str | None = None) -> Iterator[dict[str, Any]]:
    """The calls with ts >= since_ts (of one project, or all), oldest first, streamed from a cursor.

    Each is a dict with `id` and every column of `schema.COLUMNS`, `ts` as an ISO string.
    """
    if project is None:
        cursor = conn.execute(f"{_SELECT_CALLS} WHERE ts >= ? ORDER BY ts, id", (since_ts,))
    else:
        cursor = conn.execute(f"{_SELECT_CALLS} WHERE project = ? AND ts >= ? ORDER BY ts, id",
                              (project, since_ts))
    for row in cursor:
        yield _row_dict(row)


_SUMMARY = """
SELECT COUNT(*), TOTAL(cost), TOTAL(savings),
       TOTAL(CASE WHEN cache IN ('hit', 'coalesced') THEN savings END),
       COALESCE(SUM(CASE WHEN cache IN ('hit', 'coalesced') THEN 0
                         ELSE input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens END), 0),
       COALESCE(SUM(cache IN ('hit', 'coalesced')), 0), COALESCE(SUM(cache = 'miss'), 0)
FROM api_calls
"""


def export_summary(conn: apsw.Connection, since_ts: float, project: str | None = None) -> dict[str, Any]:
    """`{calls, cost, savings, cacheSavings, tokens, hitRate}` over the rows `export_rows` yields."""
    if project is None:
        row = conn.execute(f"{_SUMMARY} WHERE ts >= ?", (since_ts,)).fetchone()
    else:
        row = conn.execute(f"{_SUMMARY} WHERE project = ? AND ts >= ?", (project, since_ts)).fetchone()
    calls, cost, savings, cache_savings, tokens, hits, misses = row
    return {"calls": calls, "cost": cost, "savings": savings, "cacheSavings": cache_savings, "tokens": tokens,
            "hitRate": _ratio(hits, hits + misses)}


def export_analytics(conn: apsw.Connection, days: float, now: float, project: str | None = None) -> dict[str, Any]:
    """`GET /api/export/analytics?days=N`: the calls of the last `days` days (ts >= now - days*86400) and a summary.

    Builds the whole list; an endpoint that streams can pair `export_summary` with `export_rows` instead (inside
    one read transaction, `with conn:`, for the two to agree).
    """
    since = now - days * DAY
    with conn:
        summary = export_summary(conn, since, project)
        calls = list(export_rows(conn, since, project))
    return {"days": days, "generatedAt": iso(now), "summary": summary, "calls": calls}


def csv_export(rows: Iterable[dict[str, Any]], chunk_size: int = 65536) -> Iterator[str]:
    """CSV text of export rows: the header (`EXPORT_FIELDS`), then one record per row, in chunks of about
    `chunk_size` characters (RFC 4180 quoting by the csv module; None is an empty field, floats keep full precision).
    """
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(EXPORT_FIELDS)
    writerow, fields = writer.writerow, operator.itemgetter(*EXPORT_FIELDS)
    for row in rows:
        writerow(fields(row))
        if buf.tell() >= chunk_size:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    if buf.tell():
        yield buf.getvalue()


def recent_calls(conn: apsw.Connection, limit: int) -> list[dict[str, Any]]:
    """The `limit` newest calls, newest first, as export rows (the live log, `/api/logs`)."""
    return [_row_dict(row) for row in conn.execute(f"{_SELECT_CALLS} ORDER BY ts DESC, id DESC LIMIT ?",
                                                   (max(0, int(limit)),))]
