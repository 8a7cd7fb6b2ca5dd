"""Lanes and outcome handling, against a recording fake sender (no network, no Kafka)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import structlog.testing

from hookrelay.config import DeliverySettings, Hook, OutcomeSettings
from hookrelay.config.naming import tier_topics
from hookrelay.delivery.dispatcher import Circuit, Dispatcher
from hookrelay.events.decode import decode
from hookrelay.events.model import AttemptResult, Origin
from hookrelay.events.tracecontext import TraceContext
from hookrelay.kafka.control import BlockedKeys
from hookrelay.kafka.offsets import AckTracker, TopicPartition
from hookrelay.kafka.outcomes import OutcomeLog
from hookrelay.kafka.retries import RetryRecord
from hookrelay.kafka.writer import DurableWriter
from hookrelay.ops.history import History
from hookrelay.ops.metrics import Metrics
from tests.unit.tracking import commit_offsets

TP = TopicPartition("identity.events", 0)
RETRY_TP = TopicPartition("retry.10ms", 0)
OK = AttemptResult(200, None, False, None, 0.001)


def fail(status: int, retryable: bool, retry_after_s: float | None = None) -> AttemptResult:
    return AttemptResult(status, f"http {status}", retryable, retry_after_s, 0.001)


def delivered_count(metrics: Metrics, hook_id: str, outcome: str) -> float | None:
    """``hookrelay_deliveries_total{hook_id, outcome}`` as exported."""
    labels = {"hook_id": hook_id, "outcome": outcome}
    return metrics.registry.get_sample_value("hookrelay_deliveries_total", labels)


class FakeSender:
    """Records every attempt; answers with ``behaviour(hook_id, attempt_number)``."""

    def __init__(self, behaviour: Callable[[str, int], Any]) -> None:
        self.behaviour = behaviour
        self.attempts: list[tuple[str, str, bytes]] = []
        self.traces: list[TraceContext | None] = []
        self.concurrent: dict[str, int] = {}
        self.max_concurrent: dict[str, int] = {}

    async def attempt(
        self, hook: Hook, delivery_id: str, body: bytes, trace: TraceContext | None = None
    ) -> AttemptResult:
        self.attempts.append((hook.id, delivery_id, body))
        self.traces.append(trace)
        n = sum(1 for h, d, _ in self.attempts if h == hook.id and d == delivery_id)
        self.concurrent[hook.id] = self.concurrent.get(hook.id, 0) + 1
        self.max_concurrent[hook.id] = max(
            self.max_concurrent.get(hook.id, 0), self.concurrent[hook.id]
        )
        try:
            result = self.behaviour(hook.id, n)
            if asyncio.iscoroutine(result):
                result = await result
            assert isinstance(result, AttemptResult)
            return result
        finally:
            self.concurrent[hook.id] -= 1


class FakeProducer:
    """Acknowledges every send at once and keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, bytes]]] = []
        self.partitions: list[int | None] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Any = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, value, dict(headers or [])))
        self.partitions.append(partition)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def to(self, topic: str) -> list[tuple[str, bytes, dict[str, bytes]]]:
        return [sent for sent in self.sent if sent[0] == topic]


def hook(hook_id: str, **fields: Any) -> Hook:
    return Hook.model_validate(
        {"id": hook_id, "events": ["*"], "url": f"http://127.0.0.1:9/{hook_id}", **fields}
    )


