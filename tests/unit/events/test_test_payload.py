"""``send-test`` payloads are valid events shaped like Logto's console test payloads."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson
import pytest

from hookrelay.events.catalogue import HOOK_EVENTS, INTERACTION_EVENTS
from hookrelay.events.decode import decode
from hookrelay.events.model import Origin
from hookrelay.events.test_payload import test_payload as build_test_payload

ORIGIN = Origin("send-test", 0, 0, 0)
CREATED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.mark.parametrize("name", [*HOOK_EVENTS, "Future.Event"])
def test_every_event_gets_a_valid_compact_payload_without_hook_id(name: str) -> None:
    raw = build_test_payload(name)
    event = decode(raw, None, ORIGIN, 1 << 20)
    payload = orjson.loads(raw)
    assert event.name == name
    assert CREATED_AT.match(payload["createdAt"])
    assert "hookId" not in payload  # hookrelay splices the hook's own id on
    assert orjson.dumps(payload) == raw  # compact, like Logto's JSON.stringify


@pytest.mark.parametrize("name", INTERACTION_EVENTS)
def test_interaction_payloads_carry_the_user_and_user_ip(name: str) -> None:
    payload = orjson.loads(build_test_payload(name))
    assert {"userIp", "userId", "user", "sessionId"} <= set(payload)


def test_data_payloads_carry_management_api_context() -> None:
    payload = orjson.loads(build_test_payload("User.Created"))
    assert list(payload)[:2] == ["event", "createdAt"]
    assert {"path", "method", "status", "data"} <= set(payload)


def test_created_at_uses_the_given_clock() -> None:
    now = datetime(2026, 8, 21, 9, 15, 42, 123000, tzinfo=UTC)
    assert orjson.loads(build_test_payload("PostSignIn", now=now))["createdAt"] == (
        "2026-08-21T09:15:42.123Z"
    )
