"""Make sure the topics hookrelay writes to exist before it consumes anything.

The dead-letter topic, one retry topic per delay tier, the control topic (compacted, one
partition) and the outcome topic are created at start-up when missing
(``kafka.create_topics``, with ``kafka.topic_partitions`` partitions and
``kafka.topic_replication_factor`` replicas). When creation is switched off, a missing topic
is a start-up error that names every missing topic, because writing a retry to a topic that
does not exist would stall every lane. The daemon only checks the event topics: a missing one
is logged (the consumer group picks it up once a producer creates it); the ingest process,
their producer, creates those it writes (``create_event_topics``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from hookrelay.config import KafkaSettings, Settings
from hookrelay.errors import TopicsMissingError
from hookrelay.kafka.clients import client_options
from hookrelay.ops.logs import get_logger

log = get_logger("hookrelay.topics")


def owned_topics(settings: Settings) -> list[str]:
    """The topics hookrelay writes: the dead-letter topic, the retry tiers and the topic of
    retries due now, the control topic and, when ``outcomes.enabled``, the outcome topic;
    no repeats."""
    outcomes = [settings.outcomes.topic] if settings.outcomes.enabled else []
    return list(
        dict.fromkeys([
            settings.dead_letter_topic, *settings.consumed_retry_topics, settings.control_topic,
            *outcomes,
        ])
    )  # fmt: skip


CONTROL_TOPIC_CONFIG: Final = {"cleanup.policy": "compact"}
"""The control topic keeps the last decision per key (``kafka.control``), forever."""


async def create_event_topics(kafka: KafkaSettings, topics: Collection[str]) -> list[str]:
    """For the ingest process, which writes the event topics: create those of ``topics`` the
    cluster lacks, when ``kafka.create_topics`` allows it (else create nothing); return those
    created. Raises aiokafka's ``KafkaError`` when the cluster cannot be reached."""
    admin = AIOKafkaAdminClient(
        **client_options(kafka, "admin"),
        request_timeout_ms=int(kafka.request_timeout_s * 1000),
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if kafka.create_topics:
            for topic in missing:
                await _create(admin, kafka, topic)
            return missing
        return []
    finally:
        await admin.close()


async def _create(
    admin: AIOKafkaAdminClient, kafka: KafkaSettings, topic: str, *, control: bool = False
) -> None:
    """Create ``topic`` with ``kafka.topic_partitions`` partitions, or, for the control topic,
    one compacted partition (one partition keeps its decisions in one order)."""
    partitions = 1 if control else kafka.topic_partitions
    configs = CONTROL_TOPIC_CONFIG if control else {}
    try:
        await admin.create_topics([
            NewTopic(topic, partitions, kafka.topic_replication_factor, topic_configs=configs)
        ])  # fmt: skip
    except TopicAlreadyExistsError:
        return  # another replica created it first
    log.info("topic_created", topic=topic, partitions=partitions,
             replication_factor=kafka.topic_replication_factor, configs=configs)  # fmt: skip


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing owned topics (or raise ``TopicsMissingError``); return those created.

    Raises aiokafka's ``KafkaError`` when the cluster cannot be reached.
    """
    k = settings.kafka
    admin = AIOKafkaAdminClient(
        **client_options(k, "admin"),
        request_timeout_ms=int(k.request_timeout_s * 1000),
    )
    try:  # start inside: a client whose start failed is closed too
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [t for t in owned_topics(settings) if t not in existing]
        absent_sources = [t for t in k.topics if t not in existing]
        if absent_sources:
            log.warning("event_topics_missing", topics=absent_sources)
        if missing and not k.create_topics:
            raise TopicsMissingError(missing)
        for topic in missing:
            await _create(admin, k, topic, control=topic == settings.control_topic)
        return missing
    finally:
        await admin.close()