class FakeClock:
    """A monotonic clock that moves only when told (``now`` in seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A dispatcher with fakes around it, and helpers to feed it events and retries."""

    def __init__(
        self,
        sender: FakeSender,
        hooks: list[Hook],
        clock: Callable[[], float] = time.monotonic,
        producer: FakeProducer | None = None,
        outcomes: bool = False,
        *,
        tracer: Any = None,
        events_waiting: Callable[[], bool] = lambda: False,
        blocked: BlockedKeys | None = None,
        **delivery: Any,
    ) -> None:
        self.metrics = Metrics()
        self.producer = producer or FakeProducer()
        self.writer = DurableWriter(self.producer, self.metrics, dead_letter_topic="dlq")
        self.outcomes = OutcomeLog(
            self.writer, self.metrics, OutcomeSettings(enabled=True, topic="outcomes"), "g"
        )
        settings = DeliverySettings.model_validate(
            {"retry_schedule_s": [0.01, 0.02], "retry_jitter": 0.0, **delivery}
        )
        topics = tier_topics("retry.", settings.retry_schedule_s)
        self.history = History()
        self.dispatcher = Dispatcher(
            sender, self.writer, self.metrics, settings,
            retry_topics=topics, dead_letter_topic="dlq", batch_size=3, history=self.history,
            clock=clock, outcomes=self.outcomes if outcomes else None, tracer=tracer,
            events_waiting=events_waiting, control_topic="control", blocked=blocked,
        )  # fmt: skip
        self.dispatcher.set_hooks(hooks)
        self.hooks = hooks
        self.tracker = AckTracker()
        self.tracker.assign([TP, RETRY_TP])
        self.offset = 0
        self.retry_offset = 0

    def publish(
        self,
        name: str = "User.Created",
        hooks: list[Hook] | None = None,
        trace: TraceContext | None = None,
    ) -> None:
        value = b'{"event":"%s","createdAt":"2026-01-01T00:00:00.000Z"}' % name.encode()
        event = decode(value, None, Origin(TP.topic, 0, self.offset, 0), 1 << 20, trace)
        targets = tuple(hooks if hooks is not None else self.hooks)
        ticket = self.tracker.register(TP, self.offset, len(targets))
        self.dispatcher.submit(event, targets, ticket)
        self.offset += 1

    def feed_back(
        self, sent: tuple[str, bytes, dict[str, bytes]], *, created_s_ago: float | None = None
    ) -> RetryRecord:
        """Do what the retry consumer does with a parked record once it is due; with
        ``created_s_ago``, as if hookrelay first took the delivery that long ago."""
        _topic, value, headers = sent
        retry = RetryRecord.from_headers(list(headers.items()))
        if created_s_ago is not None:
            created_at_ms = int((time.time() - created_s_ago) * 1000)
            retry = dataclasses.replace(retry, created_at_ms=created_at_ms)
        origin = Origin(retry.origin_topic, retry.origin_partition, retry.origin_offset, 0)
        event = decode(value, None, origin, 1 << 20, retry.trace)
        ticket = self.tracker.register(RETRY_TP, self.retry_offset, 1)
        self.retry_offset += 1
        self.dispatcher.resubmit(event, retry, ticket)
        return retry

    async def __aenter__(self) -> Rig:
        self._writer_task = asyncio.create_task(self.writer.run(), name="kafka-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.dispatcher.close()
        self._writer_task.cancel()
        await asyncio.gather(self._writer_task, return_exceptions=True)


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


def blocked_sender(only: str | None = None) -> tuple[FakeSender, asyncio.Event]:
    """A sender whose attempts hang until the event is set: for every hook, or ``only`` one
    (the others answer 200 at once)."""
    release = asyncio.Event()

    async def behaviour(hook_id: str, _n: int) -> AttemptResult:
        if only is None or hook_id == only:
            await release.wait()
        return OK

    return FakeSender(behaviour), release


async def test_slow_endpoint_does_not_delay_other_hooks() -> None:
    sender, release = blocked_sender(only="slow")
    async with Rig(sender, [hook("slow", max_concurrency=2), hook("fast")]) as rig:
        for _ in range(20):
            rig.publish()
        await until(lambda: sum(1 for h, _, _ in sender.attempts if h == "fast") == 20)
        assert rig.dispatcher.lane("slow").busy == 20  # 2 stuck sending, 18 queued
        assert commit_offsets(rig.tracker) == {TP: 0}
        release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert commit_offsets(rig.tracker) == {TP: 20}


async def test_concurrency_cap_limits_parallel_requests_per_hook() -> None:
    async def behaviour(_hook_id: str, _n: int) -> AttemptResult:
        await asyncio.sleep(0.01)
        return OK

    sender = FakeSender(behaviour)
    async with Rig(sender, [hook("capped", max_concurrency=3)]) as rig:
        for _ in range(30):
            rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert sender.max_concurrent["capped"] == 3


async def test_a_retryable_failure_is_parked_in_its_tier_and_settles_the_record() -> None:
    sender = FakeSender(lambda _h, _n: fail(500, retryable=True))
    async with Rig(sender, [hook("down")]) as rig:
        before_ms = time.time() * 1000
        rig.publish("PostSignIn")
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert commit_offsets(rig.tracker)[TP] == 1  # settled once the retry record was acked
    [(topic, value, headers)] = rig.producer.sent
    assert topic == "retry.10ms"
    assert value.startswith(b'{"event":"PostSignIn"')  # the original bytes, no hookId
    retry = RetryRecord.from_headers(list(headers.items()))
    assert (retry.hook_id, retry.event, retry.attempts, retry.last_status) == (
        "down",
        "PostSignIn",
        1,
        500,
    )
    assert retry.error == "http 500"
    assert (retry.origin_topic, retry.origin_partition, retry.origin_offset) == (TP.topic, 0, 0)
    assert int(before_ms) + 9 <= retry.due_at_ms <= time.time() * 1000 + 10
    assert rig.metrics.retries_scheduled.labels("down", "retry.10ms")._value.get() == 1


async def test_retries_walk_the_tiers_then_dead_letter_with_the_history() -> None:
    sender = FakeSender(lambda _h, _n: fail(503, retryable=True))
    async with Rig(sender, [hook("down")]) as rig:
        rig.publish("PostSignIn")
        await until(lambda: len(rig.producer.sent) == 1)
        rig.feed_back(rig.producer.sent[0])
        await until(lambda: len(rig.producer.sent) == 2)
        assert rig.producer.sent[1][0] == "retry.20ms"
        rig.feed_back(rig.producer.sent[1])
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert commit_offsets(rig.tracker) == {TP: 1, RETRY_TP: 2}
    assert len(sender.attempts) == 3  # first attempt + one per tier
    assert len({d for _, d, _ in sender.attempts}) == 1  # one webhook-id for all attempts
    [(_, value, headers)] = rig.producer.to("dlq")
    assert value.startswith(b'{"event":"PostSignIn"')
    assert headers["hookrelay-reason"] == b"retries_exhausted"
    assert headers["hookrelay-attempts"] == b"3"
    assert headers["hookrelay-last-status"] == b"503"
    assert headers["hookrelay-origin-offset"] == b"0"
    assert delivered_count(rig.metrics, "down", "dead_lettered") == 1


async def test_permanent_failure_is_dead_lettered_without_retry() -> None:
    sender = FakeSender(lambda _h, _n: fail(404, retryable=False))
    async with Rig(sender, [hook("gone")]) as rig:
        rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert len(sender.attempts) == 1
    [(topic, _, headers)] = rig.producer.sent
    assert topic == "dlq"
    assert headers["hookrelay-reason"] == b"permanent_failure"


async def test_success_after_a_retry_counts_one_delivery() -> None:
    sender = FakeSender(lambda _h, n: OK if n == 2 else fail(503, retryable=True))
    async with Rig(sender, [hook("flaky")]) as rig:
        rig.publish()
        await until(lambda: len(rig.producer.sent) == 1)
        rig.feed_back(rig.producer.sent[0])
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert len(sender.attempts) == 2
    assert delivered_count(rig.metrics, "flaky", "delivered") == 1


async def test_a_long_retry_after_throttles_the_lane_without_stalling_its_tier() -> None:
    sender = FakeSender(lambda _h, _n: fail(429, retryable=True, retry_after_s=5.0))
    async with Rig(sender, [hook("throttled", max_concurrency=1)]) as rig:
        rig.publish()
        await until(lambda: len(rig.producer.sent) == 1)
        rig.publish()  # arrives while the lane is paused: parked, not attempted
        await until(lambda: len(rig.producer.sent) == 2)
        rig.feed_back(rig.producer.sent[0])  # due again, but the lane is still paused
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert len(sender.attempts) == 1
    first, second, again = (
        RetryRecord.from_headers(list(h.items())) for _, _, h in rig.producer.sent
    )
    assert rig.producer.sent[0][0] == "retry.20ms"  # the longest tier there is
    # Due after the tier's own delay, not 5 s later: the tier's other records keep moving.
    assert first.due_at_ms - first.last_attempt_at_ms <= 60  # type: ignore[operator]
    assert (first.attempts, first.parks, first.last_status) == (0, 1, 429)  # throttled
    assert (second.attempts, second.parks) == (0, 1)
    assert (again.attempts, again.parks) == (0, 2)  # parked again: still no attempt spent
    assert rig.metrics.parked.labels("throttled", "throttled")._value.get() == 2


async def test_an_open_circuit_parks_without_spending_attempts() -> None:
    sender = FakeSender(lambda _h, _n: fail(500, retryable=True))
    settings = {"circuit_window": 1, "circuit_min_attempts": 1, "circuit_cooldown_s": 60}
    async with Rig(sender, [hook("down", max_concurrency=1)], **settings) as rig:
        rig.publish()  # fails: the circuit opens
        await until(lambda: len(rig.producer.sent) == 1)
        rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
    parked = RetryRecord.from_headers(list(rig.producer.sent[1][2].items()))
    assert (parked.attempts, parked.parks) == (0, 1)
    assert rig.producer.sent[1][0] == "retry.20ms"  # the tier nearest the cool-down
    assert len(sender.attempts) == 1


async def test_an_expired_delivery_behind_an_open_circuit_gets_one_attempt_before_its_letter() -> (
    None
):
    sender = FakeSender(lambda _h, _n: fail(500, retryable=True))
    settings = {"circuit_window": 1, "circuit_min_attempts": 1, "circuit_cooldown_s": 60}
    async with Rig(sender, [hook("down", max_concurrency=1)], **settings) as rig:
        rig.publish()  # fails: the circuit opens
        await until(lambda: len(rig.producer.sent) == 1)
        rig.publish()  # parked behind the open circuit, unattempted
        await until(lambda: len(rig.producer.sent) == 2)
        # It comes back older than the whole 30 ms schedule, the circuit still open: never
        # attempted, it is let through for one real attempt instead of being given up ...
        rig.feed_back(rig.producer.sent[1], created_s_ago=1.0)
        await until(lambda: len(rig.producer.sent) == 3)
        assert len(sender.attempts) == 2
        assert rig.dispatcher.lane("down").circuit is Circuit.OPEN
        retry = RetryRecord.from_headers(list(rig.producer.sent[2][2].items()))
        assert (retry.attempts, retry.last_status) == (1, 500)
        # ... and once it failed one, the open circuit gives it up.
        rig.feed_back(rig.producer.sent[2], created_s_ago=1.0)
        await until(lambda: rig.dispatcher.in_flight == 0)
    [(_, _, headers)] = rig.producer.to("dlq")
    assert headers["hookrelay-reason"] == b"retries_exhausted"
    assert headers["hookrelay-attempts"] == b"1"
    assert headers["hookrelay-last-status"] == b"500"
    assert len(sender.attempts) == 2


async def test_a_delivery_waiting_behind_a_half_open_probe_is_parked_however_old() -> None:
    clock = FakeClock()
    release = asyncio.Event()
    calls = 0

    async def behaviour(_h: str, _n: int) -> AttemptResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            return fail(500, retryable=True)
        await release.wait()  # the probe hangs until released
        return OK

    sender = FakeSender(behaviour)
    settings = {"circuit_window": 1, "circuit_min_attempts": 1, "circuit_cooldown_s": 10}
    async with Rig(sender, [hook("h", max_concurrency=2)], clock, **settings) as rig:
        rig.publish()  # fails: the circuit opens
        await until(lambda: len(rig.producer.sent) == 1)
        clock.now += 11.0  # cool-down over
        rig.publish()  # the probe
        await until(lambda: len(sender.attempts) == 2)
        lane = rig.dispatcher.lane("h")
        assert lane.circuit is Circuit.HALF_OPEN
        rig.feed_back(rig.producer.sent[0], created_s_ago=3600.0)  # failed once, long ago
        await until(lambda: len(rig.producer.sent) == 2)
        assert rig.producer.to("dlq") == []  # half-open is not open: it waits its turn
        parked = RetryRecord.from_headers(list(rig.producer.sent[1][2].items()))
        assert (parked.attempts, parked.parks) == (1, 1)
        release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert lane.circuit is Circuit.CLOSED


def retry_records(rig: Rig) -> list[RetryRecord]:
    return [
        RetryRecord.from_headers(list(h.items())) for t, _, h in rig.producer.sent if t != "dlq"
    ]


async def test_throttled_answers_spend_no_attempt_never_count_for_the_circuit_nor_expire() -> None:
    clock = FakeClock()
    sender = FakeSender(lambda _h, _n: fail(429, retryable=True, retry_after_s=5.0))
    settings = {"circuit_window": 1, "circuit_min_attempts": 1}  # one failure would open it
    async with Rig(sender, [hook("busy", max_concurrency=1)], clock, **settings) as rig:
        rig.publish()
        for answered in range(1, 11):
            await until(lambda n=answered: len(rig.producer.sent) == n)
            assert rig.dispatcher.lane("busy").circuit is Circuit.CLOSED
            clock.now += 6.0  # the Retry-After pause is over
            # Back from its retry topic far older than the whole schedule (30 ms): a
            # throttled endpoint is alive, so its deliveries never expire.
            rig.feed_back(rig.producer.sent[-1], created_s_ago=3600.0)
        await until(lambda: rig.dispatcher.in_flight == 0 and len(rig.producer.sent) == 11)
    assert len(sender.attempts) == 11  # more POSTs than max_attempts (3) ...
    assert rig.producer.to("dlq") == []  # ... and never given up
    last = retry_records(rig)[-1]
    assert (last.attempts, last.parks, last.last_status) == (0, 11, 429)
    assert rig.metrics.circuit_state.labels("busy")._value.get() == 0


async def test_a_503_with_retry_after_is_throttling_and_a_bare_503_a_failure() -> None:
    clock = FakeClock()
    answers = iter([fail(503, True, 2.0), fail(503, True, 2.0), fail(503, True), fail(503, True)])
    sender = FakeSender(lambda _h, _n: next(answers))
    settings = {"circuit_failure_rate": 1.0, "circuit_window": 2, "circuit_min_attempts": 2}
    async with Rig(sender, [hook("lb", max_concurrency=1)], clock, **settings) as rig:
        lane = rig.dispatcher.lane("lb")
        for n in range(1, 5):
            rig.publish()
            await until(lambda n=n: len(rig.producer.sent) == n)
            clock.now += 3.0  # past the Retry-After pause
            assert lane.circuit is (Circuit.OPEN if n == 4 else Circuit.CLOSED)
    records = retry_records(rig)
    assert [(r.attempts, r.parks) for r in records] == [(0, 1), (0, 1), (1, 0), (1, 0)]


async def test_a_half_open_probe_answered_429_frees_the_slot_for_the_next_delivery() -> None:
    clock = FakeClock()
    answers = iter([fail(500, True), fail(429, True, 5.0), OK])
    sender = FakeSender(lambda _h, _n: next(answers))
    settings = {"circuit_window": 1, "circuit_min_attempts": 1, "circuit_cooldown_s": 10}
    async with Rig(sender, [hook("h", max_concurrency=1)], clock, **settings) as rig:
        lane = rig.dispatcher.lane("h")
        rig.publish()  # fails: the circuit opens
        await until(lambda: len(rig.producer.sent) == 1)
        clock.now += 11.0  # cool-down over
        rig.publish()  # the probe, answered 429 Retry-After: 5
        await until(lambda: len(rig.producer.sent) == 2)
        assert lane.circuit is Circuit.HALF_OPEN  # not re-opened: throttling is no failure
        rig.publish()  # during the pause: parked as throttled, not behind the circuit
        await until(lambda: len(rig.producer.sent) == 3)
        assert rig.metrics.parked.labels("h", "throttled")._value.get() == 1
        clock.now += 6.0  # the pause is over: the next delivery is the probe
        rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert lane.circuit is Circuit.CLOSED
    assert len(sender.attempts) == 3
    assert rig.metrics.circuit_state.labels("h")._value.get() == 0


async def test_a_permanent_4xx_counts_as_a_success_for_the_breaker() -> None:
    answers = iter([fail(500, True), fail(404, False), fail(500, True), fail(500, True),
                    fail(500, True)])  # fmt: skip
    sender = FakeSender(lambda _h, _n: next(answers))
    settings = {"circuit_failure_rate": 1.0, "circuit_window": 3, "circuit_min_attempts": 3}
    async with Rig(sender, [hook("h", max_concurrency=1)], **settings) as rig:
        lane = rig.dispatcher.lane("h")
        for _ in range(4):
            rig.publish()
            await until(lambda: rig.dispatcher.in_flight == 0)
        assert lane.circuit is Circuit.CLOSED  # 404, 500, 500: the endpoint answers
        rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert lane.circuit is Circuit.OPEN  # 500, 500, 500


async def test_a_successful_probe_closes_the_circuit_and_clears_its_window() -> None:
    clock = FakeClock()
    answers = iter([fail(500, True), fail(500, True), OK, fail(500, True)])
    sender = FakeSender(lambda _h, _n: next(answers))
    settings = {"circuit_window": 4, "circuit_min_attempts": 2, "circuit_cooldown_s": 10}
    async with Rig(sender, [hook("h", max_concurrency=1)], clock, **settings) as rig:
        lane = rig.dispatcher.lane("h")
        for _ in range(2):
            rig.publish()
            await until(lambda: rig.dispatcher.in_flight == 0)
        assert lane.circuit is Circuit.OPEN  # 2 of 2 failed
        clock.now += 11.0
        rig.publish()  # the probe succeeds
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert lane.circuit is Circuit.CLOSED
        rig.publish()  # one failure in a fresh window: below circuit_min_attempts
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert lane.circuit is Circuit.CLOSED


async def test_a_slow_lane_parks_new_deliveries_instead_of_queueing_them() -> None:
    sender, release = blocked_sender(only="slow")
    lane_settings = {"lane_max_wait_s": 0.05, "lane_max_pending": 4}
    lanes = [hook("slow", max_concurrency=1), hook("fast")]
    async with Rig(sender, lanes, **lane_settings) as rig:
        for _ in range(3):
            rig.publish(hooks=[lanes[0]])
        await asyncio.sleep(0.1)  # the oldest queued delivery has now waited too long
        assert rig.dispatcher.lane("slow").impaired is None  # but nobody else wants work
        rig.publish(hooks=[lanes[1]])  # now the fast lane is being fed
        assert rig.dispatcher.lane("slow").impaired == "slow"
        for _ in range(5):
            rig.publish(hooks=[lanes[0]])
        await until(lambda: len(rig.producer.sent) == 3)
        assert rig.dispatcher.lane("slow").busy == 5  # its bound (4 queued) + 1 sending
        assert {topic for topic, _, _ in rig.producer.sent} == {"retry.10ms"}
        assert all(h["hookrelay-attempts"] == b"0" for _, _, h in rig.producer.sent)
        assert rig.metrics.parked.labels("slow", "slow")._value.get() == 3
        release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert sum(1 for h, _, _ in sender.attempts if h == "slow") == 5


async def test_a_lane_never_queues_more_than_its_bound_plus_one_batch() -> None:
    sender, release = blocked_sender()
    async with Rig(sender, [hook("busy", max_concurrency=1)], lane_max_pending=3) as rig:
        for _ in range(10):
            rig.publish()
        await until(lambda: len(rig.producer.sent) == 4)
        assert rig.dispatcher.lane("busy").busy == 6
        assert rig.metrics.parked.labels("busy", "lane_full")._value.get() == 4
        release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)


