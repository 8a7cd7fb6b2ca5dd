"""The options every aiokafka client of hookrelay is built with: where the brokers are, who is
asking, and how the connection is secured.

::

    KafkaSettings ─▶ client_options(kafka, role) ─▶ AIOKafkaConsumer / AIOKafkaProducer /
                                                    AIOKafkaAdminClient(**options, ...)
    KafkaSettings ─▶ reader(kafka, role) ─▶ a consumer outside the group, fetches bounded

``security_protocol`` is Kafka's own setting of the same name: ``PLAINTEXT``, ``SSL`` (TLS),
``SASL_PLAINTEXT`` (SASL authentication, no TLS) or ``SASL_SSL`` (both). SASL mechanisms are
``PLAIN`` and ``SCRAM-SHA-256``/``SCRAM-SHA-512`` (RFC 7677 / RFC 5802), which aiokafka speaks
natively. TLS always verifies the broker's certificate chain and host name: the context comes
from aiokafka's ``create_ssl_context`` (``ssl.create_default_context``, which turns
``check_hostname`` and ``CERT_REQUIRED`` on); the system's CAs are used when no
``ssl_ca_file`` is given.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaConnectionError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
)
from aiokafka.protocol.metadata import MetadataRequest

from hookrelay.net.tls import kafka_ssl_context

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer
    from aiokafka.structs import OffsetAndMetadata, TopicPartition

    from hookrelay.config import KafkaSettings
    from hookrelay.events.model import OutboundRecord

__all__ = [
    "PRODUCER_FAILURES", "client_options", "close_within", "closed", "committed_with_metadata",
    "reader", "started", "topics_present", "write_all",
]  # fmt: skip

PRODUCER_FAILURES: tuple[type[Exception], ...] = (
    OutOfOrderSequenceNumber, ProducerFenced, InvalidProducerEpoch,
)  # fmt: skip
"""Errors after which an idempotent aiokafka producer writes nothing more. It gives up on a
batch the broker did not take within ``request_timeout_ms`` (a broker away that long, under
load); its sequence numbers then have a gap, and the broker refuses every later batch with
``OutOfOrderSequenceNumber`` (measured on the ingest process: every write, for as long as it
ran). Only a new producer, with a new producer id, writes again."""


def client_options(kafka: KafkaSettings, role: str | None = None) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client: ``bootstrap_servers`` (list of
    host:port), ``client_id`` (``kafka.client_id``, suffixed ``-<role>`` when a role such as
    ``producer`` is given), ``security_protocol``, and, as the protocol needs them,
    ``ssl_context`` and ``sasl_mechanism``/``sasl_plain_username``/``sasl_plain_password``.

    Raises ``net.tls.TlsFilesError`` when the TLS files cannot be loaded (the configuration
    loader checked them already, so only a file changed since then fails here).
    """
    options: dict[str, Any] = {
        "bootstrap_servers": list(kafka.bootstrap_servers),
        "client_id": f"{kafka.client_id}-{role}" if role else kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = kafka_ssl_context(
            kafka.ssl_ca_file, kafka.ssl_cert_file, kafka.ssl_key_file
        )
    if kafka.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        assert kafka.sasl_password is not None, "validated with the settings"
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


def reader(kafka: KafkaSettings, role: str) -> AIOKafkaConsumer:
    """A consumer outside the group (nothing committed, no group joined), for the daemon's
    own reads beside its group consumer: the control topic, the retry-backlog count, the
    look for former tiers, and the one-shot commands' scans. Its fetches are bounded like
    the group consumer's (``kafka.max_partition_fetch_bytes``, ``kafka.fetch_max_bytes``):
    with aiokafka's defaults (1 MiB a partition, 50 MiB a response) the backlog count, run
    every 30 s over two dozen retry partitions, lifted the daemon's RSS from 129 to 150 MB
    within 0.2 s in the 1,000,000-event memory bench."""
    return AIOKafkaConsumer(
        **client_options(kafka, role),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=kafka.max_partition_fetch_bytes,
        fetch_max_bytes=kafka.fetch_max_bytes,
    )


async def committed_with_metadata(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, OffsetAndMetadata]:
    """The group's committed offsets of ``partitions`` with their metadata, in one request
    (partitions without a commit are absent or have offset -1). ``AIOKafkaConsumer.committed``
    returns the offset only, one partition per request; this is the coordinator call it
    makes (aiokafka 0.14), which retries retriable errors. Raises aiokafka's ``KafkaError``."""
    if not partitions:
        return {}
    fetched: dict[
        TopicPartition, OffsetAndMetadata
    ] = await consumer._coordinator.fetch_committed_offsets(partitions)
    return fetched


async def topics_present(client: Any, topics: Collection[str]) -> set[str]:
    """Which of ``topics`` the cluster has, from a metadata request that names them
    (``client``: an aiokafka client, ``AIOKafkaProducer.client`` or a consumer's).

    aiokafka's ``topics()`` and ``fetch_all_metadata()`` ask for every topic of the cluster:
    on a shared cluster of 4,590 topics each call cost 100 to 130 ms of CPU, mostly one parse
    on the event loop, which the readiness probe paid every 3 s (a stall that every delivery
    in flight waited out). The request is the one aiokafka's own metadata sync sends for a
    consumer's subscribed topics (through the same private ``_metadata_update``), so it
    creates no topic the consumer would not. Raises ``KafkaConnectionError`` when no broker
    answered."""
    wanted = set(topics)
    if not wanted:  # an empty list would ask for every topic
        return set()
    cluster = ClusterMetadata()
    if not await client._metadata_update(cluster, sorted(wanted)):
        raise KafkaConnectionError("no broker answered a metadata request")
    present: set[str] = cluster.topics() & wanted
    return present


async def partitions_by_topic(admin: Any, topics: Collection[str]) -> dict[str, list[Any]]:
    """The partitions (aiokafka's metadata entries: ``partition``, ``leader``,
    ``error_code``, ...) of each of ``topics`` the cluster has, asked by name, never
    creating one (``admin``: an ``AIOKafkaAdminClient``).

    Listing every topic (``list_topics``) costs one parse of the whole cluster's metadata on
    the event loop: ~110 ms of CPU on a shared cluster of 4,700 topics, a stall every
    delivery in flight waits out. ``describe_topics`` names them, but its request lets the
    broker create a topic it asks about (``auto.create.topics.enable``, on by default): a
    retry tier deleted since its offsets were committed would come back. Sent through the
    admin client's private ``_send_request``, as aiokafka's own ``describe_topics`` sends
    it. Raises aiokafka's ``KafkaError`` when the cluster cannot answer."""
    if not topics:  # an empty list would ask for every topic
        return {}
    request = MetadataRequest(sorted(set(topics)), allow_auto_topic_creation=False)
    response = await admin._send_request(request)
    return {
        entry["topic"]: entry["partitions"]
        for entry in response.to_object()["topics"]
        if entry["error_code"] == 0
    }


async def existing_topics(admin: Any, topics: Collection[str]) -> set[str]:
    """Which of ``topics`` the cluster has (``partitions_by_topic``)."""
    return set(await partitions_by_topic(admin, topics))


async def closed(closing: Awaitable[None]) -> None:
    """Await an aiokafka client's ``stop()`` or ``close()`` (``closing``), then raise
    ``CancelledError`` if the caller was cancelled meanwhile.

    aiokafka 0.14 swallows such a cancellation: ``AIOKafkaClient.close`` and
    ``Fetcher.close`` cancel their own background task and await it inside
    ``contextlib.suppress(CancelledError)``, which also absorbs a cancel meant for the task
    that is closing (aio-libs/aiokafka#983 and the open #1000). A task cancelled there ran on
    as if nothing happened: the daemon hung after a fatal group error, because its control
    follower, cancelled while closing a metadata client, went on following. Every stop and
    close of an aiokafka client in hookrelay goes through here."""
    task = asyncio.current_task()
    requested = 0 if task is None else task.cancelling()
    await closing
    if task is not None and task.cancelling() > requested:
        raise asyncio.CancelledError


async def started(producer: AIOKafkaProducer) -> AIOKafkaProducer:
    """``producer``, started. When the cluster cannot be reached it is closed again (its
    connections and tasks released) and the client's error is raised."""
    try:
        await producer.start()
    except BaseException:
        await closed(producer.stop())
        raise
    return producer


async def close_within(producer: AIOKafkaProducer, timeout_s: float) -> None:
    """Stop ``producer``, giving up after ``timeout_s`` seconds; never raises but a
    cancellation. For a producer that writes nothing more (``PRODUCER_FAILURES``): its
    unsent records fail, and with the cluster away its flush would wait indefinitely."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout_s):
            await closed(producer.stop())


async def write_all(
    kafka: KafkaSettings,
    records: Iterable[OutboundRecord] | AsyncIterable[OutboundRecord],
    role: str,
    on_written: Callable[[int], None] | None = None,
) -> int:
    """Write ``records`` with a producer of their own (acks=all, idempotent), in order, and
    wait until the broker acknowledged every one; return how many. For the one-shot commands
    (replay, release, backfill, the control topic). ``on_written(n)`` reports progress.
    Raises aiokafka's ``KafkaError`` when a write fails: what was acknowledged before stays.
    """
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - the type is imported for checks only

    producer = AIOKafkaProducer(**client_options(kafka, role), acks="all", enable_idempotence=True)
    written = 0
    pending: list[asyncio.Future[Any]] = []
    try:
        await producer.start()
        async for record in _each(records):
            pending.append(
                await producer.send(
                    record.topic, record.value, key=record.key, headers=list(record.headers)
                )
            )
            if len(pending) >= _WRITE_WINDOW:
                written += await _acknowledged(pending, on_written)
        written += await _acknowledged(pending, on_written)
    finally:
        await closed(producer.stop())
    return written


async def _each(
    records: Iterable[OutboundRecord] | AsyncIterable[OutboundRecord],
) -> AsyncIterator[OutboundRecord]:
    if isinstance(records, AsyncIterable):
        async for record in records:
            yield record
    else:
        for record in records:
            yield record


_WRITE_WINDOW = 1000
"""Records sent before waiting for their acknowledgements: bounded memory on a long write."""


async def _acknowledged(
    pending: list[asyncio.Future[Any]], on_written: Callable[[int], None] | None
) -> int:
    count = len(pending)
    await asyncio.gather(*pending)
    pending.clear()
    if on_written is not None and count:
        on_written(count)
    return count
