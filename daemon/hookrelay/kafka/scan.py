"""Read a topic up to its end as of now, without a consumer group: what the one-shot commands
(``replay``, ``deliveries``) use to look at the topics a deployment owns.

Nothing is committed and no group is joined, so a scan never changes what the daemon
consumes. The end of each partition is taken when the scan starts: records written during
the scan are left for the next one, so a scan of a busy topic still ends.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from hookrelay.config import KafkaSettings
from hookrelay.kafka.clients import client_options, closed, partitions_by_topic, reader


async def partitions_of(kafka: KafkaSettings, topic: str, role: str = "scan") -> list[int]:
    """``topic``'s partition numbers, sorted (empty when the topic does not exist; asking
    never creates it, whatever the broker's ``auto.create.topics.enable``).

    Raises aiokafka's ``KafkaError`` when the cluster cannot be reached."""
    admin = AIOKafkaAdminClient(**client_options(kafka, role))
    try:  # start inside: a client whose start failed is closed too
        await admin.start()
        found = await partitions_by_topic(admin, [topic])
    finally:
        await closed(admin.close())
    return sorted(p["partition"] for p in found.get(topic, []))


async def group_offsets(
    kafka: KafkaSettings, group: str, role: str = "scan"
) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offsets (with their metadata) ``group`` committed, as the broker reports them."""
    admin = AIOKafkaAdminClient(**client_options(kafka, role))
    try:
        await admin.start()
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await closed(admin.close())
    return {tp: meta for tp, meta in offsets.items() if meta.offset >= 0}


async def scan(
    kafka: KafkaSettings,
    topic: str,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    start: Mapping[int, int] | None = None,
    timeout_s: float = 30.0,
    role: str = "scan",
    ends: dict[TopicPartition, int] | None = None,
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Yield ``topic``'s records up to each partition's end as of the start, oldest first per
    partition, partitions interleaved.

    Each partition starts at ``start[partition]`` when given (the beginning for partitions it
    does not name), else at the first record written at or after ``since_ms`` (epoch ms,
    Kafka's time index), else at the beginning. It ends at the first record written at or
    after ``until_ms`` when given. ``ends``, when given, receives each partition's end as of
    the start (where the scan stops). Raises aiokafka's ``KafkaError``
    when the cluster is unreachable and ``TimeoutError`` when the end is not reached in
    ``timeout_s``.
    """
    partitions = await partitions_of(kafka, topic, role)
    if not partitions:
        return
    consumer = reader(kafka, role)
    try:  # start inside: a client whose start failed is closed too
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        # Seek first and read the positions: an end_offsets() call before a lazy seek made
        # the seek land at the end (aiokafka 0.13).
        await _seek(consumer, tps, since_ms, start)
        begin = {tp: await consumer.position(tp) for tp in tps}
        end = await consumer.end_offsets(tps)
        if until_ms is not None:
            later = await consumer.offsets_for_times(dict.fromkeys(tps, until_ms))
            end = {tp: min(end[tp], at.offset) if (at := later.get(tp)) else end[tp] for tp in tps}
        if ends is not None:
            ends.update(end)
        async for record in _records_until(consumer, begin, end, timeout_s):
            yield record
    finally:
        await closed(consumer.stop())


async def window(
    kafka: KafkaSettings, topic: str, since_ms: int, until_ms: int | None, role: str = "scan"
) -> dict[int, tuple[int, int]]:
    """Per partition of ``topic``, the offsets ``[start, end)`` of the records written from
    ``since_ms`` to ``until_ms`` (epoch ms; None: up to the end now), from Kafka's time index
    without reading a record. Raises aiokafka's ``KafkaError``."""
    partitions = await partitions_of(kafka, topic, role)
    if not partitions:
        return {}
    consumer = reader(kafka, role)
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in partitions]
        end = await consumer.end_offsets(tps)
        first = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        last = {} if until_ms is None else await consumer.offsets_for_times(
            dict.fromkeys(tps, until_ms)
        )  # fmt: skip
    finally:
        await closed(consumer.stop())
    bounds = {}
    for tp in tps:
        stop = at.offset if (at := last.get(tp)) is not None else end[tp]
        start = at.offset if (at := first.get(tp)) is not None else end[tp]
        bounds[tp.partition] = (start, max(start, stop))
    return bounds


async def _seek(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    since_ms: int | None,
    start: Mapping[int, int] | None,
) -> None:
    if start is not None:
        await consumer.seek_to_beginning(*tps)
        for tp in tps:
            if tp.partition in start:
                consumer.seek(tp, start[tp.partition])
        return
    if since_ms is None:
        await consumer.seek_to_beginning(*tps)
        return
    found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
    late = [tp for tp in tps if found.get(tp) is None]  # nothing written that late
    if late:
        await consumer.seek_to_end(*late)
    for tp in tps:
        at = found.get(tp)
        if at is not None:
            consumer.seek(tp, at.offset)


async def _records_until(
    consumer: AIOKafkaConsumer,
    begin: dict[TopicPartition, int],
    end: dict[TopicPartition, int],
    timeout_s: float,
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    deadline = time.monotonic() + timeout_s
    remaining = {tp for tp, offset in end.items() if begin[tp] < offset}
    while remaining:
        if time.monotonic() > deadline:
            topics = sorted({tp.topic for tp in remaining})
            raise TimeoutError(f"{', '.join(topics)} not read to its end in {timeout_s:g} s")
        batches = await consumer.getmany(*remaining, timeout_ms=500)
        for tp, records in batches.items():
            for record in records:
                if record.offset < end[tp]:
                    yield record
            if await consumer.position(tp) >= end[tp]:
                remaining.discard(tp)
