"""The ingest endpoint with its Kafka writer on the real broker (issue 14, in progress): a
body signed as Logto signs is answered 204 once the broker has the record, which is Logto's
body without hookId, byte for byte, keyed by the user it is about."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson
import pytest

from hookrelay.config import KafkaSettings
from hookrelay.events.signing import logto_signature
from hookrelay.ingest.endpoint import IngestEndpoint, Source
from hookrelay.ingest.http import Limits
from hookrelay.ingest.writer import IngestWriter, NotConnectedError
from hookrelay.ops.metrics import IngestMetrics
from tests.integration.harness import read_topic, unique
from tests.kafka_broker import create_topics
from tests.unit.ingest.test_endpoint import listening

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTS = (ROOT / "deploy/demo/events.jsonl").read_bytes().splitlines()[:5]
KEY = "logto-webhook-signing-key-0123456789"


async def test_a_logto_webhook_becomes_its_event_record_once_acknowledged(
    kafka_bootstrap: str,
) -> None:
    topic = unique("ingested")
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    writer = IngestWriter(KafkaSettings(bootstrap_servers=(kafka_bootstrap,)), 1 << 20)
    await writer.start()
    source = Source("prod", "/logto/prod", KEY, topic)
    endpoint = IngestEndpoint([source], writer.write, Limits(1 << 20), IngestMetrics())
    try:
        async with listening(endpoint) as port, aiohttp.ClientSession() as session:
            for event in EVENTS:
                body = event[:-1] + b',"hookId":"hk5bz0sbz3ebvhsr2vcby"}'
                headers = {"Content-Type": "application/json",
                           "logto-signature-sha-256": logto_signature(KEY, body)}  # fmt: skip
                url = f"http://127.0.0.1:{port}/logto/prod"
                async with session.post(url, data=body, headers=headers) as answer:
                    assert answer.status == 204
    finally:
        await writer.stop()
    records = await read_topic(kafka_bootstrap, topic, len(EVENTS))
    assert [r.value for r in records] == EVENTS
    first = orjson.loads(EVENTS[0])
    assert records[0].key == first["userId"].encode()


async def test_write_many_reports_each_record_and_refuses_at_once_while_the_cluster_is_away(
    kafka_bootstrap: str,
) -> None:
    topic = unique("ingested-many")
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    writer = IngestWriter(KafkaSettings(bootstrap_servers=(kafka_bootstrap,)), 1 << 20)
    await writer.start()
    try:
        outcomes = await writer.write_many([(topic, None, event) for event in EVENTS], 10.0)
        assert outcomes == [None] * len(EVENTS)
        writer.last_error = "KafkaConnectionError: the last probe failed"
        with pytest.raises(NotConnectedError):
            await writer.write(topic, None, EVENTS[0])
        with pytest.raises(NotConnectedError):
            await writer.write_many([(topic, None, EVENTS[0])], 10.0)
    finally:
        await writer.stop()
    records = await read_topic(kafka_bootstrap, topic, len(EVENTS))
    assert [r.value for r in records] == EVENTS
