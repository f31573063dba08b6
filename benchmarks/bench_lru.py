"""Microbenchmark of the cache LRU: compiled (lru_c) vs pure (lru_py), nanoseconds per operation.

    python benchmarks/bench_lru.py [--entries 100000] [--repeat 5]

Each row runs one operation over a list of distinct 16-byte keys (xxh3-128 digests in the real cache) with the
default clock (time.monotonic), and reports the best of --repeat runs, loop overhead included (the `loop` row
shows what that is). Rows:
  get hit            every key present, unexpired; each hit moves its entry to the most-recent end
  get miss           keys never stored
  peek hit           as get hit, recency unchanged
  put evict          the cache is full of equal-sized entries, so every put of a new key evicts exactly one
  put replace        every key is already present; the old entry is released and the new one becomes most recent
Numbers are for comparing the twins and spotting regressions, never a test assertion.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cco._fast import lru_py  # noqa: E402

try:
    from cco._fast import lru_c  # noqa: E402
except ImportError:  # not built: the pure twin only
    lru_c = None

SIZE = 1000  # bytes the caller counts per value
TTL = 3600.0


def make_keys(n: int, salt: bytes) -> list[bytes]:
    return [hashlib.blake2b(salt + i.to_bytes(8, "little"), digest_size=16).digest() for i in range(n)]


def best(fn, repeat: int, n: int) -> float:
    """Best ns per operation over `repeat` runs of fn (which performs n operations)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return min(times) / n


def bench(mod, entries: int, repeat: int) -> dict[str, float]:
    keys = make_keys(entries, b"a")
    fresh = [make_keys(entries, b"b%d" % r) for r in range(repeat)]
    value = b"x" * 64
    full = entries * (SIZE + 16 + mod.ENTRY_OVERHEAD)

    cache = mod.LRU(full)
    for key in keys:
        cache.put(key, value, SIZE, TTL)
    assert len(cache) == entries
    get, peek, put = cache.get, cache.peek, cache.put

    def loop():
        for key in keys:
            pass

    def get_hit():
        for key in keys:
            get(key)

    def get_miss():
        for key in fresh[0]:
            get(key)

    def peek_hit():
        for key in keys:
            peek(key)

    def put_replace():
        for key in keys:
            put(key, value, SIZE, TTL)

    rounds = iter(fresh)

    def put_evict():
        for key in next(rounds):
            put(key, value, SIZE, TTL)

    results = {
        "loop": best(loop, repeat, entries),
        "get hit": best(get_hit, repeat, entries),
        "get miss": best(get_miss, repeat, entries),
        "peek hit": best(peek_hit, repeat, entries),
        "put replace": best(put_replace, repeat, entries),
    }
    evictions = cache.evictions
    results["put evict"] = best(put_evict, repeat, entries)
    assert cache.evictions - evictions == repeat * entries and len(cache) == entries
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    impls = [("pure", lru_py)] + ([("compiled", lru_c)] if lru_c is not None else [])
    results = {name: bench(mod, args.entries, args.repeat) for name, mod in impls}
    start = time.perf_counter_ns()
    for _ in range(args.entries):
        time.monotonic()
    clock_ns = (time.perf_counter_ns() - start) / args.entries

    print(f"Python {sys.version.split()[0]}, {args.entries} entries, best of {args.repeat}; ns per operation "
          f"(time.monotonic() alone: {clock_ns:.0f} ns)\n")
    header = "| operation | " + " | ".join(name for name, _ in impls)
    if lru_c is not None:
        header += " | pure / compiled"
    print(header + " |")
    print("|---" * (len(impls) + 1 + (lru_c is not None)) + "|")
    for op in results["pure"]:
        row = f"| {op} | " + " | ".join(f"{results[name][op]:.0f}" for name, _ in impls)
        if lru_c is not None:
            row += f" | {results['pure'][op] / results['compiled'][op]:.1f}x"
        print(row + " |")


if __name__ == "__main__":
    main()
