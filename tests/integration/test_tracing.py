"""OpenTelemetry spans on the real broker, exported to a real OTLP/HTTP receiver started here
(``tests.otlp_receiver``): the delivery and attempt spans of a traced record arrive in the
producer's trace, with their parentage, attributes and no secret, and the webhook receiver's
``traceparent`` names the attempt span; with the collector down, deliveries still flow."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import orjson
import pytest

from tests.integration.harness import (
    daemon_process,
    produce,
    running_daemon,
    settings_for,
    unique,
    write_config,
)
from tests.integration.test_trace_propagation import produce_with_headers
from tests.kafka_broker import create_topics
from tests.otlp_receiver import OtlpReceiver
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PRODUCER_SPAN}-01"
SIGNING_KEY = "crm-signing-key-0123456789"
COLLECTOR_KEY = "collector-api-key-abcdef"


def event(n: int) -> bytes:
    return orjson.dumps(
        {"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z",
         "data": {"id": f"user-{n}", "email": "zoe@example.com"}}
    )  # fmt: skip


async def test_delivery_and_attempt_spans_reach_the_collector_in_the_producers_trace(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=1)
    async with OtlpReceiver() as collector, Receiver(keys={"crm": SIGNING_KEY}) as receiver:
        receiver.script("crm", [Reply(status=500)])  # then 200, from the retry topic
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm") + "?token=q-secret",
                  "signing_key": SIGNING_KEY}]  # fmt: skip
        tracing = {
            "enabled": True, "endpoint": collector.url, "service_name": "hookrelay-test",
            "headers": {"x-collector-key": COLLECTOR_KEY},
        }  # fmt: skip
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks, extra={"tracing": tracing})
        async with running_daemon(settings_for(path)):
            await produce_with_headers(
                kafka_bootstrap, topic, [(event(1), [("traceparent", TRACEPARENT.encode())])]
            )
            requests = await receiver.wait_for(2, timeout_s=30)
        # The daemon stopped: its shutdown flushed what the batch processor held.
        spans = await collector.wait_for(4, timeout_s=10)

    assert [r.signature_valid for r in requests] == [True, True]
    assert {s.trace_id for s in spans} == {TRACE_ID}
    deliveries = sorted(
        collector.named("deliver crm"), key=lambda s: s.attributes["hookrelay.delivery.outcome"]
    )
    attempts = collector.named("POST")
    assert [s.attributes["hookrelay.delivery.outcome"] for s in deliveries] == [
        "delivered",
        "parked",
    ]
    assert len(attempts) == 2 and len(spans) == 4
    for delivery in deliveries:
        assert delivery.kind == "CONSUMER"
        assert delivery.parent_span_id == PRODUCER_SPAN
        assert delivery.attributes["hookrelay.hook.id"] == "crm"
        assert delivery.attributes["hookrelay.event.name"] == "User.Created"
        assert delivery.attributes["messaging.destination.name"] == topic
        assert delivery.resource["service.name"] == "hookrelay-test"
    delivery_ids = {d.span_id for d in deliveries}
    by_span = {a.span_id: a for a in attempts}
    for request in requests:  # the endpoint's parent is the attempt span
        version, trace_id, parent_id, flags = request.headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
        attempt = by_span[parent_id]
        assert attempt.kind == "CLIENT"
        assert attempt.parent_span_id in delivery_ids
        assert request.headers["webhook-id"] == attempt.attributes["hookrelay.delivery.id"]
    statuses = sorted(a.attributes["http.response.status_code"] for a in attempts)
    assert statuses == [200, 500]
    for attempt in attempts:
        assert attempt.attributes["http.request.method"] == "POST"
        assert attempt.attributes["server.address"] == "127.0.0.1"
        assert attempt.attributes["server.port"] == receiver.port
        assert attempt.attributes["hookrelay.hook.id"] == "crm"
        assert attempt.attributes["hookrelay.event.name"] == "User.Created"
    failed = next(a for a in attempts if a.attributes["http.response.status_code"] == 500)
    assert failed.status == "ERROR" and failed.attributes["error.type"] == "500"
    # Nothing secret or personal in any attribute or status message.
    text = " ".join(f"{k}={v} {s.status_message}" for s in spans for k, v in s.attributes.items())
    body = requests[0].body.decode()
    for secret in (SIGNING_KEY, "q-secret", "/hooks/crm", "zoe@example.com", "user-1", body):
        assert secret not in text, secret
    assert all(r["x-collector-key"] == COLLECTOR_KEY for r in collector.requests)


async def test_deliveries_flow_while_the_collector_is_down_and_its_warnings_stay_few(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=1)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/traces"
    # Many small batches and a tiny queue, so exports fail and spans are dropped often.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "16")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1")
    log = tmp_path / "daemon.log"
    count = 300
    async with Receiver(keys={"crm": None}) as receiver:
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm")}]
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks,
            extra={"tracing": {"enabled": True, "endpoint": down}},
        )  # fmt: skip
        async with daemon_process(path, log):
            started = time.monotonic()
            await produce(kafka_bootstrap, topic, [event(n) for n in range(count)])
            await receiver.wait_for(count, timeout_s=30)
            took_s = time.monotonic() - started
            await asyncio.sleep(3.0)  # several failed exports and drops while running
            stopping = time.monotonic()
        stopped_in_s = time.monotonic() - stopping
    assert len(receiver.requests) == count
    assert took_s < 20
    assert all("traceparent" in r.headers for r in receiver.requests)
    assert stopped_in_s < 15  # the flush gave up within its bound
    lines = [orjson.loads(line) for line in log.read_bytes().splitlines() if line.startswith(b"{")]
    assert any(line.get("event") == "tracing_enabled" for line in lines)
    otel = [line for line in lines if str(line.get("logger", "")).startswith("opentelemetry")]
    assert otel, "the SDK says the collector is unreachable"
    # Each SDK message at most once per 30 s window (logs.RepeatFilter), never one per span.
    assert len(otel) <= 8, [line.get("event") for line in otel]
