"""Microbenchmark: the cache key (scan + canonical form + xxh3-128), compiled vs pure, ~1 KB and ~100 KB bodies.

The bodies: benchmarks/payloads.py's 1 KB and 100 KB Claude Code requests, and a 100 KB request of CJK text.

    python benchmarks/bench_key.py [--repeat 5] [--number 2000]

Prints the median µs per key over the repeats, for each implementation and body: the general path's
`scan_request(body).key(context)`, compiled for each of its ways of finding string ends (key_c.scan_variants:
"map", the default; "map-sse2", the same map and walk built for baseline x86-64, on CPUs with AVX, BMI1 and
BMI2; and "skip"), and the compiled hit lane's key (key_c.plain_key: the same scan and key with no Python object
per member).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import payloads  # noqa: E402

from cco._fast import key_py  # noqa: E402

CONTEXT = b"claude-sonnet-4-5\x00anthropic\x00/v1/messages\x00global\x002023-06-01\x00"


def measure(module, body: bytes, number: int, repeat: int, variant: str | None = None, lane: bool = False) -> float:
    if variant is not None:
        module.use_scan_variant(variant)
    scan_request = module.scan_request
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        if lane:
            plain_key = module.plain_key
            for _ in range(number):
                plain_key(body, CONTEXT)
        else:
            for _ in range(number):
                scan_request(body).key(CONTEXT)
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


def cjk_request() -> bytes:
    """~100 KB of Japanese and Chinese text (three-byte UTF-8 sequences): what the UTF-8 check costs when nothing
    is ASCII."""
    text = "日本語のテキストと中文文本、そして説明。" * 1750
    return json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 1024,
                       "messages": [{"role": "user", "content": text}]}, ensure_ascii=False).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    columns = {"pure": (key_py, None, False)}
    try:
        from cco._fast import key_c

        # the default first; "skip" is what bodies the string-end map refuses (control bytes) cost
        columns.update({f"compiled ({variant})": (key_c, variant, False) for variant in key_c.scan_variants()})
        columns["compiled hit lane (map)"] = (key_c, "map", True)
    except ImportError:
        print("compiled extension not built: pure only")
    bodies = {"1k": payloads.build("1k"), "100k": payloads.build("100k"), "100k-cjk": cjk_request()}
    print("| body | bytes | " + " | ".join(f"{name} µs/key" for name in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for label, body in bodies.items():
        figures = [measure(module, body, args.number, args.repeat, variant, lane)
                   for module, variant, lane in columns.values()]
        print(f"| {label} | {len(body)} | " + " | ".join(f"{f:.2f}" for f in figures) + " |")


if __name__ == "__main__":
    main()
