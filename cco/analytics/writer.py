"""The analytics writer: one thread owns the SQLite connection; the event loop only appends to a queue.

Theory of operation
-------------------
Every proxied call becomes one row tuple (the order of `schema.COLUMNS`). `AnalyticsWriter.record()` runs on the
asyncio event loop for each of them, so it does nothing but a bounded `deque.append` (thread-safe and O(1) in
CPython): the request path never waits on SQLite, on a lock held by another process, or on a slow disk (SPEC §7).

A daemon thread owns the only write connection (APSW connections are not shared; STYLE rule 12). It wakes every
`flush_interval` seconds, or at once when `batch_rows` rows are waiting, and writes everything queued in batches of
at most `batch_rows` rows. Each batch is ONE transaction: the rows (one multi-row INSERT, see `_commit`) plus the
`hourly` and `overrides` rollups for exactly those rows, aggregated in Python first so a batch of 500 calls costs a
handful of upserts. One transaction per batch is what makes SQLite fast here (one WAL append and, with
synchronous=NORMAL, no fsync per commit) and it keeps the rollups equal to the rows at every commit: no figure on the
dashboard lags behind another.

What can be lost: a crash (SIGKILL, power loss) loses the rows still in memory, at most one flush interval's worth
plus the batch being written. A clean shutdown calls `close()`, which writes everything queued first.

When a write fails for a reason that may pass (the database is locked or busy, the disk is full, an I/O error),
the batch is kept and retried with a doubling back-off; one warning is logged per kind of failure, not per row or per
retry. Meanwhile new rows queue up to `max_queue` and are dropped (and counted) beyond it, so memory stays bounded.
A batch that fails for any other reason (a malformed row) is retried row by row and only the bad rows are dropped.

`open_database()` is the one place that opens the store and applies the pragmas, for the writer and for readers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from itertools import chain
from pathlib import Path

import apsw

from cco.analytics.schema import COLUMNS, MIGRATIONS, VERSION
from cco.errors import CcoError

log = logging.getLogger("cco.analytics")

# How long a statement waits for another connection's lock before SQLite raises BusyError. Only the writer thread
# ever waits this long; a reader in WAL mode is practically never blocked.
BUSY_TIMEOUT_MS = 2000
# The WAL file is not shrunk after a checkpoint unless a limit is set (https://sqlite.org/pragma.html#pragma_journal_size_limit).
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
# WAL checkpoints are run by the writer between batches once the WAL holds this many pages (SQLite's own
# automatic threshold). SQLite's automatic checkpoint runs inside a commit and, measured under load, stalled the
# event loop for 20-30 ms each time (hit p99 25-30 ms; 7-10 ms with the writer checkpointing itself).
CHECKPOINT_PAGES = 1000
# Retry back-off after a failed batch: first delay, doubled after each failure up to the maximum.
RETRY_FIRST = 0.25
RETRY_MAX = 5.0

# Failures that may go away on their own: the batch is kept and retried. Anything else is a bad row or a bug.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    apsw.BusyError, apsw.LockedError, apsw.FullError, apsw.IOError, apsw.CantOpenError, apsw.ReadOnlyError,
    apsw.ProtocolError, apsw.InterruptError, apsw.NoMemError, MemoryError,
)

_TS = COLUMNS.index("ts")
_PROJECT = COLUMNS.index("project")
_REQUESTED_MODEL = COLUMNS.index("requested_model")
_MODEL = COLUMNS.index("model")
_PROVIDER = COLUMNS.index("provider")
_STATUS = COLUMNS.index("status")
_CACHE = COLUMNS.index("cache")
_INPUT = COLUMNS.index("input_tokens")
_OUTPUT = COLUMNS.index("output_tokens")
_CACHE_CREATION = COLUMNS.index("cache_creation_tokens")
_CACHE_READ = COLUMNS.index("cache_read_tokens")
_COST = COLUMNS.index("cost")
_SAVINGS = COLUMNS.index("savings")
_LATENCY = COLUMNS.index("latency_ms")
_OVERRIDE_RULE = COLUMNS.index("override_rule")

_UPSERT_HOURLY = """
INSERT INTO hourly (hour, project, model, provider, calls, tokens, cost, savings, cache_savings, hits, misses,
                    errors, latency_ms, last_ts)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (hour, project, model, provider) DO UPDATE SET
    calls = calls + excluded.calls,
    tokens = tokens + excluded.tokens,
    cost = cost + excluded.cost,
    savings = savings + excluded.savings,
    cache_savings = cache_savings + excluded.cache_savings,
    hits = hits + excluded.hits,
    misses = misses + excluded.misses,
    errors = errors + excluded.errors,
    latency_ms = latency_ms + excluded.latency_ms,
    last_ts = max(last_ts, excluded.last_ts)
