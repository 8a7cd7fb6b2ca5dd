"""hookrelay.ingest.records: a Logto webhook body becomes the record hookrelay consumes, every
byte but ``hookId`` kept, keyed by the entity the event is about."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from hookrelay.errors import InvalidEventError
from hookrelay.events.test_payload import test_request
from hookrelay.ingest.records import event_record, record_key

ROOT = Path(__file__).resolve().parents[3]
DEMO = [line for line in (ROOT / "deploy/demo/events.jsonl").read_bytes().splitlines() if line]
LIMIT = 1 << 20


def logto_body(event: bytes, hook_id: bytes = b"hk5bz0sbz3ebvhsr2vcby") -> bytes:
    """Logto's request body: the event's members, then its own ``hookId`` last."""
    return event[:-1] + b',"hookId":"' + hook_id + b'"}'


@pytest.mark.parametrize("event", DEMO[:12])
def test_the_record_is_logtos_body_without_its_hook_id_byte_for_byte(event: bytes) -> None:
    parsed, value, _ = event_record(logto_body(event), LIMIT)
    assert value == event
    assert parsed.name == orjson.loads(event)["event"]


def test_logtos_send_test_payload_with_hook_id_second_is_taken_like_any_event() -> None:
    """Logto's "send test" puts ``hookId`` second (its members are hookrelay's own test
    payload's, which sends ``hookId`` last as for any event)."""
    members = orjson.loads(test_request("hk1", "PostSignIn", 1_787_302_733_997)[1])
    hook_id = members.pop("hookId")
    event = orjson.dumps(members)
    body = orjson.dumps({"event": members["event"], "hookId": hook_id, **members})
    assert body.index(b'"hookId"') < body.index(b'"createdAt"')
    parsed, value, _ = event_record(body, LIMIT)
    assert (value, parsed.name) == (event, "PostSignIn")


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"not json", "not_json"), (b"[1]", "not_object"), (b'{"hookId":"x"}', "missing_event"),
     (b'{"event":"User.Created","hookId":"x"}', "bad_created_at"), (b"", "empty")],
)  # fmt: skip
def test_a_body_the_daemon_would_dead_letter_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        event_record(body, LIMIT)
    assert caught.value.reason == reason


def test_auto_keys_by_the_entity_so_one_users_events_share_a_partition() -> None:
    keys = {}
    for line in DEMO:
        event = orjson.loads(line)
        keys.setdefault(event["event"], []).append(record_key(line, event["event"]))
    # The same person across a registration flow, the Management API and a device: one key.
    by_user: dict[bytes | None, set[str]] = {}
    for line in DEMO:
        event = orjson.loads(line)
        by_user.setdefault(record_key(line, event["event"]), set()).add(event["event"])
    first_user = orjson.loads(DEMO[0])["userId"].encode()
    assert {"PostRegister", "User.Created"} <= by_user[first_user]
    # Every family gets a key where Logto's payload names the entity...
    for name in ("PostSignIn", "User.Created", "User.Data.Updated", "User.Deleted",
                 "TrustedDevice.Deleted", "Role.Created", "Role.Deleted", "Scope.Created",
                 "Organization.Created", "Organization.Membership.Updated",
                 "OrganizationRole.Scopes.Updated", "Grant.LimitExceeded"):  # fmt: skip
        assert all(keys[name]), name
    # ... and none where it names none (a lockout names an identifier, not a user id).
    assert keys["Identifier.Lockout"] == [None]


def test_a_member_path_or_none_can_be_configured() -> None:
    value = (
        b'{"event":"User.Created","createdAt":"2026-01-01T00:00:00Z","data":{"id":"u1"},'
        b'"tenant":"t9"}'
    )
    assert record_key(value, "User.Created") == b"u1"
    assert record_key(value, "User.Created", "tenant") == b"t9"
    assert record_key(value, "User.Created", "data.missing") is None
    assert record_key(value, "User.Created", "none") is None
