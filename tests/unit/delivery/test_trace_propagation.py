"""A record's W3C trace context reaches every request made for it, with tracing off: through
the pipeline, the lanes, retry records (old ones without it still parse), dead letters and
``replay``; and the request headers carry it, unless the record had none."""

from __future__ import annotations

from typing import Any

from aiokafka import ConsumerRecord

from hookrelay.commands.replay import view_of
from hookrelay.config import DeliverySettings, HttpSettings, Settings
from hookrelay.delivery.dispatcher import Dispatcher
from hookrelay.delivery.sender import HttpSender
from hookrelay.events.signing import delivery_id
from hookrelay.events.tracecontext import TraceContext
from hookrelay.kafka.offsets import AckTracker, TopicPartition
from hookrelay.kafka.retries import RetryRecord
from hookrelay.kafka.writer import DurableWriter
from hookrelay.ops.metrics import Metrics
from hookrelay.pipeline import Pipeline
from tests.unit.delivery.test_dispatcher import (
    OK,
    TP,
    FakeProducer,
    FakeSender,
    Rig,
    fail,
    hook,
    until,
)

TRACE = TraceContext("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "rojo=1,congo=2")
RETRY = RetryRecord(
    hook_id="crm", event="User.Created", delivery_id="msg_abc", attempts=1,
    first_attempt_at_ms=1, last_attempt_at_ms=2, last_status=500, error="http 500",
    due_at_ms=3, origin_topic="identity.events", origin_partition=0, origin_offset=7,
    origin_timestamp_ms=4, created_at_ms=5, group="g",
)  # fmt: skip
VALUE = b'{"event":"User.Created","createdAt":"2026-01-01T00:00:00.000Z"}'


def test_a_retry_record_carries_the_trace_context_under_the_w3c_names() -> None:
    record = RetryRecord(**{**_fields(RETRY), "trace": TRACE})

    headers = dict(record.headers())

    assert headers["traceparent"] == TRACE.traceparent.encode()
    assert headers["tracestate"] == b"rojo=1,congo=2"
    assert RetryRecord.from_headers(record.headers()) == record


def test_a_retry_record_without_trace_headers_still_parses_and_has_none() -> None:
    headers = RETRY.headers()

    assert not any(name.startswith("trace") for name, _ in headers)
    assert RetryRecord.from_headers(headers).trace is None


def test_an_invalid_traceparent_on_a_retry_record_is_ignored_not_a_damaged_record() -> None:
    headers = [*RETRY.headers(), ("traceparent", b"00-zz-nonsense")]

    assert RetryRecord.from_headers(headers) == RETRY


async def test_every_request_of_an_event_carries_its_trace_context() -> None:
    sender = FakeSender(lambda _h, _n: OK)
    async with Rig(sender, [hook("crm"), hook("audit")]) as rig:
        rig.publish(trace=TRACE)
        rig.publish()  # a record without trace context
        await until(lambda: rig.dispatcher.in_flight == 0)
    by_delivery = dict(zip((a[1] for a in sender.attempts), sender.traces, strict=True))
    assert by_delivery == {
        delivery_id(TP.topic, 0, 0, "crm"): TRACE,
        delivery_id(TP.topic, 0, 0, "audit"): TRACE,
        delivery_id(TP.topic, 0, 1, "crm"): None,
        delivery_id(TP.topic, 0, 1, "audit"): None,
    }


async def test_a_retried_delivery_keeps_its_trace_context_through_the_retry_topic() -> None:
    sender = FakeSender(lambda _h, n: fail(500, retryable=True) if n == 1 else OK)
    async with Rig(sender, [hook("crm")]) as rig:
        rig.publish(trace=TRACE)
        await until(lambda: len(rig.producer.sent) == 1)
        [sent] = rig.producer.sent
        assert sent[2]["traceparent"] == TRACE.traceparent.encode()
        retry = rig.feed_back(sent)
        await until(lambda: len(sender.attempts) == 2 and rig.dispatcher.in_flight == 0)
    assert retry.trace == TRACE
    assert sender.traces == [TRACE, TRACE]


async def test_a_dead_letter_keeps_the_trace_context_and_replay_carries_it_on() -> None:
    sender = FakeSender(lambda _h, _n: fail(400, retryable=False))
    async with Rig(sender, [hook("crm")]) as rig:
        rig.publish(trace=TRACE)
        await until(lambda: rig.dispatcher.in_flight == 0)
    [(topic, value, headers)] = rig.producer.sent
    assert topic == "dlq"
    assert headers["traceparent"] == TRACE.traceparent.encode()
    assert headers["tracestate"] == TRACE.tracestate.encode()  # type: ignore[union-attr]
    letter = ConsumerRecord(
        topic, 0, 9, 1_700_000_000_000, 0, None, value, None, 0, len(value),
        tuple(headers.items()),
    )  # fmt: skip

    replayed = view_of(letter).retry_record(1_700_000_000_000, "g")

    assert replayed.trace == TRACE
    assert dict(replayed.headers())["traceparent"] == TRACE.traceparent.encode()


def test_the_request_headers_carry_the_trace_context_when_there_is_one() -> None:
    sender = HttpSender(HttpSettings(), DeliverySettings())
    target = hook("crm", signing_key="a-signing-key", headers={"X-Source": "identity"})

    traced = sender.headers(target, "msg_1", b"{}", TRACE)
    plain = sender.headers(target, "msg_1", b"{}")

    assert traced["traceparent"] == TRACE.traceparent
    assert traced["tracestate"] == "rojo=1,congo=2"
    assert "traceparent" not in plain and "tracestate" not in plain
    without_state = sender.headers(target, "msg_1", b"{}", TraceContext(TRACE.traceparent))
    assert "tracestate" not in without_state
    # Everything else is what an untraced request has.
    assert {k: v for k, v in traced.items() if not k.startswith("trace")} == dict(plain)


async def test_the_pipeline_reads_the_trace_headers_of_an_event_record_once() -> None:
    settings = Settings.model_validate(
        {
            "kafka": {"topics": ["identity.events"], "group_id": "g"},
            "hooks": [
                {"id": "crm", "events": ["*"], "url": "http://127.0.0.1:9/crm"},
                {"id": "audit", "events": ["*"], "url": "http://127.0.0.1:9/audit"},
            ],
        }
    )
    metrics, tracker, sender = Metrics(), AckTracker(), FakeSender(lambda _h, _n: OK)
    writer = DurableWriter(FakeProducer(), metrics, dead_letter_topic="dlq")
    dispatcher = Dispatcher(
        sender, writer, metrics, settings.delivery, retry_topics=settings.retry_topics,
        dead_letter_topic="dlq",
    )  # fmt: skip
    dispatcher.set_hooks(settings.hooks)
    pipeline = Pipeline(settings, tracker, dispatcher, writer, metrics)
    tracker.assign([TopicPartition("identity.events", 0)])
    headers = (("TraceParent", TRACE.traceparent.encode()), ("tracestate", b"rojo=1,congo=2"))
    for offset, record_headers in enumerate([headers, (), (("traceparent", b"bogus"),)]):
        pipeline.handle(
            ConsumerRecord(
                "identity.events", 0, offset, 0, 0, None, VALUE, None, 0, len(VALUE),
                record_headers,
            )
        )  # fmt: skip
    await until(lambda: len(sender.attempts) == 6)
    await dispatcher.close()
    by_offset = {did: trace for (_h, did, _b), trace in zip(sender.attempts, sender.traces,
                                                           strict=True)}  # fmt: skip
    assert len(by_offset) == 6
    assert sorted(by_offset.values(), key=lambda t: t is None) == [TRACE, TRACE] + [None] * 4


def _fields(record: RetryRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}
