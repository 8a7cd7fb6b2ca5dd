"""The published event contract (``config/event.schema.json``), checked with the jsonschema
library a producer would use: Logto's own bodies pass it, what the decoder refuses it refuses,
and what it accepts the decoder accepts."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hookrelay.errors import InvalidEventError
from hookrelay.events.catalogue import HOOK_EVENTS
from hookrelay.events.contract import RFC3339_DATE_TIME, event_schema
from hookrelay.events.decode import decode
from hookrelay.events.model import Origin

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "config" / "event.schema.json"
VALIDATOR = jsonschema.Draft202012Validator(event_schema())
ORIGIN = Origin("identity.events", 0, 0, 0)
CREATED = "2026-08-21T08:58:54.138Z"
INT64 = st.integers(-(2**63), 2**63 - 1)  # what orjson serialises


def errors(event: dict[str, Any]) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(event)]


def test_the_schema_is_valid_draft_2020_12_and_shipped_as_generated() -> None:
    jsonschema.Draft202012Validator.check_schema(event_schema())
    assert json.loads(SHIPPED.read_text(encoding="utf-8")) == event_schema()


def test_every_demo_event_and_logtos_own_body_pass() -> None:
    lines = (ROOT / "deploy" / "demo" / "events.jsonl").read_bytes().splitlines()
    demo = [orjson.loads(line) for line in lines]
    assert {event["event"] for event in demo} == set(HOOK_EVENTS)
    for event in demo:
        assert errors(event) == [], event["event"]
        # Logto's request body: the same members with its hookId (last, or second in a test).
        assert errors({**event, "hookId": "hk1"}) == []


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"createdAt": CREATED}, "missing_event"),
        ({"event": "", "createdAt": CREATED}, "missing_event"),
        ({"event": 42, "createdAt": CREATED}, "missing_event"),
        ({"event": "User." + "A" * 252, "createdAt": CREATED}, "bad_event_name"),
        ({"event": "User.\nCreated", "createdAt": CREATED}, "bad_event_name"),
        ({"event": "User.Created"}, "bad_created_at"),
        ({"event": "User.Created", "createdAt": 1700000000000}, "bad_created_at"),
        ({"event": "User.Created", "createdAt": "yesterday"}, "bad_created_at"),
    ],
)
def test_what_the_decoder_refuses_the_contract_refuses(event: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        decode(orjson.dumps(event), None, ORIGIN, 1 << 20)
    assert caught.value.reason == reason
    assert errors(event) != []


def test_the_families_members_are_typed_by_event_name() -> None:
    assert errors({"event": "User.Created", "createdAt": CREATED, "ip": 5}) == [
        "5 is not of type 'string'"
    ]
    interaction = {"event": "PostSignIn", "createdAt": CREATED, "interactionEvent": "Bogus"}
    assert errors(interaction) == ["'Bogus' is not one of ['SignIn', 'Register', 'ForgotPassword']"]
    # A name outside the catalogue is routed all the same; no family's members apply.
    assert errors({"event": "Billing.Invoice.Paid", "createdAt": CREATED, "ip": 5}) == []


@settings(max_examples=300, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(
    name=st.one_of(st.sampled_from(HOOK_EVENTS), st.text(min_size=1, max_size=300)),
    created_at=st.from_regex(RFC3339_DATE_TIME, fullmatch=True),
    extra=st.dictionaries(st.sampled_from(["ip", "data", "userId", "status"]),
                          st.one_of(st.text(max_size=5), INT64, st.none())),
)  # fmt: skip
def test_what_the_contract_accepts_the_decoder_accepts(
    name: str, created_at: str, extra: dict[str, Any]
) -> None:
    year, month, day = (int(part) for part in created_at[:10].split("-"))
    try:  # the one gap a pattern leaves: a day its month does not have
        date(year, month, day)
    except ValueError:
        assume(False)
    event = {"event": name, "createdAt": created_at, **extra}
    assume(errors(event) == [])
    decoded = decode(orjson.dumps(event), None, ORIGIN, 1 << 20)
    assert decoded.name == name
