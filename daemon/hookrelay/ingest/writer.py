"""The ingest process's Kafka writer: one record at a time, answered only once the broker has it.

The producer is idempotent with ``acks=all``: a send the client retries after a lost answer is
written once, and an acknowledged record is on every in-sync replica. A write either ends with
the broker's acknowledgement or raises; the endpoint answers 503 for the latter, and a record
is one Kafka message, so there is nothing partial to undo.

The writer comes up without the cluster (``connect`` keeps trying, so the listener answers
503 rather than refusing connections while Kafka is away) and ``probe`` asks the cluster for
metadata, which is what readiness reports.

**Refused, or unconfirmed.** While the last probe failed (or before the first connection),
``write`` raises ``NotConnectedError`` at once, queueing nothing: that record is not written.
A record that was queued is the producer's until the broker takes it: the idempotent
producer retries a sent batch until it succeeds (aiokafka expires no batch of an idempotent
producer), so a caller that stops waiting (its timeout) leaves it *unconfirmed*: it is
still written when the cluster answers again, unless the process stops first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from hookrelay.config import KafkaSettings
from hookrelay.kafka.clients import (
    PRODUCER_FAILURES,
    client_options,
    close_within,
    closed,
    started,
    topics_present,
)
from hookrelay.ops.logs import get_logger

log = get_logger("hookrelay.ingest")

BATCH_BYTES: Final = 1_048_576
"""Largest batch the producer builds per partition, in bytes."""
CONNECT_RETRY_S: Final = 2.0
NOT_CONNECTED: Final = "not connected yet"
"""Seconds between attempts to reach the cluster at start-up."""


Record = tuple[str, bytes | None, bytes]
"""A record to write: topic, key (None for none), value."""


class NotConnectedError(ConnectionError):
    """A write before the producer reached the cluster."""


class IngestWriter:
    """``write(topic, key, value)`` for the ingest routes; ``connect()``/``stop()`` own the
    producer. ``max_record_bytes`` is the largest value accepted (the routes' body limit), so
    the producer never refuses a record a route let through."""

    def __init__(self, kafka: KafkaSettings, max_record_bytes: int) -> None:
        self._kafka = kafka
        self._max_record_bytes = max_record_bytes
        self._producer: AIOKafkaProducer | None = None
        self.last_error: str | None = NOT_CONNECTED
        self._failure: BaseException | None = None
        self.failed = asyncio.Event()
        """Set when the producer failed for good (``failure``), until ``replace``."""
        """Why the cluster did not answer the last start or probe; None once it did."""

    def _new_producer(self) -> AIOKafkaProducer:
        kafka = self._kafka
        return AIOKafkaProducer(
            **client_options(kafka, "ingest"),
            acks="all",
            enable_idempotence=True,
            linger_ms=0,  # one sender waits on each record: batching would only add latency
            request_timeout_ms=int(kafka.request_timeout_s * 1000),
            max_request_size=max(1_048_576, self._max_record_bytes + 65_536),
            # Requests waiting on a batch in flight join the next one; aiokafka's 16 KiB
            # default held about 25 Logto bodies, so a busy partition made later senders
            # wait for a whole round trip before they could even be queued.
            max_batch_size=BATCH_BYTES,
        )

    async def start(self) -> None:
        """Connect once. Raises the client's error when the cluster cannot be reached."""
        self._producer = await started(self._new_producer())
        self.last_error = None

    async def connect(self) -> None:
        """Connect, trying again every ``CONNECT_RETRY_S`` until the cluster answers."""
        while True:
            try:
                await self.start()
            except KafkaError as e:
                if self.last_error == NOT_CONNECTED:
                    log.warning("ingest_kafka_unreachable", error=_reason(e))
                self.last_error = _reason(e)
                await asyncio.sleep(CONNECT_RETRY_S)
            else:
                log.info("ingest_kafka_connected")
                return

    async def probe(self, topics: Collection[str], timeout_s: float) -> set[str] | None:
        """Which of ``topics`` the cluster has, or None when it did not answer within
        ``timeout_s`` (``last_error`` then says why)."""
        if self._producer is None:
            return None
        try:
            async with asyncio.timeout(timeout_s):
                present = await topics_present(self._producer.client, topics)
        except (KafkaError, TimeoutError) as e:
            if self.last_error is None:
                log.warning("ingest_kafka_unreachable", error=_reason(e))
            self.last_error = _reason(e)
            return None
        if self.last_error is not None:
            log.info("ingest_kafka_reachable")
        self.last_error = None
        return present

    @property
    def failure(self) -> BaseException | None:
        """Why the producer stopped working for good, or None. aiokafka's idempotent producer
        gives up on a batch the broker did not take within ``request_timeout_ms`` (a broker
        away that long, under load); its sequence numbers then have a gap, and the broker
        refuses every later batch with ``OutOfOrderSequenceNumber`` (measured: every write
        after the broker came back, for as long as the process ran). Only a new producer
        (a new producer id) writes again: ``replace``. Its sender task ending is the other
        sign."""
        if self._failure is not None:
            return self._failure
        # aiokafka exposes no state for it but its sender task.
        sender = getattr(self._producer, "_sender", None)
        task = getattr(sender, "sender_task", None)
        if task is None or not task.done() or task.cancelled():
            return None
        exception: BaseException | None = task.exception()
        return exception or KafkaError("the producer's sender stopped")

    async def replace(self, close_timeout_s: float) -> None:
        """Close the failed producer (records it holds fail; none was answered 2xx) and
        connect a new one, trying again until the cluster answers."""
        old, self._producer = self._producer, None
        self._failure = None
        self.failed.clear()
        self.last_error = "the producer failed; starting a new one"
        if old is not None:
            await close_within(old, close_timeout_s)
        await self.connect()

    async def stop(self) -> None:
        """Flush and close (records not yet acknowledged were never answered 2xx)."""
        if self._producer is not None:
            await closed(self._producer.stop())
            self._producer = None

    def _producer_or_refuse(self) -> AIOKafkaProducer:
        if self._producer is None or self.last_error is not None:
            raise NotConnectedError(self.last_error or "the cluster has not been reached yet")
        return self._producer

    async def write(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Return once the broker acknowledged the record; raise otherwise
        (``NotConnectedError`` at once while the cluster is known to be away)."""
        try:
            await self._producer_or_refuse().send_and_wait(topic, value, key=key)
        except PRODUCER_FAILURES as e:
            self._fail(e)
            raise

    async def write_many(
        self, records: Sequence[Record], timeout_s: float
    ) -> list[BaseException | None]:
        """Write ``records`` (topic, key, value) in order and wait up to ``timeout_s`` for
        every acknowledgement; returns, per record, None when acknowledged,
        ``UnconfirmedWriteError`` when it was queued but not acknowledged in time (it may still
        be written), or the error that kept it from being written. A record that could not be
        queued stops the rest (they are not sent, so no record lands before an earlier one of
        the same request that failed). Raises ``NotConnectedError`` (nothing queued) while the
        cluster is known to be away."""
        producer = self._producer_or_refuse()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        sent: list[asyncio.Future[object] | BaseException] = []
        for topic, key, value in records:
            if sent and isinstance(sent[-1], BaseException):
                sent.append(NotSentError("an earlier record of the request was not queued"))
                continue
            try:
                async with asyncio.timeout_at(deadline):
                    sent.append(await producer.send(topic, value, key=key))
            except TimeoutError:
                sent.append(UnconfirmedWriteError("no room in the producer in time"))
            except KafkaError as e:
                sent.append(e)
        waiting = [item for item in sent if isinstance(item, asyncio.Future)]
        if waiting:
            await asyncio.wait(waiting, timeout=max(0.0, deadline - loop.time()))
        outcomes = [_outcome(item) for item in sent]
        failure = next((o for o in outcomes if isinstance(o, PRODUCER_FAILURES)), None)
        if failure is not None:
            self._fail(failure)
        return outcomes

    def _fail(self, error: BaseException) -> None:
        """The producer writes nothing more: refuse at once (not ready) until ``replace``."""
        self._failure = error
        self.last_error = f"the producer failed ({type(error).__name__}); starting a new one"
        self.failed.set()


class UnconfirmedWriteError(TimeoutError):
    """A record queued but not acknowledged in time: the producer keeps it and may still
    write it."""


class NotSentError(ConnectionError):
    """A record never handed to the producer."""


def _outcome(item: asyncio.Future[object] | BaseException) -> BaseException | None:
    if isinstance(item, BaseException):
        return item
    if not item.done() or item.cancelled():
        return UnconfirmedWriteError("not acknowledged in time")
    return item.exception()


def _reason(error: BaseException) -> str:
    """The error as one line, naming its class once (a ``KafkaError``'s text often starts
    with its class name already)."""
    name, text = type(error).__name__, str(error)
    if not text:
        return "no answer in time" if isinstance(error, TimeoutError) else name
    return text if text.startswith(name) else f"{name}: {text}"
