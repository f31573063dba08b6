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
from cco.cache.message import last_user_preview

if TYPE_CHECKING:
    from cco.protocol import HttpProtocol, Request

log = logging.getLogger("cco.cache")

SCOPES = ("global", "project", "key")
# Bytes charged per entry for the CacheEntry object and its small fields, on top of the body (the LRU adds its
# own per-entry overhead); the preview (≤ 80 characters) is reserved for up front.
ENTRY_FIXED_BYTES = 240
PREVIEW_RESERVE = 160
MAX_VERIFIED_CREDENTIALS = 100_000


class CacheEntry:
    """One stored answer: the Message (or count_tokens) JSON exactly as served, and what stats need.

    The preview and the cost are filled in at the first hit (`settle`), from the hitting request (identical to
    the original by construction) — a miss, which may never be hit, does not pay for them.
    """

    __slots__ = ("key", "body", "model", "endpoint", "cost", "preview", "created", "hits", "last_hit", "saved",
                 "_message")

    def __init__(self, key: bytes, body: bytes, model: str, endpoint: str, cost: float | None = None,
                 preview: str | None = None, created: float | None = None, hits: int = 0, last_hit: float = 0.0,
                 saved: float = 0.0) -> None:
        self.key = key
        self.body = body
        self.model = model
        self.endpoint = endpoint
        self.cost = cost  # what the original call cost: each hit saves this much
        self.preview = preview
        self.created = created if created is not None else time.time()
        self.hits = hits
        self.last_hit = last_hit
        self.saved = saved
        self._message: dict | None = None

    @property
    def size(self) -> int:
        return len(self.body) + PREVIEW_RESERVE + ENTRY_FIXED_BYTES

    def message(self) -> dict:
        if self._message is None:
            self._message = orjson.loads(self.body)
        return self._message

    def settle(self, request_body: bytes | None, cost_of: Callable[[CacheEntry], float]) -> float:
        """Fills in cost and preview if still missing; returns the cost."""
        if self.cost is None:
            self.cost = cost_of(self)
        if self.preview is None and request_body is not None:
            self.preview = last_user_preview(request_body)
        return self.cost


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
    """One upstream call that identical requests wait on."""

    __slots__ = ("key", "done", "head", "chunks", "subscribers", "followers")

    def __init__(self, key: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.done: asyncio.Future[FlightResult] = loop.create_future()
        self.head: tuple[int, bytes] | None = None  # (status, upstream header block) once a stream started
        self.chunks: list[bytes] = []  # stream bytes so far, for subscribers that attach late
        self.subscribers: list[tuple[HttpProtocol, Request, bytes]] = []  # (client, request, its own headers)
        self.followers = 0

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
        if not self.done.done():
            self.done.set_result(result)


class ResponseCache:
    def __init__(self, max_bytes: int, ttl: float, scope: str = "global",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lru = LRU(max_bytes, clock=clock)
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
        self.cost_of: Callable[[CacheEntry], float] = lambda entry: 0.0  # set by the app (pricing)

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

    def get(self, key: bytes, request_body: bytes | None = None) -> CacheEntry | None:
        entry = self.lru.get(key)
        if entry is not None:
            cost = entry.settle(request_body, self.cost_of)
            entry.hits += 1
            entry.last_hit = time.time()
            entry.saved += cost
            self.saved_cost += cost
        return entry

    def put(self, entry: CacheEntry, ttl: float | None = None) -> bool:
        return self.lru.put(entry.key, entry, entry.size, self.ttl if ttl is None else ttl)

    def count_coalesced(self, entry: CacheEntry | None, request_body: bytes | None = None) -> None:
        self.coalesced += 1
        if entry is not None:
            cost = entry.settle(request_body, self.cost_of)
            self.saved_cost += cost
            entry.saved += cost

    def clear(self) -> int:
        count = len(self.lru)
        self.lru.clear()
        return count

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
            "entries": len(lru), "sizeBytes": lru.bytes_used, "maxSizeBytes": lru.max_bytes,
            "size": lru.bytes_used / (1024 * 1024), "maxSize": lru.max_bytes / (1024 * 1024),
            "evictions": lru.evictions, "expirations": lru.expirations, "savedCost": self.saved_cost,
        }

    def top_prompts(self, limit: int) -> list[dict[str, Any]]:
        entries = [value for _, value, _ in self.lru.items()]
        entries.sort(key=lambda e: (e.hits, e.last_hit), reverse=True)
        return [{"key": e.key.hex(), "model": e.model, "hits": e.hits, "savedCost": e.saved, "preview": e.preview or "",
                 "lastHit": _iso(e.last_hit) if e.last_hit else None} for e in entries[:limit]]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