async def test_a_busy_lane_is_only_called_slow_when_another_lane_wants_work() -> None:
    sender, release = blocked_sender()
    lanes = [hook("a", max_concurrency=1), hook("b", max_concurrency=1)]
    settings = {"lane_max_pending": 10, "max_in_flight": 100, "lane_max_wait_s": 0.05}
    async with Rig(sender, lanes, **settings) as rig:
        for _ in range(6):
            rig.publish(hooks=[lanes[0]])
        assert rig.dispatcher.load() == 0.6  # the fullest healthy lane: 6 of 10
        for _ in range(9):
            rig.publish(hooks=[lanes[1]])
        assert rig.dispatcher.load() == 0.9
        await asyncio.sleep(0.1)
        # Both are behind (one of each now stuck sending), but neither would help the
        # other by parking: backpressure holds fetching instead.
        assert rig.dispatcher.load() == 0.8
        rig.dispatcher.set_hooks([*lanes, hook("c")])
        assert rig.dispatcher.load() == 0.8  # an idle lane nobody feeds changes nothing
        rig.publish(hooks=[hook("c")])  # a lane being fed, with room for more
        assert rig.dispatcher.load() == 0.1  # both slow lanes stop holding fetching
        release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)


async def test_a_slow_lane_stops_holding_fetching_when_records_wait_for_an_idle_lane() -> None:
    # A rate-limited hook's backlog (a backfill) paused fetching longer than the hungry
    # window, or the other hook had no traffic before: records waiting unfetched may be the
    # other hook's, so the slow lane is parked rather than held in front of them.
    sender, release = blocked_sender(only="slow")
    waiting = [False]
    lanes = [hook("slow", max_concurrency=1), hook("idle")]
    settings = {"lane_max_pending": 10, "max_in_flight": 100, "lane_max_wait_s": 0.05}
    async with Rig(sender, lanes, events_waiting=lambda: waiting[0], **settings) as rig:
        for _ in range(9):
            rig.publish(hooks=[lanes[0]])
        await asyncio.sleep(0.1)
        assert rig.dispatcher.load() == 0.8  # nothing waits: backpressure, nothing parked
        waiting[0] = True
        assert rig.dispatcher.load() == 0.0  # the slow lane no longer holds fetching
        release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)


