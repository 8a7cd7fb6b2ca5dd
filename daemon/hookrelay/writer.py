"""Durable Kafka writes: a record is handed on only once the broker acknowledged it.

The dead-letter topic and the retry topics both need the same guarantee: a source record may
be settled (its offset committed) only after whatever replaces it is safely in Kafka. The
``DurableWriter`` keeps a queue served by one task; it sends whatever is queued as one batch
through the shared producer (``acks=all``, idempotent), waits for every acknowledgement, and
then calls each record's ``on_written``. A failed write is retried with exponential backoff,
never dropped. Records still queued at shutdown are simply never acknowledged, so their
source records stay unsettled and are consumed again after a restart.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hookrelay.logs import get_logger
from hookrelay.metrics import Metrics

log = get_logger("hookrelay.writer")

Header = tuple[str, bytes]


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    """One record to write: ``topic``, ``value``, ``key``, ``headers``; ``kind`` is a bounded
    label (``dead_letter`` or ``retry``) for metrics and logs."""

    topic: str
    value: bytes
    key: bytes | None
    headers: tuple[Header, ...]
    kind: str


class Producer(Protocol):
    """The part of ``aiokafka.AIOKafkaProducer`` the writer uses."""

    async def send(
        self, topic: str, value: bytes, key: bytes | None = ..., headers: Any = ...
    ) -> asyncio.Future[Any]: ...


_Item = tuple[OutboundRecord, Callable[[], None]]


class DurableWriter:
    """Queue + single writer task. ``submit`` is synchronous and never blocks; ``run`` is the
    task body (owned by the supervisor); ``pending`` counts records not yet acknowledged."""

    def __init__(
        self,
        producer: Producer,
        metrics: Metrics,
        *,
        retry_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._producer = producer
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

    def submit(self, record: OutboundRecord, on_written: Callable[[], None]) -> None:
        """Queue ``record``; ``on_written()`` runs once the broker has acknowledged it."""
        self._queue.append((record, on_written))
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
            if batch:
                for record, _ in batch:
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
                    record.topic, record.value, key=record.key, headers=list(record.headers)
                )
            except Exception as e:  # any producer error: keep the record, retry the write
                _log_failure(record, e)
                failed.append(item)
                continue
            sent.append((item, future))
        for item, future in sent:
            try:
                await future
            except Exception as e:
                _log_failure(item[0], e)
                failed.append(item)
                continue
            item[1]()
        return failed


def _log_failure(record: OutboundRecord, error: Exception) -> None:
    log.warning(
        "kafka_write_failed", kind=record.kind, topic=record.topic,
        error=f"{type(error).__name__}: {error}",
    )  # fmt: skip
