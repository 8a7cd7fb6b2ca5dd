"""The daemon survives a Kafka cluster that is not there yet: it stays up, says it is not
ready, and starts delivering by itself once the broker answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from hookrelay.app import Daemon
from tests.integration.harness import (
    eventually,
    produce,
    settings_for,
    wait_until,
    write_config,
)
from tests.kafka_broker import create_topics, free_port, run_kafkactl
from tests.receiver import Receiver

pytestmark = pytest.mark.integration


async def readyz(port: int) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as r:
        return r.status, await r.json()


async def _is_ready(port: int) -> bool:
    return (await readyz(port))[0] == 200


async def test_daemon_waits_for_an_unreachable_broker_then_delivers(tmp_path: Path) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    data_dir = tmp_path / "late-broker"
    async with Receiver(keys={"late": None}) as receiver:
        hooks = [{"id": "late", "events": ["*"], "url": receiver.url("late")}]
        settings = settings_for(write_config(tmp_path, bootstrap, "late.events", hooks))
        daemon = Daemon(settings)
        task = asyncio.create_task(daemon.run(), name="daemon-under-test")
        try:
            await wait_until(lambda: daemon.admin.port != 0, 10, "admin listener")
            await asyncio.sleep(1.0)
            status, body = await readyz(daemon.admin.port)
            assert status == 503
            assert any("kafka unreachable" in str(r) for r in body["reasons"])  # type: ignore[attr-defined]
            assert not task.done()  # still up, still trying

            started = await asyncio.to_thread(
                run_kafkactl, "start", "--port", str(port), "--data-dir", str(data_dir)
            )
            assert started.returncode == 0, started.stderr
            await create_topics(bootstrap, ["late.events", "late.events.dlq"])
            await wait_until(lambda: bool(daemon.tracker.partitions), 40, "partition assignment")
            # Its own retry topics can be assigned before the metadata shows the event topic
            # created a moment ago ("event topics missing", picked up within 30 s): ready
            # follows, not at once (CI saw a 503 here).
            await eventually(
                lambda: _is_ready(daemon.admin.port), 40, "readiness once the topics exist"
            )
            event = b'{"event":"PostSignIn","createdAt":"2026-01-01T00:00:00.000Z"}'
            await produce(bootstrap, "late.events", [event])
            [request] = await receiver.wait_for(1, timeout_s=20)
            assert request.body == event[:-1] + b',"hookId":"late"}'
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(task, 30) == 0
            await asyncio.to_thread(run_kafkactl, "stop", "--data-dir", str(data_dir))
