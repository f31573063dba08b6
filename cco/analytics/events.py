"""The live feed behind `GET /api/events`: Server-Sent Events for the dashboard.

Each batch of rows the writer commits is sent to every subscriber as one `call` event per row, followed by one
`stats` snapshot (the process counters), so a dashboard updates as soon as its figures could change and stays
consistent with the JSON API (which reads the same committed rows). A `: ping` comment every 15 s keeps idle
connections through proxies that close silent ones.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

import orjson

from cco import wire
from cco.analytics.schema import COLUMNS

if TYPE_CHECKING:
    from cco.protocol import HttpProtocol, Request

PING_SECONDS = 15.0


def row_event(row: tuple) -> bytes:
    return b"event: call\ndata: " + orjson.dumps(dict(zip(COLUMNS, row))) + b"\n\n"


class EventFeed:
    def __init__(self) -> None:
        self.subscribers: list[tuple[HttpProtocol, asyncio.Future[None]]] = []
        self.snapshot: Callable[[], dict[str, Any]] = dict

    async def serve(self, client: HttpProtocol, request: Request) -> None:
        """Holds one subscriber's stream open until it leaves (the request is cancelled) or the proxy stops."""
        head = client.stream_head(request, 200, wire.CONTENT_TYPE_SSE + wire.NO_BUFFERING
                                  + b"cache-control: no-cache\r\n")
        client.write_stream(head, [b"event: stats\ndata: " + orjson.dumps(self.snapshot()) + b"\n\n"])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (client, done)
        self.subscribers.append(entry)
        try:
            await done
            client.end_stream()
        finally:
            if entry in self.subscribers:
                self.subscribers.remove(entry)

    def publish(self, rows: list[tuple]) -> None:
        """Called on the event loop with every committed batch."""
        if not self.subscribers:
            return
        parts = [row_event(row) for row in rows]
        parts.append(b"event: stats\ndata: " + orjson.dumps(self.snapshot()) + b"\n\n")
        self._send(parts)

    def ping(self) -> None:
        self._send([b": ping\n\n"])

    def _send(self, parts: list[bytes]) -> None:
        for client, done in list(self.subscribers):
            if client.closed or done.done():
                continue
            if client.flow is not None and client.flow.write_paused:
                continue  # a dashboard that does not read misses events rather than growing our buffers
            client.write_stream(b"", parts)

    def close(self) -> None:
        """Ends every stream (shutdown)."""
        for _, done in self.subscribers:
            if not done.done():
                done.set_result(None)
