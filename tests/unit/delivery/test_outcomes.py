"""The outcome topic as the dispatcher writes it: one record per delivery that ended, written
after what it states happened and before the source record is settled (fakes, no Kafka)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka.errors import MessageSizeTooLargeError

from hookrelay.events.outcome import OutcomeRecord
from tests.unit.delivery.test_dispatcher import (
    OK,
    TP,
    FakeProducer,
    FakeSender,
    Rig,
    fail,
    hook,
    until,
)
from tests.unit.tracking import commit_offsets


def outcomes(rig: Rig) -> list[OutcomeRecord]:
    return [OutcomeRecord.from_json(value) for _, value, _ in rig.producer.to("outcomes")]


class HeldOutcomes(FakeProducer):
    """Acknowledges outcome records only once ``release`` is set; the rest at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:  # fmt: skip
        future = await super().send(topic, value, key, headers, partition)
        if topic != "outcomes":
            return future
        held: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def acknowledge() -> None:
            await self.release.wait()
            held.set_result(None)

        self._task = asyncio.create_task(acknowledge())
        return held


class RefusesDeadLetters(FakeProducer):
    """The broker refuses every dead letter as too large, even the small one."""

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:  # fmt: skip
        future = await super().send(topic, value, key, headers, partition)
        if topic == "dlq":
            refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            refused.set_exception(MessageSizeTooLargeError("too large"))
            return refused
        return future


async def test_a_delivered_delivery_settles_only_once_its_outcome_is_acknowledged() -> None:
    producer = HeldOutcomes()
    async with Rig(FakeSender(lambda _h, _n: OK), [hook("crm")], producer=producer,
                   outcomes=True) as rig:  # fmt: skip
        rig.publish()
        await until(lambda: len(producer.to("outcomes")) == 1)
        await asyncio.sleep(0.05)
        assert rig.dispatcher.in_flight == 1  # delivered, its outcome not yet acknowledged
        assert commit_offsets(rig.tracker).get(TP, 0) == 0
        producer.release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert commit_offsets(rig.tracker)[TP] == 1
    [outcome] = outcomes(rig)
    assert (outcome.status, outcome.reason, outcome.hook_id, outcome.attempts) == (
        "delivered", None, "crm", 1,
    )  # fmt: skip
    assert outcome.last_status == 200 and outcome.error is None
    assert outcome.origin.topic == TP.topic and outcome.origin.offset == 0
    assert rig.metrics.outcomes_written.labels("delivered")._value.get() == 1


async def test_a_dead_letter_is_written_before_its_outcome_which_names_the_reason() -> None:
    sender = FakeSender(lambda _h, _n: fail(404, retryable=False))
    async with Rig(sender, [hook("gone")], outcomes=True) as rig:
        rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert [topic for topic, _, _ in rig.producer.sent] == ["dlq", "outcomes"]
    [outcome] = outcomes(rig)
    assert (outcome.status, outcome.reason, outcome.last_status) == (
        "dead_lettered", "permanent_failure", 404,
    )  # fmt: skip
    assert outcome.error is not None and "404" in outcome.error
    letter_headers = rig.producer.sent[0][2]
    assert letter_headers["hookrelay-delivery-id"].decode() == outcome.delivery_id


async def test_a_parked_delivery_writes_no_outcome_until_it_ends() -> None:
    sender = FakeSender(lambda _h, n: OK if n == 2 else fail(503, retryable=True))
    async with Rig(sender, [hook("flaky")], outcomes=True) as rig:
        rig.publish()
        await until(lambda: len(rig.producer.sent) == 1)
        assert rig.producer.to("outcomes") == []
        rig.feed_back(rig.producer.sent[0])
        await until(lambda: rig.dispatcher.in_flight == 0)
    [outcome] = outcomes(rig)
    assert (outcome.status, outcome.attempts) == ("delivered", 2)
    assert outcome.first_attempt_at_ms is not None and outcome.last_attempt_at_ms is not None
    assert outcome.first_attempt_at_ms <= outcome.last_attempt_at_ms


async def test_a_dead_letter_the_broker_refuses_twice_ends_dropped() -> None:
    sender = FakeSender(lambda _h, _n: fail(400, retryable=False))
    async with Rig(sender, [hook("crm")], producer=RefusesDeadLetters(), outcomes=True) as rig:
        rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert commit_offsets(rig.tracker)[TP] == 1
    [outcome] = outcomes(rig)
    assert (outcome.status, outcome.reason) == ("dropped", None)


async def test_without_an_outcome_topic_nothing_is_written_beside_the_dead_letter() -> None:
    sender = FakeSender(lambda h, _n: fail(400, retryable=False) if h == "crm" else OK)
    async with Rig(sender, [hook("crm"), hook("ok")], outcomes=False) as rig:
        rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert [topic for topic, _, _ in rig.producer.sent] == ["dlq"]


async def test_the_record_key_is_the_delivery_id_and_the_value_carries_no_body() -> None:
    async with Rig(FakeSender(lambda _h, _n: OK), [hook("crm", signing_key="s3cret-key-value")],
                   outcomes=True) as rig:  # fmt: skip
        rig.publish("User.Created")
        await until(lambda: rig.dispatcher.in_flight == 0)
    [(_, value, headers)] = rig.producer.to("outcomes")
    doc = orjson.loads(value)
    assert doc["event"] == "User.Created" and doc["v"] == 1
    assert headers == {"hookrelay-outcome-version": b"1", "hookrelay-group": b"g"}
    assert b"s3cret" not in value and b"createdAt" not in value and b"http" not in value


async def test_a_paused_hook_parks_without_an_attempt_and_resumes() -> None:
    sender = FakeSender(lambda _h, _n: OK)
    async with Rig(sender, [hook("crm"), hook("audit")]) as rig:
        rig.dispatcher.set_paused("crm", True)
        assert rig.dispatcher.lane_state("crm") == {
            "paused": True, "paused_by": "operator", "circuit": "closed", "pending": 0,
            "in_flight": 0, "rate_limit": None, "ordering": None,
        }  # fmt: skip
        rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert [a[0] for a in sender.attempts] == ["audit"]
        [(topic, _, headers)] = rig.producer.sent
        assert topic.startswith("retry.") and headers["hookrelay-attempts"] == b"0"
        rig.dispatcher.set_paused("crm", False)
        rig.feed_back(rig.producer.sent[0])
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert sorted(a[0] for a in sender.attempts) == ["audit", "crm"]


async def test_the_rate_limit_wait_is_observed_per_delivery_from_entering_the_lane() -> None:
    limited = hook("crm", rate_limit={"per_second": 20, "burst": 1}, max_concurrency=4)
    async with Rig(FakeSender(lambda _h, _n: OK), [limited]) as rig:
        for _ in range(4):
            rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
    samples = {
        s.name.rsplit("_", 1)[1]: s.value
        for s in rig.metrics.rate_limit_wait.collect()[0].samples
        if s.labels.get("le") in (None, "0.001")
    }
    assert samples["count"] == 4
    assert samples["bucket"] == 1  # the first found its token; the others waited
    # Three waits of 50, 100 and 150 ms from entering the lane, each measured by its own
    # delivery: 0.3 s in all.
    assert 0.29 <= samples["sum"] < 0.6
