"""Runs one request's coroutine without an asyncio Task.

Why: on CPython 3.11 every `create_task` registers the task in a Python-level WeakSet and schedules its first
step for the next loop iteration; measured on the pass-through path that was ~7 % of the proxy's CPU per request.
A request coroutine only ever awaits futures (directly or through the coroutines it calls), so stepping it by
hand is simple: run it at once until it waits on a future, resume it from that future's done-callback, and
cancel it by cancelling the future it waits on — exactly what a Task does, minus the registry and the context
copy. Code under a driver must not need `asyncio.current_task()` (e.g. `asyncio.timeout`); it uses
`asyncio.wait_for` and plain futures instead.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine


class Driver:
    __slots__ = ("_coro", "_loop", "_waiting", "_cancel", "_finished", "_on_done")

    def __init__(self, coro: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop,
                 on_done: Callable[[BaseException | None], None]) -> None:
        self._coro = coro
        self._loop = loop
        self._waiting: asyncio.Future | None = None
        self._cancel = False
        self._finished = False
        # called once with None (returned), the exception it raised, or CancelledError
        self._on_done = on_done

    def start(self) -> None:
        self._step(None)

    def done(self) -> bool:
        return self._finished

    def cancel(self) -> None:
        if self._finished:
            return
        self._cancel = True
        waiting = self._waiting
        if waiting is not None:
            waiting.cancel()  # its done-callback resumes the coroutine, where `await` raises CancelledError

    def _step(self, _future: object) -> None:
        self._waiting = None
        coro = self._coro
        try:
            if self._cancel and _future is None:
                yielded = coro.throw(asyncio.CancelledError())
            else:
                yielded = coro.send(None)
        except StopIteration:
            self._finish(None)
            return
        except BaseException as exc:  # noqa: BLE001 - handed to on_done, which decides
            self._finish(exc)
            return
        if yielded is None:  # a bare yield (asyncio.sleep(0)): resume on the next iteration
            self._loop.call_soon(self._step, None)
            return
        blocking = getattr(yielded, "_asyncio_future_blocking", None)
        if blocking is None:
            coro.close()
            self._finish(RuntimeError(f"request coroutine yielded {yielded!r}, not a future"))
            return
        yielded._asyncio_future_blocking = False
        self._waiting = yielded
        if self._cancel:
            yielded.cancel()
        yielded.add_done_callback(self._step)

    def _finish(self, exc: BaseException | None) -> None:
        self._finished = True
        self._coro = None  # type: ignore[assignment]
        self._on_done(exc)
