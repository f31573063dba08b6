"""Keep-alive connection pools, one per origin (scheme, host, port).

`acquire` hands out the most recently used idle connection that is still inside the keep-alive window (LIFO:
the warmest socket is the one least likely to have been closed by the server), or opens a new one while fewer
than `max_connections` exist, or waits for one to come back. Connections return through `release` only after
a clean response; `forget` is called when one closes, which frees its slot for a waiter.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from urllib.parse import urlsplit

from cco.errors import UpstreamConnectError, UpstreamTimeout
from cco.upstream.connection import ACTIVE, IDLE, UpstreamConnection

# An idle upstream connection older than this is not reused: servers commonly drop idle sockets after 60 s or
# more, and a request sent on a socket the server is closing fails in a way we would have to resend.
IDLE_KEEPALIVE_SECONDS = 30.0

_ssl_context: ssl.SSLContext | None = None


def client_ssl_context() -> ssl.SSLContext:
    """Verifying TLS context: certifi's CA bundle, or the system store when SSL_CERT_FILE/SSL_CERT_DIR name one
    (the OpenSSL convention, e.g. a corporate CA) or certifi is missing."""
    global _ssl_context
    if _ssl_context is None:
        if os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
            _ssl_context = ssl.create_default_context()
        else:
            try:
                import certifi

                _ssl_context = ssl.create_default_context(cafile=certifi.where())
            except ImportError:
                _ssl_context = ssl.create_default_context()
    return _ssl_context


class Origin:
    __slots__ = ("scheme", "host", "port", "base_path", "host_header", "display")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        default_port = 443 if parts.scheme == "https" else 80
        self.port = parts.port or default_port
        self.base_path = parts.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (host if self.port == default_port else f"{host}:{self.port}").encode()
        self.display = f"{self.scheme}://{host}:{self.port}"

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


class Pool:
    def __init__(self, origin: Origin, max_connections: int) -> None:
        self.origin = origin
        self.max_connections = max_connections
        self.loop = asyncio.get_running_loop()
        self.idle: deque[UpstreamConnection] = deque()
        self.open = 0  # connections counted against max_connections: connecting, active and idle
        self.waiters: deque[asyncio.Future] = deque()
        self.closed = False

    def __repr__(self) -> str:
        return f"<Pool {self.origin.display} open={self.open} idle={len(self.idle)} waiting={len(self.waiters)}>"

    async def acquire(self, connect_timeout: float, provider: str, fresh: bool = False) -> tuple[
            UpstreamConnection, bool]:
        """Returns (connection, reused). `fresh` skips idle connections (a resend after a stale reuse)."""
        while True:
            if not fresh:
                now = self.loop.time()
                idle = self.idle
                while idle:
                    conn = idle.pop()
                    transport = conn.transport
                    if (conn.state == IDLE and transport is not None and not transport.is_closing()
                            and now - conn.idle_since < IDLE_KEEPALIVE_SECONDS):
                        conn.state = ACTIVE
                        return conn, True
                    conn.close()
            if self.open < self.max_connections:
                return await self._connect(connect_timeout, provider), False
            if fresh and self.idle:
                self.idle.popleft().close()  # its slot is freed when the close completes
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                conn = await waiter
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
            if conn is not None:
                conn.state = ACTIVE
                return conn, True
            # None: a slot was freed; loop and open a connection

    async def _connect(self, timeout: float, provider: str) -> UpstreamConnection:
        origin = self.origin
        self.open += 1
        try:
            if origin.scheme == "https":
                coro = self.loop.create_connection(lambda: UpstreamConnection(self), origin.host, origin.port,
                                                   ssl=client_ssl_context(), server_hostname=origin.host)
            else:
                coro = self.loop.create_connection(lambda: UpstreamConnection(self), origin.host, origin.port)
            _, conn = await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            self._slot_freed()
            raise UpstreamTimeout(provider, f"connecting to {origin.display} timed out after {timeout:g} s",
                                  before_response=True) from None
        except (OSError, ssl.SSLError) as exc:
            self._slot_freed()
            cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise UpstreamConnectError(provider, f"cannot connect to {origin.display}: {cause}",
                                       before_response=True) from exc
        except BaseException:
            self._slot_freed()
            raise
        conn.state = ACTIVE
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """A clean, reusable connection comes back."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                conn.state = ACTIVE
                waiter.set_result(conn)
                return
        if self.closed:
            conn.close()
        else:
            self.idle.append(conn)

    def forget(self, conn: UpstreamConnection, was_idle: bool) -> None:
        """Called once when a connection is lost."""
        if was_idle:
            try:
                self.idle.remove(conn)
            except ValueError:
                pass
        self._slot_freed()

    def _slot_freed(self) -> None:
        self.open -= 1
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def sweep(self) -> None:
        """Closes idle connections past the keep-alive window (called by the server tick)."""
        now = self.loop.time()
        stale = [c for c in self.idle if now - c.idle_since >= IDLE_KEEPALIVE_SECONDS]
        for conn in stale:
            self.idle.remove(conn)
            conn.close()

    def close(self) -> None:
        self.closed = True
        while self.idle:
            self.idle.pop().close()


class PoolManager:
    """All pools, by origin and connection limit."""

    def __init__(self) -> None:
        self.pools: dict[tuple, Pool] = {}

    def get(self, origin: Origin, max_connections: int) -> Pool:
        key = (origin.key, max_connections)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = Pool(origin, max_connections)
        return pool

    def sweep(self) -> None:
        for pool in self.pools.values():
            pool.sweep()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
