"""Operators' decisions through the control topic, on a real broker and real daemon processes:
``release`` sends a hook's parked deliveries now (each once: the originals are left alone),
``pause`` parks a hook's deliveries without an attempt or a dead letter, across a restart,
and ``resume`` delivers them at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from hookrelay.config import load_settings
from hookrelay.kafka.control import ControlFollower, ControlState, set_paused
from hookrelay.kafka.topics import ensure_control_topic
from tests.integration.harness import (
    admin_address,
    daemon_metric,
    daemon_process,
    eventually,
    hookrelay_cli,
    produce,
    status_of,
    topic_size,
    unique,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration


def event(n: int) -> bytes:
    return orjson.dumps(
        {"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": f"u{n}"}}
    )


async def cli(path: Path, *args: str) -> str:
    code, out, err = await hookrelay_cli(*args, "-c", str(path))
    assert code == 0, err
    return out


async def pending_for(path: Path, hook_id: str) -> list[dict[str, object]]:
    out = await cli(path, "deliveries", "pending", "--hook-id", hook_id, "--json")
    rows: list[dict[str, object]] = orjson.loads(out)["rows"]
    return rows


async def test_release_sends_parked_deliveries_now_and_each_only_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("release")
    await create_topics(kafka_bootstrap, [topic], partitions=2)
    async with Receiver() as receiver:
        receiver.script_forever("crm", Reply(status=503))
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm")}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks,
                            delivery={"retry_schedule_s": [8, 16]})  # fmt: skip
        async with daemon_process(path, tmp_path / "daemon.log"):
            await produce(kafka_bootstrap, topic, [event(n) for n in range(5)])
            first = await receiver.wait_for(5, hook_id="crm")
            await eventually(lambda: has_pending(path, "crm", 5), 20, "five parked retries")
            receiver.script_forever("crm", None)  # the endpoint is fixed
            released_at = time.monotonic()
            out = await cli(path, "release", "crm")
            assert "released 5 parked deliveries of crm" in out
            again = (await receiver.wait_for(10, hook_id="crm", timeout_s=20))[5:]
            assert time.monotonic() - released_at < 7  # sooner than the 8 s tier
            assert sorted(q.headers["webhook-id"] for q in again) == sorted(
                q.headers["webhook-id"] for q in first
            )
            # Released is no longer owed: neither listed, nor released a second time (the
            # originals, not yet due, are left out; the copies were delivered).
            await eventually(lambda: nothing_pending(path, "crm"), 10, "the copies settled")
            assert "released 0 parked deliveries of crm" in await cli(path, "release", "crm")
            # The originals come due 8 s after they were parked: left alone, never sent.
            await eventually(lambda: superseded(path, 5), 30, "the originals left alone when due")
            await asyncio.sleep(1.0)
            assert len(receiver.for_hook("crm")) == 10
            assert await pending_for(path, "crm") == []


async def nothing_pending(path: Path, hook_id: str) -> bool:
    return await pending_for(path, hook_id) == []


async def has_pending(path: Path, hook_id: str, count: int) -> bool:
    return len(await pending_for(path, hook_id)) >= count


async def superseded(path: Path, count: int) -> bool:
    return await daemon_metric(path, "hookrelay_retries_superseded_total") >= count


async def test_a_paused_hook_parks_without_dead_letters_across_a_restart_until_resumed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("pause")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq], partitions=2)
    async with Receiver() as receiver:
        hooks = [{"id": h, "events": ["*"], "url": receiver.url(h)} for h in ("crm", "audit")]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks, dead_letter_topic=dlq,
                            delivery={"retry_schedule_s": [0.5, 1, 2]})  # fmt: skip
        async with daemon_process(path, tmp_path / "daemon.log"):
            out = await cli(path, "pause", "crm", "--reason", "endpoint migration")
            assert "paused crm" in out
            await eventually(lambda: paused_gauge(path, 1.0), 10, "crm paused")
            await produce(kafka_bootstrap, topic, [event(n) for n in range(4)])
            await receiver.wait_for(4, hook_id="audit")
            await eventually(lambda: has_pending(path, "crm", 4), 20, "crm's deliveries parked")
            # Parked again and again as they come due (tiers of 0.5 to 2 s), never attempted
            # and never dead-lettered, however long the pause: more than the schedule.
            await asyncio.sleep(4.0)
        assert receiver.for_hook("crm") == []
        async with daemon_process(path, tmp_path / "daemon-2.log"):  # the pause outlives it
            await produce(kafka_bootstrap, topic, [event(n) for n in range(4, 6)])
            await receiver.wait_for(6, hook_id="audit")
            await eventually(lambda: has_pending(path, "crm", 6), 20, "all six parked")
            assert receiver.for_hook("crm") == []
            assert await status_of(f"http://{admin_address(path)}/readyz") == 200
            out = await cli(path, "resume", "crm")
            # Tiers of 2 s at most: the retries come due during the resume's wait and are
            # sent then, so its release finds what is still owed (none, or a few).
            assert "resumed crm" in out and "parked deliveries of crm" in out
            delivered = await receiver.wait_for(6, hook_id="crm", timeout_s=20)
            assert len({q.headers["webhook-id"] for q in delivered}) == 6
            await eventually(lambda: paused_gauge(path, 0.0), 10, "crm resumed")
        assert await topic_size(kafka_bootstrap, dlq) == 0


async def paused_gauge(path: Path, value: float) -> bool:
    return await daemon_metric(path, 'hookrelay_hook_paused{hook_id="crm"}') == value


async def test_releases_one_after_another_of_a_paused_hook_fork_no_delivery(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # A breaker's trial: three releases 1.5 s apart of a paused hook's 300 retries copied
    # them 300, 600 and 900 times, and 26 reached the receiver twice.
    topic = unique("release-fork")
    await create_topics(kafka_bootstrap, [topic], partitions=2)
    async with Receiver() as receiver:
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm")}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks,
                            delivery={"retry_schedule_s": [0.5, 1, 2]})  # fmt: skip
        async with daemon_process(path, tmp_path / "daemon.log"):
            await cli(path, "pause", "crm")
            await produce(kafka_bootstrap, topic, [event(n) for n in range(60)])
            await eventually(lambda: has_pending(path, "crm", 60), 30, "60 parked")
            released = []
            for _ in range(3):
                out = await cli(path, "release", "crm")
                released.append(int(out.rsplit("released ", 1)[1].split()[0]))
                await asyncio.sleep(1.5)
            assert released[0] == 60 and all(n <= 60 for n in released)
            await cli(path, "resume", "crm")
            await receiver.wait_for(60, hook_id="crm", timeout_s=30)
            await eventually(lambda: nothing_pending(path, "crm"), 30, "nothing owed")
            await asyncio.sleep(3.0)  # tiers of up to 2 s: any second chain would show
        ids = [q.headers["webhook-id"] for q in receiver.for_hook("crm")]
        assert len(ids) == len(set(ids)) == 60


async def test_a_follower_caught_up_has_applied_every_decision_written_before(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """What a member given partitions waits for before their first record: a decision
    written a moment ago (a hook paused, a key blocked by the former owner) is applied,
    where the follower's own poll would apply it up to half a second later."""
    topic = unique("caught-up")
    hooks = [{"id": "crm", "events": ["*"], "url": "http://127.0.0.1:9/crm"}]
    settings = load_settings(write_config(tmp_path, kafka_bootstrap, topic, hooks))
    await ensure_control_topic(settings)
    follower = ControlFollower(settings, ControlState(settings.group_id), lambda *_: None)
    await follower.load()
    following = asyncio.create_task(follower.run())
    try:
        for round_ in range(3):
            await set_paused(settings, "crm", round_ % 2 == 0)
            await follower.caught_up(10.0)
            assert ("crm" in follower.state.paused) is (round_ % 2 == 0)
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await follower.close()
