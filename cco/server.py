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

from cco.analytics.events import PING_SECONDS
from cco.analytics.reader import Reader
from cco.analytics.writer import AnalyticsWriter
from cco.app import App, version_string
from cco.cache import persist
from cco.cache.store import ResponseCache
from cco.config import Config, load_config
from cco.protocol import HttpProtocol, Limits
from cco.settings import Settings

log = logging.getLogger("cco.server")

TICK_SECONDS = 1.0


ANALYTICS_FILE = "analytics.db"


class PortInUse(Exception):
    pass


class AnalyticsUnavailable(Exception):
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
        self._last_ping = time.monotonic()

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
        analytics_path = settings.data_path() / ANALYTICS_FILE
        writer = AnalyticsWriter(analytics_path, on_flush=lambda rows: self._on_flush(loop, rows))
        try:
            writer.start()
        except Exception as exc:  # AnalyticsDatabaseError names the file and the cause
            raise AnalyticsUnavailable(str(exc)) from exc
        app = self.app = App(self.config, access_log_enabled=settings.access_log, cache=cache,
                             default_project=settings.project, analytics=writer, reader=Reader(analytics_path))
        app.config_loader = lambda: load_config(settings.config_dir)
        limits = Limits(max_body_bytes=settings.max_body_bytes, header_timeout=settings.header_timeout,
                        idle_timeout=settings.idle_timeout)
        registry = self.registry
        try:
            server = await loop.create_server(lambda: HttpProtocol(app, registry, limits), settings.host,
                                              settings.port, backlog=2048, reuse_address=True)
        except OSError as exc:
            writer.close()
            app.reader.close()  # type: ignore[union-attr]
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"{settings.host}:{settings.port} is already in use; "
                                f"choose another port with --port") from exc
            raise
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_requested.set)
        reloads: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones

        def reload_on_hup() -> None:
            task = loop.create_task(app.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, reload_on_hup)
        tick = loop.call_later(TICK_SECONDS, self._tick, loop)
        log.info("%s listening on http://%s:%d (config: %s)", version_string(), settings.host, settings.port,
                 self.config.directory)
        try:
            await self.stop_requested.wait()
        finally:
            tick.cancel()
            await self._drain(server, app)

    def _on_flush(self, loop: asyncio.AbstractEventLoop, rows: list[tuple]) -> None:
        """Called in the writer thread after each committed batch: the live feed runs on the loop."""
        app = self.app
        if app is None:
            return
        app.recorder.counters.observe(rows)
        if app.events.subscribers and not loop.is_closed():
            loop.call_soon_threadsafe(app.events.publish, rows)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        if self.app is not None and now - self._last_ping >= PING_SECONDS:
            self._last_ping = now
            self.app.events.ping()
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
        app.events.close()  # live feeds end at once: they would otherwise hold the drain to its timeout
        await asyncio.sleep(0)
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
        if app.analytics is not None:
            # Every row of every finished request is written before exit (SPEC §9).
            await asyncio.get_running_loop().run_in_executor(None, app.analytics.close)
            log.info("analytics: %d rows written, %d dropped", app.analytics.written, app.analytics.dropped)
        if app.reader is not None:
            app.reader.close()
        await asyncio.sleep(0)
        log.info("stopped")

    def _cache_file(self):
        return self.settings.data_path() / "cache.db"


def run(settings: Settings, config: Config) -> None:
    """Runs the proxy until SIGTERM/SIGINT. Raises PortInUse when the address is taken."""
    uvloop.run(ProxyServer(settings, config).serve())
