"""The outcome record: its JSON, its parse, and the published schema agree."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from hookrelay.config import Hook
from hookrelay.events.decode import decode
from hookrelay.events.model import Delivery, Origin
from hookrelay.events.outcome import STATUSES, OutcomeRecord, outcome_schema

SCHEMA = json.loads((Path(__file__).parents[3] / "config" / "outcome.schema.json").read_text())
ORIGIN = Origin("identity.events", 3, 1234, 1_767_225_600_000)  # 2026-01-01T00:00:00Z


def delivery(**fields: object) -> Delivery:
    value = b'{"event":"User.Created","createdAt":"2026-01-01T00:00:00.000Z","data":{"id":"u1"}}'
    hook = Hook.model_validate({"id": "crm", "events": ["*"], "url": "https://crm.example/h"})
    d = Delivery(decode(value, None, ORIGIN, 1 << 20), hook, "msg_abc", b'"hookId":"h"}', None)  # type: ignore[arg-type]
    for name, v in fields.items():
        setattr(d, name, v)
    return d


def test_the_checked_in_schema_is_the_generated_one() -> None:
    assert outcome_schema() == SCHEMA


@pytest.mark.parametrize("status", STATUSES)
def test_every_status_round_trips_and_validates_against_the_schema(status: str) -> None:
    d = delivery(attempts=2, first_attempt_at=1_767_225_601.5, last_attempt_at=1_767_225_611.25,
                 last_status=500, last_error="http 500")  # fmt: skip
    reason = "retries_exhausted" if status == "dead_lettered" else None
    record = OutcomeRecord.of_delivery(d, status, reason, "g1", 1_767_225_612.0)
    value = record.to_json()
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(
        orjson.loads(value)
    )
    assert OutcomeRecord.from_json(value) == record


def test_times_are_iso_with_milliseconds_and_latency_counts_from_the_record_timestamp() -> None:
    d = delivery(attempts=1, first_attempt_at=1_767_225_601.5, last_attempt_at=1_767_225_601.5,
                 last_status=200)  # fmt: skip
    doc = orjson.loads(
        OutcomeRecord.of_delivery(d, "delivered", None, "g", 1_767_225_602.0).to_json()
    )
    assert doc["first_attempt_at"] == "2026-01-01T00:00:01.500+00:00"
    assert doc["settled_at"] == "2026-01-01T00:00:02.000+00:00"
    assert doc["latency_ms"] == 2000
    assert doc["origin"] == {"topic": "identity.events", "partition": 3, "offset": 1234,
                             "timestamp": "2026-01-01T00:00:00.000+00:00"}  # fmt: skip
    assert doc["error"] is None


def test_an_invalid_record_has_no_delivery_and_its_detail_is_clipped() -> None:
    record = OutcomeRecord.of_invalid(ORIGIN, "not_json", "x" * 5000, "g", 1_767_225_600.0)
    doc = orjson.loads(record.to_json())
    assert (doc["status"], doc["reason"], doc["delivery_id"], doc["hook_id"], doc["event"]) == (
        "dead_lettered", "not_json", None, None, None,
    )  # fmt: skip
    assert len(doc["error"]) == 500
    jsonschema.validate(doc, SCHEMA)


def test_a_later_version_with_more_members_still_parses() -> None:
    doc = orjson.loads(OutcomeRecord.of_invalid(ORIGIN, "empty", "", "g", 1.0e9).to_json())
    doc.update(v=2, trace_id="abc")
    assert OutcomeRecord.from_json(orjson.dumps(doc)).reason == "empty"


@pytest.mark.parametrize("value", [b"", b"[]", b'{"status":"delivered"}', b"\xff"])
def test_anything_else_is_refused_with_value_error(value: bytes) -> None:
    with pytest.raises(ValueError, match="not an outcome record"):
        OutcomeRecord.from_json(value)
