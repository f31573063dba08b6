"""The byte-bounded TTL LRU, compiled and pure: accounting, recency, expiry on a fake clock, and twin parity."""

import os
import random
import subprocess
import sys

import pytest

from tests.conftest import ROOT, fast_module

OVERHEAD = 10  # small explicit overhead keeps the arithmetic readable; the default is tested on its own


class FakeClock:
    """A clock the test moves by hand; counts how often the cache reads it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


@pytest.fixture
def lru(impl):
    return fast_module(impl, "lru")


@pytest.fixture
def clock():
    return FakeClock()


def charge(key: bytes, size: int) -> int:
    return size + len(key) + OVERHEAD


def keys_of(cache) -> list[bytes]:
    return [key for key, _, _ in cache.items()]


# Byte accounting


def test_default_overhead_is_one_constant_for_both_twins(lru):
    assert fast_module("compiled", "lru").ENTRY_OVERHEAD == fast_module("pure", "lru").ENTRY_OVERHEAD
    assert lru.ENTRY_OVERHEAD > 100  # a dict slot, a node or tuple, a bytes header: never a handful of bytes
    cache = lru.LRU(10_000)
    assert cache.put(b"key", "v", 5, 0)
    assert cache.bytes_used == 5 + 3 + lru.ENTRY_OVERHEAD


def test_bytes_used_is_exact_through_puts_replacements_pops_and_clear(lru, clock):
    cache = lru.LRU(10_000, OVERHEAD, clock)
    assert cache.bytes_used == 0 and len(cache) == 0
    assert cache.put(b"a", 1, 100, 0)
    assert cache.put(b"bb", 2, 200, 60)
    assert cache.bytes_used == charge(b"a", 100) + charge(b"bb", 200)
    assert cache.put(b"a", 3, 7, 0)  # replaced: the old 100 bytes are released
    assert cache.bytes_used == charge(b"a", 7) + charge(b"bb", 200)
    assert len(cache) == 2
    assert cache.pop(b"bb") == 2
    assert cache.bytes_used == charge(b"a", 7)
    assert cache.pop(b"bb") is None
    assert cache.put(b"ccc", 4, 0, 0)
    cache.clear()
    assert cache.bytes_used == 0 and len(cache) == 0 and cache.items() == []
    assert cache.evictions == 0 and cache.expirations == 0
    assert cache.max_bytes == 10_000


def test_replacing_a_key_releases_its_bytes_before_making_room(lru, clock):
    cache = lru.LRU(charge(b"k", 90), OVERHEAD, clock)
    assert cache.put(b"k", "old", 60, 0)
    assert cache.put(b"k", "new", 90, 0)  # fits only because the old entry's bytes went first
    assert cache.get(b"k") == "new"
    assert cache.bytes_used == cache.max_bytes
    assert cache.evictions == 0 and cache.expirations == 0  # a replacement is neither


def test_replacement_becomes_most_recent(lru, clock):
    cache = lru.LRU(3 * charge(b"a", 10), OVERHEAD, clock)
    for key in (b"a", b"b", b"c"):
        cache.put(key, key, 10, 0)
    cache.put(b"a", b"a2", 10, 0)
    assert keys_of(cache) == [b"b", b"c", b"a"]
    cache.put(b"d", b"d", 10, 0)
    assert keys_of(cache) == [b"c", b"a", b"d"]


def test_values_are_opaque_objects(lru, clock):
    cache = lru.LRU(10_000, OVERHEAD, clock)
    value = object()
    assert cache.put(b"x", value, 1, 0) is True
    assert cache.get(b"x") is value
    assert cache.put(b"none", None, 1, 0)
    assert cache.get(b"none") is None and b"none" in cache
    assert cache.put(key=b"kw", value=[1], size=2, ttl=0.0)  # the documented names work as keywords
    assert cache.peek(b"kw") == [1]


def test_keyword_constructor(lru, clock):
    cache = lru.LRU(max_bytes=500, entry_overhead=0, clock=clock)
    cache.put(b"ab", None, 3, 0)
    assert cache.bytes_used == 5 and cache.max_bytes == 500


# Recency and eviction


def test_evicts_least_recent_first(lru, clock):
    cache = lru.LRU(3 * charge(b"a", 10), OVERHEAD, clock)
    for key in (b"a", b"b", b"c"):
        assert cache.put(key, key.upper(), 10, 0)
    assert cache.put(b"d", b"D", 10, 0)
    assert keys_of(cache) == [b"b", b"c", b"d"]
    assert cache.get(b"a") is None
    assert cache.evictions == 1 and cache.expirations == 0
    assert cache.bytes_used == 3 * charge(b"a", 10)


def test_put_evicts_as_many_as_needed_and_no_more(lru, clock):
    cache = lru.LRU(4 * charge(b"a", 10), OVERHEAD, clock)
    for key in (b"a", b"b", b"c", b"d"):
        cache.put(key, key, 10, 0)
    assert cache.put(b"e", b"e", 2 * charge(b"a", 10) - len(b"e") - OVERHEAD, 0)  # as large as two entries
    assert keys_of(cache) == [b"c", b"d", b"e"]
    assert cache.evictions == 2
    assert cache.bytes_used == cache.max_bytes


def test_get_refreshes_recency(lru, clock):
    cache = lru.LRU(3 * charge(b"a", 10), OVERHEAD, clock)
    for key in (b"a", b"b", b"c"):
        cache.put(key, key, 10, 0)
    assert cache.get(b"a") == b"a"
    assert keys_of(cache) == [b"b", b"c", b"a"]
    cache.put(b"d", b"d", 10, 0)
    assert keys_of(cache) == [b"c", b"a", b"d"]
    assert cache.get(b"d") == b"d"  # already most recent: no change
    assert keys_of(cache) == [b"c", b"a", b"d"]


def test_peek_contains_and_items_do_not_refresh(lru, clock):
    cache = lru.LRU(3 * charge(b"a", 10), OVERHEAD, clock)
    for key in (b"a", b"b", b"c"):
        cache.put(key, key, 10, 0)
    assert cache.peek(b"a") == b"a"
    assert b"a" in cache
    assert cache.items() == [(b"a", b"a", 0.0), (b"b", b"b", 0.0), (b"c", b"c", 0.0)]
    cache.put(b"d", b"d", 10, 0)
    assert b"a" not in cache
    assert keys_of(cache) == [b"b", b"c", b"d"]


def test_miss_and_pop_do_not_count(lru, clock):
    cache = lru.LRU(1000, OVERHEAD, clock)
    assert cache.get(b"nope") is None and cache.peek(b"nope") is None and b"nope" not in cache
    cache.put(b"a", 1, 1, 0)
    assert cache.pop(b"a") == 1
    assert cache.evictions == 0 and cache.expirations == 0


def test_oversize_put_is_refused_and_changes_nothing(lru, clock):
    cache = lru.LRU(100, OVERHEAD, clock)
    assert cache.put(b"k", "small", 5, 0)
    assert cache.put(b"other", "x", 5, 0)
    before = cache.items(), cache.bytes_used
    assert cache.put(b"k", "huge", 100, 0) is False  # 100 + 1 + 10 > 100
    assert cache.put(b"z", "huge", 10**15, 0) is False
    assert (cache.items(), cache.bytes_used) == before
    assert cache.get(b"k") == "small"
    assert cache.evictions == 0
    assert cache.put(b"k", "exact", 100 - 1 - OVERHEAD, 0)  # exactly max_bytes fits, by evicting the rest
    assert keys_of(cache) == [b"k"] and cache.bytes_used == 100 and cache.evictions == 1


def test_zero_max_bytes_stores_nothing(lru, clock):
    cache = lru.LRU(0, 0, clock)
    assert cache.put(b"", None, 0, 0)  # charged 0 <= 0
    assert cache.put(b"a", None, 0, 0) is False
    assert len(cache) == 1 and cache.bytes_used == 0


def test_lowering_max_bytes_evicts_at_once(lru, clock):
    cache = lru.LRU(10 * charge(b"a", 10), OVERHEAD, clock)
    for key in (b"a", b"b", b"c", b"d"):
        cache.put(key, key, 10, 0)
    cache.get(b"a")
    cache.max_bytes = 2 * charge(b"a", 10) + 5
    assert cache.max_bytes == 2 * charge(b"a", 10) + 5
    assert keys_of(cache) == [b"d", b"a"]
    assert cache.evictions == 2 and cache.bytes_used == 2 * charge(b"a", 10)
    cache.max_bytes = 10**9  # raising never evicts
    assert keys_of(cache) == [b"d", b"a"]
    cache.max_bytes = 0
    assert len(cache) == 0 and cache.bytes_used == 0 and cache.evictions == 4


# Expiry on an injected clock


def test_get_respects_ttl_and_counts_expirations(lru, clock):
    cache = lru.LRU(10_000, OVERHEAD, clock)
    cache.put(b"k", "v", 10, 30)
    clock.now += 29.999
    assert cache.get(b"k") == "v"
    clock.now = 1000.0 + 30  # expired at exactly put time + ttl
    assert cache.get(b"k") is None
    assert cache.expirations == 1 and len(cache) == 0 and cache.bytes_used == 0
    assert cache.get(b"k") is None
    assert cache.expirations == 1  # counted once: it is gone


def test_peek_drops_and_counts_an_expired_entry(lru, clock):
    cache = lru.LRU(10_000, OVERHEAD, clock)
    cache.put(b"k", "v", 10, 5.5)
    assert cache.peek(b"k") == "v"
    clock.now += 6
    assert cache.peek(b"k") is None
    assert cache.expirations == 1 and len(cache) == 0 and cache.bytes_used == 0


def test_contains_and_items_hide_expired_entries_without_removing_them(lru, clock):
    cache = lru.LRU(10_000, OVERHEAD, clock)
    cache.put(b"short", 1, 10, 10)
    cache.put(b"long", 2, 10, 100)
    cache.put(b"forever", 3, 10, 0)
    assert cache.items() == [(b"short", 1, 1010.0), (b"long", 2, 1100.0), (b"forever", 3, 0.0)]
    clock.now += 50
    assert b"short" not in cache and b"long" in cache and b"forever" in cache
    assert cache.items() == [(b"long", 2, 1100.0), (b"forever", 3, 0.0)]
    assert len(cache) == 3 and cache.expirations == 0  # only looked at
    assert cache.bytes_used == charge(b"short", 10) + charge(b"long", 10) + charge(b"forever", 10)


def test_purge_expired(lru, clock):
    cache = lru.LRU(10_000, OVERHEAD, clock)
    for i, ttl in enumerate([5, 0, 15, 5, -1, 25]):
        cache.put(b"k%d" % i, i, i, ttl)
    assert cache.purge_expired() == 0
    clock.now += 15
    assert cache.purge_expired() == 3
    assert keys_of(cache) == [b"k1", b"k4", b"k5"]
    assert cache.expirations == 3 and cache.evictions == 0
    assert cache.bytes_used == charge(b"k1", 1) + charge(b"k4", 4) + charge(b"k5", 5)
    assert cache.purge_expired() == 0


def test_ttl_zero_or_negative_never_expires(lru, clock):
    cache = lru.LRU(10_000, OVERHEAD, clock)
    cache.put(b"zero", 0, 1, 0)
    cache.put(b"negative", 1, 1, -5.0)
    clock.now += 1e9
    assert cache.get(b"zero") == 0 and cache.peek(b"negative") == 1
    assert b"zero" in cache and cache.purge_expired() == 0
    assert [exp for _, _, exp in cache.items()] == [0.0, 0.0]


def test_expired_entries_met_while_evicting_count_as_expirations(lru, clock):
    cache = lru.LRU(3 * charge(b"a", 10), OVERHEAD, clock)
    cache.put(b"a", 1, 10, 5)
    cache.put(b"b", 2, 10, 0)
    cache.put(b"c", 3, 10, 5)
    clock.now += 5
    cache.put(b"d", 4, 2 * 10 + len(b"a") + OVERHEAD, 0)  # needs two entries' room: a (expired), b (live)
    assert keys_of(cache) == [b"d"]  # c is expired, so hidden, but still stored
    assert len(cache) == 2
    assert cache.expirations == 1 and cache.evictions == 1
    cache.max_bytes = cache.bytes_used - charge(b"c", 10) - 1  # c goes first, as an expiration, then d
    assert cache.expirations == 2 and cache.evictions == 2 and len(cache) == 0


def test_replacing_an_expired_entry_is_not_counted(lru, clock):
    cache = lru.LRU(10_000, OVERHEAD, clock)
    cache.put(b"k", 1, 10, 1)
    clock.now += 2
    cache.put(b"k", 2, 20, 1)
    assert cache.get(b"k") == 2 and cache.expirations == 0 and cache.bytes_used == charge(b"k", 20)


def test_pop_ignores_expiry(lru, clock):
    cache = lru.LRU(10_000, OVERHEAD, clock)
    cache.put(b"k", "v", 10, 1)
    clock.now += 2
    assert cache.pop(b"k") == "v"
    assert cache.expirations == 0 and cache.bytes_used == 0


def test_clock_is_read_once_per_call(lru, clock):
    cache = lru.LRU(5 * charge(b"k0", 10), OVERHEAD, clock)
    for i in range(5):
        cache.put(b"k%d" % i, i, 10, 100)
    assert clock.calls == 5
    calls = [
        lambda: cache.get(b"k4"),  # hit
        lambda: cache.get(b"nope"),  # miss
        lambda: cache.peek(b"k3"),
        lambda: b"k2" in cache,
        lambda: cache.items(),
        lambda: cache.purge_expired(),
        lambda: cache.put(b"big", 0, 4 * charge(b"k0", 10) - 3 - OVERHEAD, 100),  # evicts four at once
        lambda: cache.put(b"huge", 0, 10**6, 100),  # refused
    ]
    for call in calls:
        before = clock.calls
        call()
        assert clock.calls == before + 1
    assert cache.evictions == 4
    for call in (lambda: len(cache), lambda: cache.pop(b"big"), cache.clear, lambda: cache.bytes_used):
        before = clock.calls
        call()
        assert clock.calls == before
    cache.put(b"x", 0, 10, 100)
    before = clock.calls
    cache.max_bytes = 10**6  # nothing to evict: no clock
    assert clock.calls == before
    cache.max_bytes = 0
    assert clock.calls == before + 1


def test_invalid_arguments(lru, clock):
    cache = lru.LRU(1000, OVERHEAD, clock)
    with pytest.raises(TypeError):
        cache.put("str key", 1, 1, 0)
    with pytest.raises(TypeError):
        cache.put(bytearray(b"k"), 1, 1, 0)
    with pytest.raises(ValueError):
        cache.put(b"k", 1, -1, 0)
    with pytest.raises(TypeError):
        cache.put(b"k", 1, 1.5, 0)
    with pytest.raises(ValueError):
        lru.LRU(-1)
    with pytest.raises(ValueError):
        lru.LRU(10, -1)
    with pytest.raises(ValueError):
        cache.max_bytes = -1
    with pytest.raises(TypeError):
        cache.get([b"unhashable"])
    assert clock.calls == 1  # the failed puts did not read the clock; the failed get did, before the lookup
    assert cache.get("str key") is None and "str key" not in cache and cache.pop(1) is None
    assert len(cache) == 0 and cache.bytes_used == 0 and cache.max_bytes == 1000
    for attr in ("bytes_used", "evictions", "expirations"):
        with pytest.raises(AttributeError):
            setattr(cache, attr, 1)


def test_finalizers_may_reenter_the_cache(lru, clock):
    """A value whose finalizer uses the cache while being removed must find it consistent (and must not crash the
    compiled twin, whose list links are borrowed pointers)."""
    cache = lru.LRU(6 * charge(b"k00", 10), OVERHEAD, clock)
    finalized, errors = [], []

    class Value:
        def __init__(self, size: int) -> None:
            self.size = size

        def __del__(self) -> None:
            try:  # an exception here would only be an unraisable warning: record it instead
                n = len(finalized)
                finalized.append(n)
                cache.get(b"k%02d" % (n % 60))
                cache.put(b"r%d" % (n % 5), ("plain", 1), 1, 0)
                assert (b"k01" in cache) in (True, False)
                cache.items()
                if n % 4 == 0:
                    cache.purge_expired()
            except Exception as exc:
                errors.append(exc)

    def assert_consistent() -> None:
        now, clock.now = clock.now, float("-inf")  # nothing is expired at -inf: items() shows every entry
        live = cache.items()
        clock.now = now
        assert len(live) == len(cache)
        sizes = [value.size if isinstance(value, Value) else value[1] for _, value, _ in live]
        assert cache.bytes_used == sum(len(key) + size + OVERHEAD for (key, _, _), size in zip(live, sizes))
        assert cache.bytes_used <= cache.max_bytes

    for i in range(60):
        cache.put(b"k%02d" % i, Value(10), 10, 0 if i % 3 else 1)
        assert_consistent()
        if i % 7 == 0:
            clock.now += 1
            cache.purge_expired()
            assert_consistent()
        if i % 11 == 0:
            cache.pop(b"k%02d" % (i - 1))
            assert_consistent()
        if i % 13 == 0:
            cache.max_bytes = cache.max_bytes - 1
            assert_consistent()
    cache.clear()
    assert_consistent()
    cache.put(b"last", Value(10), 10, 0)
    cache.max_bytes = 0  # releases everything; the finalizers' puts no longer fit
    assert_consistent()
    assert len(cache) == 0 and cache.bytes_used == 0
    assert len(finalized) == 61 and errors == []


def test_selector_exports_lru():
    import cco._fast as fast

    assert fast.LRU is fast_module(fast.IMPL, "lru").LRU


# Parity


def test_twins_agree_on_random_operation_sequences():
    """Both implementations, driven by the same random operations on one shared fake clock, return the same
    results and keep the same counters at every step."""
    c, py = fast_module("compiled", "lru"), fast_module("pure", "lru")
    for seed in range(8):
        rng = random.Random(seed)
        now = [5000.0]
        reads = {"compiled": 0, "pure": 0}

        def clock_for(name):
            def read():
                reads[name] += 1
                return now[0]
            return read

        max_bytes = rng.choice([0, 150, 400, 1500, 6000])
        overhead = rng.choice([0, 16, OVERHEAD, c.ENTRY_OVERHEAD])
        twins = (c.LRU(max_bytes, overhead, clock_for("compiled")), py.LRU(max_bytes, overhead, clock_for("pure")))
        keys = [b"k%d" % i * rng.randint(1, 3) for i in range(rng.randint(3, 25))]
        for step in range(2500):
            op = rng.random()
            key = rng.choice(keys)
            if op < 0.30:
                args = (key, ("value", step), rng.choice([0, 1, 10, 50, 200, 1000]), rng.choice([-1, 0, 1, 5, 30]))
                results = [t.put(*args) for t in twins]
            elif op < 0.50:
                results = [t.get(key) for t in twins]
            elif op < 0.58:
                results = [t.peek(key) for t in twins]
            elif op < 0.64:
                results = [key in t for t in twins]
            elif op < 0.70:
                results = [t.pop(key) for t in twins]
            elif op < 0.75:
                results = [t.items() for t in twins]
            elif op < 0.78:
                results = [t.purge_expired() for t in twins]
            elif op < 0.81:
                new_max = rng.choice([0, 100, 300, 1000, 3000, 8000])
                for t in twins:
                    t.max_bytes = new_max
                results = [None, None]
            elif op < 0.82:
                results = [t.clear() for t in twins]
            else:
                now[0] += rng.choice([0.0, 0.5, 1.0, 3.0, 10.0])
                results = [None, None]
            assert results[0] == results[1], (seed, step, op)
            state = [(len(t), t.bytes_used, t.max_bytes, t.evictions, t.expirations) for t in twins]
            assert state[0] == state[1], (seed, step, op)
            assert state[0][1] <= state[0][2]
            assert reads["compiled"] == reads["pure"]
        assert twins[0].items() == twins[1].items()
        assert twins[0].evictions + twins[0].expirations > 0 or max_bytes == 0


def test_selector_falls_back_to_pure_for_every_module_when_lru_c_is_missing():
    code = ("import sys; sys.modules['cco._fast.lru_c'] = None\n"  # an import of it now raises ImportError
            "import cco._fast as f, cco._fast.sse_py as sse_py, cco._fast.lru_py as lru_py\n"
            "assert f.IMPL == 'pure' and f.LRU is lru_py.LRU and f.SseSplitter is sse_py.SseSplitter\n")
    env = {k: v for k, v in os.environ.items() if k != "CCO_PURE_PYTHON"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)
