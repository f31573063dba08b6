"""Cache persistence (`cache.persist = true`): entries go to a SQLite file at shutdown and come back at start.

Expiry is kept as wall-clock time in the file (the LRU's clock is monotonic, which does not survive a restart);
entries already expired when the proxy starts are not loaded. The file is rewritten whole each time.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import apsw

from cco.cache.store import CacheEntry, EntryStats, ResponseCache

log = logging.getLogger("cco.cache")

SCHEMA_VERSION = 1


def _connect(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        with conn:
            conn.execute("""CREATE TABLE IF NOT EXISTS cache_entries (
                key BLOB PRIMARY KEY, body BLOB NOT NULL, model TEXT NOT NULL, endpoint TEXT NOT NULL,
                cost REAL NOT NULL, preview TEXT NOT NULL, created REAL NOT NULL, hits INTEGER NOT NULL,
                last_hit REAL NOT NULL, saved REAL NOT NULL, expires_at REAL NOT NULL)""")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return conn


def save(cache: ResponseCache, path: Path) -> int:
    """Writes every unexpired entry, least recent first; returns how many."""
    now_wall, now_mono = time.time(), cache.lru_clock()
    rows = []
    for entry, expires_at in cache.entries():
        wall_expiry = now_wall + (expires_at - now_mono) if expires_at else 0.0
        stats = entry.stats or EntryStats()
        cost = stats.cost if stats.cost is not None else -1.0  # -1: not known yet (never hit)
        rows.append((entry.key, entry.body, entry.model, entry.endpoint, cost, stats.preview or "", now_wall,
                     stats.hits, stats.last_hit, stats.saved, wall_expiry))
    conn = _connect(path)
    try:
        with conn:
            conn.execute("DELETE FROM cache_entries")
            conn.executemany("INSERT OR REPLACE INTO cache_entries VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    finally:
        conn.close()
    return len(rows)


def load(cache: ResponseCache, path: Path) -> int:
    """Loads the unexpired entries of a previous run, in their recency order; returns how many."""
    if not path.exists():
        return 0
    conn = _connect(path)
    loaded = 0
    now = time.time()
    try:
        for row in conn.execute("SELECT key, body, model, endpoint, cost, preview, created, hits, last_hit, saved, "
                                "expires_at FROM cache_entries ORDER BY rowid"):
            key, body, model, endpoint, cost, preview, created, hits, last_hit, saved, expires_at = row
            if expires_at and expires_at <= now:
                continue
            stats = EntryStats(hits, saved, last_hit, cost if cost >= 0 else None, preview or None, model,
                               endpoint) if hits else None
            entry = CacheEntry(bytes(key), bytes(body), model, endpoint, stats)
            if cache.put(entry, ttl=(expires_at - now) if expires_at else 0.0):
                loaded += 1
    finally:
        conn.close()
    return loaded
