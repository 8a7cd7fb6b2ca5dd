"""Property: whatever bytes a producer writes, ``decode`` returns an event whose body for a
hook is valid JSON (every member as sent, ``hookId`` replaced and last) or refuses it with a
documented reason. It never raises anything else.

The body is checked with Python's own ``json`` parser (integers of any size, every top-level
pair kept in order, duplicates included), not with orjson, which the decoder itself uses.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hookrelay.errors import InvalidEventError
from hookrelay.events.decode import decode
from hookrelay.events.model import Origin
from hookrelay.events.signing import hook_id_member, splice_hook_id
from tests.hostile import (
    HOSTILE_VALUES,
    adversarial_corpus,
    event_record,
    json_keys,
    json_values,
    nested,
    records,
)

ORIGIN = Origin("identity.events", 0, 7, 1_700_000_000_000)
MAX_BYTES = 64 * 1024
HOOK_ID = "hook-1"
REASONS = {
    "empty", "oversized", "not_json", "not_object", "missing_event", "bad_event_name",
    "duplicate_event", "bad_created_at",
}  # fmt: skip
"""The reasons ``decode`` documents (its docstring and ``deadletter.REASONS``)."""

FUZZ = settings(
    max_examples=600,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextmanager
def deep_recursion() -> Iterator[None]:
    """Python's json parser recurses once per nesting level; orjson accepts 1024 levels."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def top_level_pairs(document: bytes) -> list[tuple[str, Any]]:
    """The top-level members of a JSON object, in order, duplicates kept."""
    pairs = json.loads(document.decode("utf-8"), object_pairs_hook=lambda p: p)
    assert isinstance(pairs, list), "an accepted record must be a JSON object"
    return pairs


def refusal_expected(value: bytes | None) -> str | None:  # noqa: PLR0911 (one per rule)
    """The documented reason ``decode`` must refuse ``value`` with, or None when it must
    accept it: its documented rules, checked here independently of its code (Python's
    parser for the top-level members, orjson only for what orjson alone decides: whether the
    bytes parse)."""
    if not value or len(value) > MAX_BYTES:
        return "oversized" if value else "empty"
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "not_json"
    if not isinstance(obj, dict):
        return "not_object"
    if not isinstance(obj.get("event"), str) or not obj["event"]:
        return "missing_event"
    if len(obj["event"]) > 256 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in obj["event"]):
        return "bad_event_name"
    try:
        datetime.fromisoformat(obj["createdAt"])
    except (KeyError, TypeError, ValueError):
        return "bad_created_at"
    with deep_recursion():
        names = [key for key, _ in top_level_pairs(value)]
    return "duplicate_event" if names.count("event") > 1 else None


def assert_delivered_or_refused(value: bytes | None) -> None:
    """The decoder contract for one record value: accepted exactly when its documented
    rules accept it, then delivered faithfully; otherwise refused with the reason due."""
    expected = refusal_expected(value)
    try:
        event = decode(value, b"key", ORIGIN, MAX_BYTES)
    except InvalidEventError as e:
        assert e.reason in REASONS
        assert e.reason == expected, f"refused {e.reason!r}, expected {expected!r}"
        e.detail.encode("utf-8")  # it travels as a dead-letter header: must be valid UTF-8
        return
    assert expected is None, f"accepted, expected a refusal {expected!r}"
    assert value is not None
    body = splice_hook_id(event.body_head, event.empty, hook_id_member(HOOK_ID))
    with deep_recursion():  # parsing and comparing nested values both recurse per level
        sent = top_level_pairs(value)
        delivered = top_level_pairs(body)
        assert delivered[-1] == ("hookId", HOOK_ID)
        assert delivered[:-1] == [(k, v) for k, v in sent if k != "hookId"]
    assert event.name == dict(sent)["event"] and event.created_at == dict(sent)["createdAt"]
    assert event.raw is value and event.key == b"key" and event.origin == ORIGIN


@FUZZ
@given(records())
def test_any_record_is_decoded_faithfully_or_refused_with_a_documented_reason(
    value: bytes,
) -> None:
    assert_delivered_or_refused(value)


