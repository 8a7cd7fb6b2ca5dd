"""hookrelay.app.shutdown: every task ends at shutdown, even one that outlives a cancel."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import pytest

from hookrelay.app.shutdown import cancel_until_done


async def test_a_task_that_swallows_its_first_cancellation_is_cancelled_again() -> None:
    """The CI failure behind this: a daemon's TaskGroup waited forever at shutdown for a
    loop whose one cancellation was dropped (Python 3.11's wait_for, CPython gh-86296)."""
    cancels = 0

    async def stubborn_loop() -> None:
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                cancels += 1
                if cancels > 1:
                    raise

    task = asyncio.create_task(stubborn_loop(), name="stubborn")
    await asyncio.sleep(0.05)
    async with asyncio.timeout(10):
        await cancel_until_done([task], again_after_s=0.05)
    assert task.cancelled() and cancels == 2


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="CPython fixed wait_for in 3.12")
async def test_python_3_11_wait_for_drops_a_cancellation_that_asyncio_timeout_keeps() -> None:
    """Why ``asyncio.wait_for`` is banned in daemon/ (ruff TID251): the reproduction of
    CPython gh-107547 (a sibling of gh-86296) on this interpreter, and ``asyncio.timeout`` in
    the same place."""

    async def cancelled_while_waiting(
        wait: Callable[[asyncio.Future[None]], Awaitable[None]],
    ) -> str:
        inner = asyncio.ensure_future(asyncio.sleep(0))
        await inner
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        await wait(inner)
        await asyncio.sleep(0)  # a kept cancellation is raised at this suspension
        return "ran on"

    async def with_timeout(inner: asyncio.Future[None]) -> None:
        async with asyncio.timeout(10):
            await inner

    dropped = cancelled_while_waiting(lambda inner: asyncio.wait_for(inner, timeout=10))
    assert await asyncio.create_task(dropped) == "ran on"
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(cancelled_while_waiting(with_timeout))
