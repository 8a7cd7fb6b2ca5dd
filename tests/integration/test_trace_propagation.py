"""W3C trace context on the real broker, tracing off: a record's ``traceparent`` and
``tracestate`` reach its webhook requests unchanged, after a retry, across a restart and
through a replayed dead letter; a record without them gets requests without them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from multidict import CIMultiDictProxy

from tests.integration.harness import (
    headers_of,
    hookrelay_cli,
    read_topic,
    running_daemon,
    settings_for,
    unique,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACESTATE = "congo=t61rcWkgMzE"


def event(n: int) -> bytes:
    return orjson.dumps(
        {"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": n}}
    )


async def produce_with_headers(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes, list[tuple[str, bytes]]]]
) -> None:
    """Publish ``(value, headers)`` records in order on partition 0 and wait for the acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value, headers in records:
            await (await producer.send(topic, value, partition=0, headers=headers))
    finally:
        await producer.stop()


TRACE_HEADERS = [("traceparent", TRACEPARENT.encode()), ("tracestate", TRACESTATE.encode())]


async def test_a_records_trace_context_reaches_its_requests_retries_included(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=1)
    async with Receiver(keys={"crm": None}) as receiver:
        receiver.script("crm", [Reply(status=500)])  # the traced record's first attempt
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm")}]
        settings = settings_for(write_config(tmp_path, kafka_bootstrap, topic, hooks))
        async with running_daemon(settings):
            await produce_with_headers(
                kafka_bootstrap, topic,
                [(event(1), TRACE_HEADERS), (event(2), []),
                 (event(3), [("traceparent", b"00-" + b"0" * 32 + b"-b7ad6b7169203331-01")])],
            )  # fmt: skip
            requests = await receiver.wait_for(4, timeout_s=30)
            await asyncio.sleep(0.5)  # nothing more may come
    assert len(receiver.requests) == 4
    by_id: dict[int, list[CIMultiDictProxy[str]]] = {}
    for request in requests:
        by_id.setdefault(request.json["data"]["id"], []).append(request.headers)
    first, retried = by_id[1]  # a 500, then the retry from the retry topic
    for headers in (first, retried):
        assert headers.getall("traceparent") == [TRACEPARENT]
        assert headers.getall("tracestate") == [TRACESTATE]
    assert first["webhook-id"] == retried["webhook-id"]
    # No trace context, or an invalid one (all-zero trace id): no trace headers at all.
    for n in (2, 3):
        [headers] = by_id[n]
        assert "traceparent" not in headers and "tracestate" not in headers


async def test_the_trace_context_survives_a_restart_and_a_replay_of_its_dead_letter(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq], partitions=1)
    async with Receiver(keys={"crm": None}) as receiver:
        # First attempt fails, the daemon stops while the retry waits in its tier; the
        # restarted daemon's retry gets a 400 (a dead letter); the replay is answered 200.
        receiver.script("crm", [Reply(status=500), Reply(status=400)])
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm")}]
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks, dead_letter_topic=dlq,
            delivery={"retry_schedule_s": [2.0]},
        )  # fmt: skip
        async with running_daemon(settings_for(path)):
            await produce_with_headers(kafka_bootstrap, topic, [(event(1), TRACE_HEADERS)])
            await receiver.wait_for(1, timeout_s=30)
            retry = (await read_topic(kafka_bootstrap, f"{topic}.retry.2s", 1))[0]
        assert headers_of(retry)["traceparent"] == TRACEPARENT
        async with running_daemon(settings_for(path)):
            await receiver.wait_for(2, timeout_s=30)
            letter = (await read_topic(kafka_bootstrap, dlq, 1))[0]
            assert headers_of(letter)["traceparent"] == TRACEPARENT
            assert headers_of(letter)["tracestate"] == TRACESTATE
            code, out, _ = await hookrelay_cli("replay", "-c", str(path))
            assert code == 0, out
            await receiver.wait_for(3, timeout_s=30)
    assert [r.headers["traceparent"] for r in receiver.requests] == [TRACEPARENT] * 3
    assert [r.headers["tracestate"] for r in receiver.requests] == [TRACESTATE] * 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
