"""What a dead-lettered head does to its key (``ordering_after_dead_letter``): skip it and go
on, or block the key, against the fakes of ``test_dispatcher`` (no network, no Kafka)."""

from __future__ import annotations

import orjson

from hookrelay.kafka.control import BlockedKeys
from tests.unit.delivery.test_dispatcher import OK, TP, FakeSender, Rig, fail, hook, until
from tests.unit.delivery.test_ordering import (
    failing_first_of_a,
    per_key,
    publish,
    publish_and_settle,
    sent,
)

BLOCKING = hook("crm", ordering="key", ordering_after_dead_letter="block", max_concurrency=8)
SKIPPING = hook("crm", ordering="key", max_concurrency=8)


def letters(rig: Rig) -> list[tuple[str, int, str]]:
    """(key, seq, reason) of every dead letter, in the order they were written."""
    found = []
    for _topic, value, headers in rig.producer.to("dlq"):
        data = orjson.loads(value)["data"]
        found.append((data["key"], data["seq"], headers["hookrelay-reason"].decode()))
    return found


def blocked_gauge(rig: Rig) -> float | None:
    return rig.metrics.registry.get_sample_value(
        "hookrelay_ordering_keys_blocked_by_dead_letter", {"hook_id": "crm"}
    )


async def test_a_blocking_hook_dead_letters_its_keys_later_events_in_order() -> None:
    sender = failing_first_of_a(fail(400, False))
    async with Rig(sender, [BLOCKING]) as rig:
        for seq in range(3):
            publish(rig, b"a", seq)
            publish(rig, b"b", seq)
        await until(lambda: rig.dispatcher.in_flight == 0)
        publish(rig, b"a", 3)  # a later chain of the key: blocked too
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert per_key(sent(sender)) == {"a": [0], "b": [0, 1, 2]}
    assert letters(rig) == [
        ("a", 0, "permanent_failure"), ("a", 1, "key_blocked"), ("a", 2, "key_blocked"),
        ("a", 3, "key_blocked"),
    ]  # fmt: skip
    assert rig.tracker.to_commit()[TP][0] == 7  # every one settled
    assert blocked_gauge(rig) == 1
    assert rig.metrics.dead_lettered.labels("key_blocked")._value.get() == 3


async def test_the_block_is_written_to_the_control_topic_before_the_heads_dead_letter() -> None:
    sender = failing_first_of_a(fail(400, False))
    async with Rig(sender, [BLOCKING]) as rig:
        publish(rig, b"a", 0)
        await until(lambda: rig.dispatcher.in_flight == 0)
    topics = [topic for topic, _value, _headers in rig.producer.sent]
    assert topics == ["control", "dlq"]
    _topic, value, _headers = rig.producer.sent[0]
    doc = orjson.loads(value)
    assert (doc["hook"], doc["key"], doc["reason"]) == ("crm", "a", "permanent_failure")
    assert doc["group"] == "hookrelay" and doc["v"] == 1


async def test_a_skipping_hook_goes_on_after_a_dead_letter() -> None:
    sender = failing_first_of_a(fail(400, False))
    async with Rig(sender, [SKIPPING]) as rig:
        await publish_and_settle(rig, b"a", 3)
    assert per_key(sent(sender)) == {"a": [0, 1, 2]}
    assert letters(rig) == [("a", 0, "permanent_failure")]
    assert rig.producer.to("control") == []
    assert blocked_gauge(rig) == 0


async def test_a_key_blocked_already_is_dead_lettered_unattempted_until_unblocked() -> None:
    blocked = BlockedKeys()
    blocked.add("crm", b"a")  # read from the control topic: a restart, or another replica
    sender = FakeSender(lambda _h, _n: OK)
    async with Rig(sender, [BLOCKING], blocked=blocked) as rig:
        publish(rig, b"a", 0)
        publish(rig, b"b", 0)
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert per_key(sent(sender)) == {"b": [0]}
        assert letters(rig) == [("a", 0, "key_blocked")]
        assert rig.producer.to("control") == []  # blocked already: nothing written again
        blocked.discard("crm", b"a")  # an operator's unblock, as the follower applies it
        publish(rig, b"a", 1)
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert per_key(sent(sender)) == {"a": [1], "b": [0]}


async def test_a_hook_set_back_to_skip_ignores_its_blocks() -> None:
    blocked = BlockedKeys()
    blocked.add("crm", b"a")
    sender = FakeSender(lambda _h, _n: OK)
    async with Rig(sender, [SKIPPING], blocked=blocked) as rig:
        publish(rig, b"a", 0)
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert per_key(sent(sender)) == {"a": [0]}


async def test_a_head_that_exhausts_its_schedule_blocks_its_key_and_its_held_followers() -> None:
    sender = failing_first_of_a(fail(500, True))
    async with Rig(sender, [BLOCKING]) as rig:
        await publish_and_settle(rig, b"a", 3)
        state = rig.dispatcher.lane_state("crm")
    assert per_key(sent(sender)) == {"a": [0, 0, 0]}
    assert [reason for _k, _s, reason in letters(rig)] == [
        "retries_exhausted", "key_blocked", "key_blocked",
    ]  # fmt: skip
    assert state is not None and state["ordering"]["keys_blocked_by_dead_letter"] == 1
    assert state["ordering"]["held"] == 0  # nothing of a blocked key stays in memory


async def test_an_event_its_filter_fails_on_blocks_nothing() -> None:
    # The filter errs on seq 0 (length of a number) and lets seq 1 through.
    filtered = hook("crm", ordering="key", ordering_after_dead_letter="block",
                    filter="data.seq > `0` || length(data.seq) > `0`")  # fmt: skip
    sender = FakeSender(lambda _h, _n: OK)
    async with Rig(sender, [filtered]) as rig:
        await publish_and_settle(rig, b"a", 2)
    assert per_key(sent(sender)) == {"a": [1]}
    assert letters(rig) == [("a", 0, "filter_error")]
    assert rig.producer.to("control") == []
