"""Write records to the dead-letter topic, durably, and only then settle them.

Two kinds of record land there:

- an *invalid* Kafka record (DESIGN §1.2): value = the original bytes, untouched;
- a *failed delivery* (permanent failure, or the retry schedule exhausted): value = the
  original event bytes as consumed (without ``hookId``), so ``replay`` can re-drive it.

Everything else travels in headers (``hookrelay-*``, UTF-8 text): reason, error, hook id,
event, delivery id, attempts, first/last attempt times (ISO-8601), last status, and the
origin topic/partition/offset. Headers never carry a signing key or the request headers.

The writer keeps a queue served by one task. It hands each batch to the Kafka producer
(``acks=all``), waits for the broker's acknowledgement, then calls each record's
``on_written`` (which settles its offset). A failed write is retried with backoff, never
dropped; records still queued at shutdown stay unsettled, so they are consumed again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from hookrelay.logs import get_logger
from hookrelay.metrics import Metrics
from hookrelay.model import Delivery, Origin

log = get_logger("hookrelay.deadletter")

HEADER_PREFIX = "hookrelay-"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record bound for the dead-letter topic: ``value`` bytes, ``key``, and headers."""

    reason: str
    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def _iso(epoch_s: float | None) -> str:
    if epoch_s is None:
        return ""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def _origin_headers(origin: Origin) -> list[tuple[str, str]]:
    return [
        ("origin-topic", origin.topic),
        ("origin-partition", str(origin.partition)),
        ("origin-offset", str(origin.offset)),
    ]


def _encode(pairs: list[tuple[str, str]]) -> tuple[tuple[str, bytes], ...]:
    return tuple((HEADER_PREFIX + name, value.encode("utf-8")) for name, value in pairs)


def invalid_record(
    reason: str, detail: str, value: bytes | None, key: bytes | None, origin: Origin
) -> DeadLetter:
    """A dead letter for a record the decoder refused (``reason`` from ``InvalidEventError``)."""
    pairs = [("reason", reason), ("error", detail), *_origin_headers(origin)]
    return DeadLetter(reason, value or b"", key, _encode(pairs))


def failed_delivery(delivery: Delivery, reason: str) -> DeadLetter:
    """A dead letter for a delivery that failed permanently or ran out of attempts.

    ``reason`` is ``permanent_failure`` or ``retries_exhausted``.
    """
    event = delivery.event
    pairs = [
        ("reason", reason),
        ("error", delivery.last_error or ""),
        ("hook-id", delivery.hook.id),
        ("event", event.name),
        ("delivery-id", delivery.delivery_id),
        ("attempts", str(delivery.attempts)),
        ("first-attempt-at", _iso(delivery.first_attempt_at)),
        ("last-attempt-at", _iso(delivery.last_attempt_at)),
        ("last-status", "" if delivery.last_status is None else str(delivery.last_status)),
        *_origin_headers(event.origin),
    ]
    return DeadLetter(reason, event.raw, event.key, _encode(pairs))


class Producer(Protocol):
    """The part of ``aiokafka.AIOKafkaProducer`` the writer uses."""

    async def send(
        self, topic: str, value: bytes, key: bytes | None = ..., headers: Any = ...
    ) -> asyncio.Future[Any]: ...


class DeadLetterWriter:
    """Queue + single writer task for the dead-letter topic ``topic``.

    ``submit(letter, on_written)`` is synchronous and never blocks; ``run()`` is the task
    body (owned by the supervisor); ``pending`` counts letters not yet acknowledged.
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        metrics: Metrics,
        *,
        retry_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._metrics = metrics
        self._queue: deque[tuple[DeadLetter, Callable[[], None]]] = deque()
        self._wakeup = asyncio.Event()
        self._backoff_s = retry_backoff_s
        self._max_backoff_s = max_backoff_s
        self._in_write = 0

    @property
    def pending(self) -> int:
        """Letters queued or being written, not yet acknowledged by the broker."""
        return len(self._queue) + self._in_write

    def submit(self, letter: DeadLetter, on_written: Callable[[], None]) -> None:
        """Queue ``letter``; ``on_written()`` runs once the broker has acknowledged it."""
        self._queue.append((letter, on_written))
        self._wakeup.set()

    async def run(self) -> None:
        """Write queued letters forever (cancel to stop); batches whatever is queued."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = list(self._queue)
                self._queue.clear()
                self._in_write = len(batch)
                await self._write_until_acknowledged(batch)
                self._in_write = 0

    async def _write_until_acknowledged(
        self, batch: list[tuple[DeadLetter, Callable[[], None]]]
    ) -> None:
        backoff = self._backoff_s
        while batch:
            batch = await self._write_once(batch)
            if batch:
                self._metrics.dead_letter_write_failures.inc(len(batch))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _write_once(
        self, batch: list[tuple[DeadLetter, Callable[[], None]]]
    ) -> list[tuple[DeadLetter, Callable[[], None]]]:
        """Send a batch, wait for acks; return the letters that failed."""
        failed: list[tuple[DeadLetter, Callable[[], None]]] = []
        futures: list[tuple[tuple[DeadLetter, Callable[[], None]], asyncio.Future[Any]]] = []
        for item in batch:
            letter = item[0]
            try:
                fut = await self._producer.send(
                    self._topic, letter.value, key=letter.key, headers=list(letter.headers)
                )
                futures.append((item, fut))
            except Exception as e:  # any producer error: keep the letter and retry
                log.warning("dead_letter_write_failed", error=f"{type(e).__name__}: {e}")
                failed.append(item)
        for item, fut in futures:
            try:
                await fut
            except Exception as e:
                log.warning("dead_letter_write_failed", error=f"{type(e).__name__}: {e}")
                failed.append(item)
                continue
            letter, on_written = item
            self._metrics.dead_lettered.labels(letter.reason).inc()
            on_written()
        return failed
