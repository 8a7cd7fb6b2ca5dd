"""The ingest endpoint's Kafka writer: one record at a time, answered only once the broker has
it (issue 14, in progress).

The producer is idempotent with ``acks=all``: a send the client retries after a lost answer is
written once, and an acknowledged record is on every in-sync replica. A write either ends with
the broker's acknowledgement or raises; the endpoint answers 503 for the latter, and a record
is one Kafka message, so there is nothing partial to undo.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from hookrelay.config import KafkaSettings
from hookrelay.kafka.clients import client_options


class IngestWriter:
    """``write(topic, key, value)`` for ``endpoint.IngestEndpoint``; ``start()``/``stop()`` own
    the producer. ``max_record_bytes`` is the largest value accepted (the endpoint's body
    limit), so the producer never refuses a record the endpoint let through."""

    def __init__(self, kafka: KafkaSettings, max_record_bytes: int) -> None:
        self._producer = AIOKafkaProducer(
            **client_options(kafka, "ingest"),
            acks="all",
            enable_idempotence=True,
            linger_ms=0,  # one sender waits on each record: batching would only add latency
            request_timeout_ms=int(kafka.request_timeout_s * 1000),
            max_request_size=max(1_048_576, max_record_bytes + 65_536),
        )

    async def start(self) -> None:
        """Connect to the cluster. Raises the client's error when it cannot."""
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and close (records not yet acknowledged were never answered 2xx)."""
        await self._producer.stop()

    async def write(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Return once the broker acknowledged the record; raise otherwise."""
        await self._producer.send_and_wait(topic, value, key=key)
