"""Closed-loop HTTP/1.1 load generator (uvloop + httptools).

    python benchmarks/loadgen.py --port 9100 --path /v1/messages \
        -H 'content-type: application/json' --body-file body.json \
        --connections 32 --duration 10 [--distinct]

N keep-alive connections each send the same request, parse the whole
response (content-length or chunked, via httptools) and only then send the
next one, for D seconds.  Per-request latency is recorded (send -> last byte
of the response).  Prints one JSON object on stdout:

    {"tool": "loadgen", "requests": .., "rps": .., "latency_ms": {"p50": ..,
     "p90": .., "p99": .., "max": .., "mean": ..}, "errors": {...},
     "errors_total": .., "non_2xx": .., "status": {"200": ..}, ...}

--distinct overwrites the fixed-width placeholder (see payloads.py) in every
request body with <8 hex run id><2 digit worker><10 digit counter>, so each
body is unique but content-length does not change.  Only loopback targets are
accepted.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time

import httptools
import uvloop

DEFAULT_PLACEHOLDER = b"__cco_bench_nonce___"


class Load:
    """Shared state of one run: request template, counters, samples."""

    def __init__(self, host, port, method, path, headers, body,
                 distinct, placeholder, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        head = [f"{method} {path} HTTP/1.1", f"host: {host}:{port}"]
        head += headers
        head.append(f"content-length: {len(body)}")
        self.head = ("\r\n".join(head) + "\r\n\r\n").encode()
        self.distinct = distinct
        if distinct:
            idx = body.find(placeholder)
            if idx < 0:
                raise SystemExit("--distinct: placeholder not found in body")
            self.prefix, self.suffix = body[:idx], body[idx + len(placeholder):]
            self.width = len(placeholder)
            if self.width < 20:
                raise SystemExit("--distinct: placeholder must be >= 20 bytes")
            # 8 hex chars unique per run, so warm-up and measured runs (and
            # repeated runs against a caching proxy) never reuse a body.
            self.run_id = os.urandom(4).hex()
            self.pad = b"0" * (self.width - 20)
        else:
            self.request = self.head + body
        self.counter = 0
        self.running = True
        self.samples: list[int] = []  # latency, ns
        self.status: dict[int, int] = {}
        self.errors = {"connect": 0, "read": 0, "parse": 0, "timeout": 0}
        self.bytes_read = 0
        self.conns: set[Conn] = set()

    def request_parts(self) -> list[bytes]:
        if not self.distinct:
            return [self.request]
        self.counter += 1
        nonce = b"%s00%010d" % (self.run_id.encode(), self.counter) + self.pad
        return [self.head, self.prefix, nonce, self.suffix]


class Conn(asyncio.Protocol):
    def __init__(self, load: Load) -> None:
        self.load = load
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.sent_at = 0  # ns; 0 = no request in flight
        self.closed = asyncio.get_running_loop().create_future()

    # transport callbacks -------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.load.conns.add(self)
        self.send()

    def send(self) -> None:
        self.sent_at = time.perf_counter_ns()
        self.transport.writelines(self.load.request_parts())

    def data_received(self, data: bytes) -> None:
        self.load.bytes_read += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.load.errors["parse"] += 1
            self.sent_at = 0
            self.transport.abort()

    def connection_lost(self, exc) -> None:
        if self.sent_at:  # died with a request in flight
            self.load.errors["read"] += 1
            self.sent_at = 0
        self.load.conns.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)

    # httptools callbacks -------------------------------------------------
    def on_message_complete(self) -> None:
        load = self.load
        if not self.sent_at:
            return
        load.samples.append(time.perf_counter_ns() - self.sent_at)
        self.sent_at = 0
        code = self.parser.get_status_code()
        load.status[code] = load.status.get(code, 0) + 1
        if load.running and self.parser.should_keep_alive():
            self.send()
        else:
            self.transport.close()


async def worker(load: Load) -> None:
    """Keep one connection slot busy until the deadline (reconnecting)."""
    loop = asyncio.get_running_loop()
    while load.running:
        try:
            _, conn = await loop.create_connection(
                lambda: Conn(load), load.host, load.port)
        except OSError:
            load.errors["connect"] += 1
            await asyncio.sleep(0.05)
            continue
        await conn.closed


async def watchdog(load: Load) -> None:
    """Abort connections whose request has been in flight for too long."""
    limit = int(load.timeout * 1e9)
    while load.running:
        await asyncio.sleep(0.25)
        now = time.perf_counter_ns()
        for c in list(load.conns):
            if c.sent_at and now - c.sent_at > limit:
                load.errors["timeout"] += 1
                c.sent_at = 0
                c.transport.abort()


def percentile(sorted_ns: list[int], p: float) -> float:
    if not sorted_ns:
        return 0.0
    n = len(sorted_ns)  # nearest-rank percentile
    k = min(n - 1, max(0, int(round(p / 100 * n)) - 1))
    return sorted_ns[k] / 1e6


async def run(load: Load, connections: int, duration: float) -> dict:
    gc.disable()  # keep collector pauses out of the latency samples
    start = time.perf_counter()
    workers = [asyncio.ensure_future(worker(load)) for _ in range(connections)]
    dog = asyncio.ensure_future(watchdog(load))
    await asyncio.sleep(duration)
    load.running = False  # no new requests; in-flight ones may finish
    done, pending = await asyncio.wait(workers, timeout=min(load.timeout, 5))
    for c in list(load.conns):  # still waiting after the grace period
        if c.sent_at:
            load.errors["timeout"] += 1
            c.sent_at = 0
        c.transport.abort()
    for t in pending:
        t.cancel()
    dog.cancel()
    await asyncio.gather(*pending, dog, return_exceptions=True)
    elapsed = time.perf_counter() - start
    gc.enable()

    s = sorted(load.samples)
    n = len(s)
    non_2xx = sum(v for k, v in load.status.items() if not 200 <= k < 300)
    return {
        "tool": "loadgen",
        "connections": connections,
        "duration_s": round(elapsed, 3),
        "requests": n,
        "rps": round(n / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {
            "p50": round(percentile(s, 50), 3),
            "p90": round(percentile(s, 90), 3),
            "p99": round(percentile(s, 99), 3),
            "max": round(s[-1] / 1e6, 3) if s else 0.0,
            "mean": round(sum(s) / n / 1e6, 3) if n else 0.0,
        },
        "errors": load.errors,
        "errors_total": sum(load.errors.values()),
        "non_2xx": non_2xx,
        "status": {str(k): v for k, v in sorted(load.status.items())},
        "bytes_read": load.bytes_read,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--method", default="POST")
    ap.add_argument("--path", default="/v1/messages")
    ap.add_argument("-H", "--header", action="append", default=[],
                    help="'name: value' (repeatable)")
    ap.add_argument("--body-file", help="request body (default: empty)")
    ap.add_argument("--connections", "-c", type=int, default=32)
    ap.add_argument("--duration", "-d", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="per-request timeout in seconds")
    ap.add_argument("--distinct", action="store_true",
                    help="make every body unique (overwrite placeholder)")
    ap.add_argument("--placeholder", default=DEFAULT_PLACEHOLDER.decode())
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("loadgen only targets loopback addresses")
    if not 0 < args.duration <= 3600:
        ap.error("--duration must be in (0, 3600]")
    body = b""
    if args.body_file:
        with open(args.body_file, "rb") as f:
            body = f.read()
    load = Load(args.host, args.port, args.method, args.path, args.header,
                body, args.distinct, args.placeholder.encode(), args.timeout)
    result = uvloop.run(run(load, args.connections, args.duration))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
