"""Consumer-group correctness on the real broker (issue 11): transactional producers and
partitions added while the daemon runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, RecordsToDelete
from aiokafka.structs import TopicPartition

from tests.integration.harness import (
    edit_config,
    eventually,
    positioned,
    produce,
    running_daemon,
    settings_for,
    unique,
    wait_until,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver

pytestmark = pytest.mark.integration


def event(n: int, tag: str) -> bytes:
    body = {"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z"}
    return orjson.dumps({**body, "data": {"id": f"{tag}-{n}"}})


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's end offset as a read-committed consumer sees it (its last stable
    offset), by partition number."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        found = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in found.items()}


async def crm_deployment(
    bootstrap: str, tmp_path: Path, receiver: Receiver, prefix: str, partitions: int
) -> tuple[str, Path]:
    """A new event topic (and its dead-letter topic) and a config with one hook, ``crm``,
    pointed at ``receiver``: ``(topic, config path)``."""
    topic = unique(prefix)
    await create_topics(bootstrap, [topic, f"{topic}.dlq"], partitions=partitions)
    hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm")}]
    return topic, write_config(tmp_path, bootstrap, topic, hooks)


async def add_partitions(bootstrap: str, topic: str, total: int) -> None:
    """Grow ``topic`` to ``total`` partitions, as an operator does while the daemon runs."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(total_count=total)})
    finally:
        await admin.close()


def delivered_tags(receiver: Receiver) -> list[str]:
    return [r.json["data"]["id"] for r in receiver.requests]


