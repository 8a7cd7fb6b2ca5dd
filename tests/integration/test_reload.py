"""Hot reload on the real thing: a daemon process, a real SIGHUP, the real broker and receiver."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.integration.harness import (
    produce,
    running_daemon,
    settings_for,
    start_daemon_process,
    unique,
    wait_until,
    with_admin_port,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration


def event(name: str, n: int) -> bytes:
    return orjson.dumps({"event": name, "createdAt": "2026-08-21T09:15:42.123Z", "n": n})


def hook(receiver: Receiver, hook_id: str, events: list[str], **extra: Any) -> dict[str, Any]:
    return {"id": hook_id, "events": events, "url": receiver.url(hook_id), **extra}


def rewrite_hooks(path: Path, hooks: list[dict[str, Any]], **sections: Any) -> None:
    config = orjson.loads(path.read_bytes())
    config["hooks"] = hooks
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))


def log_event(log: Path, name: str) -> dict[str, Any]:
    """The first JSON log line of event ``name``."""
    return next(
        entry for line in log.read_text().splitlines()
        if line.startswith("{") and (entry := orjson.loads(line)).get("event") == name
    )  # fmt: skip


async def metric(port: int, name: str, labels: str = "") -> float | None:
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_sighup_swaps_hooks_keeps_running_config_when_invalid_and_names_restart_keys(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("reload")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    log = tmp_path / "daemon.log"
    async with Receiver(keys={"a": None, "b": None}) as receiver:
        path = write_config(
            tmp_path, kafka_bootstrap, topic, [hook(receiver, "a", ["User.Created"])]
        )
        port = with_admin_port(path)
        process = await start_daemon_process(path, log)
        try:
            await produce(kafka_bootstrap, topic, [event("User.Created", 1)])
            await receiver.wait_for(1, "a", timeout_s=30)

            # 1. Add hook b, and move a to another event: both apply on SIGHUP.
            rewrite_hooks(path, [hook(receiver, "a", ["Role.Created"]),
                                 hook(receiver, "b", ["User.Created"])])  # fmt: skip
            process.send_signal(signal.SIGHUP)
            await wait_until(lambda: '"config_reloaded"' in log.read_text(), 15)
            await produce(kafka_bootstrap, topic, [event("User.Created", 2),
                                                   event("Role.Created", 3)])  # fmt: skip
            await receiver.wait_for(1, "b", timeout_s=15)
            await receiver.wait_for(2, "a", timeout_s=15)
            assert [orjson.loads(r.body)["n"] for r in receiver.for_hook("a")] == [1, 3]
            assert [orjson.loads(r.body)["n"] for r in receiver.for_hook("b")] == [2]

            # 2. A broken file: refused with its line, counted, and the running hooks stay.
            good = path.read_bytes()
            path.write_text(good.decode().replace('"events": [\n        "User.Created"',
                                                  '"events": [\n        7', 1))  # fmt: skip
            process.send_signal(signal.SIGHUP)
            await wait_until(lambda: '"config_reload_failed"' in log.read_text(), 15)
            failed = log_event(log, "config_reload_failed")
            assert any(f"{path}:" in error and "hooks[1].events[0]" in error
                       for error in failed["errors"])  # fmt: skip
            assert await metric(port, "hookrelay_config_reloads_total", '{result="failure"}') == 1
            assert await metric(port, "hookrelay_config_last_reload_successful") == 0
            await produce(kafka_bootstrap, topic, [event("User.Created", 4)])
            await receiver.wait_for(2, "b", timeout_s=15)  # still routed by the running hooks

            # 3. A Kafka change cannot apply live: the reload says so and applies the rest.
            path.write_bytes(good)
            rewrite_hooks(path, [hook(receiver, "a", ["*"])], kafka={"group_id": "other"})
            process.send_signal(signal.SIGHUP)
            await wait_until(lambda: '"config_reload_needs_restart"' in log.read_text(), 15)
            restart = log_event(log, "config_reload_needs_restart")
            # The control and outcome topics' names derive from the group id: they move too.
            assert restart["keys"] == ["kafka.group_id", "control_topic", "outcomes.topic"]
            assert await metric(port, "hookrelay_config_last_reload_successful") == 1
            await produce(kafka_bootstrap, topic, [event("User.Created", 5)])
            await receiver.wait_for(3, "a", timeout_s=15)
            await asyncio.sleep(0.5)
            assert len(receiver.for_hook("b")) == 2  # b was removed
            assert process.returncode is None  # the daemon stayed up throughout
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_reload_applies_a_new_rate_limit_and_lifts_a_gone_pause(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("reload")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with Receiver(keys={"moved": None}) as receiver:
        receiver.script("moved", [Reply(410)])
        hooks = [hook(receiver, "moved", ["*"], rate_limit={"per_second": 1000})]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        async with running_daemon(settings_for(path)) as daemon:
            await produce(kafka_bootstrap, topic, [event("User.Created", 1)])
            await wait_until(lambda: daemon.dispatcher.lane("moved").gone, 15)
            assert daemon.hooks()[0]["paused"] is True

            rewrite_hooks(path, [hook(receiver, "moved", ["*"], rate_limit={"per_second": 2})])
            summary = await daemon.reload()
            assert summary == {"hooks": 1, "added": [], "removed": [], "changed": ["moved"],
                               "restart_required": []}  # fmt: skip
            state = daemon.hooks()[0]
            assert state["paused"] is False
            assert state["rate_limit"] == {
                "per_second": 2.0, "burst": 2, "current_per_second": 2.0, "adaptive": None,
            }  # fmt: skip
            assert state["last_24h"] == {"requests": 1, "succeeded": 0, "success_rate": 0.0}

            await produce(kafka_bootstrap, topic, [event("User.Created", n) for n in range(2, 8)])
            await receiver.wait_for(7, "moved", timeout_s=20)
            arrivals = [r.arrived_monotonic for r in receiver.for_hook("moved")[1:]]
            # Six requests at 2/s with a burst of 2: the last comes >= 2 s after the first.
            assert arrivals[-1] - arrivals[0] >= 1.9
            recent = daemon.deliveries(hook_id="moved", outcome=None, limit=10)
            assert [d["outcome"] for d in recent][-1] == "dead_lettered"  # the 410, oldest
            assert {d["status"] for d in recent[:-1]} == {200}


async def test_the_daemons_own_listener_serves_the_admin_api_and_a_reload_rotates_its_token(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("reload")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    old, new = "old-admin-token-0123456789", "new-admin-token-9876543210"
    (tmp_path / "token").write_text(old + "\n")
    async with Receiver(keys={"a": None}) as receiver:
        path = write_config(tmp_path, kafka_bootstrap, topic, [hook(receiver, "a", ["*"])])
        config = orjson.loads(path.read_bytes())
        config["admin"]["token_file"] = "token"
        path.write_bytes(orjson.dumps(config))
        async with running_daemon(settings_for(path)) as daemon:
            base = f"http://127.0.0.1:{daemon.admin.port}/v1"

            async def call(method: str, route: str, token: str) -> tuple[int, Any]:
                headers = {"Authorization": f"Bearer {token}"}
                async with (
                    aiohttp.ClientSession() as session,
                    session.request(method, base + route, headers=headers) as response,
                ):
                    return response.status, await response.json(content_type=None)

            status, body = await call("GET", "/hooks", old)
            assert (status, [h["id"] for h in body["hooks"]]) == (200, ["a"])
            (tmp_path / "token").write_text(new + "\n")
            status, body = await call("POST", "/reload", old)
            assert (status, body["restart_required"]) == (200, [])
            assert (await call("GET", "/hooks", old))[0] == 401
            assert (await call("GET", "/hooks", new))[0] == 200


# The interpreter's own start (before any hookrelay code runs) is a window no Python code
# can close; these delays land while hookrelay imports its modules and connects.
@pytest.mark.parametrize("delay_s", [0.25, 0.5])
async def test_a_sighup_during_start_up_is_held_then_served_as_a_reload(
    kafka_bootstrap: str, tmp_path: Path, delay_s: float
) -> None:
    topic = unique("reload")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    log = tmp_path / "daemon.log"
    async with Receiver(keys={"a": None}) as receiver:
        path = write_config(tmp_path, kafka_bootstrap, topic, [hook(receiver, "a", ["*"])])
        process = await start_daemon_process(path, log)
        try:
            await asyncio.sleep(delay_s)
            process.send_signal(signal.SIGHUP)  # while Python is still importing
            await wait_until(lambda: '"config_reloaded"' in log.read_text(), 30)
            assert process.returncode is None
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0
