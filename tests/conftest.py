"""Suite-wide fixtures: the real Kafka broker (tests.kafka_broker) and a guard that fails
any test leaving asyncio tasks behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

pytest_plugins = ["tests.kafka_broker", "tests.kafka_secure"]


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail the test if it leaves tasks running in its event loop (nothing fire-and-forget)."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)  # let just-cancelled tasks finish unwinding
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if leaked:
        for task in leaked:
            task.cancel()
        names = ", ".join(sorted(t.get_name() for t in leaked))
        pytest.fail(f"test left {len(leaked)} asyncio task(s) running: {names}")


@pytest.fixture(autouse=True)
def outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test as if not under systemd: a suite started by a systemd service would
    otherwise have in-process daemons send READY/STOPPING to the runner's own unit. Tests
    of the notify protocol set their own ``NOTIFY_SOCKET``."""
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
