"""Closing aiokafka's clients on the real broker: a cancellation that lands while a client
closes ends the closing task (CI's hang: ``hookrelay run`` with a session timeout the broker
refuses logged the fatal error and never exited)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from hookrelay.app import cancel_until_done
from hookrelay.config import KafkaSettings
from hookrelay.kafka.clients import closed, existing_topics, topics_present
from hookrelay.kafka.scan import partitions_of
from tests.integration.harness import unique
from tests.kafka_broker import create_topics

pytestmark = pytest.mark.integration

Opened = Callable[[str], Awaitable[Callable[[], Awaitable[None]]]]


async def admin(bootstrap: str) -> Callable[[], Awaitable[None]]:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await client.start()
    return client.close


async def consumer(bootstrap: str) -> Callable[[], Awaitable[None]]:
    client = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await client.start()
    return client.stop


async def producer(bootstrap: str) -> Callable[[], Awaitable[None]]:
    client = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await client.start()
    return client.stop


@pytest.mark.parametrize("open_client", [admin, consumer, producer])
async def test_a_cancellation_landing_while_a_client_closes_ends_the_task(
    kafka_bootstrap: str, open_client: Opened
) -> None:
    """The cancel arrives 1 to 7 loop steps into the close, so at least one lands inside
    aiokafka's ``suppress(CancelledError)`` (step 1 for an admin client, every time here);
    every task whose cancel was accepted must end cancelled."""
    before = asyncio.all_tasks()
    outcomes: list[str] = []
    for steps in range(1, 8):
        close = await open_client(kafka_bootstrap)
        task = asyncio.create_task(closed(close()))
        for _ in range(steps):
            await asyncio.sleep(0)
        if not task.cancel():
            outcomes.append("closed before the cancel")
            continue
        try:
            await task
        except asyncio.CancelledError:
            outcomes.append("cancelled")
        else:
            outcomes.append("ran on")
    # A stop cut short leaves aiokafka's background tasks (a second stop returns at once):
    # the test ends them, as the process's exit does for the daemon.
    await cancel_until_done(asyncio.all_tasks() - before - {asyncio.current_task()})
    assert "ran on" not in outcomes, outcomes
    assert "cancelled" in outcomes


async def test_the_topics_probe_asks_for_its_own_topics_only(kafka_bootstrap: str) -> None:
    """On a shared cluster, asking for every topic cost 100-130 ms of CPU per probe (4,590
    topics) every 3 s: the probe's metadata request names its topics, so the answer holds
    those, whatever else the cluster has, and one that does not exist is reported missing."""
    mine = [unique("probe-a"), unique("probe-b")]
    others = [unique("other") for _ in range(20)]
    await create_topics(kafka_bootstrap, [*mine, *others], partitions=1)
    client = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await client.start()
    try:
        asked: list[list[str] | None] = []
        send = client._client._metadata_update

        async def recording(cluster: Any, topics: list[str] | None) -> bool:
            asked.append(topics)
            return bool(await send(cluster, topics))

        client._client._metadata_update = recording  # type: ignore[method-assign]
        missing = unique("never-created")
        present = await topics_present(client._client, [*mine, missing])
        assert present == set(mine)
        assert asked == [sorted([*mine, missing])]
        assert await topics_present(client._client, []) == set()  # never "every topic"
        assert len(asked) == 1
    finally:
        await closed(client.stop())


async def test_former_tiers_are_looked_up_by_name_without_listing_or_creating_topics(
    kafka_bootstrap: str,
) -> None:
    """The broker creates topics on request (``auto.create.topics.enable``, as Kafka's
    default): asking about a tier deleted since its offsets were committed must not bring it
    back, and the question names only the topics asked about."""
    mine = unique("tier-30s")
    await create_topics(kafka_bootstrap, [mine], partitions=1)
    missing = unique("tier-deleted")
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await client.start()
    try:
        assert await existing_topics(client, [mine, missing]) == {mine}
        assert await existing_topics(client, []) == set()  # never "every topic"
        await asyncio.sleep(0.5)  # an auto-created topic would be listed by now
        assert missing not in await client.list_topics()
    finally:
        await closed(client.close())


async def test_asking_a_missing_topics_partitions_does_not_create_it(kafka_bootstrap: str) -> None:
    """``replay``/``backfill``/``deliveries`` look a topic's partitions up; on a broker that
    creates topics on request (Kafka's default) a mistyped name came into being."""
    missing = unique("typo")
    assert await partitions_of(KafkaSettings(bootstrap_servers=[kafka_bootstrap]), missing) == []
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await client.start()
    try:
        await asyncio.sleep(0.5)  # an auto-created topic would be listed by now
        assert missing not in await client.list_topics()
    finally:
        await closed(client.close())
