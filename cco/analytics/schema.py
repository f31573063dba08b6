"""The analytics database schema, stepped forward on `PRAGMA user_version`.

`api_calls` holds one row per client request proxied to a provider (SPEC §7): never a credential, at most a short
hash prefix of it. Every money figure in it can be recomputed from its token counts and the price table.
The rollup tables `hourly` and `overrides` are maintained by the writer in the same transaction as the rows they
summarise, so the dashboard's queries read a few thousand rollup rows instead of millions of calls.

Version 1 is the first released layout (calls only); version 2 adds the 1-hour cache-write and batch columns, the
project index and the rollups, backfilled from the existing rows; version 3 adds the all-time `totals` rollup.
"""

from __future__ import annotations

# The columns of api_calls after `id`, in the order a row tuple carries them (CallRow in cco.analytics.record).
COLUMNS: tuple[str, ...] = (
    "ts",                        # REAL, unix seconds when the request arrived
    "project",                   # TEXT
    "agent",                     # TEXT or NULL (x-cco-agent or detected)
    "requested_model",           # TEXT, as the client asked
    "model",                     # TEXT, as served (after override and fallback)
    "provider",                  # TEXT
    "endpoint",                  # TEXT, e.g. /v1/messages
    "stream",                    # INTEGER 0/1
    "status",                    # INTEGER, HTTP status sent to the client
    "error_type",                # TEXT or NULL
    "cache",                     # TEXT: hit | miss | coalesced | bypass | none (endpoint not cached)
    "input_tokens",              # INTEGER
    "output_tokens",             # INTEGER
    "cache_creation_tokens",     # INTEGER, all cache writes (5-minute and 1-hour)
    "cache_creation_1h_tokens",  # INTEGER, the 1-hour part of cache_creation_tokens
    "cache_read_tokens",         # INTEGER
    "batch",                     # INTEGER 0/1: priced with the batch discount
    "cost",                      # REAL USD, what the call cost (0 for a cache hit or a local model)
    "would_be_cost",             # REAL USD, what it would have cost without the cache / override / local model
    "savings",                   # REAL USD, would_be_cost - cost
    "unpriced",                  # INTEGER 0/1: the served model has no price entry
    "latency_ms",                # REAL, request arrival to last byte sent
    "ttfb_ms",                   # REAL or NULL, request arrival to first response byte
    "upstream_ms",               # REAL or NULL, time spent waiting on the provider
    "fallback_depth",            # INTEGER, 0 = the requested model's own route
    "override_rule",             # TEXT or NULL, the override rule applied
    "request_id",                # TEXT
    "key_hash",                  # TEXT or NULL, first 8 hex digits of the credential's SHA-256
)

INSERT_CALL = (f"INSERT INTO api_calls ({', '.join(COLUMNS)}) "
               f"VALUES ({', '.join('?' for _ in COLUMNS)})")

_V1 = """
CREATE TABLE api_calls (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    project TEXT NOT NULL,
    agent TEXT,
    requested_model TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    stream INTEGER NOT NULL DEFAULT 0,
    status INTEGER NOT NULL,
    error_type TEXT,
    cache TEXT NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    would_be_cost REAL NOT NULL DEFAULT 0,
    savings REAL NOT NULL DEFAULT 0,
    unpriced INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL NOT NULL DEFAULT 0,
    ttfb_ms REAL,
    upstream_ms REAL,
    fallback_depth INTEGER NOT NULL DEFAULT 0,
    override_rule TEXT,
    request_id TEXT,
    key_hash TEXT
);
CREATE INDEX api_calls_ts ON api_calls(ts);
"""

# The rollups computed from api_calls: the v2 backfill, and cco.analytics.queries.rebuild_rollups (repairs).
REBUILD_HOURLY = """
INSERT INTO hourly (hour, project, model, provider, calls, tokens, cost, savings, cache_savings, hits, misses,
                    errors, latency_ms, last_ts)
SELECT CAST(ts / 3600 AS INTEGER) * 3600, project, model, provider, COUNT(*),
       SUM(CASE WHEN cache IN ('hit', 'coalesced') THEN 0
                ELSE input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens END),
       SUM(cost), SUM(savings), SUM(CASE WHEN cache IN ('hit', 'coalesced') THEN savings ELSE 0 END),
       SUM(cache IN ('hit', 'coalesced')), SUM(cache = 'miss'), SUM(status >= 400), SUM(latency_ms), MAX(ts)
FROM api_calls GROUP BY 1, 2, 3, 4
"""
REBUILD_OVERRIDES = """
INSERT INTO overrides (requested_model, model, calls, cost_saved)
SELECT requested_model, model, COUNT(*), SUM(savings) FROM api_calls
WHERE override_rule IS NOT NULL GROUP BY 1, 2
"""

_V2 = """
ALTER TABLE api_calls ADD COLUMN cache_creation_1h_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_calls ADD COLUMN batch INTEGER NOT NULL DEFAULT 0;
CREATE INDEX api_calls_project_ts ON api_calls(project, ts);

-- One row per (hour, project, model, provider). "tokens" counts only calls that reached a provider
-- (cache not in hit/coalesced), as SPEC §7 defines it; hits = hit + coalesced, misses = miss.
CREATE TABLE hourly (
    hour INTEGER NOT NULL,              -- unix seconds of the hour's start
    project TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    savings REAL NOT NULL DEFAULT 0,
    cache_savings REAL NOT NULL DEFAULT 0,
    hits INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,   -- status >= 400
    latency_ms REAL NOT NULL DEFAULT 0,  -- sum over the calls
    last_ts REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, project, model, provider)
) WITHOUT ROWID;

-- One row per (requested model, served model) pair an override rule produced.
CREATE TABLE overrides (
    requested_model TEXT NOT NULL,
    model TEXT NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    cost_saved REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (requested_model, model)
) WITHOUT ROWID;

"""