async def test_the_circuit_opens_on_its_failure_rate_and_a_probe_closes_it() -> None:
    healthy = False

    def behaviour(_h: str, _n: int) -> AttemptResult:
        return OK if healthy else fail(500, retryable=True)

    sender = FakeSender(behaviour)
    settings = {"circuit_failure_rate": 1.0, "circuit_window": 3, "circuit_min_attempts": 3,
                "circuit_cooldown_s": 0.2,
                "retry_schedule_s": [0.01, 0.02, 0.03, 0.04, 0.05]}  # fmt: skip
    async with Rig(sender, [hook("breaker", max_concurrency=1)], **settings) as rig:
        for _ in range(3):
            rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
        lane = rig.dispatcher.lane("breaker")
        assert lane.circuit is Circuit.OPEN
        assert rig.metrics.circuit_state.labels("breaker")._value.get() == 1
        rig.publish()  # not attempted while open
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert len(sender.attempts) == 3
        parked = RetryRecord.from_headers(list(rig.producer.sent[-1][2].items()))
        assert (parked.attempts, parked.parks) == (0, 1)  # parked, no attempt spent
        await asyncio.sleep(0.25)  # cool-down over: the next delivery is the probe
        healthy = True
        rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert lane.circuit is Circuit.CLOSED
        assert len(sender.attempts) == 4


