"""hookrelay.app: the supervisor's shutdown ends every task, even one that outlives a cancel."""

from __future__ import annotations

import asyncio
import sys

import pytest

from hookrelay.app import cancel_until_done


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

    async def wait_for_after_cancel() -> str:
        inner = asyncio.ensure_future(asyncio.sleep(0))
        await inner
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        await asyncio.wait_for(inner, timeout=10)
        await asyncio.sleep(0)  # the cancellation is gone: this suspension does not raise
        return "ran on"

    async def timeout_after_cancel() -> str:
        inner = asyncio.ensure_future(asyncio.sleep(0))
        await inner
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        async with asyncio.timeout(10):
            await inner
        await asyncio.sleep(0)
        return "ran on"

    assert await asyncio.create_task(wait_for_after_cancel()) == "ran on"
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(timeout_after_cancel())
