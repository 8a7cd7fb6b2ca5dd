"""Lanes and outcome handling, against a recording fake sender (no network, no Kafka)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from hookrelay.config import DeliverySettings, Hook
from hookrelay.deadletter import DeadLetterWriter
from hookrelay.decode import decode
from hookrelay.dispatcher import Dispatcher
from hookrelay.metrics import Metrics
from hookrelay.model import AttemptResult, Origin
from hookrelay.offsets import AckTracker, TopicPartition

TP = TopicPartition("identity.events", 0)
OK = AttemptResult(200, None, False, None, 0.001)


def fail(status: int, retryable: bool, retry_after_s: float | None = None) -> AttemptResult:
    return AttemptResult(status, f"http {status}", retryable, retry_after_s, 0.001)


class FakeSender:
    """Records every attempt; answers with ``behaviour(hook_id, attempt_number)``."""

    def __init__(self, behaviour: Callable[[str, int], Any]) -> None:
        self.behaviour = behaviour
        self.attempts: list[tuple[str, str, bytes]] = []
        self.concurrent: dict[str, int] = {}
        self.max_concurrent: dict[str, int] = {}

    async def attempt(self, hook: Hook, delivery_id: str, body: bytes) -> AttemptResult:
        self.attempts.append((hook.id, delivery_id, body))
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

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, value, dict(headers or [])))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def hook(hook_id: str, **fields: Any) -> Hook:
    return Hook.model_validate(
        {"id": hook_id, "events": ["*"], "url": f"http://127.0.0.1:9/{hook_id}", **fields}
    )


class Rig:
    """A dispatcher with fakes around it, and helpers to feed it events."""

    def __init__(self, sender: FakeSender, hooks: list[Hook], **delivery: Any) -> None:
        self.metrics = Metrics()
        self.producer = FakeProducer()
        self.writer = DeadLetterWriter(self.producer, "dlq", self.metrics)
        settings = DeliverySettings.model_validate(
            {"retry_schedule_s": [0.01, 0.01], "retry_jitter": 0.0, **delivery}
        )
        self.dispatcher = Dispatcher(sender, self.writer, self.metrics, settings)
        self.dispatcher.set_hooks(hooks)
        self.hooks = hooks
        self.tracker = AckTracker()
        self.tracker.assign([TP])
        self.offset = 0

    def publish(self, name: str = "User.Created", hooks: list[Hook] | None = None) -> None:
        value = b'{"event":"%s","createdAt":"2026-01-01T00:00:00.000Z"}' % name.encode()
        event = decode(value, None, Origin(TP.topic, 0, self.offset, 0), 1 << 20)
        targets = tuple(hooks if hooks is not None else self.hooks)
        ticket = self.tracker.register(TP, self.offset, len(targets))
        self.dispatcher.submit(event, targets, ticket)
        self.offset += 1

    async def __aenter__(self) -> Rig:
        self._writer_task = asyncio.create_task(self.writer.run(), name="dlq-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.dispatcher.close()
        self._writer_task.cancel()
        await asyncio.gather(self._writer_task, return_exceptions=True)


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_slow_endpoint_does_not_delay_other_hooks() -> None:
    release = asyncio.Event()

    async def behaviour(hook_id: str, _n: int) -> AttemptResult:
        if hook_id == "slow":
            await release.wait()
        return OK

    sender = FakeSender(behaviour)
    async with Rig(sender, [hook("slow", max_concurrency=2), hook("fast")]) as rig:
        for _ in range(20):
            rig.publish()
        await until(lambda: sum(1 for h, _, _ in sender.attempts if h == "fast") == 20)
        assert rig.dispatcher.lane("slow").busy == 20  # 2 stuck sending, 18 queued
        assert rig.tracker.to_commit() == {TP: 0}
        release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert rig.tracker.to_commit() == {TP: 20}


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


async def test_retryable_failures_follow_the_schedule_then_dead_letter() -> None:
    sender = FakeSender(lambda _h, _n: fail(500, retryable=True))
    async with Rig(sender, [hook("down")]) as rig:
        rig.publish("PostSignIn")
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert rig.tracker.to_commit() == {TP: 1}
    assert len(sender.attempts) == 3  # first attempt + two scheduled retries
    assert len({d for _, d, _ in sender.attempts}) == 1  # one webhook-id for all attempts
    [(topic, value, headers)] = rig.producer.sent
    assert topic == "dlq"
    assert value.startswith(b'{"event":"PostSignIn"')
    assert headers["hookrelay-reason"] == b"retries_exhausted"
    assert headers["hookrelay-attempts"] == b"3"
    assert headers["hookrelay-last-status"] == b"500"
    assert rig.metrics.deliveries.labels("down", "dead_lettered")._value.get() == 1


async def test_permanent_failure_is_dead_lettered_without_retry() -> None:
    sender = FakeSender(lambda _h, _n: fail(404, retryable=False))
    async with Rig(sender, [hook("gone")]) as rig:
        rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert len(sender.attempts) == 1
    assert rig.producer.sent[0][2]["hookrelay-reason"] == b"permanent_failure"


async def test_success_after_retries_settles_once() -> None:
    sender = FakeSender(lambda _h, n: OK if n == 3 else fail(503, retryable=True))
    async with Rig(sender, [hook("flaky")], retry_schedule_s=[0.01, 0.01, 0.01]) as rig:
        rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert rig.tracker.to_commit() == {TP: 1}
    assert len(sender.attempts) == 3
    assert rig.producer.sent == []
    assert rig.metrics.deliveries.labels("flaky", "delivered")._value.get() == 1


async def test_retry_after_pauses_the_whole_lane() -> None:
    loop = asyncio.get_running_loop()
    times: list[float] = []

    def behaviour(_h: str, n: int) -> AttemptResult:
        times.append(loop.time())
        return fail(429, retryable=True, retry_after_s=0.3) if len(times) == 1 else OK

    sender = FakeSender(behaviour)
    async with Rig(sender, [hook("throttled", max_concurrency=1)]) as rig:
        rig.publish()
        await until(lambda: len(times) == 1)
        rig.publish()  # a fresh delivery must also wait out the Retry-After
        await until(lambda: rig.dispatcher.in_flight == 0)
    assert len(times) == 3
    assert min(times[1:]) - times[0] >= 0.29


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
    assert rig.tracker.to_commit() == {TP: 0}
    assert rig.metrics.deliveries.labels("stuck", "abandoned")._value.get() == 3


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