async def test_a_410_pauses_the_hook_and_dead_letters_what_follows() -> None:
    sender = FakeSender(lambda _h, _n: fail(410, retryable=False))
    async with Rig(sender, [hook("moved-away", max_concurrency=1), hook("fine")]) as rig:
        rig.publish(hooks=[rig.hooks[0]])
        await until(lambda: rig.dispatcher.in_flight == 0)
        rig.publish(hooks=[rig.hooks[0]])
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert len(sender.attempts) == 1  # the second delivery was not attempted
    reasons = [h["hookrelay-reason"] for _, _, h in rig.producer.to("dlq")]
    assert reasons == [b"hook_gone", b"hook_gone"]
    assert rig.metrics.hook_paused.labels("moved-away")._value.get() == 1
    assert rig.metrics.hook_paused.labels("fine")._value.get() == 0


async def test_a_retry_for_an_unknown_hook_is_parked_again_until_a_replica_knows_it() -> None:
    """A rolling update: this replica lacks the hook for now; another (or this one after a
    reload) has it. Nothing is dead-lettered within the grace period."""
    replies = iter([fail(500, retryable=True), OK])
    sender = FakeSender(lambda _h, _n: next(replies))
    async with Rig(sender, [hook("new")]) as rig:
        rig.publish()
        await until(lambda: len(rig.producer.sent) == 1)
        rig.dispatcher.set_hooks([])  # this replica does not know "new"
        rig.feed_back(rig.producer.sent[0])
        await until(lambda: len(rig.producer.sent) == 2)
        reparked = rig.producer.sent[1]
        rig.dispatcher.set_hooks([hook("new")])  # now it does
        retry = rig.feed_back(reparked)
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert rig.producer.to("dlq") == []
    assert retry.unknown_since_ms is not None and retry.attempts == 1  # no attempt counted
    assert rig.producer.partitions[1] == 0  # the first of its walk over the short tiers
    assert [h for h, _, _ in sender.attempts] == ["new", "new"]
    assert rig.metrics.unknown_hook_retries.labels("parked")._value.get() == 1


