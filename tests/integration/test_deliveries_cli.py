"""``hookrelay deliveries`` against a real broker and a real daemon process: outcomes,
pending retries and dead letters answered from the deployment's own topics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.harness import (
    daemon_metric,
    daemon_process,
    edit_config,
    eventually,
    hookrelay_cli,
    produce,
    topic_size,
    unique,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration

EVENTS = 4


def event(n: int) -> bytes:
    name = "User.Created" if n % 2 else "User.Deleted"
    return orjson.dumps(
        {"event": name, "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": f"u{n}"}}
    )


async def deliveries(path: Path, *args: str) -> dict[str, Any]:
    code, out, err = await hookrelay_cli("deliveries", "-c", str(path), *args, "--json")
    assert code == 0, err
    doc: dict[str, Any] = orjson.loads(out)
    return doc


async def test_deliveries_answers_what_ended_what_waits_and_what_was_dead_lettered(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("deliveries")
    await create_topics(kafka_bootstrap, [topic], partitions=2)
    async with Receiver() as receiver:
        receiver.script_forever("down", Reply(status=503))
        receiver.script_forever("broken", Reply(status=422))
        hooks = [{"id": h, "events": ["User.*"], "url": receiver.url(h)}
                 for h in ("ok", "down", "broken")]  # fmt: skip
        # Retries of "down" wait a minute in their tier: they are pending while we look.
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks,
                            delivery={"retry_schedule_s": [60, 120]})  # fmt: skip
        edit_config(path, "outcomes", enabled=True)
        edit_config(path, "admin", retry_backlog_interval_s=1)
        group = orjson.loads(path.read_bytes())["kafka"]["group_id"]
        started_ms = int(time.time() * 1000)
        async with daemon_process(path, tmp_path / "daemon.log"):
            keys = [f"u{n}".encode() for n in range(EVENTS)] + [b"raw"]
            await produce(kafka_bootstrap, topic, [event(n) for n in range(EVENTS)] + [b"{"],
                          keys=keys)  # fmt: skip
            await eventually(
                lambda: outcomes_written(kafka_bootstrap, f"{group}.outcomes", 2 * EVENTS + 1),
                60, "the outcomes of ok, broken and the invalid record",
            )  # fmt: skip
            await receiver.wait_for(EVENTS, hook_id="down")

            # The questions only read the deployment's topics: asked at once, not one by one
            # (each is a process of its own, and most of its time is waiting on the broker).
            sent = {q.headers["webhook-id"] for q in receiver.for_hook("ok")}
            one = sorted(sent)[0]
            ok, only, created, failed, later, recent, about, _ = await asyncio.gather(
                deliveries(path, "outcomes", "--hook-id", "ok"),
                deliveries(path, "outcomes", "--delivery-id", one),
                deliveries(path, "outcomes", "--event", "User.Created", "--status", "delivered"),
                deliveries(path, "outcomes", "--status", "dead_lettered"),
                deliveries(path, "outcomes", "--since", "2999-01-01T00:00:00Z"),
                deliveries(path, "outcomes", "--since", "10m"),
                # "Did the event about user u1 reach every hook?" by its record key.
                deliveries(path, "outcomes", "--key", "u1"),
                # Meanwhile: down's retries parked, for the questions after these.
                eventually(lambda: all_parked(path, EVENTS), 30, "the retries of down"),
            )
            assert {row["delivery_id"] for row in ok["rows"]} == sent and len(sent) == EVENTS
            assert {(row["status"], row["attempts"], row["last_status"]) for row in ok["rows"]} == {
                ("delivered", 1, 200)
            }
            assert [row["delivery_id"] for row in only["rows"]] == [one]
            assert {row["event"] for row in created["rows"]} == {"User.Created"}
            assert created["matched"] == EVENTS // 2
            reasons = sorted((row["hook_id"] or "-", row["reason"]) for row in failed["rows"])
            assert reasons == [("-", "not_json")] + [("broken", "permanent_failure")] * EVENTS
            assert later["matched"] == 0
            assert recent["matched"] == 2 * EVENTS + 1
            assert sorted((r["hook_id"], r["status"]) for r in about["rows"]) == [
                ("broken", "dead_lettered"), ("ok", "delivered"),
            ]  # fmt: skip
            assert {r["key"] for r in about["rows"]} == {"u1"}

            waiting, about_u2, letters, invalid, (code, table, _) = await asyncio.gather(
                deliveries(path, "pending", "--hook-id", "down"),
                deliveries(path, "pending", "--key", "u2"),
                deliveries(path, "dead-letters"),
                deliveries(path, "dead-letters", "--reason", "not_json"),
                hookrelay_cli("deliveries", "-c", str(path), "pending"),
            )
            down_ids = {q.headers["webhook-id"] for q in receiver.for_hook("down")}
            assert {row["delivery_id"] for row in waiting["rows"]} == down_ids
            for row in waiting["rows"]:
                assert row["tier"] == f"{topic}.retry.1m" and row["attempts"] == 1
                assert row["last_status"] == 503 and row["error"] == "http 503"
                due_ms = _ms(row["due_at"])
                assert started_ms + 60_000 <= due_ms <= int(time.time() * 1000) + 60_000
            [one] = about_u2["rows"]
            assert (one["hook_id"], one["key"]) == ("down", "u2")
            [counted] = waiting["backlog"]
            assert (counted["hook_id"], counted["pending"]) == ("down", EVENTS)
            # The daemon's own count, by hook and tier: hookrelay_retry_backlog.
            gauge = f'hookrelay_retry_backlog{{hook_id="down",tier="{topic}.retry.1m"}}'
            await eventually(lambda: gauge_is(path, gauge, EVENTS), 20, "the backlog gauge")
            assert await daemon_metric(path, 'hookrelay_retry_backlog{hook_id="ok"') == 0

            assert sorted(row["reason"] for row in letters["rows"]) == (
                ["not_json"] + ["permanent_failure"] * EVENTS
            )
            [row] = invalid["rows"]
            assert (row["hook_id"], row["value_bytes"]) == (None, 1)
            assert row["origin"]["topic"] == topic and row["key"] == "raw"
            assert row["replayed"] is False

            assert code == 0
            assert "waiting per hook and tier" in table and f"{topic}.retry.1m" in table
            assert f"pending: {EVENTS} matched" in table


async def outcomes_written(bootstrap: str, topic: str, count: int) -> bool:
    try:
        return await topic_size(bootstrap, topic) >= count
    except Exception:
        return False  # not created yet


async def all_parked(path: Path, count: int) -> bool:
    return len((await deliveries(path, "pending"))["rows"]) >= count


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp() * 1000)


async def gauge_is(path: Path, sample: str, value: float) -> bool:
    return await daemon_metric(path, sample) == value
