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
from aiokafka.errors import TopicAlreadyExistsError, for_code

from hookrelay.config import KafkaSettings, Settings
from hookrelay.errors import TopicsMissingError
from hookrelay.kafka.clients import client_options, closed, existing_topics
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
    return await _create_missing(kafka, topics)


async def _create_missing(
    kafka: KafkaSettings, topics: Collection[str], control: str = ""
) -> list[str]:
    """Create those of ``topics`` the cluster lacks when ``kafka.create_topics`` allows it
    (``control`` as the control topic, see ``_create``); return those created."""
    admin = AIOKafkaAdminClient(
        **client_options(kafka, "admin"),
        request_timeout_ms=int(kafka.request_timeout_s * 1000),
    )
    try:
        await admin.start()
        existing = await existing_topics(admin, topics)
        missing = [t for t in topics if t not in existing]
        if kafka.create_topics and missing:
            await _create(admin, kafka, missing, control)
            return missing
        return []
    finally:
        await closed(admin.close())


async def _create(
    admin: AIOKafkaAdminClient, kafka: KafkaSettings, topics: list[str], control: str = ""
) -> None:
    """Create ``topics`` in one request: ``kafka.topic_partitions`` partitions each, but the
    control topic (``control``) one compacted partition (one partition keeps its decisions in
    one order). A topic another replica created first is fine; any other refusal raises the
    broker's error (aiokafka answers it in the response, without raising)."""
    new = [
        NewTopic(t, 1, kafka.topic_replication_factor, topic_configs=CONTROL_TOPIC_CONFIG)
        if t == control
        else NewTopic(t, kafka.topic_partitions, kafka.topic_replication_factor)
        for t in topics
    ]
    response = await admin.create_topics(new)
    specs = {topic.name: topic for topic in new}
    for name, code, *message in response.topic_errors:
        if code == TopicAlreadyExistsError.errno:
            continue  # another replica created it first
        if code:
            error = for_code(code)
            raise error(f"{name}: {message[0] if message and message[0] else error.description}")
        spec = specs[name]
        log.info("topic_created", topic=name, partitions=spec.num_partitions,
                 replication_factor=spec.replication_factor,
                 configs=dict(spec.topic_configs))  # fmt: skip


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
        owned = owned_topics(settings)
        existing = await existing_topics(admin, [*owned, *k.topics])
        missing = [t for t in owned if t not in existing]
        absent_sources = [t for t in k.topics if t not in existing]
        if absent_sources:
            log.warning("event_topics_missing", topics=absent_sources)
        if missing and not k.create_topics:
            raise TopicsMissingError(missing)
        if missing:
            await _create(admin, k, missing, settings.control_topic)
        return missing
    finally:
        await closed(admin.close())


async def ensure_control_topic(settings: Settings) -> None:
    """Create the control topic (one compacted partition) when it is missing and
    ``kafka.create_topics`` allows it: a command run before the daemon's first start must
    not leave a broker to auto-create it with its defaults (several partitions, deleted after
    the retention). Raises aiokafka's ``KafkaError``."""
    await _create_missing(settings.kafka, [settings.control_topic], settings.control_topic)