async def test_an_unknown_hooks_retry_walks_every_partition_of_the_short_tiers() -> None:
    """Whatever partitions the assignor gave the replica that knows the hook, the retry
    reaches one of them (a trial: with more replicas than tier partitions it never did)."""
    sender = FakeSender(lambda _h, _n: fail(500, retryable=True))
    async with Rig(sender, [hook("new")]) as rig:
        rig.publish()
        await until(lambda: len(rig.producer.sent) == 1)
        rig.dispatcher.set_hooks([])
        for n in range(1, 7):
            rig.feed_back(rig.producer.sent[-1])
            await until(lambda n=n: len(rig.producer.sent) == n + 1)  # type: ignore[misc]
        await until(lambda: rig.dispatcher.in_flight == 0)
    sent = zip(rig.producer.sent, rig.producer.partitions, strict=True)
    walk = [(t, p) for (t, _, _), p in sent][1:]
    assert walk == [
        ("retry.10ms", 0), ("retry.20ms", 0), ("retry.10ms", 1), ("retry.20ms", 1),
        ("retry.10ms", 2), ("retry.20ms", 2),
    ]  # fmt: skip
    assert rig.producer.to("dlq") == []


async def test_a_retry_for_a_removed_hook_is_dead_lettered_after_the_grace_period() -> None:
    sender = FakeSender(lambda _h, _n: fail(500, retryable=True))
    async with Rig(sender, [hook("old")], unknown_hook_grace_s=0) as rig:
        rig.publish()
        await until(lambda: len(rig.producer.sent) == 1)
        rig.dispatcher.set_hooks([])  # a reload removed the hook
        rig.feed_back(rig.producer.sent[0])
        await until(lambda: rig.dispatcher.in_flight == 0)
    [(_, _, headers)] = rig.producer.to("dlq")
    assert headers["hookrelay-reason"] == b"hook_removed"
    assert headers["hookrelay-hook-id"] == b"old"
    assert rig.metrics.dead_lettered.labels("hook_removed")._value.get() == 1
    # The removed id came from a record header: it is counted by reason only, never under
    # a hook label (the series of the hook configured before stays at its start value).
    assert delivered_count(rig.metrics, "old", "dead_lettered") == 0


async def test_a_slow_lanes_parked_deliveries_never_expire() -> None:
    sender, release = blocked_sender()
    lanes = [hook("slow", max_concurrency=1), hook("fast")]
    async with Rig(sender, lanes, lane_max_wait_s=0.01, lane_max_pending=4) as rig:
        rig.publish(hooks=[rig.hooks[0]])
        await until(lambda: len(sender.attempts) == 1)  # its only worker is now busy
        # A delivery created long ago (older than the schedule) comes back from a retry topic.
        event = decode(
            b'{"event":"PostSignIn","createdAt":"2026-01-01T00:00:00.000Z"}',
            None, Origin(TP.topic, 0, 99, 0), 1 << 20,
        )  # fmt: skip
        retry = RetryRecord(
            "slow", "PostSignIn", "msg_x", 0, None, None, None, "", 0, TP.topic, 0, 99, 0,
            created_at_ms=1, parks=3,
        )  # fmt: skip
        for _ in range(4):
            rig.publish(hooks=[rig.hooks[0]])
        await asyncio.sleep(0.05)
        rig.publish(hooks=[rig.hooks[1]])  # the fast lane is fed: the slow one is "slow"
        rig.dispatcher.resubmit(event, retry, rig.tracker.register(RETRY_TP, 0, 1))
        await until(lambda: any(t.startswith("retry.") for t, _, _ in rig.producer.sent))
        release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert rig.producer.to("dlq") == []  # a healthy endpoint's work is never given up


async def test_hooks_each_get_their_own_hook_id_in_the_body() -> None:
    sender = FakeSender(lambda _h, _n: OK)
    async with Rig(sender, [hook("a"), hook("b")]) as rig:
        rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
    bodies = {h: body for h, _, body in sender.attempts}
    assert bodies["a"].endswith(b',"hookId":"a"}')
    assert bodies["b"].endswith(b',"hookId":"b"}')


