"""Reads the analytics database off the event loop: queries run in one reader thread with its own connection.

The dashboard's queries take milliseconds (they read rollups), exports stream for longer; neither may stall the
loop that serves traffic, so both run in the thread and come back as awaitables. Exports are pulled a chunk at a
time, which is also their back-pressure: the next chunk is read only once the client took the last one.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import apsw

from cco.analytics.writer import open_database

EXPORT_CHUNK_BYTES = 64 * 1024


class Reader:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cco-analytics-reader")
        self._conn: apsw.Connection | None = None

    def _connection(self) -> apsw.Connection:
        if self._conn is None:
            self._conn = open_database(self.path, readonly=True)
        return self._conn

    async def run(self, query: Callable[..., Any], *args: Any) -> Any:
        """`query(connection, *args)` in the reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: query(self._connection(), *args))

    async def stream(self, produce: Callable[[apsw.Connection], Iterator[str | bytes]]) -> AsyncIterator[bytes]:
        """The pieces `produce(connection)` yields, joined into chunks of about EXPORT_CHUNK_BYTES."""
        loop = asyncio.get_running_loop()
        pieces: Iterator[str | bytes] | None = None

        def next_chunk() -> bytes:
            nonlocal pieces
            if pieces is None:
                pieces = produce(self._connection())
            out: list[bytes] = []
            size = 0
            for piece in pieces:
                data = piece.encode() if isinstance(piece, str) else piece
                out.append(data)
                size += len(data)
                if size >= EXPORT_CHUNK_BYTES:
                    break
            return b"".join(out)

        try:
            while True:
                chunk = await loop.run_in_executor(self._pool, next_chunk)
                if not chunk:
                    return
                yield chunk
        finally:
            if pieces is not None and hasattr(pieces, "close"):
                self._pool.submit(pieces.close)  # type: ignore[union-attr]

    def close(self) -> None:
        def close_connection() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._pool.submit(close_connection)
        self._pool.shutdown(wait=True)