"""

_UPSERT_OVERRIDES = """
INSERT INTO overrides (requested_model, model, calls, cost_saved) VALUES (?, ?, ?, ?)
ON CONFLICT (requested_model, model) DO UPDATE SET
    calls = calls + excluded.calls,
    cost_saved = cost_saved + excluded.cost_saved
"""


class AnalyticsDatabaseError(CcoError):
    """The analytics database cannot be opened or migrated (the proxy refuses to start with this message)."""


def open_database(path: str | os.PathLike[str], *, readonly: bool = False) -> apsw.Connection:
    """Open the analytics store: the one place that applies pragmas and, for the writer, migrates the schema.

    A writer (readonly=False) creates the parent directory and the file, switches to WAL, and steps the schema from
    its `PRAGMA user_version` to `VERSION`, each migration in its own transaction. A reader opens the file with
    SQLite's read-only flag and must find the schema at `VERSION` (the writer migrates it). A database written by a
    newer CCO (user_version > VERSION) is refused either way.
    """
    path = os.fspath(path)
    if not readonly:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    conn = apsw.Connection(path, flags=flags)
    try:
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        # Double-quoted strings are identifiers only (https://sqlite.org/quirks.html#dblquote).
        conn.config(apsw.SQLITE_DBCONFIG_DQS_DML, 0)
        conn.config(apsw.SQLITE_DBCONFIG_DQS_DDL, 0)
        if readonly:
            _check_version(conn, path, readonly=True)
            return conn
        # WAL: readers never block the writer nor the writer them; NORMAL is durable in WAL mode except for the
        # last commits on power loss (https://sqlite.org/pragma.html#pragma_synchronous), which SPEC §7 accepts.
        mode = conn.pragma("journal_mode", "wal")
        if mode != "wal":
            log.warning("analytics database %s: journal_mode is %s, not wal", path, mode)
        conn.pragma("synchronous", "NORMAL")
        conn.pragma("journal_size_limit", JOURNAL_SIZE_LIMIT)
        _migrate(conn, path)
        return conn
    except BaseException:
        conn.close()
        raise


def _check_version(conn: apsw.Connection, path: str, *, readonly: bool) -> int:
    version = int(conn.pragma("user_version"))
    if version > VERSION:
        raise AnalyticsDatabaseError(
            f"analytics database {path} has schema version {version}, newer than this CCO supports ({VERSION}); "
            "upgrade CCO or point it at another data directory")
    if readonly and version < VERSION:
        raise AnalyticsDatabaseError(
            f"analytics database {path} has schema version {version}, expected {VERSION}; "
            "start the proxy once to migrate it")
    return version


def _migrate(conn: apsw.Connection, path: str) -> None:
    while (version := _check_version(conn, path, readonly=False)) < VERSION:
        with conn:
            # Read again inside the transaction: if another process migrated in between, our snapshot is older
            # than its commit and the first write below raises BusyError instead of migrating twice.
            if int(conn.pragma("user_version")) != version:
                continue
            conn.execute(MIGRATIONS[version])
            conn.pragma("user_version", version + 1)
        log.info("analytics database %s migrated to schema version %d", path, version + 1)


def rollups(rows: Iterable[tuple]) -> tuple[list[tuple], list[tuple]]:
    """The `hourly` and `overrides` upsert bindings that add `rows` to the rollups (schema v2 definitions).

    Rows are grouped by their rollup key in one Python loop (a row with the last row's key joins its group without
    building a key); each group's sums then run column-wise in C (`zip`, `sum`, `count`), in row order, so the
    floats add up exactly as a row-by-row loop would. A group with both
    served and forwarded calls (rare: one hour, one model, hits and misses in one batch) splits its token and
    cache-savings sums row by row."""
    groups: dict[tuple, list[tuple]] = {}
    overridden: list[tuple] = []
    group: list[tuple] = []
    start = end = 0.0
    project = model = provider = None
    for row in rows:
        ts = row[_TS]
        # consecutive rows mostly share their key: compare with the last one before building a key
        if not (start <= ts < end and row[_PROJECT] == project and row[_MODEL] == model
                and row[_PROVIDER] == provider):
            project, model, provider = row[_PROJECT], row[_MODEL], row[_PROVIDER]
            hour = int(ts // 3600) * 3600
            start, end = hour, hour + 3600
            key = (hour, project, model, provider)
            group = groups.get(key)  # type: ignore[assignment]
            if group is None:
                group = groups[key] = []
        group.append(row)
        if row[_OVERRIDE_RULE] is not None:
            overridden.append(row)
    hourly = []
    for key, group in groups.items():
        columns = list(zip(*group))
        cache = columns[_CACHE]
        calls = len(group)
        served = cache.count("hit") + cache.count("coalesced")
        savings = sum(columns[_SAVINGS])
        if served == 0:
            tokens = (sum(columns[_INPUT]) + sum(columns[_OUTPUT]) + sum(columns[_CACHE_CREATION])
                      + sum(columns[_CACHE_READ]))
            cache_savings = 0.0
        elif served == calls:
            tokens = 0
            cache_savings = 0.0 + savings
        else:
            tokens = 0
            cache_savings = 0.0
            for row in group:
                if row[_CACHE] == "hit" or row[_CACHE] == "coalesced":
                    cache_savings += row[_SAVINGS]
                else:
                    tokens += row[_INPUT] + row[_OUTPUT] + row[_CACHE_CREATION] + row[_CACHE_READ]
        hourly.append((*key, calls, tokens, 0.0 + sum(columns[_COST]), 0.0 + savings, cache_savings, served,
                       cache.count("miss"), sum(map(_ERROR_STATUS, columns[_STATUS])), 0.0 + sum(columns[_LATENCY]),
                       max(columns[_TS])))
    overrides: dict[tuple, list] = {}
    for row in overridden:
        okey = (row[_REQUESTED_MODEL], row[_MODEL])
        oacc = overrides.get(okey)
        if oacc is None:
            oacc = overrides[okey] = [0, 0.0]
        oacc[0] += 1
        oacc[1] += row[_SAVINGS]
    return hourly, [(*k, *v) for k, v in overrides.items()]


_ERROR_STATUS = (400).__le__  # status >= 400


# The writer thread's name in the OS (`top -H`, `ps -L`, /proc/<pid>/task/<tid>/comm; at most 15 bytes), so that
# its CPU can be told apart from the event loop's (benchmarks/run.py reports the two).
OS_THREAD_NAME = "cco-analytics"


def name_os_thread(name: str) -> None:
    """Gives the calling thread `name` in the OS as well, where Linux lets a thread rename itself; elsewhere, or
    when /proc is not mounted, nothing happens (the name is only for people and tools reading per-thread CPU)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# Rows per INSERT statement. APSW caches a prepared statement only while its SQL text is at most 16 KiB
