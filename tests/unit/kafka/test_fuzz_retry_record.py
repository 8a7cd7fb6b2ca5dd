"""Property: whatever a retry topic holds, the pipeline never raises, and every record ends
as exactly one of: a delivery handed back to its lane, a dead letter (``bad_retry_record``
or a decoder reason) written by this group, or a record of another deployment left alone.

Headers start from a valid retry record and are mutated the way a hostile or buggy writer
would: values replaced by arbitrary bytes (bad UTF-8, non-ASCII digits, CR/LF, empty),
headers dropped or repeated, hook ids outside the configuration's alphabet. The record runs
through the real ``Pipeline`` and ``Dispatcher`` (fake sender and producer), as the trial's
crashing record (``hookrelay-hook-id: hé``) did.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import ConsumerRecord
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hookrelay.config import Settings
from hookrelay.delivery.dispatcher import Dispatcher
from hookrelay.kafka.offsets import AckTracker, TopicPartition
from hookrelay.kafka.retries import HEADER_PREFIX, RetryRecord
from hookrelay.kafka.writer import DurableWriter
from hookrelay.ops.metrics import Metrics
from hookrelay.pipeline import Pipeline
from tests.unit.delivery.test_dispatcher import OK, FakeProducer, FakeSender
from tests.unit.tracking import commit_offsets

GROUP = "g-prod"
TOPIC = "identity.events"
SETTINGS = Settings.model_validate(
    {
        "kafka": {"topics": [TOPIC], "group_id": GROUP},
        "delivery": {"retry_schedule_s": [0.01, 0.02], "retry_jitter": 0},
        "hooks": [{"id": "crm", "events": ["*"], "url": "http://127.0.0.1:9/crm"}],
    }
)
RETRY_TOPIC = SETTINGS.retry_topics[0]
VALUE = b'{"event":"User.Created","createdAt":"2026-01-01T00:00:00.000Z","data":{"id":"u1"}}'
VALID = RetryRecord(
    hook_id="crm", event="User.Created", delivery_id="msg_abc", attempts=1,
    first_attempt_at_ms=1, last_attempt_at_ms=2, last_status=500, error="http 500",
    due_at_ms=0, origin_topic=TOPIC, origin_partition=0, origin_offset=7,
    origin_timestamp_ms=1_700_000_000_000, created_at_ms=1_700_000_000_000, group=GROUP,
).headers()  # fmt: skip
NAMES = [name for name, _ in VALID]

FUZZ = settings(
    max_examples=300, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip

nasty_bytes = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"",
            b"h\xc3\xa9",
            "١٢".encode(),
            b"-1",
            b"1_0",
            b" 7",
            b"1e3",
            b"\xff",
            b"a\r\nb",
            b"x" * 300,
            b"99999999999999999999999",
            GROUP.encode(),
            b"other-group",
            TOPIC.encode(),
            b"elsewhere",
        ]
    ),
    st.text(max_size=30).map(lambda t: t.encode("utf-8")),
)


@st.composite
def mutated_headers(draw: st.DrawFn) -> list[tuple[str, bytes | None]]:
    headers: list[tuple[str, bytes | None]] = list(VALID)
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["replace", "drop", "repeat", "none", "foreign"]))
        index = draw(st.integers(0, len(headers) - 1)) if headers else 0
        if not headers:
            break
        name = headers[index][0]
        if action == "replace":
            headers[index] = (name, draw(nasty_bytes))
        elif action == "drop":
            headers.pop(index)
        elif action == "repeat":
            headers.append((name, draw(nasty_bytes)))
        elif action == "none":
            headers[index] = (name, None)
        else:
            headers.append((draw(st.text(max_size=12)), draw(nasty_bytes)))
    return headers


def run(headers: list[tuple[str, bytes | None]], value: bytes | None) -> dict[str, Any]:
    """Hand one retry record to a real pipeline; report what became of it."""

    async def scenario() -> dict[str, Any]:
        metrics, producer, tracker = Metrics(), FakeProducer(), AckTracker()
        sender = FakeSender(lambda _h, _n: OK)
        writer = DurableWriter(producer, metrics, dead_letter_topic=SETTINGS.dead_letter_topic)
        dispatcher = Dispatcher(
            sender, writer, metrics, SETTINGS.delivery, retry_topics=SETTINGS.retry_topics,
            dead_letter_topic=SETTINGS.dead_letter_topic, group=GROUP,
        )  # fmt: skip
        dispatcher.set_hooks(SETTINGS.hooks)
        pipeline = Pipeline(SETTINGS, tracker, dispatcher, writer, metrics)
        tp = TopicPartition(RETRY_TOPIC, 0)
        tracker.assign([tp])
        record = ConsumerRecord(
            RETRY_TOPIC, 0, 3, 0, 0, None, value, None, 0, len(value or b""), tuple(headers)
        )
        pipeline.handle(record)  # must not raise
        writing = asyncio.create_task(writer.run())
        try:
            await asyncio.wait_for(dispatcher.drain(2.0), 3.0)
            await asyncio.sleep(0)
        finally:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
            await dispatcher.close()
        skipped = sum(
            metrics.retry_records_skipped.labels(r)._value.get()
            for r in ("other_group", "foreign_origin")
        )
        return {
            "attempts": sender.attempts,
            "letters": producer.to(SETTINGS.dead_letter_topic),
            "parked": [s for s in producer.sent if s[0] in SETTINGS.retry_topics],
            "skipped": skipped,
            "settled": commit_offsets(tracker) == {tp: 4},
        }

    return asyncio.run(scenario())


@FUZZ
@given(headers=mutated_headers(), value=st.one_of(st.just(VALUE), st.none(), st.binary()))
@example(headers=[(k, "hé".encode() if k.endswith("hook-id") else v) for k, v in VALID],
         value=VALUE)  # fmt: skip
@example(headers=list(VALID), value=VALUE)
@example(headers=[(k, b"99999999999999" if k.endswith("due-at") else v) for k, v in VALID],
         value=VALUE)  # fmt: skip
def test_a_retry_record_ends_delivered_dead_lettered_or_left_alone(
    headers: list[tuple[str, bytes | None]], value: bytes | None
) -> None:
    outcome = run(headers, value)
    ends = [
        bool(outcome["attempts"]) or bool(outcome["parked"]),
        bool(outcome["letters"]),
        outcome["skipped"] > 0,
    ]
    assert ends.count(True) == 1, outcome
    assert outcome["settled"]  # the retry partition's offset moves past it, whatever it was
    for _topic, _value, letter in outcome["letters"]:
        assert letter[HEADER_PREFIX + "group"] == GROUP.encode()
        assert letter[HEADER_PREFIX + "reason"] != b""
    for hook_id, delivery_id, _body in outcome["attempts"]:
        assert hook_id == "crm" and delivery_id.isascii() and delivery_id.isprintable()


def test_the_trials_poison_record_becomes_a_bad_retry_record_letter() -> None:
    headers = [(k, "hé".encode() if k.endswith("hook-id") else v) for k, v in VALID]
    outcome = run(headers, VALUE)
    [(_topic, _value, letter)] = outcome["letters"]
    assert letter[HEADER_PREFIX + "reason"] == b"bad_retry_record"
    assert b"hook-id" in letter[HEADER_PREFIX + "error"]
    assert outcome["attempts"] == []


def test_another_groups_retry_record_is_left_alone_even_when_malformed() -> None:
    headers = [(k, b"other" if k.endswith("group") else v) for k, v in VALID]
    headers = [(k, b"\xff" if k.endswith("attempts") else v) for k, v in headers]
    outcome = run(headers, VALUE)
    assert (outcome["letters"], outcome["attempts"], outcome["skipped"]) == ([], [], 1)


def test_a_retry_record_from_a_topic_this_deployment_does_not_consume_is_left_alone() -> None:
    headers = [(k, b"s14-stag.events" if k.endswith("origin-topic") else v) for k, v in VALID]
    headers = [(k, v) for k, v in headers if not k.endswith("-group")]  # written before groups
    outcome = run(headers, VALUE)
    assert (outcome["letters"], outcome["attempts"], outcome["skipped"]) == ([], [], 1)


def test_a_legacy_retry_record_of_this_deployments_topic_is_served() -> None:
    headers = [(k, v) for k, v in VALID if not k.endswith("-group")]
    outcome = run(headers, VALUE)
    assert [h for h, _, _ in outcome["attempts"]] == ["crm"]


def test_header_values_are_strict() -> None:
    assert NAMES[0] == HEADER_PREFIX + "hook-id"
    cases = [
        ("attempts", "١٢"), ("attempts", "1_0"), ("origin-offset", "-5"),
        ("delivery-id", "a b"), ("hook-id", "x" * 22), ("origin-topic", "a b"),
    ]  # fmt: skip
    for name, bad in cases:
        headers = [(k, bad.encode() if k == HEADER_PREFIX + name else v) for k, v in VALID]
        try:
            RetryRecord.from_headers(headers)
        except ValueError as e:
            assert name in str(e)
        else:
            raise AssertionError(f"{name}={bad!r} was accepted")
