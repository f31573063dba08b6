"""Shared fixtures: the two implementations, the mock Anthropic upstream, and real `cco-proxy` processes."""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.mock_anthropic import MockAnthropic

IMPLS = ["compiled", "pure"]
ROOT = Path(__file__).resolve().parent.parent


def fast_module(impl: str, name: str):
    """The compiled (`<name>_c`) or pure (`<name>_py`) twin of a cco._fast module."""
    return importlib.import_module(f"cco._fast.{name}_{'c' if impl == 'compiled' else 'py'}")


@pytest.fixture(params=IMPLS)
def impl(request) -> str:
    return request.param


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxy_command() -> list[str]:
    exe = Path(sys.executable).parent / "cco-proxy"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cco", "run"]


class ProxyProcess:
    """A real cco-proxy process on 127.0.0.1, with its own config and data directories."""

    def __init__(self, workdir: Path, upstream_url: str, impl: str = "compiled", routes: list | None = None,
                 fallback_chain: dict | None = None, args: list[str] | None = None, env: dict | None = None) -> None:
        self.workdir = workdir
        self.impl = impl
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_dir = workdir / "config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        if routes is None:
            routes = [{"pattern": "^claude-", "provider": "anthropic", "endpoint": upstream_url, "max_retries": 0},
                      {"pattern": "^gpt-", "provider": "openai", "endpoint": "http://127.0.0.1:9/v1"}]
        (self.config_dir / "model-routing.json").write_text(
            json.dumps({"routes": routes, "fallback_chain": fallback_chain or {}}))
        self.log_path = workdir / "proxy.log"
        self.args = args or []
        self.env = dict(os.environ)
        self.env.pop("ANTHROPIC_API_KEY", None)
        self.env["CCO_PURE_PYTHON"] = "1" if impl == "pure" else "0"
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "ProxyProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            proxy_command() + ["--host", "127.0.0.1", "--port", str(self.port), "--config-dir", str(self.config_dir),
                               "--data-dir", str(self.workdir / "data"), "--log-level", "info"] + self.args,
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cco-proxy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"cco-proxy did not become ready:\n{self.log()}")

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/health", timeout=5) as resp:
            return json.loads(resp.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._log.close()


@pytest.fixture(scope="session")
def mock_upstream():
    mock = MockAnthropic().start()
    yield mock
    mock.stop()


@pytest.fixture
def mock(mock_upstream):
    mock_upstream.reset()
    return mock_upstream


@pytest.fixture(scope="module", params=IMPLS)
def proxy(request, mock_upstream, tmp_path_factory):
    """A cco-proxy per implementation (compiled, pure), shared by a test module, routed to the mock, with the
    cache off: these tests are about what passes through."""
    proc = ProxyProcess(tmp_path_factory.mktemp(f"proxy-{request.param}"), mock_upstream.url,
                        impl=request.param, args=["--no-cache"]).start()
    yield proc
    code = proc.stop()
    assert code == 0, proc.log()


@pytest.fixture(scope="module", params=IMPLS)
def cached_proxy(request, mock_upstream, tmp_path_factory):
    """Like `proxy`, with the response cache on (default settings)."""
    proc = ProxyProcess(tmp_path_factory.mktemp(f"cached-{request.param}"), mock_upstream.url,
                        impl=request.param).start()
    yield proc
    code = proc.stop()
    assert code == 0, proc.log()


@pytest.fixture
def make_proxy(tmp_path, mock_upstream):
    """Starts a dedicated cco-proxy (custom routes/args/env); stopped at the end of the test."""
    started: list[ProxyProcess] = []

    def factory(impl: str = "compiled", start: bool = True, **kwargs) -> ProxyProcess:
        proc = ProxyProcess(tmp_path / f"p{len(started)}", kwargs.pop("upstream_url", mock_upstream.url),
                            impl=impl, **kwargs)
        started.append(proc)
        return proc.start() if start else proc

    yield factory
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()
