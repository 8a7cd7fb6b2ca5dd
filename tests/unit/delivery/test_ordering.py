"""Ordered delivery per key (``ordering: key``), against the fake sender of
``test_dispatcher`` (no network, no Kafka)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import orjson
import pytest

from hookrelay.config import Hook
from hookrelay.events.decode import decode
from hookrelay.events.model import AttemptResult, Origin
from hookrelay.events.signing import delivery_id
from tests.unit.delivery.test_dispatcher import (
    OK,
    TP,
    FakeSender,
    Rig,
    blocked_sender,
    fail,
    hook,
    until,
)

ORDERED = hook("crm", ordering="key", max_concurrency=8)


def publish(rig: Rig, key: bytes | None, seq: int) -> None:
    """One keyed event whose body names its key and sequence number."""
    value = orjson.dumps({
        "event": "User.Data.Updated", "createdAt": "2026-01-01T00:00:00.000Z",
        "data": {"key": (key or b"").decode(), "seq": seq},
    })  # fmt: skip
    event = decode(value, key, Origin(TP.topic, 0, rig.offset, 0), 1 << 20)
    ticket = rig.tracker.register(TP, rig.offset, len(rig.hooks))
    rig.dispatcher.submit(event, tuple(rig.hooks), ticket)
    rig.offset += 1


def sent(sender: FakeSender) -> list[tuple[str, int]]:
    """(key, seq) of every attempt, in the order they were made."""
    found = []
    for _hook, _id, body in sender.attempts:
        data = orjson.loads(body)["data"]
        found.append((data["key"], data["seq"]))
    return found


def sender_ids(rig: Rig) -> list[str]:
    """The delivery ids of ``rig``'s published events for hook crm, in offset order."""
    return [delivery_id(TP.topic, TP.partition, n, "crm") for n in range(rig.offset)]


def per_key(attempts: list[tuple[str, int]]) -> dict[str, list[int]]:
    keys: dict[str, list[int]] = defaultdict(list)
    for key, seq in attempts:
        keys[key].append(seq)
    return keys


async def test_one_delivery_per_key_at_a_time_in_offset_order_other_keys_go_on() -> None:
    release = {"a": asyncio.Event(), "b": asyncio.Event()}
    in_flight: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)

    async def behaviour(_hook: str, _n: int) -> AttemptResult:
        key, _seq = sent(sender)[-1]
        in_flight[key] += 1
        most[key] = max(most[key], in_flight[key])
        try:
            await release[key].wait()
            return OK
        finally:
            in_flight[key] -= 1

    sender = FakeSender(behaviour)
    async with Rig(sender, [ORDERED]) as rig:
        for seq in range(3):
            publish(rig, b"a", seq)
            publish(rig, b"b", seq)
        await until(lambda: len(sender.attempts) == 2)  # one head per key
        release["b"].set()  # b's chain runs to its end while a's head still hangs
        await until(lambda: per_key(sent(sender))["b"] == [0, 1, 2])
        assert per_key(sent(sender))["a"] == [0]
        release["a"].set()
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert per_key(sent(sender)) == {"a": [0, 1, 2], "b": [0, 1, 2]}
    assert most == {"a": 1, "b": 1}
    assert rig.tracker.to_commit()[TP][0] == 6


async def test_a_failing_head_is_retried_in_memory_and_holds_only_its_key() -> None:
    def behaviour(_hook: str, n: int) -> AttemptResult:
        key, seq = sent(sender)[-1]
        return fail(503, True) if (key, seq) == ("a", 0) and n < 3 else OK

    sender = FakeSender(behaviour)
    async with Rig(sender, [ORDERED], retry_schedule_s=[0.05, 0.05, 0.05]) as rig:
        for seq in range(3):
            publish(rig, b"a", seq)
            publish(rig, b"b", seq)
        await until(lambda: per_key(sent(sender))["b"] == [0, 1, 2])
        assert per_key(sent(sender))["a"][:1] == [0]  # b did not wait for a's retries
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert per_key(sent(sender))["a"] == [0, 0, 0, 1, 2]
    assert rig.producer.sent == []  # nothing parked in a retry topic
    held = rig.metrics.registry.get_sample_value(
        "hookrelay_ordering_held_deliveries", {"hook_id": "crm"}
    )
    assert held == 0


