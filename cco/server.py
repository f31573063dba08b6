"""Process lifecycle: event loop, bind, signals, graceful drain, the 1 s tick.

Shutdown (SPEC §9): on SIGTERM/SIGINT stop accepting, close idle keep-alive connections at once, let in-flight
requests finish (responses then carry `connection: close`) for at most `drain_timeout`, abort what is left,
exit 0.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import time

import uvloop

from cco.app import App, version_string
from cco.cache import persist
from cco.cache.store import ResponseCache
from cco.config import Config
from cco.protocol import HttpProtocol, Limits
from cco.settings import Settings

log = logging.getLogger("cco.server")

TICK_SECONDS = 1.0


class PortInUse(Exception):
    pass


class ConnectionRegistry:
    """The open client connections, for timeouts and the drain."""

    def __init__(self) -> None:
        self.connections: set[HttpProtocol] = set()
        self.draining = False

    def add(self, conn: HttpProtocol) -> None:
        self.connections.add(conn)

    def discard(self, conn: HttpProtocol) -> None:
        self.connections.discard(conn)

    def __len__(self) -> int:
        return len(self.connections)


class ProxyServer:
    def __init__(self, settings: Settings, config: Config) -> None:
        self.settings = settings
        self.config = config
        self.registry = ConnectionRegistry()
        self.stop_requested: asyncio.Event | None = None
        self.app: App | None = None

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        self.stop_requested = asyncio.Event()
        cache = None
        if not settings.no_cache:
            cache = ResponseCache(int(settings.cache_size_mb * 1024 * 1024), settings.cache_ttl,
                                  self.config.cache.scope)
            if self.config.cache.persist:
                loaded = persist.load(cache, self._cache_file())
                log.info("cache: loaded %d entries from %s", loaded, self._cache_file())
        app = self.app = App(self.config, access_log_enabled=settings.access_log, cache=cache)
        limits = Limits(max_body_bytes=settings.max_body_bytes, header_timeout=settings.header_timeout,
                        idle_timeout=settings.idle_timeout)
        registry = self.registry
        try:
            server = await loop.create_server(lambda: HttpProtocol(app, registry, limits), settings.host,
                                              settings.port, backlog=2048, reuse_address=True)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"{settings.host}:{settings.port} is already in use; "
                                f"choose another port with --port") from exc
            raise
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_requested.set)
        tick = loop.call_later(TICK_SECONDS, self._tick, loop)
        log.info("%s listening on http://%s:%d (config: %s)", version_string(), settings.host, settings.port,
                 self.config.directory)
        try:
            await self.stop_requested.wait()
        finally:
            tick.cancel()
            await self._drain(server, app)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        for conn in list(self.registry.connections):
            conn.check_timeouts(now)
        if self.app is not None:
            self.app.pools.sweep()
        loop.call_later(TICK_SECONDS, self._tick, loop)

    async def _drain(self, server: asyncio.base_events.Server, app: App) -> None:
        log.info("shutting down: draining %d connection(s)", len(self.registry))
        app.draining = True
        self.registry.draining = True
        server.close()
        for conn in list(self.registry.connections):
            conn.shutdown()
        deadline = time.monotonic() + self.settings.drain_timeout
        while self.registry.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            for conn in list(self.registry.connections):
                conn.shutdown()
        for conn in list(self.registry.connections):
            log.warning("drain timeout: aborting a connection with a request in flight")
            conn.abort()
        app.pools.close()
        if app.cache is not None and self.config.cache.persist:
            try:
                saved = persist.save(app.cache, self._cache_file())
                log.info("cache: saved %d entries to %s", saved, self._cache_file())
            except Exception:
                log.exception("cache: could not save to %s", self._cache_file())
        await asyncio.sleep(0)
        log.info("stopped")

    def _cache_file(self):
        return self.settings.data_path() / "cache.db"


def run(settings: Settings, config: Config) -> None:
    """Runs the proxy until SIGTERM/SIGINT. Raises PortInUse when the address is taken."""
    uvloop.run(ProxyServer(settings, config).serve())
