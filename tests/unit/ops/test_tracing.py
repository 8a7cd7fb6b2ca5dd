"""OpenTelemetry spans of deliveries and attempts, made by the real dispatcher (fake sender,
fake producer) and kept by the SDK's in-memory exporter: parentage, attributes, what is
never recorded, the traceparent each request carries, sampling, and a bounded shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from hookrelay.config import Hook, TracingSettings
from hookrelay.events.model import AttemptResult, Delivery
from hookrelay.events.tracecontext import TraceContext
from hookrelay.ops.otel import OtelTracer
from hookrelay.ops.tracing import start_tracing, stop_tracing
from tests.unit.delivery.test_dispatcher import OK, FakeSender, Rig, fail, hook, until

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PRODUCER_SPAN = "b7ad6b7169203331"
TRACE = TraceContext(f"00-{TRACE_ID}-{PRODUCER_SPAN}-01", "congo=t61rcWkgMzE")
SIGNING_KEY = "a-signing-key-never-in-spans"
URL = "https://hooks.example.com:8443/hooks/crm?token=s3cret-in-query"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


def tracer_for(exporter: InMemorySpanExporter, sample_ratio: float = 1.0) -> OtelTracer:
    settings = TracingSettings(enabled=True, sample_ratio=sample_ratio)
    return OtelTracer(settings, group="g", exporter=exporter)


def spans(tracer: OtelTracer, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    tracer.shutdown(5.0)  # exports what the batch processor holds
    return list(exporter.get_finished_spans())


def crm() -> list[Hook]:
    return [hook("crm", url=URL, signing_key=SIGNING_KEY)]


async def test_delivery_and_attempt_spans_join_the_producers_trace(
    exporter: InMemorySpanExporter,
) -> None:
    tracer = tracer_for(exporter)
    sender = FakeSender(lambda _h, n: fail(500, retryable=True) if n == 1 else OK)
    async with Rig(sender, crm(), tracer=tracer) as rig:
        rig.publish(trace=TRACE)
        await until(lambda: len(rig.producer.sent) == 1)
        rig.feed_back(rig.producer.sent[0])
        await until(lambda: len(sender.attempts) == 2 and rig.dispatcher.in_flight == 0)
    finished = spans(tracer, exporter)

    deliveries = [s for s in finished if s.kind is SpanKind.CONSUMER]
    attempts = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert [s.name for s in deliveries] == ["deliver crm", "deliver crm"]
    assert [s.name for s in attempts] == ["POST", "POST"]
    for span in finished:
        assert f"{span.context.trace_id:032x}" == TRACE_ID
    for delivery in deliveries:  # the first parked, the retry delivered: both the producer's
        assert delivery.parent is not None and delivery.parent.is_remote
        assert f"{delivery.parent.span_id:016x}" == PRODUCER_SPAN
    for attempt, delivery in zip(attempts, deliveries, strict=True):
        assert attempt.parent is not None
        assert attempt.parent.span_id == delivery.context.span_id
    # The endpoint's parent is the attempt span: its traceparent names that span.
    for sent, attempt in zip(sender.traces, attempts, strict=True):
        assert sent is not None
        assert sent.traceparent == f"00-{TRACE_ID}-{attempt.context.span_id:016x}-01"
        assert sent.tracestate == "congo=t61rcWkgMzE"

    first, second = deliveries
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["hookrelay.delivery.outcome"] == "parked"
    assert second.attributes["hookrelay.delivery.outcome"] == "delivered"
    assert second.attributes["hookrelay.delivery.attempts"] == 2
    assert {k: second.attributes[k] for k in (
        "hookrelay.hook.id", "hookrelay.event.name", "messaging.system",
        "messaging.destination.name", "messaging.kafka.offset", "messaging.consumer.group.name",
    )} == {
        "hookrelay.hook.id": "crm", "hookrelay.event.name": "User.Created",
        "messaging.system": "kafka", "messaging.destination.name": "identity.events",
        "messaging.kafka.offset": 0, "messaging.consumer.group.name": "g",
    }  # fmt: skip
    assert second.attributes["hookrelay.delivery.id"] == sender.attempts[1][1]

    failed, ok = attempts
    assert failed.attributes is not None and ok.attributes is not None
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.attributes["error.type"] == "500"
    assert failed.attributes["hookrelay.attempt.outcome"] == "failed_retryable"
    assert failed.attributes["hookrelay.attempt"] == 1
    assert failed.status.status_code is StatusCode.ERROR
    assert ok.attributes["hookrelay.attempt"] == 2
    assert ok.attributes["hookrelay.attempt.outcome"] == "delivered"
    assert ok.status.status_code is StatusCode.UNSET
    assert {k: ok.attributes[k] for k in (
        "http.request.method", "http.response.status_code", "server.address", "server.port",
        "url.scheme",
    )} == {
        "http.request.method": "POST", "http.response.status_code": 200,
        "server.address": "hooks.example.com", "server.port": 8443, "url.scheme": "https",
    }  # fmt: skip


async def test_no_span_records_a_url_path_query_signing_key_or_body(
    exporter: InMemorySpanExporter,
) -> None:
    tracer = tracer_for(exporter)
    sender = FakeSender(lambda _h, _n: fail(400, retryable=False))
    async with Rig(sender, crm(), tracer=tracer) as rig:
        rig.publish(trace=TRACE)
        await until(lambda: rig.dispatcher.in_flight == 0)
    finished = spans(tracer, exporter)

    assert len(finished) == 2
    body = sender.attempts[0][2].decode()
    values = [str(v) for s in finished for v in (s.attributes or {}).values()]
    values += [s.status.description or "" for s in finished]
    for forbidden in (SIGNING_KEY, "s3cret-in-query", "/hooks/crm", "token", body, "createdAt"):
        assert not any(forbidden in value for value in values), forbidden
    assert not any(key.startswith("url.full") for s in finished for key in s.attributes or {})
    [delivery] = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert delivery.attributes is not None
    assert delivery.attributes["hookrelay.delivery.outcome"] == "dead_lettered"
    assert delivery.attributes["hookrelay.dead_letter.reason"] == "permanent_failure"
    assert delivery.status.status_code is StatusCode.ERROR


async def test_a_record_without_trace_context_starts_a_new_trace_that_the_request_carries(
    exporter: InMemorySpanExporter,
) -> None:
    tracer = tracer_for(exporter)
    sender = FakeSender(lambda _h, _n: OK)
    async with Rig(sender, crm(), tracer=tracer) as rig:
        rig.publish()
        await until(lambda: rig.dispatcher.in_flight == 0)
    delivery, attempt = sorted(spans(tracer, exporter), key=lambda s: s.kind is SpanKind.CLIENT)

    assert delivery.parent is None  # a root
    [sent] = sender.traces
    assert sent is not None and sent.tracestate is None
    context = attempt.context
    # Sampled; the SDK also sets W3C Trace Context Level 2's "random trace-id" flag (0x02).
    assert int(context.trace_flags) & 0x01
    assert sent.traceparent == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    )


async def test_an_unsampled_record_is_not_recorded_and_its_request_says_so(
    exporter: InMemorySpanExporter,
) -> None:
    tracer = tracer_for(exporter)
    unsampled = TraceContext(f"00-{TRACE_ID}-{PRODUCER_SPAN}-00")
    sender = FakeSender(lambda _h, _n: OK)
    async with Rig(sender, crm(), tracer=tracer) as rig:
        rig.publish(trace=unsampled)
        await until(lambda: rig.dispatcher.in_flight == 0)

    assert spans(tracer, exporter) == []
    [sent] = sender.traces
    assert sent is not None
    assert sent.trace_id == TRACE_ID and sent.flags == 0
    assert sent.parent_id != PRODUCER_SPAN  # still a span of hookrelay's, unrecorded


async def test_a_sample_ratio_of_zero_records_no_new_trace(
    exporter: InMemorySpanExporter,
) -> None:
    tracer = tracer_for(exporter, sample_ratio=0.0)
    sender = FakeSender(lambda _h, _n: OK)
    async with Rig(sender, crm(), tracer=tracer) as rig:
        rig.publish()
        rig.publish(trace=TRACE)  # its producer sampled it: recorded whatever the ratio
        await until(lambda: rig.dispatcher.in_flight == 0)

    recorded = spans(tracer, exporter)
    assert {f"{s.context.trace_id:032x}" for s in recorded} == {TRACE_ID}
    assert len(recorded) == 2


def test_tracing_disabled_makes_no_tracer() -> None:
    assert start_tracing(TracingSettings(), group="g") is None


class StuckTracer:
    """A tracer whose exporter never returns (a collector that accepts and never answers)."""

    def delivery_started(self, delivery: Delivery) -> None: ...
    def attempt_ended(self, attempt: object, delivery: Delivery, result: AttemptResult) -> None: ...
    def delivery_ended(self, delivery: Delivery, outcome: str, reason: str | None) -> None: ...

    def attempt_started(self, delivery: Delivery) -> tuple[object, TraceContext]:
        raise NotImplementedError

    def shutdown(self, timeout_s: float) -> None:
        time.sleep(3.0)


async def test_the_shutdown_flush_is_bounded_and_never_blocks_the_loop() -> None:
    started = time.monotonic()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    finished = await stop_tracing(StuckTracer(), 0.3)  # type: ignore[arg-type]
    ticker.cancel()
    await asyncio.gather(ticker, return_exceptions=True)

    assert finished is False
    assert time.monotonic() - started < 1.0
    assert ticks >= 10  # the loop ran meanwhile
