"""CCO proxy benchmark: the one command.

    python benchmarks/run.py [--duration 10] [--connections 32] [--rows ...]
                             [--proxy-cmd cco-proxy] [--direct-only] [--pure]

Starts the mock upstream and the proxy on free loopback ports (proxy pinned
to one CPU, mock + load generator to another when there are >= 2), waits for
`GET /health`, runs each row (2 s warm-up, then a measured run), prints a
markdown table and writes benchmarks/results/<UTC timestamp>.json.  See
benchmarks/README.md for what the rows and columns mean.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import payloads  # noqa: E402
import wrkrun  # noqa: E402
from procutil import (Procs, free_port, http_request, peak_rss_mb,  # noqa
                      resolve_cmd, tail, thread_cpu_seconds, tree_cpu_seconds, tree_pids,
                      wait_ready)

HEADERS = ["content-type: application/json", "x-api-key: sk-bench",
           "anthropic-version: 2023-06-01"]
PATH = "/v1/messages"
# The OS name of the proxy's analytics writer thread (cco.analytics.writer.OS_THREAD_NAME; the harness does not
# import the proxy, which another command may start).
ANALYTICS_THREAD = "cco-analytics"

# name: (target, payload, distinct bodies?, baseline row for the ratios)
ROWS = {
    "direct-1k": ("direct", "1k", True, None),
    "proxy-1k": ("proxy", "1k", True, "direct-1k"),
    "direct-100k": ("direct", "100k", True, None),
    "proxy-100k": ("proxy", "100k", True, "direct-100k"),
    "direct-stream-1k": ("direct", "1k-stream", True, None),
    "proxy-stream-1k": ("proxy", "1k-stream", True, "direct-stream-1k"),
    "hit-1k": ("proxy", "1k", False, "direct-1k"),
    "hit-100k": ("proxy", "100k", False, "direct-100k"),
    "hit-stream-1k": ("proxy", "1k-stream", False, "direct-stream-1k"),
}


# --------------------------------------------------------------------------
# Load runs
# --------------------------------------------------------------------------
class Bench:
    def __init__(self, args, procs: Procs, tmp: Path, cpus) -> None:
        self.args, self.procs, self.tmp = args, procs, tmp
        self.proxy_cpu, self.load_cpu = cpus
        self.wrk = None if args.pure else shutil.which("wrk")
        self.tool = "wrk" if self.wrk else "loadgen"
        self.bodies: dict[str, Path] = {}
        for name in ("1k", "1k-stream", "100k"):
            p = tmp / f"body-{name}.json"
            p.write_bytes(payloads.build(name))
            self.bodies[name] = p
        self.mock = self.proxy = None
        self.mock_port = self.proxy_port = None

    def start_mock(self) -> None:
        self.mock_port = free_port()
        log = self.tmp / "mock.log"
        with log.open("wb") as f:
            self.mock = self.procs.start(
                [sys.executable, str(HERE / "mock_upstream.py"),
                 "--port", str(self.mock_port)], self.load_cpu,
                stdout=f, stderr=subprocess.STDOUT)
        wait_ready("mock upstream", self.mock, self.mock_port,
                   "/__mock_status", log, 15)

    def start_proxy(self) -> None:
        cfg, data = self.tmp / "config", self.tmp / "data"
        cfg.mkdir()
        data.mkdir()
        (cfg / "model-routing.json").write_text(json.dumps({
            "routes": [{"pattern": "^claude-", "provider": "anthropic",
                        "endpoint": f"http://127.0.0.1:{self.mock_port}",
                        "max_retries": 0}], "fallback_chain": {}}, indent=2))
        (cfg / "model-pricing.json").write_text(json.dumps({"pricing": {
            "claude-sonnet-4-5": {"input": 3.0, "output": 15.0,
                                  "cache_write": 3.75, "cache_read": 0.3}}}))
        (cfg / "model-overrides.toml").write_text(
            "[overrides]\nenabled = false\nrules = []\n")
        self.proxy_port = free_port()
        cmd = self.args.proxy_argv + [
            "--host", "127.0.0.1", "--port", str(self.proxy_port),
            "--config-dir", str(cfg), "--data-dir", str(data),
            "--log-level", "warning"]
        print("proxy:", shlex.join(cmd))
        self.proxy_log = self.tmp / "proxy.log"
        with self.proxy_log.open("wb") as f:
            self.proxy = self.procs.start(cmd, self.proxy_cpu, stdout=f,
                                          stderr=subprocess.STDOUT)
        wait_ready("proxy", self.proxy, self.proxy_port, "/health",
                   self.proxy_log, self.args.startup_timeout)

    def mock_requests(self) -> int:
        status = http_request(self.mock_port, "GET", "/__mock_status")
        return json.loads(status[2])["requests"]

    def probe_cache_hit(self, payload: str) -> str | None:
        """None if a repeated identical request is answered with
        `x-cco-cache: hit`, else a note saying why not."""
        body = self.bodies[payload].read_bytes()
        for attempt in range(4):
            status, hdrs, _ = http_request(self.proxy_port, "POST", PATH,
                                           body, HEADERS)
            if status != 200:
                return f"probe request got HTTP {status}"
            if attempt and hdrs.get("x-cco-cache", "").lower() == "hit":
                return None
            time.sleep(0.2)
        return "proxy did not answer a repeated request with x-cco-cache: hit"

    def load(self, port: int, payload: str, distinct: bool,
             duration: float) -> dict:
        a = self.args
        body = str(self.bodies[payload])
        if self.wrk:
            script = self.tmp / "bench.lua"
            wrkrun.write_script(str(script), body, HEADERS, distinct,
                                payloads.NONCE_PLACEHOLDER)
            cmd = wrkrun.command(self.wrk, port, PATH, a.connections,
                                 duration, a.timeout, str(script))
        else:
            cmd = [sys.executable, str(HERE / "loadgen.py"), "--port",
                   str(port), "--path", PATH, "--body-file", body,
                   "-c", str(a.connections), "-d", str(duration),
                   "--timeout", str(a.timeout)]
            cmd += [x for h in HEADERS for x in ("-H", h)]
            cmd += ["--distinct"] if distinct else []
        p = self.procs.start(cmd, self.load_cpu, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=duration + a.timeout + 30)
        self.procs.procs.remove(p)
        if p.returncode != 0:
            raise RuntimeError(f"{self.tool} failed ({p.returncode}): {err}")
        if self.wrk:
            return wrkrun.parse(out, a.connections)
        return json.loads(out.strip().splitlines()[-1])

    def row(self, name: str) -> dict:
        target, payload, distinct, _ = ROWS[name]
        port = self.mock_port if target == "direct" else self.proxy_port
        server = self.mock if target == "direct" else self.proxy
        if self.args.warmup > 0:
            self.load(port, payload, distinct, self.args.warmup)
        cpu0, mock0 = tree_cpu_seconds(server.pid), tree_cpu_seconds(
            self.mock.pid)
        writer0 = thread_cpu_seconds(server.pid, ANALYTICS_THREAD)
        up0 = self.mock_requests()
        res = self.load(port, payload, distinct, self.args.duration)
        cpu1, mock1 = tree_cpu_seconds(server.pid), tree_cpu_seconds(
            self.mock.pid)
        writer1 = thread_cpu_seconds(server.pid, ANALYTICS_THREAD)
        up1 = self.mock_requests()
        if server.poll() is not None:
            log = self.tmp / ("mock.log" if target == "direct" else "proxy.log")
            raise RuntimeError(f"{target} process died during {name} (exit "
                               f"{server.returncode}):\n{tail(log)}")
        n = max(1, res["requests"])
        out = {
            "row": name, "target": target, "payload": payload,
            "distinct_bodies": distinct,
            "body_bytes": self.bodies[payload].stat().st_size,
            "tool": res["tool"], "requests": res["requests"],
            "rps": res["rps"], "latency_ms": res["latency_ms"],
            "errors": res["errors_total"], "non_2xx": res["non_2xx"],
            # POSTs the mock saw: == requests for pass-through, ~0 for hits
            "upstream_requests": up1 - up0,
            "server_cpu_us_per_req": round((cpu1 - cpu0) * 1e6 / n, 1),
            # the part of it spent by the proxy's analytics thread (the ledger's SQLite writes)
            "analytics_cpu_us_per_req": (round((writer1 - writer0) * 1e6 / n, 1)
                                         if target == "proxy" else None),
            "mock_cpu_us_per_req": round((mock1 - mock0) * 1e6 / n, 1),
            "proxy_peak_rss_mb": None, "proxy_tree_peak_rss_mb": None,
            "load": res,
        }
        if target == "proxy":
            out["proxy_peak_rss_mb"] = peak_rss_mb(server.pid)
            out["proxy_tree_peak_rss_mb"] = round(sum(
                peak_rss_mb(p) or 0 for p in tree_pids(server.pid)), 1)
        return out


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------
def add_ratios(rows: list[dict]) -> None:
    by = {r["row"]: r for r in rows}
    for r in rows:
        base = by.get(ROWS[r["row"]][3] or "")
        r["vs_direct"] = None
        if base and base["rps"] and base["latency_ms"]["p50"]:
            lat = {k: round(r["latency_ms"][k] / base["latency_ms"][k], 2)
                   for k in ("p50", "p90", "p99") if base["latency_ms"][k]}
            r["vs_direct"] = {"baseline": base["row"],
                              "rps": round(r["rps"] / base["rps"], 3), **lat}


def table(rows: list[dict]) -> str:
    head = ("| row | req/s | p50 ms | p90 ms | p99 ms | err | non-2xx | "
            "upstream req | CPU µs/req | of it analytics | proxy RSS MB | req/s ×direct | "
            "p50 ×direct | p99 ×direct |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lat, v = r["latency_ms"], r.get("vs_direct") or {}
        lines.append("| " + " | ".join(str(x) for x in (
            r["row"], f"{r['rps']:,.0f}", lat["p50"], lat["p90"], lat["p99"],
            r["errors"], r["non_2xx"], r["upstream_requests"],
            r["server_cpu_us_per_req"],
            "–" if r.get("analytics_cpu_us_per_req") is None else r["analytics_cpu_us_per_req"],
            r["proxy_peak_rss_mb"] or "–",
            v.get("rps", "–"), v.get("p50", "–"),
            v.get("p99", "–"))) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0,
                    help="seconds per measured row (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rows", default=",".join(ROWS),
                    help="comma-separated subset of: " + ", ".join(ROWS))
    ap.add_argument("--proxy-cmd", default="cco-proxy")
    ap.add_argument("--direct-only", action="store_true",
                    help="only the direct rows; do not start the proxy")
    ap.add_argument("--pure", action="store_true",
                    help="use the bundled Python loadgen even if wrk exists")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="per-request timeout (s)")
    ap.add_argument("--startup-timeout", type=float, default=30.0)
    ap.add_argument("--results-dir", default=str(HERE / "results"))
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad or not rows:
        ap.error(f"unknown rows {bad}; choose from {', '.join(ROWS)}")
    if not (0 < args.duration <= 600 and 0 <= args.warmup <= 60):
        ap.error("--duration must be in (0, 600], --warmup in [0, 60]")
    notes: list[str] = []
    if not args.direct_only and any(ROWS[r][0] == "proxy" for r in rows):
        args.proxy_argv = resolve_cmd(args.proxy_cmd)  # fail before starting
    if args.direct_only:
        skipped = [r for r in rows if ROWS[r][0] != "direct"]
        rows = [r for r in rows if ROWS[r][0] == "direct"]
        if skipped:
            notes.append("--direct-only: skipped " + ", ".join(skipped))

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        pin = (cpus[0], cpus[1])
        os.sched_setaffinity(0, {pin[1]})  # this harness stays off the proxy
        print(f"pinned: proxy -> CPU {pin[0]}, mock + load generator + "
              f"harness -> CPU {pin[1]}")
    else:
        pin = (None, None)
        print("not pinned: fewer than 2 CPUs available")

    # SIGTERM behaves like Ctrl-C, so the finally-block cleans up.
    def _term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _term)

    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="cco-bench-"))
    results: list[dict] = []
    started = datetime.now(timezone.utc)
    rc = 0
    bench = None
    try:
        bench = Bench(args, procs, tmp, pin)
        print(f"load generator: {bench.tool}; {args.connections} connections,"
              f" {args.warmup:g}s warm-up + {args.duration:g}s per row")
        bench.start_mock()
        if any(ROWS[r][0] == "proxy" for r in rows):
            bench.start_proxy()
        for name in rows:
            if name.startswith("hit-"):
                why = bench.probe_cache_hit(ROWS[name][1])
                if why:
                    notes.append(f"{name} skipped: {why}")
                    print(f"-- {name}: skipped ({why})")
                    continue
            print(f"-- {name} ...", flush=True)
            r = bench.row(name)
            results.append(r)
            print(f"   {r['rps']:,.0f} req/s, p50 {r['latency_ms']['p50']} ms,"
                  f" p99 {r['latency_ms']['p99']} ms, errors {r['errors']}, "
                  f"non-2xx {r['non_2xx']}, {r['server_cpu_us_per_req']} "
                  f"CPU µs/req", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping", file=sys.stderr)
        notes.append("interrupted")
        rc = 130
    except Exception as e:  # report what we have, still clean up
        print(f"error: {e}", file=sys.stderr)
        notes.append(f"error: {e}")
        rc = 1
    finally:
        procs.stop_all()
        if bench and bench.proxy is not None and bench.proxy.returncode not in (
                None, 0, -signal.SIGTERM):
            notes.append(f"proxy exit code {bench.proxy.returncode}")
        if args.keep_tmp:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    add_ratios(results)
    if results:
        print()
        print(table(results))
    for n in notes:
        print("note:", n)
    if not results:
        return rc or 1
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gi = out_dir / ".gitignore"
    if not gi.exists():
        gi.write_text("*.json\n")
    path = out_dir / (started.strftime("%Y%m%dT%H%M%SZ") + ".json")
    path.write_text(json.dumps({
        "started_utc": started.isoformat(timespec="seconds"),
        "tool": bench.tool if bench else None,
        "duration_s": args.duration, "warmup_s": args.warmup,
        "connections": args.connections,
        "pinned": pin[0] is not None, "proxy_cpu": pin[0],
        "load_cpu": pin[1], "cpus_available": len(cpus),
        "proxy_cmd": None if args.direct_only else args.proxy_cmd,
        "python": sys.version.split()[0], "platform": platform.platform(),
        "body_bytes": {k: len(payloads.build(k)) for k in
                       ("1k", "1k-stream", "100k")},
        "notes": notes, "rows": results}, indent=2) + "\n")
    print(f"\nresults: {path}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