# (measured: a 500-row statement, 43 KiB, was compiled again for every batch and cost twice the insert itself), so
# a batch is written as statements of these sizes only: four SQL texts, each prepared once and reused.
STATEMENT_ROWS = (128, 32, 8, 1)
_ROW_PLACEHOLDERS = "(" + ", ".join("?" for _ in COLUMNS) + ")"
_INSERT_SQL = {n: f"INSERT INTO api_calls ({', '.join(COLUMNS)}) VALUES " + ", ".join([_ROW_PLACEHOLDERS] * n)
               for n in STATEMENT_ROWS}
assert len(_INSERT_SQL[STATEMENT_ROWS[0]]) <= 16384


def insert_statements(rows: list[tuple]) -> list[tuple[str, list]]:
    """(sql, bindings) pairs that insert `rows` in order, using only the STATEMENT_ROWS sizes."""
    out = []
    start, total = 0, len(rows)
    for size in STATEMENT_ROWS:
        while total - start >= size:
            out.append((_INSERT_SQL[size], list(chain.from_iterable(rows[start:start + size]))))
            start += size
    return out


class AnalyticsWriter:
    """Queue of call rows in front of the one thread that writes them (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, flush_interval: float = 0.25, batch_rows: int = 500,
                 max_queue: int = 100_000, on_flush: Callable[[list[tuple]], object] | None = None) -> None:
        if batch_rows < 1 or max_queue < 1 or flush_interval <= 0:
            raise ValueError("batch_rows and max_queue must be >= 1 and flush_interval > 0")
        # Configuration
        self.path = os.fspath(path)
        self.flush_interval = flush_interval
        self.batch_rows = batch_rows
        self.max_queue = max_queue
        self.on_flush = on_flush

        # Written by the event loop thread (record)
        self._queue: deque[tuple] = deque()
        self._recorded = 0          # rows accepted into the queue
        self._dropped_full = 0      # rows refused: queue full or writer closed
        self._closed = False

        # Written by the writer thread
        self.written = 0            # rows committed
        self.failing = False        # the last write attempt failed
        self.last_error: str | None = None
        self._inflight = 0          # rows taken from the queue, not yet committed or given up
        self._lost = 0              # rows given up: malformed, or still failing when close() ran out of time
        self._processed = 0         # rows committed or given up, in queue order (flush() waits on it)
        self._warned: set[str] = set()      # failure kinds logged during the current failure episode
        self._bad_rows_warned: set[str] = set()
        self._on_flush_warned: set[str] = set()
        self._wal_pages = 0         # pages in the WAL after the last commit (the WAL hook)

        # Thread lifecycle
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()         # set when the connection is open (or failed to open)
        self._open_error: BaseException | None = None
        self._wake = threading.Event()          # flush now: batch_rows waiting, flush() or close()
        self._stop = threading.Event()          # close() was called: write everything, then exit
        self._close_deadline: float | None = None
        self._progress = threading.Condition()  # notified when _processed grows or the thread exits
        self._finished = False
        self._close_lock = threading.Lock()

    # Status, read from other threads for /health and /metrics

    @property
    def dropped(self) -> int:
        """Rows that will never be written: refused (queue full, closed) or given up (malformed, shutdown)."""
        return self._dropped_full + self._lost

    @property
    def pending(self) -> int:
        """Rows recorded but not committed yet (queued plus the batch being written)."""
        return len(self._queue) + self._inflight

    @property
    def closed(self) -> bool:
        return self._closed

    # Event loop side

    def record(self, row: tuple) -> None:
        """Queue one call row (the order of COLUMNS). O(1), never blocks; drops and counts when full or closed."""
        queue = self._queue
        if self._closed or len(queue) >= self.max_queue:
            self._dropped_full += 1
            return
        queue.append(row)
        self._recorded += 1
        if len(queue) >= self.batch_rows and not self._wake.is_set():
            self._wake.set()

    # Lifecycle

    def start(self) -> None:
        """Start the writer thread; return once the database is open and migrated, or raise why it could not be."""
        if self._thread is not None:
            return
        if self._closed:
            raise RuntimeError("AnalyticsWriter.start() after close()")
        self._thread = threading.Thread(target=self._run, name="cco-analytics-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        error = self._open_error
        if error is not None:
            self._thread.join()
            self._closed = True
            if isinstance(error, AnalyticsDatabaseError):
                raise error
            raise AnalyticsDatabaseError(f"cannot open analytics database {self.path}: {_describe(error)}") from error

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every row recorded before this call is committed; False on timeout or if rows were lost."""
        target = self._recorded
        lost_before = self._lost
        self._wake.set()
        with self._progress:
            self._progress.wait_for(lambda: self._processed >= target or self._finished, timeout)
            return self._processed >= target and self._lost == lost_before

    def close(self, timeout: float | None = 10.0) -> bool:
        """Write everything queued, close the connection and join the thread. Idempotent.

        Rows recorded afterwards are dropped and counted. If the database keeps failing past `timeout` seconds, the
        rows still waiting are given up (counted in `dropped`). Returns True when nothing was left unwritten.
        """
        with self._close_lock:
            if not self._closed or not self._stop.is_set():
                self._closed = True
                self._close_deadline = None if timeout is None else time.monotonic() + timeout
                self._stop.set()
                self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            # One more busy wait of slack: the thread checks the deadline between write attempts.
            thread.join(None if timeout is None else timeout + BUSY_TIMEOUT_MS / 1000 + 1.0)
            if thread.is_alive():
                log.error("analytics writer did not finish within %.1f s; %d rows not written", timeout, self.pending)
                return False
        elif self._queue:
            # Never started (or failed to open): nothing will write these.
            self._give_up(list(self._queue), "the writer was not running")
            self._queue.clear()
        return self.pending == 0 and self._lost == 0

    # Writer thread

    def _run(self) -> None:
        name_os_thread(OS_THREAD_NAME)
        try:
            conn = open_database(self.path)
        except BaseException as exc:  # noqa: BLE001 - re-raised by start() in the caller's thread
            self._open_error = exc
            self._finish()
            self._ready.set()
            return
        conn.set_wal_hook(self._wal_committed)  # replaces SQLite's automatic checkpoint (see CHECKPOINT_PAGES)
        self._ready.set()
        try:
            while True:
                self._wake.wait(self.flush_interval)
                self._wake.clear()
                stopping = self._stop.is_set()
                if not self._drain(conn):
                    break
                if self._wal_pages >= CHECKPOINT_PAGES:
                    self._checkpoint(conn)
                if stopping and not self._queue:
                    break
        except BaseException:  # a bug in this module: say so loudly, never take the process down
            log.exception("analytics writer stopped; %d rows not written", self.pending)
        finally:
            if self._queue:
                self._give_up(list(self._queue), "the writer stopped")
                self._queue.clear()
            try:
                conn.pragma("optimize")
            except apsw.Error:
                pass
            conn.close()
            self._finish()

    def _wal_committed(self, conn: apsw.Connection, name: str, pages: int) -> int:
        self._wal_pages = pages
        return apsw.SQLITE_OK

    def _checkpoint(self, conn: apsw.Connection) -> None:
        """A passive checkpoint: copies what no reader still needs from the WAL into the database, never waits."""
        self._wal_pages = 0
        try:
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        except apsw.Error as exc:  # a busy database: the next batch tries again
            self._wal_pages = CHECKPOINT_PAGES
            kind = type(exc).__name__
            if kind not in self._warned:
                self._warned.add(kind)
                log.warning("analytics WAL checkpoint of %s failed (%s); retrying after the next batch", self.path,
                            _describe(exc))

    def _finish(self) -> None:
        with self._progress:
            self._finished = True
            self._progress.notify_all()

    def _drain(self, conn: apsw.Connection) -> bool:
        """Write what was queued when called, batch by batch (everything, when stopping). False when close() ran
        out of time and the rest was given up.

        Only what was queued at the start: under steady load rows keep arriving while a batch commits, and
        chasing them commits a row or two per transaction — measured, 3 file-lock calls and a GIL handoff per
        request. Rows that arrive meanwhile wait for the next wake-up (≤ flush_interval, or batch_rows)."""
        queue = self._queue
        remaining = len(queue)
        while queue and (remaining > 0 or self._stop.is_set()):
            n = min(len(queue), self.batch_rows)
            remaining -= n
            batch = [queue.popleft() for _ in range(n)]
            self._inflight = n
            if not self._write(conn, batch):
                rest = list(queue)
                queue.clear()
                self._give_up(rest, "close() timed out while the database was failing")
                return False
        return True

    def _write(self, conn: apsw.Connection, batch: list[tuple]) -> bool:
        """Commit one batch, retrying transient failures. False if close()'s deadline passed while failing."""
        delay = RETRY_FIRST
        attempts = 0
        while True:
            try:
                self._commit(conn, batch)
            except TRANSIENT_ERRORS as exc:
                attempts += 1
                self._failed(exc)
                if not self._back_off(delay):
                    self._give_up(batch, f"close() timed out while the database was failing ({_describe(exc)})")
                    return False
                delay = min(delay * 2, RETRY_MAX)
                continue
            except Exception as exc:  # noqa: BLE001 - not transient: a bad row; isolate it, keep the rest
                if len(batch) == 1:
                    self._bad_row(exc)
                    self._give_up(batch, None)
                    return True
                # Find the bad rows: each row alone, with its own rollup, keeping the good ones.
                for i, row in enumerate(batch):
                    self._inflight = len(batch) - i
                    if not self._write(conn, [row]):
                        self._give_up(batch[i + 1:], "close() timed out while the database was failing")
                        return False
                return True
            if self.failing:
                log.warning("analytics writes recovered after %d failed attempt(s); %d rows pending",
                            attempts, self.pending)
                self.failing = False
                self._warned.clear()
            self._committed(batch)
            return True

    def _commit(self, conn: apsw.Connection, batch: list[tuple]) -> None:
        hourly, overrides = rollups(batch)
        with conn:
            # Multi-row INSERTs, not executemany: APSW releases the GIL around every step, and a step per row
            # made the writer thread and the event loop trade the GIL (futex calls) once per row.
            for sql, bindings in insert_statements(batch):
                conn.execute(sql, bindings)
            conn.executemany(_UPSERT_HOURLY, hourly)
            if overrides:
                conn.executemany(_UPSERT_OVERRIDES, overrides)

    def _committed(self, batch: list[tuple]) -> None:
        n = len(batch)
        self.written += n
        self._inflight = 0
        with self._progress:
            self._processed += n
            self._progress.notify_all()
        if self.on_flush is not None:
            try:
                self.on_flush(batch)
            except Exception as exc:
                kind = type(exc).__name__
                if kind not in self._on_flush_warned:
                    self._on_flush_warned.add(kind)
                    log.exception("analytics on_flush callback failed; the writer continues")

    def _failed(self, exc: BaseException) -> None:
        self.failing = True
        self.last_error = _describe(exc)
        kind = type(exc).__name__
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("analytics write to %s failed (%s); keeping %d rows and retrying", self.path,
                        self.last_error, self.pending)

    def _bad_row(self, exc: BaseException) -> None:
        self.last_error = _describe(exc)
        kind = type(exc).__name__
        if kind not in self._bad_rows_warned:
            self._bad_rows_warned.add(kind)
            log.error("analytics row dropped, it cannot be written (%s)", self.last_error)

    def _back_off(self, delay: float) -> bool:
        """Sleep before a retry; False when close() has been called and its deadline has passed."""
        if not self._stop.is_set():
            self._stop.wait(delay)
            if not self._stop.is_set():
                return True
        deadline = self._close_deadline
        if deadline is None:
            time.sleep(delay)
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        return True

    def _give_up(self, rows: list[tuple], reason: str | None) -> None:
        n = len(rows)
        if not n:
            return
        if reason is not None:
            log.error("analytics: %d rows not written: %s", n, reason)
        self._lost += n
        self._inflight = 0
        with self._progress:
            self._processed += n
            self._progress.notify_all()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "failing" if self.failing else "running" if self._thread else "new"
        return (f"<AnalyticsWriter {self.path} {state} written={self.written} pending={self.pending} "
                f"dropped={self.dropped}>")