async def publish_and_settle(rig: Rig, key: bytes, count: int) -> None:
    """Publish ``count`` events of ``key`` (seq 0 up) and wait until every one is settled."""
    for seq in range(count):
        publish(rig, key, seq)
    await until(lambda: rig.dispatcher.in_flight == 0)


def failing_first_of_a(failure: AttemptResult) -> FakeSender:
    """A sender whose endpoint answers ``failure`` to every attempt of key a's first event
    (seq 0), 200 to the others."""

    def behaviour(_hook: str, _n: int) -> AttemptResult:
        key, seq = sent(sender)[-1]
        return failure if (key, seq) == ("a", 0) else OK

    sender = FakeSender(behaviour)
    return sender


async def test_a_head_that_exhausts_its_schedule_is_dead_lettered_and_its_key_goes_on() -> None:
    sender = failing_first_of_a(fail(500, True))
    async with Rig(sender, [ORDERED]) as rig:
        await publish_and_settle(rig, b"a", 3)
    assert per_key(sent(sender))["a"] == [0, 0, 0, 1, 2]  # 3 attempts: 2 retries scheduled
    letters = rig.producer.to("dlq")
    assert len(letters) == 1
    assert letters[0][2]["hookrelay-reason"] == b"retries_exhausted"


async def test_events_without_a_key_are_not_ordered() -> None:
    sender, release = blocked_sender()
    async with Rig(sender, [ORDERED]) as rig:
        for seq in range(4):
            publish(rig, None, seq)
        await until(lambda: len(sender.attempts) == 4)  # all at once, like any lane
        release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)


async def test_revoking_the_partition_releases_the_head_and_every_follower() -> None:
    def behaviour(_hook: str, _n: int) -> AttemptResult:
        return fail(500, True)

    sender = FakeSender(behaviour)
    async with Rig(sender, [ORDERED], retry_schedule_s=[30.0]) as rig:
        for seq in range(3):
            publish(rig, b"a", seq)
        await until(lambda: len(sender.attempts) == 1)
        await until(lambda: rig.dispatcher.busy == 3)  # the head waits 30 s for its retry
        rig.tracker.revoke([TP])
        assert rig.dispatcher.release_revoked() == 3
        assert rig.dispatcher.in_flight == 0
        assert rig.tracker.outstanding([TP]) == 0
    assert rig.tracker.to_commit() == {TP: (0, "")}  # none settled: the next owner makes all


async def test_a_blocked_keys_followers_pause_their_own_partition_not_the_consumer() -> None:
    """Heads count towards max_in_flight whatever the lane's state (they cannot be parked);
    followers pause only the partition they came from, once lane_max_pending of them wait
    there (a trial's hot key had paused every partition, other topics and retries too)."""
    sender = FakeSender(lambda _h, _n: fail(500, True))
    async with Rig(
        sender, [ORDERED], retry_schedule_s=[30.0], max_in_flight=100, lane_max_pending=10,
    ) as rig:  # fmt: skip
        for seq in range(10):
            publish(rig, b"a", seq)
        await until(lambda: len(sender.attempts) == 1)
        assert rig.dispatcher.held_partitions() == set()  # 9 followers: under the bound
        publish(rig, b"a", 10)
        assert rig.dispatcher.held_partitions() == {(TP.topic, TP.partition)}
        assert rig.dispatcher.load() < 1.0  # the other partitions are still fetched


async def test_a_paused_ordered_hook_holds_its_heads_until_resumed() -> None:
    sender = FakeSender(lambda _h, _n: OK)
    async with Rig(sender, [ORDERED]) as rig:
        rig.dispatcher.set_paused("crm", True)
        for seq in range(3):
            publish(rig, b"a", seq)
        await asyncio.sleep(0.05)
        assert sender.attempts == []
        assert rig.producer.sent == []  # held, not parked
        blocked = [{
            "key": "a", "delivery_id": sender_ids(rig)[0], "waiting_for": "paused",
            "attempts": 0, "last_status": None, "last_error": None, "first_attempt_at": None,
            "next_look_in_s": None,
        }]  # fmt: skip
        assert rig.dispatcher.lane_state("crm")["ordering"] == {  # type: ignore[index]
            "keys": 1, "blocked_keys": 1, "blocked": blocked, "held": 3,
            "after_dead_letter": "skip", "keys_blocked_by_dead_letter": 0,
        }  # fmt: skip
        gauge = rig.metrics.registry.get_sample_value  # a paused head counts as blocked too
        assert gauge("hookrelay_ordering_blocked_keys", {"hook_id": "crm"}) == 1
        rig.dispatcher.set_paused("crm", False)
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert per_key(sent(sender)) == {"a": [0, 1, 2]}


