"""``hookrelay backfill`` against a real broker and daemon processes: a hook added later gets
exactly the events of the window, with the webhook-ids those records always have for it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from hookrelay.events.signing import delivery_id
from tests.integration.harness import (
    daemon_process,
    hookrelay_cli,
    produce,
    read_topic,
    unique,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver

pytestmark = pytest.mark.integration


def event(n: int) -> bytes:
    return orjson.dumps(
        {"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": f"u{n}"}}
    )


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


async def test_a_hook_added_later_gets_exactly_the_window_with_the_original_ids(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("backfill")
    await create_topics(kafka_bootstrap, [topic], partitions=2)
    async with Receiver() as receiver:
        early = {"id": "early", "events": ["*"], "url": receiver.url("early")}
        path = write_config(tmp_path, kafka_bootstrap, topic, [early])
        async with daemon_process(path, tmp_path / "daemon-1.log"):
            await produce(kafka_bootstrap, topic, [event(n) for n in range(3)])
            await asyncio.sleep(0.3)
            since = time.time()
            await produce(kafka_bootstrap, topic, [event(n) for n in range(3, 7)] + [b"nope"])
            await asyncio.sleep(0.3)
            until = time.time()
            await asyncio.sleep(0.3)
            await produce(kafka_bootstrap, topic, [event(n) for n in range(7, 10)])
            await receiver.wait_for(10, hook_id="early")
        # A new hook, deployed with a restart: it gets the events from now on only.
        late = {"id": "late", "events": ["User.*"], "url": receiver.url("late")}
        config = orjson.loads(path.read_bytes())
        config["hooks"].append(late)
        path.write_bytes(orjson.dumps(config))
        async with daemon_process(path, tmp_path / "daemon-2.log"):
            window = ("backfill", "-c", str(path), "late", "--since", iso(since),
                      "--until", iso(until))  # fmt: skip
            code, out, err = await hookrelay_cli(*window, "--dry-run")
            assert code == 0, err
            assert "5 records in" in out
            assert "would send 4 events of 5 records to late (1 invalid records skipped)" in out
            await asyncio.sleep(1.0)
            assert receiver.for_hook("late") == []

            code, out, err = await hookrelay_cli(*window)
            assert code == 0, err
            assert "sent 4 events of 5 records to late" in out
            got = await receiver.wait_for(4, hook_id="late", timeout_s=20)
            await asyncio.sleep(1.5)
            assert len(receiver.for_hook("late")) == 4
        assert sorted(q.json["data"]["id"] for q in got) == ["u3", "u4", "u5", "u6"]
        by_body = {q.json["data"]["id"]: q for q in receiver.for_hook("early")}
        for q in got:
            twin = by_body[q.json["data"]["id"]]  # the same record, delivered to early
            origin = twin.headers["webhook-id"]
            assert origin != q.headers["webhook-id"]
            assert q.body == twin.body.replace(b'"hookId":"early"', b'"hookId":"late"')
        ids = {q.headers["webhook-id"] for q in got}
        assert len(ids) == 4 and all(i.startswith("msg_") for i in ids)
        assert ids == await window_ids(kafka_bootstrap, topic, since, until)


async def window_ids(bootstrap: str, topic: str, since: float, until: float) -> set[str]:
    """The webhook-ids of hook "late" for the valid events written in the window."""

    records = await read_topic(bootstrap, topic, 11)
    return {
        delivery_id(r.topic, r.partition, r.offset, "late")
        for r in records
        if since * 1000 <= r.timestamp < until * 1000 and r.value != b"nope"
    }
