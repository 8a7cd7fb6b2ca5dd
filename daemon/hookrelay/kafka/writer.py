"""Durable Kafka writes: a record is handed on only once the broker acknowledged it.

The dead-letter topic and the retry topics both need the same guarantee: a source record may
be settled (its offset committed) only after whatever replaces it is safely in Kafka. The
``DurableWriter`` keeps a queue served by one task; it sends whatever is queued as one batch
through the shared producer (``acks=all``, idempotent), waits for every acknowledgement, and
then calls each record's ``on_written``.

- A transient failure (broker away, timeout) is retried with exponential backoff, never
  dropped; records still queued at shutdown are never acknowledged, so their source records
  stay unsettled and are consumed again after a restart.
- A producer that writes nothing more (``clients.PRODUCER_FAILURES``, after a broker outage
  longer than its request timeout) is replaced through ``replace_producer`` before the next
  try; without it the writer would retry into it forever.
- A record the broker *rejects* (larger than it accepts) would fail forever and block every
  record behind it, so it is rewritten at once as a small dead letter
  (``deadletter.rejected``: reason ``record_too_large``, first 64 KiB). Should even that be
  refused, the failure is logged with the record's origin and counted
  (``hookrelay_kafka_write_rejected_total``), and the record is settled through its
  ``on_dropped`` (``on_written`` when it has none): the full original stays in its source
  topic at the logged coordinates.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

from hookrelay.events.model import OutboundRecord
from hookrelay.kafka.clients import PRODUCER_FAILURES
from hookrelay.kafka.deadletter import rejected
from hookrelay.ops.logs import get_logger
from hookrelay.ops.metrics import Metrics

log = get_logger("hookrelay.writer")


class Producer(Protocol):
    """The part of ``aiokafka.AIOKafkaProducer`` the writer uses."""

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = ...,
        headers: Any = ...,
        partition: int | None = ...,
    ) -> asyncio.Future[Any]: ...

    async def partitions_for(self, topic: str) -> set[int]: ...


_Item = tuple[OutboundRecord, Callable[[], None], Callable[[], None] | None]


class DurableWriter:
    """Queue + single writer task. ``submit`` is synchronous and never blocks; ``run`` is the
    task body (owned by the supervisor); ``pending`` counts records not yet acknowledged."""

    def __init__(
        self,
        producer: Producer,
        metrics: Metrics,
        *,
        dead_letter_topic: str,
        retry_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        replace_producer: Callable[[], Awaitable[Producer]] | None = None,
    ) -> None:
        self._producer = producer
        self._replace_producer = replace_producer
        self._producer_failed = False
        self._dead_letter_topic = dead_letter_topic
        self._metrics = metrics
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._backoff_s = retry_backoff_s
        self._max_backoff_s = max_backoff_s
        self._in_write = 0

    @property
    def pending(self) -> int:
        """Records queued or being written, not yet acknowledged by the broker."""
        return len(self._queue) + self._in_write

    def submit(
        self,
        record: OutboundRecord,
        on_written: Callable[[], None],
        on_dropped: Callable[[], None] | None = None,
    ) -> None:
        """Queue ``record``; ``on_written()`` runs once the broker has acknowledged it (or
        its small dead letter, see the module docstring); ``on_dropped()``, when given,
        instead of it when even that dead letter was refused."""
        self._queue.append((record, on_written, on_dropped))
        self._wakeup.set()

    async def run(self) -> None:
        """Write queued records forever (cancel to stop), a batch at a time."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = list(self._queue)
                self._queue.clear()
                self._in_write = len(batch)
                try:
                    await self._write_until_acknowledged(batch)
                finally:
                    self._in_write = 0

    async def _write_until_acknowledged(self, batch: list[_Item]) -> None:
        backoff = self._backoff_s
        while batch:
            batch = await self._write_once(batch)
            if self._producer_failed:
                await self._replace()
            if batch:
                for record, _, _ in batch:
                    self._metrics.kafka_write_failures.labels(record.kind).inc()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _write_once(self, batch: list[_Item]) -> list[_Item]:
        """Send a batch, wait for the acknowledgements; return the items that failed."""
        failed: list[_Item] = []
        sent: list[tuple[_Item, asyncio.Future[Any]]] = []
        for item in batch:
            record = item[0]
            try:
                future = await self._producer.send(
                    record.topic, record.value, key=record.key, headers=list(record.headers),
                    partition=await self._partition(record),
                )  # fmt: skip
            except _REJECTED as e:
                self._reject(item, e, failed)
                continue
            except Exception as e:  # any other producer error: keep the record, retry
                self._note_failure(record, e)
                failed.append(item)
                continue
            sent.append((item, future))
        for item, future in sent:
            try:
                await future
            except _REJECTED as e:
                self._reject(item, e, failed)
                continue
            except Exception as e:
                self._note_failure(item[0], e)
                failed.append(item)
                continue
            item[1]()
        return failed

    def _note_failure(self, record: OutboundRecord, error: Exception) -> None:
        _log_failure(record, error)
        if isinstance(error, PRODUCER_FAILURES):
            self._producer_failed = True

    async def _replace(self) -> None:
        """A new producer for the next try; on failure (the cluster still away) the next
        failed write tries again."""
        if self._replace_producer is None:
            return
        try:
            self._producer = await self._replace_producer()
        except Exception as e:
            log.warning("producer_replace_failed", error=f"{type(e).__name__}: {e}")
            return
        self._producer_failed = False
        log.warning(
            "producer_replaced",
            detail="the producer wrote nothing more (its sequence numbers broke after an "
            "outage); records are retried with a new one",
        )

    async def _partition(self, record: OutboundRecord) -> int | None:
        if record.partition_hint is None:
            return None
        partitions = sorted(await self._producer.partitions_for(record.topic))
        return int(partitions[record.partition_hint % len(partitions)])

    def _reject(self, item: _Item, error: Exception, failed: list[_Item]) -> None:
        """The broker refused this record for good: retry it as a small dead letter, or,
        if it already was one, give up loudly (see the module docstring)."""
        record, on_written, on_dropped = item
        reason = f"{type(error).__name__}: {error}"
        self._metrics.kafka_write_rejected.labels(record.kind).inc()
        if record.kind == "rejected":
            log.error("kafka_write_rejected", topic=record.topic, error=reason,
                      origin=_origin(record))  # fmt: skip
            (on_dropped or on_written)()
            return
        log.error("kafka_write_rejected_rewriting_as_dead_letter", topic=record.topic,
                  kind=record.kind, error=reason, origin=_origin(record))  # fmt: skip
        self._metrics.dead_lettered.labels("record_too_large").inc()
        failed.append((rejected(record, self._dead_letter_topic, reason), on_written, on_dropped))


_REJECTED = (MessageSizeTooLargeError, RecordTooLargeError)


def _origin(record: OutboundRecord) -> str:
    h = {k: v.decode("utf-8", "replace") for k, v in record.headers}
    return "{}[{}]@{}".format(
        h.get("hookrelay-origin-topic"), h.get("hookrelay-origin-partition"),
        h.get("hookrelay-origin-offset"),
    )  # fmt: skip


def _log_failure(record: OutboundRecord, error: Exception) -> None:
    log.warning(
        "kafka_write_failed", kind=record.kind, topic=record.topic,
        error=f"{type(error).__name__}: {error}",
    )  # fmt: skip