async def test_a_reload_switching_ordering_on_gives_the_hook_an_ordered_lane() -> None:
    sender, release = blocked_sender()
    unordered = hook("crm", max_concurrency=8)
    async with Rig(sender, [unordered]) as rig:
        rig.dispatcher.set_hooks([ORDERED])
        rig.hooks = [ORDERED]
        for seq in range(3):
            publish(rig, b"a", seq)
        await asyncio.sleep(0.05)
        assert len(sender.attempts) == 1
        release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert per_key(sent(sender)) == {"a": [0, 1, 2]}


async def test_heads_behind_a_half_open_probe_look_again_rarely_not_every_50_ms() -> None:
    probe_out = asyncio.Event()
    answer = asyncio.Event()

    async def behaviour(_hook: str, _n: int) -> AttemptResult:
        if len(sender.attempts) <= 2:
            return fail(500, True)  # opens the circuit (2 of 2 failed)
        probe_out.set()
        await answer.wait()  # the probe hangs
        return OK

    sender = FakeSender(behaviour)
    ordered = hook("crm", ordering="key", max_concurrency=8)
    async with Rig(
        sender, [ordered], retry_schedule_s=[0.01] * 5, circuit_min_attempts=2,
        circuit_failure_rate=0.5, circuit_cooldown_s=0.1,
    ) as rig:  # fmt: skip
        lane = rig.dispatcher.lane("crm")
        readmits = 0
        readmit = lane._readmit  # type: ignore[attr-defined]

        def counting(delivery: Any) -> None:
            nonlocal readmits
            readmits += 1
            readmit(delivery)

        lane._readmit = counting  # type: ignore[attr-defined]
        for key in range(10):
            publish(rig, b"k%d" % key, 0)
        await asyncio.wait_for(probe_out.wait(), 5)
        before = readmits
        await asyncio.sleep(1.0)
        assert readmits - before <= 10 * 3  # ten heads, each looking at most every 0.5 s
        answer.set()
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert len({seq for _key, seq in sent(sender)}) == 1


async def test_an_operators_release_sends_the_held_retries_now_and_the_view_names_them() -> None:
    def behaviour(_hook: str, n: int) -> AttemptResult:
        return fail(503, True) if sent(sender)[-1] == ("a", 0) and n == 1 else OK

    sender = FakeSender(behaviour)
    async with Rig(sender, [ORDERED], retry_schedule_s=[60.0]) as rig:
        publish(rig, b"a", 0)
        publish(rig, b"a", 1)
        await until(lambda: rig.dispatcher.busy == 2 and len(sender.attempts) == 1)
        state = rig.dispatcher.lane_state("crm")
        assert state is not None
        [head] = state["ordering"]["blocked"]
        assert (head["key"], head["waiting_for"], head["attempts"], head["last_status"]) == (
            "a", "retry", 1, 503,
        )  # fmt: skip
        assert 50 < head["next_look_in_s"] <= 60
        rig.dispatcher.retry_held_now("crm")  # not 60 s later
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert per_key(sent(sender)) == {"a": [0, 0, 1]}


async def test_a_drain_releases_a_held_key_whole_never_its_later_events_alone() -> None:
    """Stopping while a key's head waits for its retry: the followers must not be sent (the
    trial's SIGTERM sent events 1-4 and committed them, event 0 came after the restart)."""

    def behaviour(_hook: str, _n: int) -> AttemptResult:
        return fail(500, True) if sent(sender)[-1] == ("a", 0) else OK

    sender = FakeSender(behaviour)
    async with Rig(sender, [ORDERED], retry_schedule_s=[5.0]) as rig:
        for seq in range(5):
            publish(rig, b"a", seq)
        await until(lambda: len(sender.attempts) == 1 and rig.dispatcher.busy == 5)
        assert await rig.dispatcher.drain(timeout_s=1.0)
    assert sent(sender) == [("a", 0)]
    assert rig.tracker.to_commit() == {TP: (0, "")}  # all five read again at the next start


