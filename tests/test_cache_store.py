"""ResponseCache's event-stream forms (`streams`): kept within the byte bound, dropped with the entry they derive
from."""

from __future__ import annotations

import json

from cco.cache.message import synthesize_sse
from cco.cache.store import STREAM_SHARE, CacheEntry, ResponseCache

MESSAGE = {"id": "msg_store", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
           "content": [{"type": "text", "text": "kept"}], "stop_reason": "end_turn", "stop_sequence": None,
           "usage": {"input_tokens": 3, "output_tokens": 1}}


def entry(key: bytes, text: str = "kept") -> CacheEntry:
    message = dict(MESSAGE, content=[{"type": "text", "text": text}])
    return CacheEntry(key, json.dumps(message).encode(), "claude-sonnet-4-5", "/v1/messages")


def test_the_bound_is_shared_and_reported_whole() -> None:
    cache = ResponseCache(1_000_000, 60)
    assert cache.streams.max_bytes == 1_000_000 // STREAM_SHARE
    assert cache.max_bytes == cache.lru.max_bytes + cache.streams.max_bytes == 1_000_000
    stats = cache.stats()
    assert stats["maxSizeBytes"] == 1_000_000


def test_stream_form_is_synthesized_once_and_counted() -> None:
    cache = ResponseCache(1_000_000, 60)
    stored = entry(b"k" * 16)
    assert cache.put(stored)
    before = cache.bytes_used
    first = cache.stream_body(stored)
    assert first == synthesize_sse(stored.message())
    assert cache.stream_body(stored) is first  # kept: the second stream hit copies bytes
    assert cache.bytes_used > before + len(first) and cache.stats()["sizeBytes"] == cache.bytes_used


def test_stream_form_goes_with_a_new_answer_and_with_clear() -> None:
    cache = ResponseCache(1_000_000, 60)
    key = b"k" * 16
    cache.put(entry(key, "old"))
    old = cache.stream_body(entry(key, "old"))
    cache.put(entry(key, "new"))  # refreshed answer under the same key
    assert cache.streams.get(key) is None
    assert cache.stream_body(entry(key, "new")) == synthesize_sse(entry(key, "new").message()) != old
    cache.clear()
    assert cache.streams.get(key) is None and cache.bytes_used == 0


def test_stream_forms_stay_within_their_share() -> None:
    cache = ResponseCache(200_000, 60)
    for i in range(200):
        stored = entry(b"%016d" % i, "x" * 2000)
        cache.put(stored)
        cache.stream_body(stored)
    assert cache.streams.bytes_used <= cache.streams.max_bytes
    assert cache.bytes_used <= cache.max_bytes == 200_000


def test_an_answer_the_cache_does_not_hold_leaves_no_stream_form() -> None:
    """A fallback's answer is served but never stored: its stream must not be kept under the requested key,
    least of all where the cache holds another answer."""
    cache = ResponseCache(1_000_000, 60)
    key = b"k" * 16
    unstored = entry(key, "fallback")
    assert cache.stream_body(unstored) == synthesize_sse(unstored.message())
    assert cache.streams.get(key) is None
    cache.put(entry(key, "stored"))
    cache.stream_body(entry(key, "fallback"))  # same key, another answer than the stored one
    assert cache.streams.get(key) is None