# Version 3: all-time totals per (project, model, provider), kept equal to the sums of `hourly` by triggers in the
# same transaction as each hourly upsert (the writer needs no change). At 10 M calls over 30 days `hourly` holds
# ~170 k rows and summing them takes 100-300 ms; `totals` holds a few hundred rows (benchmarks/bench_queries.py).
_V3 = """
CREATE TABLE totals (
    project TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    savings REAL NOT NULL DEFAULT 0,
    cache_savings REAL NOT NULL DEFAULT 0,
    hits INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL NOT NULL DEFAULT 0,
    last_ts REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (project, model, provider)
) WITHOUT ROWID;

CREATE TRIGGER hourly_totals_insert AFTER INSERT ON hourly BEGIN
    INSERT INTO totals (project, model, provider, calls, tokens, cost, savings, cache_savings, hits, misses, errors,
                        latency_ms, last_ts)
    VALUES (NEW.project, NEW.model, NEW.provider, NEW.calls, NEW.tokens, NEW.cost, NEW.savings, NEW.cache_savings,
            NEW.hits, NEW.misses, NEW.errors, NEW.latency_ms, NEW.last_ts)
    ON CONFLICT (project, model, provider) DO UPDATE SET
        calls = calls + excluded.calls, tokens = tokens + excluded.tokens, cost = cost + excluded.cost,
        savings = savings + excluded.savings, cache_savings = cache_savings + excluded.cache_savings,
        hits = hits + excluded.hits, misses = misses + excluded.misses, errors = errors + excluded.errors,
        latency_ms = latency_ms + excluded.latency_ms, last_ts = max(last_ts, excluded.last_ts);
END;

-- The writer's upserts: the key stays, the sums grow by the difference.
CREATE TRIGGER hourly_totals_update AFTER UPDATE ON hourly
WHEN NEW.project = OLD.project AND NEW.model = OLD.model AND NEW.provider = OLD.provider BEGIN
    UPDATE totals SET
        calls = calls + (NEW.calls - OLD.calls), tokens = tokens + (NEW.tokens - OLD.tokens),
        cost = cost + (NEW.cost - OLD.cost), savings = savings + (NEW.savings - OLD.savings),
        cache_savings = cache_savings + (NEW.cache_savings - OLD.cache_savings),
        hits = hits + (NEW.hits - OLD.hits), misses = misses + (NEW.misses - OLD.misses),
        errors = errors + (NEW.errors - OLD.errors), latency_ms = latency_ms + (NEW.latency_ms - OLD.latency_ms),
        last_ts = max(last_ts, NEW.last_ts)
    WHERE project = NEW.project AND model = NEW.model AND provider = NEW.provider;
END;

-- An update that changes the key (repairs only): as a delete of the old row and an insert of the new.
CREATE TRIGGER hourly_totals_move AFTER UPDATE ON hourly
WHEN NOT (NEW.project = OLD.project AND NEW.model = OLD.model AND NEW.provider = OLD.provider) BEGIN
    UPDATE totals SET
        calls = calls - OLD.calls, tokens = tokens - OLD.tokens, cost = cost - OLD.cost,
        savings = savings - OLD.savings, cache_savings = cache_savings - OLD.cache_savings, hits = hits - OLD.hits,
        misses = misses - OLD.misses, errors = errors - OLD.errors, latency_ms = latency_ms - OLD.latency_ms
    WHERE project = OLD.project AND model = OLD.model AND provider = OLD.provider;
    INSERT INTO totals (project, model, provider, calls, tokens, cost, savings, cache_savings, hits, misses, errors,
                        latency_ms, last_ts)
    VALUES (NEW.project, NEW.model, NEW.provider, NEW.calls, NEW.tokens, NEW.cost, NEW.savings, NEW.cache_savings,
            NEW.hits, NEW.misses, NEW.errors, NEW.latency_ms, NEW.last_ts)
    ON CONFLICT (project, model, provider) DO UPDATE SET
        calls = calls + excluded.calls, tokens = tokens + excluded.tokens, cost = cost + excluded.cost,
        savings = savings + excluded.savings, cache_savings = cache_savings + excluded.cache_savings,
        hits = hits + excluded.hits, misses = misses + excluded.misses, errors = errors + excluded.errors,
        latency_ms = latency_ms + excluded.latency_ms, last_ts = max(last_ts, excluded.last_ts);
END;

CREATE TRIGGER hourly_totals_delete AFTER DELETE ON hourly BEGIN
    UPDATE totals SET
        calls = calls - OLD.calls, tokens = tokens - OLD.tokens, cost = cost - OLD.cost,
        savings = savings - OLD.savings, cache_savings = cache_savings - OLD.cache_savings, hits = hits - OLD.hits,
        misses = misses - OLD.misses, errors = errors - OLD.errors, latency_ms = latency_ms - OLD.latency_ms
    WHERE project = OLD.project AND model = OLD.model AND provider = OLD.provider;
END;

INSERT INTO totals (project, model, provider, calls, tokens, cost, savings, cache_savings, hits, misses, errors,
                    latency_ms, last_ts)
SELECT project, model, provider, SUM(calls), SUM(tokens), SUM(cost), SUM(savings), SUM(cache_savings), SUM(hits),
       SUM(misses), SUM(errors), SUM(latency_ms), MAX(last_ts)
FROM hourly GROUP BY project, model, provider;
"""

_V2 += REBUILD_HOURLY + ";\n" + REBUILD_OVERRIDES + ";\n"

# MIGRATIONS[i] takes a database from user_version i to i + 1.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)
VERSION = len(MIGRATIONS)
