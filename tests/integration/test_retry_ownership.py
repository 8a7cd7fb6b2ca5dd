"""Retry state that belongs to its deployment (issue 10), on the real broker.

Each test is built from a trial's reproduction: two deployments sharing a retry prefix, a
restart with a changed schedule or prefix, a poison retry record, a replay while the circuit
is open, and a rolling update whose replicas know different hooks.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from hookrelay.app import daemon as daemon_module
from hookrelay.kafka.retries import RetryRecord
from tests.integration.harness import (
    edit_config,
    headers_of,
    hookrelay_cli,
    produce,
    read_topic,
    running_daemon,
    settings_for,
    unique,
    wait_until,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration

NO_CIRCUIT = {"circuit_window": 10_000, "circuit_min_attempts": 10_000}
"""Keeps the breaker out of tests about retry state (it has tests of its own)."""


def event(n: int, name: str = "User.Created") -> bytes:
    return orjson.dumps(
        {"event": name, "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": f"u{n}"}}
    )


async def topic_size(bootstrap: str, topic: str) -> int:
    """Records in ``topic`` now (sum of end offsets; 0 when it does not exist)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            return 0
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def test_two_deployments_sharing_a_retry_prefix_never_touch_each_others_retries(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """P's endpoint fails; S has a hook with the same id and another key. S must neither
    sign nor send P's retries, nor dead-letter them (trial: S sent all 20, signed with its
    own key)."""
    prod, stag = unique("p-events"), unique("s-events")
    shared_prefix = f"{unique('shared')}.retry."
    await create_topics(kafka_bootstrap, [prod, stag, f"{prod}.dlq", f"{stag}.dlq"])
    async with Receiver(keys={"p": "key-p", "s": "key-s"}) as receiver:
        receiver.script_forever("p", Reply(status=500))
        configs = []
        for topic, path_id in ((prod, "p"), (stag, "s")):
            hooks = [{"id": "crm-sync", "events": ["*"], "url": receiver.url(path_id),
                      "signing_key": f"key-{path_id}"}]  # fmt: skip
            path = write_config(
                tmp_path, kafka_bootstrap, topic, hooks, group_id=unique(f"g-{path_id}"),
                delivery={"retry_schedule_s": [0.3, 0.6], "retry_topic_prefix": shared_prefix,
                          **NO_CIRCUIT},
            )  # fmt: skip
            configs.append(settings_for(path))
        p_settings, s_settings = configs
        async with running_daemon(p_settings), running_daemon(s_settings) as s_daemon:
            await produce(kafka_bootstrap, prod, [event(n) for n in range(20)])
            letters = await read_topic(kafka_bootstrap, f"{prod}.dlq", 20, timeout_s=40)
            await asyncio.sleep(1.0)  # S has had every chance to take a retry
            skipped = s_daemon.metrics.retry_records_skipped.labels("other_group")._value.get()
    assert receiver.for_hook("s") == []  # no cross delivery
    assert await topic_size(kafka_bootstrap, f"{stag}.dlq") == 0  # no foreign dead letter
    assert len({r.body for r in receiver.for_hook("p")}) == 20  # all by P, signed with P's key
    assert all(r.signature_valid for r in receiver.for_hook("p"))
    assert {headers_of(r)["hookrelay-group"] for r in letters} == {p_settings.kafka.group_id}
    assert skipped >= 20  # S saw P's retries in the shared topics and left them alone


@pytest.mark.parametrize("change", ["retry_schedule_s", "retry_topic_prefix"])
async def test_a_restart_with_a_changed_retry_setting_still_serves_the_pending_retries(
    kafka_bootstrap: str, tmp_path: Path, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trial: schedule [2, 60] → [2, 30] across a restart left 20 of 20 pairs in the old
    ``1m`` tier, never delivered nor dead-lettered; a prefix change did the same. Once
    drained, the old tier is no longer subscribed (a breaker deleted one, as the README
    says one may, and the subscription had the broker create it again at once)."""
    monkeypatch.setattr(daemon_module, "FIRST_NAME_LOOK_S", 1.0)
    monkeypatch.setattr(daemon_module, "FORMER_TIERS_INTERVAL_S", 1.0)
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with Receiver(keys={"crm": "k"}) as receiver:
        receiver.script_forever("crm", Reply(status=500))
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm"), "signing_key": "k"}]
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks,
            delivery={"retry_schedule_s": [0.3, 8], **NO_CIRCUIT},
        )  # fmt: skip
        settings = settings_for(path)
        async with running_daemon(settings):
            await produce(kafka_bootstrap, topic, [event(n) for n in range(20)])
            await read_topic(kafka_bootstrap, f"{topic}.retry.8s", 20, timeout_s=30)
        if change == "retry_schedule_s":
            edit_config(path, "delivery", retry_schedule_s=[0.3, 4])
        else:
            edit_config(path, "delivery", retry_topic_prefix=f"{topic}.retries-v2.")
        receiver.script_forever("crm", None)  # the endpoint is fixed meanwhile
        async with running_daemon(settings_for(path)) as daemon:
            delivered = await receiver.wait_for(60, hook_id="crm", timeout_s=40)
            former = f"{topic}.retry.8s"
            await wait_until(
                lambda: former not in daemon.source.consumer.subscription(), 20,
                "the drained tier unsubscribed",
            )  # fmt: skip
    ok = delivered[40:]  # two failed attempts each, then the fixed endpoint
    assert len({r.body for r in ok}) == 20  # every pair delivered, none lost in the old tier
    assert all(r.signature_valid for r in ok)
    assert await topic_size(kafka_bootstrap, f"{topic}.dlq") == 0


def _retry_headers(group: str, origin_topic: str, hook_id: str, n: int) -> list[tuple[str, bytes]]:
    return RetryRecord(
        hook_id=hook_id, event="User.Created", delivery_id=f"d-{n}", attempts=1,
        first_attempt_at_ms=1, last_attempt_at_ms=1, last_status=500, error="http 500",
        due_at_ms=0, origin_topic=origin_topic, origin_partition=0, origin_offset=n,
        origin_timestamp_ms=int(time.time() * 1000), created_at_ms=int(time.time() * 1000),
        group=group,
    ).headers()  # fmt: skip


def _replace(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(k, value if k == f"hookrelay-{name}" else v) for k, v in headers]


async def test_poison_retry_records_between_valid_ones_are_dead_lettered_and_the_daemon_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Trial: ``hookrelay-hook-id: hé`` made every daemon of the group exit, on every restart."""
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with Receiver(keys={"crm": "k"}) as receiver:
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm"), "signing_key": "k"}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        settings = settings_for(path)
        group = settings.kafka.group_id
        valid = _retry_headers(group, topic, "crm", 0)
        poison = [
            _replace(valid, "hook-id", "hé".encode()),
            _replace(valid, "hook-id", b"\xff\xfe"),
            _replace(valid, "attempts", "١٢".encode()),
            _replace(valid, "delivery-id", b"d-1\r\nx-injected: 1"),
            _replace(valid, "origin-offset", b"-5"),
            [(k, v) for k, v in valid if k != "hookrelay-due-at"],
            [*valid, ("hookrelay-hook-id", b"other")],
            _replace(valid, "due-at", b"99999999999999"),  # would hold the partition for ever
        ]
        far = str(int(time.time() * 1000) + 20 * 3600 * 1000).encode()
        records = [
            # another deployment's record, due in 20 h, at the head of the partition: it must
            # neither wait nor be dead-lettered here
            (_replace(_retry_headers("other", topic, "crm", 900), "due-at", far), event(900)),
            ([("hookrelay-due-at", None), ("hookrelay-group", group.encode())], event(901)),
            (valid, event(0)),
        ]
        for n, headers in enumerate(poison, start=1):
            records.append((headers, event(n)))
            records.append((_retry_headers(group, topic, "crm", 100 + n), event(100 + n)))
        async with running_daemon(settings) as daemon:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
            await producer.start()
            try:
                for headers, value in records:
                    await producer.send_and_wait(
                        settings.retry_topics[0], value, headers=headers, partition=0
                    )
            finally:
                await producer.stop()
            await receiver.wait_for(1 + len(poison), hook_id="crm", timeout_s=20)
            letters = await read_topic(kafka_bootstrap, f"{topic}.dlq", len(poison) + 1)
            await asyncio.sleep(0.5)
            assert not daemon.stopping.is_set()  # still up
    reasons = [headers_of(r)["hookrelay-reason"] for r in letters]
    assert reasons == ["bad_retry_record"] * (len(poison) + 1)  # the null due-at one too
    assert await topic_size(kafka_bootstrap, f"{topic}.dlq") == len(poison) + 1
    assert all(r.signature_valid for r in receiver.for_hook("crm"))
    assert len(receiver.for_hook("crm")) == 1 + len(poison)


async def test_replay_while_the_circuit_is_open_gives_every_delivery_a_fresh_schedule(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Trial: replay wrote ``created-at: 0``, so 100 replayed deliveries were dead-lettered
    again within 1 s, unattempted, while the circuit was open."""
    topic = unique("events")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq])
    async with Receiver(keys={"crm": "k"}) as receiver:
        receiver.script_forever("crm", Reply(status=400))  # first: 40 permanent failures
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm"), "signing_key": "k"}]
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks,
            delivery={"retry_schedule_s": [2, 4], "circuit_cooldown_s": 3},
        )  # fmt: skip
        async with running_daemon(settings_for(path)) as daemon:
            await produce(kafka_bootstrap, topic, [event(n) for n in range(40)])
            letters = await read_topic(kafka_bootstrap, dlq, 40, timeout_s=30)
            ids = {headers_of(r)["hookrelay-delivery-id"] for r in letters}
            receiver.script_forever("crm", Reply(status=500))  # then the endpoint goes down
            await produce(kafka_bootstrap, topic, [event(n, "Role.Created") for n in range(30)])
            await wait_until(lambda: daemon.dispatcher.lane("crm").circuit.name == "OPEN", 20)
            code, out, err = await hookrelay_cli(
                "replay", "-c", str(path), "--event", "User.Created"
            )
            assert code == 0, out + err
            assert "replayed 40 of 40 dead letters" in out
            await asyncio.sleep(1.5)
            now_in_dlq = await read_topic(
                kafka_bootstrap, dlq, await topic_size(kafka_bootstrap, dlq)
            )
            again = [
                h for h in map(headers_of, now_in_dlq)
                if h["hookrelay-delivery-id"] in ids
                and h["hookrelay-reason"] != "permanent_failure"
            ]  # fmt: skip
            fixed_at = len(receiver.requests)
            receiver.script_forever("crm", None)

            def delivered_ids() -> set[str]:
                return {r.headers["webhook-id"] for r in receiver.requests[fixed_at:]}

            await wait_until(lambda: delivered_ids() >= ids, 40, "all 40 replayed delivered")
    assert again == []  # none dead-lettered again while the circuit was open


async def test_replicas_with_different_hook_sets_lose_nothing_to_hook_removed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A rolling update: old replica A lacks hook ``hx``, new replica B has it. hx's endpoint
    fails while both run, so its retries spread over both replicas' retry partitions; A used
    to dead-letter its share as ``hook_removed``. Now A parks them again, and once A has left,
    B delivers every hx delivery that was created (events A consumed never had one: A does
    not know hx, which the README says)."""
    topic = unique("events")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq], partitions=6)
    async with Receiver(keys={"h1": None, "hx": None}) as receiver:
        receiver.script_forever("hx", Reply(status=500))
        h1 = {"id": "h1", "events": ["*"], "url": receiver.url("h1")}
        hx = {"id": "hx", "events": ["*"], "url": receiver.url("hx")}
        group = unique("group")
        delivery = {"retry_schedule_s": [0.5, 1, 2, 8, 8], "unknown_hook_grace_s": 120,
                    **NO_CIRCUIT}  # fmt: skip
        paths = [
            write_config(tmp_path, kafka_bootstrap, topic, hooks, group_id=group, delivery=delivery)
            for hooks in ([h1], [h1, hx])
        ]
        for path in paths:
            edit_config(path, "kafka", topic_partitions=4)
        old, new = (settings_for(path) for path in paths)
        async with running_daemon(new) as b:
            async with running_daemon(old) as a:
                await wait_until(lambda: len(a.tracker.partitions) < 30, 20, "A joined")
                await asyncio.sleep(2.0)  # let the group settle before producing
                await produce(kafka_bootstrap, topic, [event(n) for n in range(30)])
                await receiver.wait_for(30, hook_id="h1", timeout_s=20)
                await wait_until(
                    lambda: a.metrics.unknown_hook_retries.labels("parked")._value.get() > 0,
                    20, "A to meet a retry of hx",
                )  # fmt: skip
                created = {r.headers["webhook-id"] for r in receiver.for_hook("hx")}
            fixed_at = len(receiver.requests)
            receiver.script_forever("hx", None)  # A has left; the endpoint recovers

            def delivered() -> set[str]:
                return {r.headers["webhook-id"] for r in receiver.requests[fixed_at:]}

            await wait_until(lambda: delivered() >= created, 60, "every hx delivery delivered")
            removed = b.metrics.unknown_hook_retries.labels("dead_lettered")._value.get()
    assert created and removed == 0
    assert await topic_size(kafka_bootstrap, dlq) == 0  # nothing lost to hook_removed