async def test_events_of_an_aborted_transaction_never_become_webhooks_and_an_open_one_holds_only_its_partition(  # noqa: E501
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """An outbox relay writing transactionally: committed → delivered once; aborted → never;
    open → held (its partition only) until the broker aborts it on its timeout."""
    topic = unique("tx-events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=2)
    async with Receiver(keys={"crm": None}) as receiver:
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm")}]
        settings = settings_for(write_config(tmp_path, kafka_bootstrap, topic, hooks))
        async with running_daemon(settings) as daemon:
            tx = AIOKafkaProducer(
                bootstrap_servers=kafka_bootstrap, transactional_id=unique("outbox"),
                transaction_timeout_ms=8000,
            )  # fmt: skip
            await tx.start()
            try:
                async with tx.transaction():
                    for n in range(5):
                        await tx.send(topic, event(n, "committed"), partition=0)
                await tx.begin_transaction()
                for n in range(5):
                    await tx.send(topic, event(n, "aborted"), partition=0)
                await tx.abort_transaction()
                await tx.begin_transaction()  # left open: the broker aborts it after 8 s
                await tx.send_and_wait(topic, event(0, "open"), partition=0)
                # Behind the open transaction on partition 0, and flowing on partition 1:
                await produce(kafka_bootstrap, topic, [event(0, "behind")], partition=0)
                await produce(kafka_bootstrap, topic, [event(0, "other")], partition=1)
                await receiver.wait_for(6, timeout_s=20)
                await wait_until(
                    lambda: daemon.metrics.registry.get_sample_value(
                        "hookrelay_partition_held_by_open_transaction",
                        {"topic": topic, "partition": "0"},
                    ) == 1,
                    15, "partition 0 reported as held by an open transaction",
                )  # fmt: skip
                held = delivered_tags(receiver)
                shown = {
                    p["partition"]: p["held_by_open_transaction"]
                    for p in daemon.partitions() if p["topic"] == topic
                }  # fmt: skip
                assert shown == {0: True, 1: False}  # GET /v1/partitions
                # The broker aborts the open transaction; what was behind it flows.
                await receiver.wait_for(7, timeout_s=40)
            finally:
                await tx.stop()
            await asyncio.sleep(1.0)

            # Markers and aborted records have offsets but no record to hand out: once all is
            # settled, the commit moves past them and the lag reads 0 (it stayed at 12 before).
            async def caught_up() -> bool:
                ends = await end_offsets(kafka_bootstrap, topic, 2)
                shown = [p for p in daemon.partitions() if p["topic"] == topic]
                committed = {p["partition"]: p["committed_offset"] for p in shown}
                return committed == ends and all(p["lag"] == 0 for p in shown)

            await eventually(caught_up, 30, "commits at the end offsets, past the markers")
            # Retry tiers are committed at assignment: their offsets show from then on.
            retry = [p for p in daemon.partitions() if p["role"] == "retry"]
            assert retry and all(p["committed_offset"] is not None for p in retry)
    tags = delivered_tags(receiver)
    assert sorted(held) == sorted([f"committed-{n}" for n in range(5)] + ["other-0"])
    assert sorted(tags) == sorted([*held, "behind-0"])  # each once; aborted and open: never


async def test_partitions_added_while_running_are_read_from_their_first_record_even_with_latest(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A topic grown from 1 to 3 partitions under ``auto_offset_reset: latest``: starting the
    new partitions at their end would skip what producers wrote before the assignment."""
    topic = unique("grow-events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=1)
    async with Receiver(keys={"crm": None}) as receiver:
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm")}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        edit_config(path, "kafka", auto_offset_reset="latest", metadata_max_age_s=2)
        async with running_daemon(settings_for(path)) as daemon:
            await positioned(daemon)  # latest: a record produced before would be skipped
            await produce(kafka_bootstrap, topic, [event(0, "first")], partition=0)
            await receiver.wait_for(1, timeout_s=20)  # the group has committed partition 0
            await add_partitions(kafka_bootstrap, topic, 3)
            for partition in (1, 2):  # at once: before the daemon can have been assigned them
                await produce(
                    kafka_bootstrap, topic, [event(n, f"p{partition}") for n in range(3)],
                    partition=partition,
                )  # fmt: skip
            await receiver.wait_for(7, timeout_s=40)
            await asyncio.sleep(0.5)
    assert sorted(delivered_tags(receiver)) == sorted(
        ["first-0", *(f"p{p}-{n}" for p in (1, 2) for n in range(3))]
    )


async def test_with_latest_a_partition_without_traffic_is_not_replayed_after_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """An idle partition had no commit, so the next assignment took it for a partition added
    meanwhile and read its whole history (120 old requests in the trial)."""
    async with Receiver(keys={"crm": None}) as receiver:
        topic, path = await crm_deployment(kafka_bootstrap, tmp_path, receiver, "idle", 3)
        for partition in (1, 2):  # history from before the group existed
            old = [event(n, f"old{partition}") for n in range(5)]
            await produce(kafka_bootstrap, topic, old, partition=partition)
        edit_config(path, "kafka", auto_offset_reset="latest")
        settings = settings_for(path)
        async with running_daemon(settings) as first:
            await positioned(first)  # latest: a record produced before would be skipped
            await produce(kafka_bootstrap, topic, [event(0, "new")], partition=0)
            await receiver.wait_for(1, timeout_s=20)
        async with running_daemon(settings) as again:  # stopped and started again
            await produce(kafka_bootstrap, topic, [event(1, "new")], partition=0)
            await receiver.wait_for(2, timeout_s=20)
            await asyncio.sleep(2.0)
            resets = again.metrics.offset_resets.labels("no_committed_offset")._value.get()
    assert sorted(delivered_tags(receiver)) == ["new-0", "new-1"]
    assert resets == 0  # the second start found every partition committed


async def test_an_offset_reset_is_never_silent(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Retention deleted records past the group's committed offset while it was stopped: the
    daemon starts at the earliest record left, with a warning and a counted reset; a group
    with no offsets says where it starts too."""
    topic = unique("reset-events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=1)
    async with Receiver(keys={"crm": None}) as receiver:
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm")}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        async with running_daemon(settings_for(path)) as first:
            await produce(kafka_bootstrap, topic, [event(n, "a") for n in range(3)], partition=0)
            await receiver.wait_for(3, timeout_s=20)
            fresh = first.metrics.offset_resets.labels("no_committed_offset")._value.get()
        # Stopped: 5 more records, then retention deletes everything before offset 6.
        await produce(kafka_bootstrap, topic, [event(n, "b") for n in range(5)], partition=0)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_records(
                {TopicPartition(topic, 0): RecordsToDelete(before_offset=6)}, timeout_ms=10_000
            )
        finally:
            await admin.close()
        async with running_daemon(settings_for(path)) as second:
            await receiver.wait_for(5, timeout_s=20)
            await asyncio.sleep(0.5)
            resets = second.metrics.offset_resets.labels("out_of_range")._value.get()
    assert fresh == 1  # the first start of a new group is announced too
    assert resets == 1
    assert delivered_tags(receiver)[3:] == ["b-3", "b-4"]  # the earliest left, not the end


async def test_a_static_member_restarted_within_its_session_gets_its_partitions_without_a_rebalance(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with Receiver(keys={"crm": None}) as receiver:
        topic, path = await crm_deployment(kafka_bootstrap, tmp_path, receiver, "static", 4)
        edit_config(path, "kafka", group_instance_id="replica-a", session_timeout_s=20)
        a = settings_for(path)
        edit_config(path, "kafka", group_instance_id="replica-b")
        b = settings_for(path)
        async with running_daemon(a) as first:
            async with running_daemon(b) as second:
                await wait_until(lambda: len(second.tracker.partitions) > 0, 30, "b assigned")
                await wait_until(lambda: len(first.tracker.partitions) < 10, 30, "a shares")
                held_by_b = set(second.tracker.partitions)
            rebalances = first.metrics.rebalances._value.get()
            async with running_daemon(b) as again:  # back within session_timeout_s
                await wait_until(lambda: set(again.tracker.partitions) == held_by_b, 30,
                                 "b to get its own partitions back")  # fmt: skip
                await produce(kafka_bootstrap, topic, [event(n, "after") for n in range(20)])
                await receiver.wait_for(20, timeout_s=30)
            assert first.metrics.rebalances._value.get() == rebalances  # a never gave any up
    assert sorted(delivered_tags(receiver)) == sorted(f"after-{n}" for n in range(20))


async def test_a_static_member_restarted_at_once_with_other_topics_consumes_them(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A breaker's trial: restarted within its session with another retry schedule, a static
    member got its previous assignment back (a tier it no longer subscribes to) and aiokafka
    failed on every fetch, for good; with an added event topic, it never read that one."""
    async with Receiver(keys={"crm": None}) as receiver:
        topic, path = await crm_deployment(kafka_bootstrap, tmp_path, receiver, "restatic", 2)
        # A short session: the restart below is well within it, and the group's rebalance
        # then waits out only that long for the previous process's member.
        edit_config(path, "kafka", group_instance_id="replica-a", session_timeout_s=10)
        async with running_daemon(settings_for(path)):
            pass
        added = unique("restatic-added")
        await create_topics(kafka_bootstrap, [added], partitions=1)
        edit_config(path, "delivery", retry_schedule_s=[5, 30])
        edit_config(path, "kafka", topics=[topic, added])
        async with running_daemon(settings_for(path)) as again:  # within the 10-s session
            await produce(kafka_bootstrap, topic, [event(n, "old") for n in range(5)])
            await produce(kafka_bootstrap, added, [event(n, "new") for n in range(5)])
            await receiver.wait_for(10, timeout_s=30)
            assert {tp.topic for tp in again.tracker.partitions} >= {topic, added}
    assert sorted(delivered_tags(receiver)) == sorted(
        [f"old-{n}" for n in range(5)] + [f"new-{n}" for n in range(5)]
    )


async def test_a_partition_added_after_a_static_member_restarted_is_consumed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A new user's trial: with ``group_instance_id``, a member restarted within its session
    gets its assignment back without a rebalance, and so without a leader that watches the
    topics' partition counts (aiokafka has no KIP-814); a partition added then was never
    assigned, its events never delivered, and /readyz said 200."""
    async with Receiver(keys={"crm": None}) as receiver:
        topic, path = await crm_deployment(kafka_bootstrap, tmp_path, receiver, "static-grow", 1)
        edit_config(path, "kafka", group_instance_id="replica-g", session_timeout_s=10,
                    metadata_max_age_s=1)  # fmt: skip
        async with running_daemon(settings_for(path)):
            await produce(kafka_bootstrap, topic, [event(0, "before")])
            await receiver.wait_for(1, timeout_s=20)
        async with running_daemon(settings_for(path)) as again:  # within the 10-s session
            await produce(kafka_bootstrap, topic, [event(1, "before")])
            await receiver.wait_for(2, timeout_s=20)
            await add_partitions(kafka_bootstrap, topic, 2)
            await produce(kafka_bootstrap, topic, [event(2, "added")], partition=1)
            await receiver.wait_for(3, timeout_s=30)
            assert TopicPartition(topic, 1) in again.tracker.partitions
    assert sorted(delivered_tags(receiver)) == ["added-2", "before-0", "before-1"]


async def test_two_processes_with_one_group_instance_id_are_reported_and_one_stops_consuming(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with Receiver(keys={"crm": None}) as receiver:
        topic, path = await crm_deployment(kafka_bootstrap, tmp_path, receiver, "twins", 2)
        edit_config(path, "kafka", group_instance_id="pod-0", session_timeout_s=6)
        # Both run in this process, where a hard deadline would end pytest itself.
        edit_config(path, "shutdown", grace_s=3, hard_deadline_s=60)
        settings = settings_for(path)
        async with running_daemon(settings) as first, running_daemon(settings) as second:
            await wait_until(
                lambda: bool(first.source.instance.conflict or second.source.instance.conflict),
                60, "the shared instance id to be noticed",
            )  # fmt: skip
            stopped, going = (first, second) if first.source.instance.conflict else (second, first)
            reasons = stopped.not_ready_reasons()
            assert any("group_instance_id 'pod-0'" in r for r in reasons), reasons
            assert stopped.metrics.registry.get_sample_value(
                "hookrelay_group_instance_conflict"
            ) == 1  # fmt: skip
            await produce(kafka_bootstrap, topic, [event(n, "twin") for n in range(30)])
            await receiver.wait_for(30, timeout_s=40)
            await asyncio.sleep(2)
            assert not going.source.instance.conflict
            assert stopped.tracker.partitions == []
    assert sorted(delivered_tags(receiver)) == sorted(f"twin-{n}" for n in range(30))
