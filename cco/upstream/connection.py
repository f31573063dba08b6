"""One HTTP/1.1 client connection to a provider, parsed with httptools' response parser.

States (httpcore's model): NEW until connected, ACTIVE while one request/response is in flight, IDLE in the
pool, CLOSED for good. A connection goes back to the pool only when its response ended cleanly and both sides
allow keep-alive; anything else (client gone, timeout, parse error, early close) closes it.

The response is delivered to an `Exchange` through synchronous callbacks (on_head, on_body, on_complete,
on_error), so streaming costs one callback per chunk and no task or future per chunk.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import httptools

from cco.errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout

if TYPE_CHECKING:
    from cco.upstream.pool import Pool

NEW, ACTIVE, IDLE, CLOSED = "NEW", "ACTIVE", "IDLE", "CLOSED"


class Exchange:
    """Receives one upstream response. Subclasses override the callbacks; `conn` is set while it is in flight."""

    __slots__ = ("conn", "last_activity", "_timer", "timeout", "provider")

    def __init__(self, provider: str, timeout: float) -> None:
        self.conn: UpstreamConnection | None = None
        self.last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.timeout = timeout
        self.provider = provider

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_complete(self) -> None: ...

    def on_error(self, exc: UpstreamError) -> None: ...

    def on_read_end(self) -> None:
        """Called after every upstream read that reached this exchange: the moment to flush what it gathered."""

    # read timeout: one timer per exchange, re-armed lazily from last_activity instead of on every chunk
    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self.last_activity = loop.time()
        self._timer = loop.call_at(self.last_activity + self.timeout, self._check_timeout, loop)

    def _check_timeout(self, loop: asyncio.AbstractEventLoop) -> None:
        conn = self.conn
        if conn is None:
            return
        deadline = self.last_activity + self.timeout
        if loop.time() < deadline:
            self._timer = loop.call_at(deadline, self._check_timeout, loop)
            return
        self._timer = None
        conn.fail(UpstreamTimeout(self.provider, f"no response data from {conn.pool.origin.display} within "
                                  f"{self.timeout:g} s", before_response=not conn.got_bytes))

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.state = NEW
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.requests = 0
        self.idle_since = 0.0
        self.got_bytes = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._until_close = False  # response body delimited by the connection closing

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.pool.origin.display} {self.state} requests={self.requests}>"

    # Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection (a late 408, garbage): it cannot be reused safely.
            self.close()
            return
        self.got_bytes = True
        exchange.last_activity = self.loop.time()
        try:
            self.parser.feed_data(data)
            if self.exchange is exchange:
                exchange.on_read_end()
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__ or exc
            self.fail(UpstreamProtocolError(exchange.provider, f"response handling failed: {cause!r}"))
        except httptools.HttpParserError as exc:
            self.fail(UpstreamProtocolError(exchange.provider, f"invalid HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        was_idle = self.state == IDLE
        self.state = CLOSED
        self.pool.forget(self, was_idle)
        exchange = self.exchange
        if exchange is None:
            return
        if self._until_close and self._headers is None:
            self._complete(keep_alive=False)
            return
        self.exchange = None
        exchange._disarm()
        exchange.conn = None
        reason = f"connection to {self.pool.origin.display} closed before the response was complete"
        if exc is not None:
            reason += f" ({exc})"
        exchange.on_error(UpstreamConnectError(exchange.provider, reason, before_response=not self.got_bytes))

    # Parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        headers = self._headers
        if status < 200:  # 1xx interim response: the real one follows
            self._headers = []
            return
        self._until_close = True
        for name, value in headers:
            if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
                self._until_close = False
                break
        self._headers = None  # type: ignore[assignment]  # marks "head delivered"
        assert self.exchange is not None
        self.exchange.on_head(status, headers)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.on_body(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            return
        self._complete(self.parser.should_keep_alive())

    # Driving one exchange

    def start(self, exchange: Exchange, head: bytes, body: bytes) -> None:
        """Sends one request; the response goes to `exchange`."""
        assert self.transport is not None
        self.state = ACTIVE
        self.requests += 1
        self.exchange = exchange
        self.got_bytes = False
        self._headers = []
        self._until_close = False
        exchange.conn = self
        exchange._arm(self.loop)
        if body:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head)

    def _complete(self, keep_alive: bool) -> None:
        exchange = self.exchange
        self.exchange = None
        if exchange is None:
            return
        exchange._disarm()
        exchange.conn = None
        if keep_alive and self.state == ACTIVE and self.transport is not None and not self.transport.is_closing():
            if self.transport.is_reading() is False:
                self.transport.resume_reading()
            self.state = IDLE
            self.idle_since = self.loop.time()
            self.pool.release(self)
        else:
            self.close()
        exchange.on_complete()

    def fail(self, exc: UpstreamError) -> None:
        """Ends the exchange with `exc` and closes the connection (it is in an unknown state)."""
        exchange = self.exchange
        self.exchange = None
        self.close()
        if exchange is not None:
            exchange._disarm()
            exchange.conn = None
            exchange.on_error(exc)

    def detach(self) -> None:
        """The client side gave up (cancelled): drop the exchange and the connection, never reuse it."""
        exchange = self.exchange
        self.exchange = None
        if exchange is not None:
            exchange._disarm()
            exchange.conn = None
        self.close()

    def pause_reading(self) -> None:
        if self.transport is not None and self.transport.is_reading():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing() and not self.transport.is_reading():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.state != CLOSED:
            self.state = CLOSED
            if self.transport is not None:
                self.transport.abort()