async def test_close_abandons_unsettled_deliveries_without_settling_them() -> None:
    never = asyncio.Event()

    async def behaviour(_h: str, _n: int) -> AttemptResult:
        await never.wait()
        return OK

    sender = FakeSender(behaviour)
    rig = Rig(sender, [hook("stuck", max_concurrency=1)])
    async with rig:
        for _ in range(3):
            rig.publish()
        await until(lambda: len(sender.attempts) == 1)
        assert await rig.dispatcher.drain(0.05) is False
    assert commit_offsets(rig.tracker) == {TP: 0}
    assert delivered_count(rig.metrics, "stuck", "abandoned") == 3


@pytest.mark.parametrize("per_second", [50.0])
async def test_rate_limited_lane_spaces_requests(per_second: float) -> None:
    loop = asyncio.get_running_loop()
    times: list[float] = []

    def behaviour(_h: str, _n: int) -> AttemptResult:
        times.append(loop.time())
        return OK

    sender = FakeSender(behaviour)
    limited = hook("limited", rate_limit={"per_second": per_second, "burst": 5})
    async with Rig(sender, [limited]) as rig:
        for _ in range(15):
            rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
    # 5 at once, then 10 more at 50/s: about 0.2 s in all.
    assert times[-1] - times[0] >= 10 / per_second * 0.9


async def test_a_removed_hooks_lane_finishes_its_queue_then_is_dropped_with_its_gauges() -> None:
    sender, release = blocked_sender()
    async with Rig(sender, [hook("leaving", max_concurrency=1)]) as rig:
        for _ in range(3):
            rig.publish()
        await until(lambda: len(sender.attempts) == 1)
        rig.dispatcher.set_hooks([])  # a reload removed the hook while it held work
        assert not rig.dispatcher.has_lane("leaving")
        release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert len(sender.attempts) == 3  # what the lane held was still delivered
        await until(lambda: rig.dispatcher.busy == 0)
        rig.dispatcher.prune_retired()
        assert rig.dispatcher.busy == 0
    assert (
        rig.metrics.registry.get_sample_value("hookrelay_lane_pending", {"hook_id": "leaving"})
        is None
    )  # the gauge went with the lane
    assert delivered_count(rig.metrics, "leaving", "delivered") == 3  # counters stay


async def test_a_reload_lifts_a_410_pause_and_applies_a_new_rate_limit() -> None:
    answers = iter([fail(410, retryable=False)])
    sender = FakeSender(lambda _h, _n: next(answers, OK))  # 410 once, then 200
    async with Rig(sender, [hook("moved")]) as rig:
        rig.publish()
        await until(lambda: rig.dispatcher.lane("moved").gone)
        rig.dispatcher.set_hooks([hook("moved", rate_limit={"per_second": 5, "burst": 1})])
        lane = rig.dispatcher.lane("moved")
        assert lane.gone is False
        assert rig.metrics.hook_paused.labels("moved")._value.get() == 0
        limit = {"per_second": 5, "burst": 1, "current_per_second": 5, "adaptive": None}
        assert lane.state() == {"paused": False, "paused_by": None, "circuit": "closed",
                                "pending": 0, "in_flight": 0, "rate_limit": limit,
                                "ordering": None}  # fmt: skip
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(3):
            rig.publish()
        await until(lambda: len(sender.attempts) == 4)
        assert loop.time() - started >= 0.35  # 3 requests at 5/s with a burst of 1


async def test_the_attempt_log_shows_attempts_and_parks_with_their_outcomes() -> None:
    sender = FakeSender(lambda _h, _n: fail(503, retryable=True))
    settings = {"circuit_window": 1, "circuit_min_attempts": 1}
    async with Rig(sender, [hook("down")], **settings) as rig:
        rig.publish()  # attempted, fails: retrying, and the circuit opens
        await until(lambda: len(rig.producer.sent) == 1)
        rig.publish()  # not attempted: parked behind the open circuit
        await until(lambda: len(rig.producer.sent) == 2)
    entries = rig.history.attempts.recent(hook_id="down")
    assert [(e["outcome"], e["status"], e["error"]) for e in entries] == [
        ("parked", None, "parked: circuit_open"),
        ("retrying", 503, "http 503"),
    ]
    assert rig.history.last_24h("down", time.time())["requests"] == 1  # parks are no requests


# -- revocation: nothing of a revoked partition is sent late or parked ---------------------


async def test_a_revoked_partitions_queued_deliveries_are_released_not_sent() -> None:
    sender, release = blocked_sender(only="slow")
    async with Rig(sender, [hook("slow", max_concurrency=2)]) as rig:
        for _ in range(10):
            rig.publish()
        await until(lambda: len(sender.attempts) == 2)
        rig.tracker.revoke([TP])
        assert rig.dispatcher.release_revoked() == 8
        assert rig.tracker.outstanding([TP]) == 2  # the two being sent
        release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert rig.tracker.outstanding([TP]) == 0
    assert len(sender.attempts) == 2  # the released eight were never sent
    assert rig.producer.sent == []  # nor parked
    assert commit_offsets(rig.tracker) == {TP: 2}  # the two sent settled; 2-9 are owed
    assert delivered_count(rig.metrics, "slow", "abandoned") == 8


async def test_a_failure_that_returns_after_revocation_is_released_never_parked() -> None:
    gate = asyncio.Event()

    async def behaviour(_hook_id: str, _n: int) -> AttemptResult:
        await gate.wait()
        return fail(500, retryable=True)

    sender = FakeSender(behaviour)
    async with Rig(sender, [hook("down"), hook("gone")]) as rig:
        rig.publish()
        await until(lambda: len(sender.attempts) == 2)
        rig.tracker.revoke([TP])
        gate.set()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert rig.tracker.outstanding([TP]) == 0
    assert rig.producer.sent == []  # no retry record: the next owner makes the delivery
    assert commit_offsets(rig.tracker) == {TP: 0}


