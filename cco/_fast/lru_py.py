"""Byte-bounded LRU cache with per-entry TTL (pure-Python twin of lru_c.pyx; same behaviour, same tests).

Theory of operation: entries live in one OrderedDict, least-recent first. Each entry is charged
`size + len(key) + entry_overhead` bytes, where `size` is what the caller counts for the value and
`entry_overhead` what the cache itself spends on the entry (see ENTRY_OVERHEAD); `bytes_used` is the sum over
the stored entries and never exceeds `max_bytes`. The rules, shared with the compiled twin:

- An entry expires at `put time + ttl` (a ttl <= 0 never expires); it is expired once `clock() >= expires_at`.
- The clock is read exactly once per get, peek, put, __contains__, items and purge_expired call, and by the
  max_bytes setter only when it has to evict.
- get and peek drop an expired entry they meet and count it in `expirations`; a get hit makes the entry the
  most recent, nothing else changes recency. __contains__ and items only look.
- put of a key already present replaces it: the old entry's bytes are released first (not counted as anything).
  Then the least-recent entries are evicted until the new one fits; a victim that had already expired counts as
  an expiration, any other as an eviction. A put whose charge exceeds max_bytes is refused (False) and changes
  nothing, not even an existing entry under that key.
- Lowering max_bytes evicts the same way at once. pop and clear remove without counting; pop ignores expiry.
- Expired entries that nobody touches stay until evicted or purged: __len__ and bytes_used include them.

Values are opaque, so freeing one may run Python code (a finalizer) that uses this very cache, and so may any
allocation (the GC runs finalizers of unrelated garbage). Both twins therefore allocate before changing their
structure, release removed entries only once it is whole again, and walk a snapshot when they must allocate per
entry. Here an entry is one tuple (key, value, expires_at or 0.0, charged), so a snapshot of the OrderedDict's
values needs no allocation per entry.
"""
import time
from collections import OrderedDict
from operator import index as _index

# What one entry costs beyond its key bytes and the caller's `size`. Measured on CPython 3.11 x86-64 with 16- and
# 32-byte keys, one shared value, ttl > 0: tracemalloc over 1k..1.4M entries (requested sizes, plus the key's
# 33-byte bytes header) and the RSS growth of a fresh process holding 1M and 1.4M entries (pymalloc rounding and
# the dict's spare slots included; the worst point is just past a dict resize).
#   compiled: traced 138-173 B, RSS 159-189 B: dict slot + index 36-84, _Node with its GC header 80,
#             bytes header 33 (48 allocated); expiry and charge live in C fields.
#   pure:     traced 202-245 B, RSS 247-301 B: OrderedDict slot + its list node + fast-node slot 60-120,
#             (key, value, expires_at, charged) tuple 72 (80 allocated), float 24 (32), bytes header 33 (48).
# One constant for both twins, so they account (and evict) identically: the worst figure, rounded up to 16.
# It overstates the compiled cache's cost by ~115 B per entry, a few per cent of a typical (KB-sized) response.
ENTRY_OVERHEAD = 304


class LRU:
    __slots__ = ("_entries", "_clock", "_max", "_overhead", "_bytes", "_evictions", "_expirations")

    def __init__(self, max_bytes: int, entry_overhead: int = ENTRY_OVERHEAD, clock=time.monotonic) -> None:
        max_bytes = _index(max_bytes)
        entry_overhead = _index(entry_overhead)
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        if entry_overhead < 0:
            raise ValueError("entry_overhead must be >= 0")
        # config
        self._max = max_bytes
        self._overhead = entry_overhead
        self._clock = clock
        # state: key -> (key, value, expires_at or 0.0, charged), least recent first
        self._entries: OrderedDict[bytes, tuple] = OrderedDict()
        self._bytes = 0
        self._evictions = 0
        self._expirations = 0

    def _live(self, key):
        """The unexpired entry under `key`, or None; an expired one is dropped and counted."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires = entry[2]
        if expires and expires <= now:
            del self._entries[entry[0]]
            self._bytes -= entry[3]
            self._expirations += 1
            return None  # `entry` (and the value) is released on return
        return entry

    def get(self, key):
        entry = self._live(key)
        if entry is None:
            return None
        self._entries.move_to_end(entry[0])
        return entry[1]

    def peek(self, key):
        entry = self._live(key)
        return None if entry is None else entry[1]

    def put(self, key: bytes, value, size: int, ttl: float) -> bool:
        if type(key) is not bytes:
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        size = _index(size)
        if size < 0:
            raise ValueError("size must be >= 0")
        expiring = ttl > 0
        now = self._clock()
        charged = size + len(key) + self._overhead
        if charged > self._max:
            return False
        entry = (key, value, float(now + ttl) if expiring else 0.0, charged)  # allocate first
        dropped: list = []
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self._bytes -= old[3]
        self._evict(self._max - charged, now, dropped)
        # Each eviction step allocates an iterator, where a finalizer may have stored this key again.
        again = entries.pop(key, None)
        if again is not None:
            self._bytes -= again[3]
            dropped.append(again)
        entries[key] = entry
        self._bytes += charged
        return True  # `old`, `again` and `dropped` are released on return

    def pop(self, key):
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._bytes -= entry[3]
        return entry[1]

    def clear(self) -> None:
        fresh: OrderedDict[bytes, tuple] = OrderedDict()
        old = self._entries  # noqa: F841 (released on return, when the cache is already empty)
        self._entries = fresh
        self._bytes = 0

    def purge_expired(self) -> int:
        now = self._clock()
        entries = self._entries
        dead = [entry for entry in list(entries.values()) if entry[2] and entry[2] <= now]
        removed = 0
        for entry in dead:
            if entries.get(entry[0]) is entry:  # a finalizer run by an allocation above may have changed it
                del entries[entry[0]]
                self._bytes -= entry[3]
                removed += 1
        self._expirations += removed
        return removed

    def items(self) -> list:
        now = self._clock()
        return [entry[:3] for entry in list(self._entries.values()) if not entry[2] or entry[2] > now]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None:
            return False
        expires = entry[2]
        return not expires or expires > now

    @property
    def bytes_used(self) -> int:
        return self._bytes

    @property
    def max_bytes(self) -> int:
        return self._max

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        value = _index(value)
        if value < 0:
            raise ValueError("max_bytes must be >= 0")
        self._max = value
        if self._bytes > value:
            now = self._clock()
            dropped: list = []
            self._evict(value, now, dropped)

    @property
    def evictions(self) -> int:
        return self._evictions

    @property
    def expirations(self) -> int:
        return self._expirations

    def _evict(self, limit: int, now, dropped: list) -> None:
        """Moves least-recent entries into `dropped` until bytes_used <= limit; the caller releases them."""
        entries = self._entries
        while self._bytes > limit and entries:
            entry = entries.pop(next(iter(entries)))
            dropped.append(entry)
            self._bytes -= entry[3]
            if entry[2] and entry[2] <= now:
                self._expirations += 1
            else:
                self._evictions += 1
