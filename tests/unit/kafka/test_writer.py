"""The durable writer: acknowledged writes only, retries for transient errors, and no
head-of-line blocking by a record the broker will never accept."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
)

from hookrelay.events.model import OutboundRecord
from hookrelay.kafka.writer import DurableWriter
from hookrelay.ops.metrics import Metrics


class PickyProducer:
    """Refuses values over ``limit`` bytes for good; fails the first ``flaky`` sends."""

    def __init__(self, limit: int, flaky: int = 0) -> None:
        self.limit = limit
        self.flaky = flaky
        self.written: list[tuple[str, bytes | None, dict[str, bytes]]] = []

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Any = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.flaky:
            self.flaky -= 1
            future.set_exception(KafkaConnectionError("broker away"))
        elif value is not None and len(value) > self.limit:
            future.set_exception(MessageSizeTooLargeError("too large"))
        else:
            self.written.append((topic, value, dict(headers or [])))
            future.set_result(None)
        return future


def record(value: bytes, topic: str = "retry.5s") -> OutboundRecord:
    headers = (("hookrelay-origin-topic", b"events"), ("hookrelay-origin-offset", b"7"))
    return OutboundRecord(topic, value, b"k", headers, "retry")


async def run_until(writer: DurableWriter, done: list[str], count: int) -> None:
    task = asyncio.create_task(writer.run(), name="writer")
    try:
        async with asyncio.timeout(5):
            while len(done) < count:
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_record_the_broker_refuses_becomes_a_small_dead_letter_without_blocking() -> None:
    producer = PickyProducer(limit=100 * 1024)
    metrics = Metrics()
    writer = DurableWriter(producer, metrics, dead_letter_topic="dlq", retry_backoff_s=0.01)
    done: list[str] = []
    writer.submit(record(b"x" * 200 * 1024), lambda: done.append("huge"))
    writer.submit(record(b"small"), lambda: done.append("small"))
    await run_until(writer, done, 2)
    assert sorted(done) == ["huge", "small"]
    [small] = [w for w in producer.written if w[1] == b"small"]
    assert small[0] == "retry.5s"
    [(_, value, headers)] = [w for w in producer.written if w[0] == "dlq"]
    assert value == b"x" * 64 * 1024
    assert headers["hookrelay-reason"] == b"record_too_large"
    assert headers["hookrelay-truncated"] == b"true"
    assert headers["hookrelay-original-bytes"] == str(200 * 1024).encode()
    assert headers["hookrelay-origin-offset"] == b"7"
    assert metrics.kafka_write_rejected.labels("retry")._value.get() == 1
    # Counted as the dead letter it is (a breaker found it missing from the dead-letter count).
    assert metrics.dead_lettered.labels("record_too_large")._value.get() == 1


async def test_transient_failures_are_retried_until_acknowledged() -> None:
    producer = PickyProducer(limit=1024, flaky=3)
    metrics = Metrics()
    writer = DurableWriter(producer, metrics, dead_letter_topic="dlq", retry_backoff_s=0.01)
    done: list[str] = []
    writer.submit(record(b"a"), lambda: done.append("a"))
    await run_until(writer, done, 1)
    assert [w[1] for w in producer.written] == [b"a"]
    assert metrics.kafka_write_failures.labels("retry")._value.get() == 3
    assert writer.pending == 0


async def test_nothing_is_acknowledged_before_the_broker_has_it() -> None:
    producer = PickyProducer(limit=1024, flaky=1_000_000)
    writer = DurableWriter(producer, Metrics(), dead_letter_topic="dlq", retry_backoff_s=0.01)
    done: list[str] = []
    writer.submit(record(b"a"), lambda: done.append("a"))
    task = asyncio.create_task(writer.run(), name="writer")
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert done == []
    assert producer.written == []


class BrokenProducer(PickyProducer):
    """An idempotent producer after an outage longer than its request timeout: every batch
    is refused with OutOfOrderSequenceNumber (measured on a real broker in
    tests/integration/test_ingest_process.py)."""

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Any = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(OutOfOrderSequenceNumber())
        return future


async def test_a_producer_that_writes_nothing_more_is_replaced_and_the_records_written() -> None:
    fresh = PickyProducer(limit=1 << 20)
    replaced: list[PickyProducer] = []

    async def replace() -> PickyProducer:
        replaced.append(fresh)
        return fresh

    writer = DurableWriter(
        BrokenProducer(limit=1 << 20), Metrics(), dead_letter_topic="dlq",
        retry_backoff_s=0.01, replace_producer=replace,
    )  # fmt: skip
    done: list[str] = []
    for n in range(3):
        writer.submit(record(b"v%d" % n), lambda n=n: done.append(str(n)))
    await run_until(writer, done, 3)
    assert replaced == [fresh]
    assert [value for _, value, _ in fresh.written] == [b"v0", b"v1", b"v2"]
