"""The task-less request driver: completion, waiting, bare yields, errors, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from cco.driver import Driver


def drive(coro_fn, *, cancel_after: float | None = None):
    async def main():
        loop = asyncio.get_running_loop()
        outcome = loop.create_future()
        driver = Driver(coro_fn(loop), loop, lambda exc: outcome.set_result(exc))
        driver.start()
        if cancel_after is not None:
            await asyncio.sleep(cancel_after)
            driver.cancel()
        exc = await asyncio.wait_for(outcome, 5)
        return driver, exc
    return asyncio.run(main())


def test_a_coroutine_that_never_waits_finishes_during_start():
    seen = []

    async def work(loop):
        seen.append("ran")

    driver, exc = drive(work)
    assert exc is None and seen == ["ran"] and driver.done()


def test_waiting_on_futures_sleeps_and_wait_for():
    async def work(loop):
        fut = loop.create_future()
        loop.call_later(0.01, fut.set_result, 41)
        value = await fut
        await asyncio.sleep(0)  # bare yield
        await asyncio.sleep(0.01)
        return await asyncio.wait_for(asyncio.sleep(0.01, value + 1), 1)

    driver, exc = drive(work)
    assert exc is None and driver.done()


def test_exceptions_are_handed_over():
    async def work(loop):
        await asyncio.sleep(0)
        raise ValueError("boom")

    _, exc = drive(work)
    assert isinstance(exc, ValueError) and str(exc) == "boom"


def test_cancel_while_waiting_raises_cancelled_error_inside():
    cleaned = []

    async def work(loop):
        try:
            await loop.create_future()  # never resolved
        finally:
            cleaned.append(True)

    _, exc = drive(work, cancel_after=0.01)
    assert isinstance(exc, asyncio.CancelledError) and cleaned == [True]


def test_cancel_between_bare_yields():
    async def work(loop):
        while True:
            await asyncio.sleep(0)

    _, exc = drive(work, cancel_after=0.01)
    assert isinstance(exc, asyncio.CancelledError)


def test_yielding_something_else_is_an_error():
    class Odd:
        def __await__(self):
            yield "not a future"

    async def work(loop):
        await Odd()

    _, exc = drive(work)
    assert isinstance(exc, RuntimeError)


@pytest.mark.parametrize("when", [0.0, 0.02])
def test_cancel_is_idempotent_and_harmless_after_done(when):
    async def work(loop):
        await asyncio.sleep(0.01)

    driver, exc = drive(work)
    driver.cancel()
    assert exc is None and driver.done()
