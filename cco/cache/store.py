"""The response cache: entries in the byte-bounded LRU, the in-flight table (single-flight), the counters.

Theory of operation. A cacheable request gets a key (cco._fast key scanner). A stored entry answers it at once
(`hit`). Otherwise, if an identical request is already upstream, the new one follows that flight
(`coalesced`): it is served from the flight's result when it lands, or — when both ask for a stream and the
leader's stream has started — it receives the leader's bytes as they come. Otherwise the request leads a new
flight (`miss`). Only complete 2xx answers are stored. When the leader's upstream answer is an error, followers
get the same error; when the leader's client goes away (its upstream call is then cancelled), followers that
have not received a byte yet send their own request, and attached stream followers get an SSE error event.

Credential safety (SPEC §5): on a route that forwards the client's credential, a hit is served only to a
credential that has succeeded upstream before (a hash kept in memory), so a made-up key never reads the cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import orjson
import xxhash

from cco._fast import LRU
from cco.cache.message import last_user_preview, synthesize_sse
from cco.pricing import CallCost, Usage

if TYPE_CHECKING:
    from cco.protocol import HttpProtocol, Request

log = logging.getLogger("cco.cache")

SCOPES = ("global", "project", "key")
# Bytes charged per entry for the CacheEntry object and its small fields, on top of the body (the LRU adds its
# own per-entry overhead); the preview (≤ 80 characters) is reserved for up front.
ENTRY_FIXED_BYTES = 240
PREVIEW_RESERVE = 160
MAX_VERIFIED_CREDENTIALS = 100_000
# The share of the byte bound kept for synthesized event streams (`ResponseCache.streams`): a stream hit — every
# hit of Claude Code, which always streams — is then a copy of bytes, not a synthesis from the stored message.
STREAM_SHARE = 4  # one quarter


class EntryStats:
    """What the stats know about an entry once it has been hit (created at the first hit)."""

    __slots__ = ("hits", "saved", "last_hit", "cost", "preview", "model", "endpoint", "usage", "hit_cost")

    def __init__(self, hits: int = 0, saved: float = 0.0, last_hit: float = 0.0, cost: float | None = None,
                 preview: str | None = None, model: str = "", endpoint: str = "") -> None:
        self.hits = hits
        self.saved = saved
        self.last_hit = last_hit
        self.cost = cost  # what the original call cost: each hit saves this much
        self.preview = preview
        self.model = model
        self.endpoint = endpoint
        self.usage: Usage | None = None  # of the original call, reported again on every hit
        self.hit_cost: CallCost | None = None  # a hit's cost (0), would-be cost and savings


class CacheEntry:
    """A stored answer: the Message (or count_tokens) JSON exactly as served.

    Why the LRU holds only the body bytes: with hundreds of thousands of entries, every object kept per entry
    costs on every miss (allocation, and tracked objects made full collections walk the whole cache: tens of µs
    per request and 40+ ms pauses while it filled). The model and endpoint are part of the key, so the request
    being served always knows them; this class is the short-lived view the request path works with, and `stats`
    (EntryStats) exists once the entry has been hit.
    """

    __slots__ = ("key", "body", "model", "endpoint", "stats")

    def __init__(self, key: bytes, body: bytes, model: str, endpoint: str, stats: EntryStats | None = None) -> None:
        self.key = key
        self.body = body
        self.model = model
        self.endpoint = endpoint
        self.stats = stats

    @property
    def size(self) -> int:
        return len(self.body) + PREVIEW_RESERVE + ENTRY_FIXED_BYTES

    def message(self) -> dict:
        return orjson.loads(self.body)


class FlightResult:
    __slots__ = ("entry", "status", "headers", "body", "retry")

    def __init__(self, entry: CacheEntry | None = None, status: int = 0, headers: bytes = b"", body: bytes = b"",
                 retry: bool = False) -> None:
        self.entry = entry
        self.status = status  # an error answer followers receive too (entry is None)
        self.headers = headers
        self.body = body
        self.retry = retry  # the leader went away before any answer: followers send their own request


class Flight:
    """One upstream call that identical requests wait on. Its future exists only once someone waits."""

    __slots__ = ("key", "loop", "_done", "_result", "head", "chunks", "subscribers")

    def __init__(self, key: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.loop = loop
        self._done: asyncio.Future[FlightResult] | None = None
        self._result: FlightResult | None = None
        self.head: tuple[int, bytes] | None = None  # (status, upstream header block) once a stream started
        self.chunks: list[bytes] = []  # stream bytes so far, for subscribers that attach late
        self.subscribers: list[tuple[HttpProtocol, Request, bytes]] = []  # (client, request, its own headers)

    @property
    def done(self) -> asyncio.Future[FlightResult]:
        if self._done is None:
            self._done = self.loop.create_future()
            if self._result is not None:
                self._done.set_result(self._result)
        return self._done

    @property
    def awaited(self) -> bool:
        """Whether any request waits on the outcome (else the leader need not build a result)."""
        return self._done is not None

    # leader side

    def stream_started(self, status: int, header_block: bytes, write_head: Callable) -> None:
        self.head = (status, header_block)
        for client, request, own in self.subscribers:
            write_head(client, request, status, header_block + own)

    def stream_data(self, data: bytes) -> None:
        self.chunks.append(data)
        for client, _, _ in self.subscribers:
            client.write_stream(b"", [data])

    def stream_end(self, tail: bytes = b"") -> None:
        for client, _, _ in self.subscribers:
            client.write_stream(b"", [tail] if tail else [], end=True)

    def finish(self, result: FlightResult) -> None:
        if self._result is None:
            self._result = result
            if self._done is not None and not self._done.done():
                self._done.set_result(result)


def _no_cost(entry: CacheEntry) -> tuple[Usage | None, CallCost]:
    return None, CallCost(cost=0.0, would_be_cost=0.0, savings=0.0, unpriced=False)


class ResponseCache:
    def __init__(self, max_bytes: int, ttl: float, scope: str = "global",
                 clock: Callable[[], float] = time.monotonic) -> None:
        stream_bytes = max_bytes // STREAM_SHARE
        self.lru = LRU(max_bytes - stream_bytes, clock=clock)
        # The event-stream form of entries that were hit as streams, under the same keys: derived from `lru`'s
        # entries, read only after a hit there, dropped when an entry is stored anew.
        self.streams = LRU(stream_bytes, clock=clock)
        self.lru_clock = clock
        self.ttl = ttl
        self.scope = scope
        self.inflight: dict[bytes, Flight] = {}
        self.verified: set[int] = set()
        self.hits = 0
        self.misses = 0
        self.coalesced = 0
        self.bypassed = 0
        self.saved_cost = 0.0
        # set by the app (pricing): the original call's usage and what a hit on it costs and saves
        self.cost_of: Callable[[CacheEntry], tuple[Usage | None, CallCost]] = _no_cost
        self.records: dict[bytes, EntryStats] = {}  # stats of entries that have been hit

    # credentials

    @staticmethod
    def credential_hash(request: Request) -> int:
        value = request.header(b"x-api-key") or request.header(b"authorization") or b""
        return xxhash.xxh3_64_intdigest(value) if value else 0

    def credential_verified(self, credential: int) -> bool:
        return credential != 0 and credential in self.verified

    def verify_credential(self, credential: int) -> None:
        if credential and credential not in self.verified:
            if len(self.verified) >= MAX_VERIFIED_CREDENTIALS:
                self.verified.clear()  # bounded: a flood of keys costs a re-verification, not memory
            self.verified.add(credential)

    # entries

    def get(self, key: bytes, model: str, endpoint: str, request_body: bytes | None = None) -> CacheEntry | None:
        body = self.lru.get(key)
        if body is None:
            return None
        entry = CacheEntry(key, body, model, endpoint)
        stats = self._settle(entry, request_body)
        stats.hits += 1
        stats.last_hit = time.time()
        stats.saved += stats.cost  # type: ignore[operator]
        self.saved_cost += stats.cost  # type: ignore[operator]
        return entry

    def stream_body(self, entry: CacheEntry) -> bytes:
        """The entry as a synthesized event stream (SPEC §4), kept for the next stream hit on it while the cache
        holds that very answer (not an answer that was never stored, such as a fallback's)."""
        sse = self.streams.get(entry.key)
        if sse is None:
            sse = synthesize_sse(entry.message())
            if self.lru.peek(entry.key) is entry.body:
                self.streams.put(entry.key, sse, len(sse), self.ttl)
        return sse

    @property
    def bytes_used(self) -> int:
        return self.lru.bytes_used + self.streams.bytes_used

    @property
    def max_bytes(self) -> int:
        return self.lru.max_bytes + self.streams.max_bytes

    def put(self, entry: CacheEntry, ttl: float | None = None) -> bool:
        self.streams.pop(entry.key)  # a new answer under this key: its old stream form is gone with it
        stored = self.lru.put(entry.key, entry.body, entry.size, self.ttl if ttl is None else ttl)
        if stored:
            if entry.stats is not None:
                self.records[entry.key] = entry.stats
            else:
                self.records.pop(entry.key, None)  # a new answer under this key starts its own record
        return stored

    def count_coalesced(self, entry: CacheEntry | None, request_body: bytes | None = None) -> EntryStats | None:
        self.coalesced += 1
        if entry is None:
            return None
        stats = self._settle(entry, request_body)
        self.saved_cost += stats.cost  # type: ignore[operator]
        stats.saved += stats.cost  # type: ignore[operator]
        return stats

    def _settle(self, entry: CacheEntry, request_body: bytes | None) -> EntryStats:
        """The entry's stats record, with its cost and preview filled in if still missing. The preview comes
        from the request being served — identical to the original by construction — so a miss, which may
        never be hit, pays for neither."""
        stats = entry.stats
        if stats is None:
            stats = self.records.get(entry.key)
            if stats is None:
                if len(self.records) > 2 * len(self.lru) + 1024:
                    self._prune_records()
                stats = self.records[entry.key] = EntryStats(model=entry.model, endpoint=entry.endpoint)
            entry.stats = stats
        if stats.hit_cost is None:
            stats.usage, stats.hit_cost = self.cost_of(entry)
            if stats.cost is None:
                stats.cost = stats.hit_cost.savings
        if stats.preview is None and request_body is not None:
            stats.preview = last_user_preview(request_body)
        return stats

    def _prune_records(self) -> None:
        """Drops the records of entries the LRU no longer holds (evicted, expired)."""
        lru = self.lru
        for key in [k for k in self.records if k not in lru]:
            del self.records[key]

    def clear(self) -> int:
        count = len(self.lru)
        self.lru.clear()
        self.streams.clear()
        self.records.clear()
        return count

    def entries(self) -> list[tuple[CacheEntry, float]]:
        """Every unexpired entry with its expiry (monotonic, 0: never), least recent first."""
        records = self.records
        out = []
        for key, body, expires_at in self.lru.items():
            stats = records.get(key)
            model, endpoint = (stats.model, stats.endpoint) if stats is not None else ("", "")
            out.append((CacheEntry(key, body, model, endpoint, stats), expires_at))
        return out

    # single-flight

    def begin(self, key: bytes, loop: asyncio.AbstractEventLoop) -> Flight:
        flight = self.inflight[key] = Flight(key, loop)
        return flight

    def end(self, flight: Flight) -> None:
        if self.inflight.get(flight.key) is flight:
            del self.inflight[flight.key]

    # reporting (SPEC §7 field names)

    def stats(self) -> dict[str, Any]:
        lookups = self.hits + self.misses + self.coalesced
        lru = self.lru
        return {
            "hits": self.hits, "misses": self.misses, "coalesced": self.coalesced, "bypassed": self.bypassed,
            "hitRate": (self.hits + self.coalesced) / lookups if lookups else 0.0,
            "entries": len(lru), "sizeBytes": self.bytes_used, "maxSizeBytes": self.max_bytes,
            "size": self.bytes_used / (1024 * 1024), "maxSize": self.max_bytes / (1024 * 1024),
            "evictions": lru.evictions, "expirations": lru.expirations, "savedCost": self.saved_cost,
        }

    def top_prompts(self, limit: int) -> list[dict[str, Any]]:
        self._prune_records()
        hit = [(key, stats) for key, stats in self.records.items() if stats.hits]
        hit.sort(key=lambda item: (item[1].hits, item[1].last_hit), reverse=True)
        out = []
        for key, stats in hit[:limit]:
            if key in self.lru:
                out.append({"key": key.hex(), "model": stats.model, "hits": stats.hits, "savedCost": stats.saved,
                            "preview": stats.preview or "", "lastHit": _iso(stats.last_hit)})
        return out


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