async def test_a_delivery_revoked_while_waiting_for_its_rate_limit_is_not_sent() -> None:
    sender = FakeSender(lambda _h, _n: OK)
    limited = hook("limited", rate_limit={"per_second": 5, "burst": 1})
    async with Rig(sender, [limited]) as rig:
        for _ in range(3):
            rig.publish()
        await until(lambda: len(sender.attempts) == 1)
        rig.tracker.revoke([TP])  # the second waits for a token: it is popped, not queued
        rig.dispatcher.release_revoked()
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert len(sender.attempts) == 1
    assert commit_offsets(rig.tracker) == {TP: 1}


async def test_a_delivery_that_succeeds_after_failures_says_so_at_info() -> None:
    sender = FakeSender(lambda _h, n: fail(503, retryable=True) if n == 1 else OK)
    with structlog.testing.capture_logs() as logs:
        async with Rig(sender, [hook("flaky")]) as rig:
            rig.publish("PostSignIn")
            await until(lambda: len(rig.producer.sent) == 1)
            rig.feed_back(rig.producer.sent[0])
            await until(lambda: rig.dispatcher.in_flight == 0)
    [failed] = [e for e in logs if e["event"] == "delivery_failed"]
    [recovered] = [e for e in logs if e["event"] == "delivery_recovered"]
    retry = RetryRecord.from_headers(list(rig.producer.sent[0][2].items()))
    due = datetime.fromisoformat(failed["due_at"]).timestamp()
    assert abs(due * 1000 - retry.due_at_ms) < 1  # the due time the retry record carries
    assert failed["log_level"] == "warning" and failed["retry_tier"] == "retry.10ms"
    assert recovered["log_level"] == "info"
    assert (recovered["hook_id"], recovered["attempt"], recovered["status"]) == ("flaky", 2, 200)
    assert 0 < recovered["total_delay_s"] < 5  # from the first attempt (fed back at once here)
    assert recovered["first_attempt_at"].endswith("+00:00")


async def test_a_drain_starts_no_send_that_its_deadline_would_cut_short() -> None:
    async def behaviour(_hook_id: str, _n: int) -> AttemptResult:
        await asyncio.sleep(0.2)
        return OK

    sender = FakeSender(behaviour)
    quick = hook("quick", timeout_s=0.5, max_concurrency=2)
    slow = hook("slow", timeout_s=5, max_concurrency=1)
    async with Rig(sender, [quick, slow]) as rig:
        for _ in range(6):
            rig.publish()
        await until(lambda: len(sender.attempts) == 3)  # two quick and one slow in flight
        started = time.monotonic()
        assert await rig.dispatcher.drain(1.0) is True
        assert time.monotonic() - started < 0.9  # nothing left that could still start
    sent = [h for h, _, _ in sender.attempts]
    assert sent.count("slow") == 1  # the one in flight finished; 5 s sends never start
    assert sent.count("quick") == 6  # 0.5 s sends fit in the 1 s drain
    assert delivered_count(rig.metrics, "slow", "abandoned") == 5
    assert commit_offsets(rig.tracker) == {TP: 1}  # the released ones stay owed


async def test_a_probe_whose_partition_is_revoked_frees_the_probe_slot() -> None:
    """Released without an outcome, a probe must not leave the circuit half-open with no
    probe ever sent again (every later delivery was parked as circuit_open, forever)."""
    clock = FakeClock()
    gate = asyncio.Event()
    calls = 0

    async def behaviour(_hook_id: str, _n: int) -> AttemptResult:
        nonlocal calls
        calls += 1
        if calls == 2:  # the probe: fails, but only once its partition was revoked
            await gate.wait()
        return fail(500, True) if calls <= 2 else OK

    sender = FakeSender(behaviour)
    settings = {"circuit_window": 1, "circuit_min_attempts": 1, "circuit_cooldown_s": 10}
    async with Rig(sender, [hook("h", max_concurrency=1)], clock, **settings) as rig:
        lane = rig.dispatcher.lane("h")
        rig.publish()  # fails: the circuit opens
        await until(lambda: len(rig.producer.sent) == 1)
        clock.now += 11.0
        rig.publish()  # the probe
        await until(lambda: calls == 2)
        rig.tracker.revoke([TP])
        gate.set()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert rig.producer.sent[1:] == []  # released, not parked
        rig.tracker.forget([TP])
        rig.tracker.assign([TP])  # the partition comes back
        rig.publish()  # the next delivery becomes the probe, and closes the circuit
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert lane.circuit is Circuit.CLOSED
    assert calls == 3


async def test_a_copy_of_a_delivery_already_delivered_is_settled_without_a_request() -> None:
    """A breaker's trial: after a kill -9, a slow hook's deliveries parked in the last commit
    interval came back twice, from the re-read event and from their retry record (24 % of
    its events). The copy whose webhook-id this process already delivered is not sent."""
    sender = FakeSender(lambda _hook, n: fail(503, True) if n == 1 else OK)
    async with Rig(sender, [hook("a")]) as rig:
        rig.publish()  # attempt 1 fails: parked in retry.10ms
        await until(lambda: len(rig.producer.to("retry.10ms")) == 1)
        rig.offset = 0
        rig.publish()  # the event read again (its offset was not committed): delivered
        await until(lambda: delivered_count(rig.metrics, "a", "delivered") == 1)
        (parked,) = rig.producer.to("retry.10ms")
        rig.feed_back(parked)  # the retry record written before the kill comes back
        await until(lambda: delivered_count(rig.metrics, "a", "duplicate") == 1)
        assert [d for _, d, _ in sender.attempts] == [sender.attempts[0][1]] * 2
        assert rig.dispatcher.in_flight == 0