@FUZZ
@given(st.binary(max_size=4096))
@example(b"{" + b" " * MAX_BYTES + b"}")  # one byte over the limit: refused before parsing
@example(b'{"event":"User.Created","createdAt":"2026-08-21T09:15:42Z","x":"\xed\xb0\x80"}')
def test_arbitrary_bytes_never_raise_anything_but_a_refusal(value: bytes) -> None:
    assert_delivered_or_refused(value)


@settings(max_examples=200, derandomize=True, deadline=None, database=None)
@given(st.sampled_from(HOSTILE_VALUES), st.sampled_from(["event", "createdAt", "hookId", "d"]))
@example(nested(300), "hookId")  # orjson writes at most 255 levels: the body is cut, not rebuilt
def test_each_hostile_value_in_each_role_is_decoded_or_refused(fragment: bytes, key: str) -> None:
    assert_delivered_or_refused(event_record({f'"{key}"'.encode(): fragment}))


@FUZZ
@given(
    st.lists(st.tuples(json_keys(), json_values()), max_size=5),
    json_values(),
    st.integers(min_value=0, max_value=5),
)
@example([('"scopeIds"', b'["s1","s2"]')], b'"abc"', 1)  # found by a security trial: a crash
def test_a_valid_event_with_a_hook_id_beside_any_members_is_delivered_faithfully(
    others: list[tuple[bytes, bytes]], hook_id: bytes, position: int
) -> None:
    """Every record here is a valid event carrying a ``hookId``: the path where the decoder
    cuts members out of the producer's bytes, exercised beside values of every shape."""
    members = [(b'"event"', b'"User.Created"'), (b'"createdAt"', b'"2026-08-21T09:15:42Z"')]
    members += [(key if isinstance(key, bytes) else key.encode(), value) for key, value in others]
    members.insert(min(position, len(members)), (b'"hookId"', hook_id))
    value = b"{" + b",".join(key + b":" + item for key, item in members) + b"}"
    assert_delivered_or_refused(value)


@pytest.mark.parametrize("value", adversarial_corpus(), ids=lambda v: f"{len(v)}B")
def test_the_fixed_adversarial_corpus_is_decoded_or_refused(value: bytes) -> None:
    assert_delivered_or_refused(value)


@pytest.mark.parametrize(
    ("fragment", "reason"),
    [
        (b"1e400", "not_json"),  # beyond a double: orjson refuses infinity
        (b"1" + b"0" * 400, "not_json"),
        (b'"\\ud800"', "not_json"),  # a lone surrogate, escaped
        (b'"\xed\xa0\x80"', "not_json"),  # a lone surrogate, raw (invalid UTF-8)
        (b'"\xff"', "not_json"),
        (nested(1025), "not_json"),  # past orjson's 1024-level parse limit
    ],
)
def test_what_orjson_cannot_parse_is_a_clean_not_json_refusal(fragment: bytes, reason: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        decode(event_record({b'"data"': fragment}), None, ORIGIN, MAX_BYTES)
    assert caught.value.reason == reason


def test_integers_beyond_64_bits_pass_through_digit_for_digit() -> None:
    big = b"123456789012345678901234567890"
    value = event_record({b'"hookId"': b"1", b'"n"': big})
    event = decode(value, None, ORIGIN, MAX_BYTES)
    body = splice_hook_id(event.body_head, event.empty, hook_id_member(HOOK_ID))
    assert b'"n":' + big + b"," in body  # cut out the old hookId without rewriting numbers


def test_a_hook_id_under_deep_nesting_is_replaced_not_a_crash() -> None:
    value = event_record({b'"hookId"': b'"spoofed"', b'"d"': nested(1000, objects=True)})
    event = decode(value, None, ORIGIN, MAX_BYTES)
    body = splice_hook_id(event.body_head, event.empty, hook_id_member(HOOK_ID))
    assert body == value.replace(b'"hookId":"spoofed",', b"")[:-1] + b',"hookId":"hook-1"}'
