"""Process, HTTP and /proc helpers for benchmarks/run.py (Linux only)."""
from __future__ import annotations

import http.client
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------
class Procs:
    """Every process we start, each in its own session/process group, so it
    (and e.g. proxy workers) can be stopped by id even on error or Ctrl-C."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd, cpu, **kw) -> subprocess.Popen:
        pre = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None \
            else None
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        p = subprocess.Popen(cmd, start_new_session=True, preexec_fn=pre,
                             env=env, **kw)
        self.procs.append(p)
        return p

    def stop_all(self, grace: float = 10.0) -> None:
        live = [p for p in self.procs if p.poll() is None]
        for p in live:
            _killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in live:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_request(port, method, path, body=None, headers=(), timeout=10.0):
    """One loopback request -> (status, lowercased headers, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body,
                  headers=dict(h.split(": ", 1) for h in headers))
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def wait_ready(name, proc, port, path, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}:"
                               f"\n{tail(log)}")
        try:
            if http_request(port, "GET", path, timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready after {timeout:.0f}s "
                       f"(GET {path}):\n{tail(log)}")


# --------------------------------------------------------------------------
# /proc accounting
# --------------------------------------------------------------------------
def _stat(pid: int):
    """-> (ppid, own utime+stime ticks, reaped children's ticks)"""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[1]), int(rest[11]) + int(rest[12]), \
        int(rest[13]) + int(rest[14])


def tree_pids(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                kids.setdefault(_stat(int(d))[0], []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(kids.get(pid, ()))
    return out


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process, its live descendants and its reaped children."""
    ticks = 0
    for pid in tree_pids(root):
        try:
            _, own, reaped = _stat(pid)
            ticks += own + reaped
        except (OSError, IndexError, ValueError):
            pass
    return ticks / CLK_TCK


def thread_cpu_seconds(pid: int, name: str) -> float:
    """CPU time of the threads of `pid` whose OS name (/proc/<pid>/task/<tid>/comm) is `name`; 0 when none."""
    ticks = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
            if head.split("(", 1)[1] == name:
                fields = rest.split()
                ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / CLK_TCK


def peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def resolve_cmd(s: str) -> list[str]:
    cmd = shlex.split(s)
    if cmd[0] in ("python", "python3"):
        cmd[0] = sys.executable  # the venv running this harness
    elif not shutil.which(cmd[0]):
        near = Path(sys.executable).parent / cmd[0]
        if not near.exists():
            raise SystemExit(f"{cmd[0]!r} not found: install the project "
                             "(pip install -e .), pass --proxy-cmd, or use "
                             "--direct-only")
        cmd[0] = str(near)
    return cmd