async def test_a_drain_of_a_long_paused_chain_does_not_recurse() -> None:
    sender = FakeSender(lambda _h, _n: OK)
    async with Rig(sender, [ORDERED], max_in_flight=10_000) as rig:
        rig.dispatcher.set_paused("crm", True)
        for seq in range(3000):
            publish(rig, b"a", seq)
        assert await rig.dispatcher.drain(timeout_s=1.0)
    assert sender.attempts == []


@pytest.mark.parametrize(
    "middle",
    [hook("crm", max_concurrency=8), hook("crm", ordering="key", enabled=False)],
    ids=["switched-off-and-on", "disabled-and-enabled"],
)
async def test_a_reload_round_trip_never_lets_new_events_overtake_a_held_key(
    middle: Hook,
) -> None:
    """The breaker's reloads: ordering key -> none -> key, or the hook disabled and enabled
    again, while key a's head waits for its retry: a's later events still wait behind it."""

    def behaviour(_hook: str, n: int) -> AttemptResult:
        return fail(500, True) if sent(sender)[-1] == ("a", 0) and n == 1 else OK

    sender = FakeSender(behaviour)
    async with Rig(sender, [ORDERED], retry_schedule_s=[0.3]) as rig:
        for seq in range(3):
            publish(rig, b"a", seq)
        await until(lambda: len(sender.attempts) == 1)
        rig.dispatcher.set_hooks([middle])
        rig.dispatcher.set_hooks([ORDERED])
        for seq in range(3, 6):
            publish(rig, b"a", seq)
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert per_key(sent(sender)) == {"a": [0, 0, 1, 2, 3, 4, 5]}


async def test_an_ordered_lane_switched_off_keeps_its_held_keys_then_turns_plain() -> None:
    def behaviour(_hook: str, n: int) -> AttemptResult:
        return fail(500, True) if sent(sender)[-1] == ("a", 0) and n == 1 else OK

    sender = FakeSender(behaviour)
    unordered = hook("crm", max_concurrency=8)
    async with Rig(sender, [ORDERED], retry_schedule_s=[0.3]) as rig:
        publish(rig, b"a", 0)
        publish(rig, b"a", 1)
        await until(lambda: len(sender.attempts) == 1)
        rig.dispatcher.set_hooks([unordered])
        rig.hooks = [unordered]
        publish(rig, b"a", 2)  # held behind a0 still
        publish(rig, b"b", 0)  # no chain: sent at once
        await until(lambda: ("b", 0) in sent(sender))
        assert ("a", 2) not in sent(sender)
        await until(lambda: rig.dispatcher.in_flight == 0)
        # Settled is not idle yet: the last worker leaves its loop a step later (CI saw it).
        await until(lambda: rig.dispatcher.lane("crm").idle)
        rig.dispatcher.prune_retired()
        assert not rig.dispatcher.lane("crm").chains_keys
    assert per_key(sent(sender))["a"] == [0, 0, 1, 2]


async def test_what_an_ordered_lane_holds_is_bounded_in_bytes_not_only_in_count() -> None:
    """A trial held 3,000 events of 100 KB (958 MB) under max_in_flight: the held bodies'
    size pauses fetching too."""
    sender = FakeSender(lambda _h, _n: fail(500, True))
    async with Rig(sender, [ORDERED], retry_schedule_s=[30.0], ordering_max_held_bytes=2048) as rig:
        publish(rig, b"a", 0)
        await until(lambda: len(sender.attempts) == 1)
        for seq in range(1, 20):
            publish(rig, b"a", seq)
        lane = rig.dispatcher.lane("crm")
        chain = list(lane._chains[(TP.topic, 0, b"a")])  # type: ignore[attr-defined]
        assert lane.held_bytes == sum(len(d.body) for d in chain[1:])  # the followers
        assert rig.dispatcher.busy == 20  # 20 of max_in_flight's 10,000: the bytes pause it
        assert rig.dispatcher.load() >= 1.0
