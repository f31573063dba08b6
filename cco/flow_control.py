"""Back-pressure between one client connection and the upstream connection feeding it.

The client transport tells us when its write buffer passes the high-water mark (pause_writing) and when it has
drained (resume_writing). While it is paused, the upstream connection that writes into it stops reading from its
socket, so a slow client slows the provider instead of growing our memory. Pause and resume are idempotent.
"""

from __future__ import annotations

import asyncio
from typing import Callable

# Client write buffer limits: above HIGH we pause the upstream read, below LOW we resume it.
CLIENT_WRITE_HIGH_WATER = 256 * 1024
CLIENT_WRITE_LOW_WATER = 64 * 1024
# Pipelined requests queued on one connection before we stop reading from it.
MAX_PIPELINED_REQUESTS = 16


class FlowControl:
    __slots__ = ("_transport", "read_paused", "write_paused", "_drain_waiter", "_on_resume")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future | None = None
        self._on_resume: Callable[[], None] | None = None

    # reading from the client
    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()

    # writing to the client
    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._on_resume is not None:
            self._on_resume()

    def on_resume(self, callback: Callable[[], None] | None) -> None:
        """Registers the upstream's resume_reading while it streams into this client (None to clear)."""
        self._on_resume = callback

    async def drain(self) -> None:
        if self.write_paused:
            if self._drain_waiter is None:
                self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter

    def connection_lost(self) -> None:
        self.write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._drain_waiter = None
        if self._on_resume is not None:
            self._on_resume()
            self._on_resume = None
