"""The control topic's state: pauses and releases of one group, applied in order."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import UnknownTopicOrPartitionError

from hookrelay.config import Settings
from hookrelay.events.decode import decode
from hookrelay.events.model import Delivery, Origin
from hookrelay.kafka import control
from hookrelay.kafka.control import ControlFollower, ControlState
from tests.unit.delivery.test_dispatcher import hook


def record(
    key: str, doc: dict[str, object] | None, offset: int = 0
) -> ConsumerRecord[bytes, bytes]:
    value = None if doc is None else orjson.dumps({"v": 1, "group": "g", **doc})
    kind, _, what = key.partition("/")
    full = f"{kind}/g/{what}".encode()
    return ConsumerRecord("g.control", 0, offset, 0, 0, full, value, None, 0, 0, [])


def test_a_pause_and_its_resume_change_the_state_once_each() -> None:
    state = ControlState("g")
    assert state.apply(record("pause/crm", {"paused": True, "reason": "move", "at": 5})) == "crm"
    assert state.paused["crm"].reason == "move"
    assert state.apply(record("pause/crm", {"paused": True, "reason": "again", "at": 6})) is None
    assert state.apply(record("pause/crm", {"paused": False, "at": 7})) == "crm"
    assert state.paused == {}
    assert state.apply(record("pause/crm", None)) is None  # a tombstone: still not paused


def test_a_release_supersedes_only_its_hooks_records_below_where_its_scan_ended() -> None:
    state = ControlState("g")
    below = [["g.retry.5s", 0, 10], ["g.retry.5s", 1, 3]]
    state.apply(record("release/crm", {"at": 1, "below": below}))
    assert state.superseded("crm", "g.retry.5s", 0, 9)
    assert not state.superseded("crm", "g.retry.5s", 0, 10)
    assert not state.superseded("crm", "g.retry.5s", 2, 0)  # a partition it did not scan
    assert not state.superseded("audit", "g.retry.5s", 0, 0)
    # A later release only moves the marks up (a record compaction kept is never older).
    state.apply(record("release/crm", {"at": 2, "below": [["g.retry.5s", 0, 4]]}))
    assert state.superseded("crm", "g.retry.5s", 0, 9)


def test_another_groups_records_and_unreadable_ones_change_nothing() -> None:
    state = ControlState("g")
    other = ConsumerRecord("g.control", 0, 0, 0, 0, b"pause/other/crm",
                           orjson.dumps({"v": 1, "group": "other", "paused": True, "at": 1}),
                           None, 0, 0, [])  # fmt: skip
    assert state.apply(other) is None and state.paused == {}
    bad = ConsumerRecord("g.control", 0, 1, 0, 0, b"release/g/crm", b"{not json", None, 0, 0, [])
    assert state.apply(bad) is None and state.ignored == 1
    assert state.apply(record("release/crm", {"at": 1, "below": "nope"})) is None
    assert state.ignored == 2 and state.released.get("crm", {}) == {}


def test_another_groups_tombstone_under_its_own_key_leaves_this_groups_pause() -> None:
    state = ControlState("g")
    state.apply(record("pause/crm", {"paused": True, "at": 1}))
    tomb = ConsumerRecord("g.control", 0, 9, 0, 0, b"pause/g2/crm", None, None, 0, 0, [])
    assert state.apply(tomb) is None and "crm" in state.paused


async def test_a_control_topic_just_created_without_partitions_yet_is_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fresh broker described the control topic it had just created without partitions,
    # and seeking none crashed the daemon's start (a CI run).
    answers: list[list[int]] = [[], [], [0]]

    async def described(_kafka: object, _topic: str, _role: str) -> list[int]:
        return answers.pop(0) if answers else []

    monkeypatch.setattr(control, "partitions_of", described)
    settings = Settings.model_validate({"kafka": {"topics": ["e"], "group_id": "g"}})
    follower = ControlFollower(settings, ControlState("g"), lambda _h, _p: None)
    assert await follower._partitions("g.control", 5.0) == [0]
    with pytest.raises(UnknownTopicOrPartitionError):  # a KafkaError: start-up tries again
        await follower._partitions("g.control", 0.3)


def test_a_blocked_key_stays_blocked_until_its_tombstone() -> None:
    state = ControlState("g")
    key = b"user/\xff 1"  # any bytes: the record's key holds them in base64url
    encoded = control.encode_key(key)
    assert "/" not in encoded and "=" not in encoded
    doc = {"hook": "crm", "key": "user", "delivery_id": "d", "reason": "permanent_failure"}
    state.apply(record(f"blocked/crm/{encoded}", {**doc, "at": 1}))
    assert state.blocked.blocks("crm", key) and state.blocked.count("crm") == 1
    assert not state.blocked.blocks("audit", key) and not state.blocked.blocks("crm", b"other")
    state.apply(record(f"blocked/crm/{encoded}", None, offset=1))
    assert not state.blocked.blocks("crm", key) and state.blocked.of("crm") == []


def test_a_blocked_record_holds_what_the_docstring_says() -> None:
    event = decode(b'{"event":"User.Created","createdAt":"2026-01-01T00:00:00.000Z"}', b"u1",
                   Origin("t", 0, 7, 0), 1 << 20)  # fmt: skip
    delivery = Delivery(event, hook("crm"), "dlv-1", b'"hookId":"crm"}', None)  # type: ignore[arg-type]
    out = control.blocked_record("g.control", "g", delivery, "permanent_failure")
    assert out.key == b"blocked/g/crm/dTE"
    doc = orjson.loads(out.value or b"")
    assert doc.pop("at") > 0
    assert doc == {"v": 1, "group": "g", "hook": "crm", "key": "u1", "delivery_id": "dlv-1",
                   "reason": "permanent_failure"}  # fmt: skip
    state = ControlState("g")
    state.apply(ConsumerRecord("g.control", 0, 0, 0, 0, out.key, out.value, None, 0, 0, []))
    assert state.blocked.of("crm") == [b"u1"]
