from collections.abc import Callable

ENTRY_OVERHEAD: int
"""Bytes charged per entry on top of len(key) + size: what the cache itself spends on one entry (measured)."""

class LRU:
    """Byte-bounded LRU cache with per-entry TTL; bytes_used never exceeds max_bytes (rules: lru_py.py)."""

    def __init__(
        self, max_bytes: int, entry_overhead: int = ..., clock: Callable[[], float] = ...
    ) -> None: ...
    def get(self, key: bytes) -> object | None:
        """The value, or None when absent or expired (an expired entry is dropped and counted); a hit becomes most
        recent."""
    def peek(self, key: bytes) -> object | None:
        """Like get, without changing recency."""
    def put(self, key: bytes, value: object, size: int, ttl: float) -> bool:
        """Stores value charged size + len(key) + entry_overhead, replacing any entry under key and evicting the
        least recent until it fits; ttl <= 0 never expires. False, and nothing changed, when it cannot fit at all."""
    def pop(self, key: bytes) -> object | None:
        """Removes and returns the value (expired or not), or None; not counted."""
    def clear(self) -> None:
        """Removes every entry; not counted."""
    def purge_expired(self) -> int:
        """Removes the expired entries, counts them as expirations and returns how many."""
    def items(self) -> list[tuple[bytes, object, float]]:
        """(key, value, expires_at or 0.0) of the unexpired entries, least recent first; recency unchanged."""
    def __len__(self) -> int:
        """Stored entries, including expired ones not yet removed."""
    def __contains__(self, key: object) -> bool:
        """Whether an unexpired entry is stored under key; recency unchanged, nothing removed."""
    @property
    def bytes_used(self) -> int: ...
    @property
    def max_bytes(self) -> int: ...
    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        """Lowering the bound evicts the least recent entries at once."""
    @property
    def evictions(self) -> int: ...
    @property
    def expirations(self) -> int: ...
