"""The decoder accepts valid events byte-faithfully and names why others are invalid."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookrelay.errors import InvalidEventError
from hookrelay.events.decode import _members, _without_compact_hook_id, decode
from hookrelay.events.model import Origin
from hookrelay.events.signing import hook_id_member, splice_hook_id

ORIGIN = Origin("identity.events", 0, 7, 1_700_000_000_000)
VALID = b'{"event":"User.Created","createdAt":"2026-08-21T09:15:42.123Z","data":{"id":"u1"}}'


def body_for(value: bytes, hook_id: str = "h") -> bytes:
    event = decode(value, None, ORIGIN, 1 << 20)
    return splice_hook_id(event.body_head, event.empty, hook_id_member(hook_id))


def test_valid_event_keeps_the_producers_bytes() -> None:
    event = decode(VALID, b"k", ORIGIN, 1 << 20)
    assert event.name == "User.Created"
    assert event.created_at == "2026-08-21T09:15:42.123Z"
    assert event.raw is VALID and event.key == b"k" and event.origin == ORIGIN
    assert body_for(VALID) == VALID[:-1] + b',"hookId":"h"}'


def test_number_formatting_and_escapes_survive_untouched() -> None:
    value = (
        b'{"event":"User.Data.Updated","createdAt":"2026-01-01T00:00:00.000Z",'
        b'"a":1.50,"b":1e3,"c":123456789012345678901234567890,"d":"Zo\\u00eb \\ud83d\\ude00"}'
    )
    assert body_for(value) == value[:-1] + b',"hookId":"h"}'


def test_surrounding_whitespace_is_trimmed_before_splicing() -> None:
    assert body_for(b"  " + VALID + b"\n") == VALID[:-1] + b',"hookId":"h"}'


def test_existing_hook_id_is_replaced_not_duplicated() -> None:
    value = b'{"hookId":"spoofed","event":"PostSignIn","createdAt":"2026-01-01T00:00:00.000Z"}'
    body = body_for(value, "real")
    parsed = orjson.loads(body)
    assert parsed["hookId"] == "real"
    assert body.count(b"hookId") == 1
    assert list(parsed)[-1] == "hookId"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"not json", "not_json"),
        (b'{"event":"x","createdAt":"2026-01-01T00:00:00Z"', "not_json"),
        (b'\xff{"event":"x"}', "not_json"),
        (b'{"event":"\xc3\x28","createdAt":"2026-01-01T00:00:00Z"}', "not_json"),
        (b'[{"event":"User.Created"}]', "not_object"),
        (b'"User.Created"', "not_object"),
        (b'{"createdAt":"2026-01-01T00:00:00.000Z"}', "missing_event"),
        (b'{"event":"","createdAt":"2026-01-01T00:00:00.000Z"}', "missing_event"),
        (b'{"event":42,"createdAt":"2026-01-01T00:00:00.000Z"}', "missing_event"),
        # A breaker's trial: a 600 KB name made the event's retry record twice its size,
        # past the broker's limit, and filled every log line.
        (
            b'{"event":"User.' + b"A" * 252 + b'","createdAt":"2026-01-01T00:00:00Z"}',
            "bad_event_name",
        ),
        (b'{"event":"User.\\nCreated","createdAt":"2026-01-01T00:00:00Z"}', "bad_event_name"),
        (b'{"event":"User.Created"}', "bad_created_at"),
        (b'{"event":"User.Created","createdAt":1700000000000}', "bad_created_at"),
        (b'{"event":"User.Created","createdAt":"yesterday"}', "bad_created_at"),
    ],
)
def test_invalid_records_are_refused_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        decode(value, None, ORIGIN, 1 << 20)
    assert caught.value.reason == reason


def test_oversized_record_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidEventError) as caught:
        decode(VALID, None, ORIGIN, len(VALID) - 1)
    assert caught.value.reason == "oversized"
    assert str(len(VALID)) in caught.value.detail


HEAD = b'"event":"Role.Scopes.Updated","createdAt":"2026-11-29T10:00:00.000Z"'


@pytest.mark.parametrize(
    "value",
    [
        # Found by a security trial: a hookId beside any array of two or more elements
        # crashed the decoder (a comma inside an array counted as a closing bracket).
        b"{" + HEAD + b',"scopeIds":["s1","s2"],"hookId":"abc"}',
        b'{"hookId":"x",' + HEAD + b',"roles":["a","b"]}',
        b"{" + HEAD + b',"hookId":[1,2]}',
        b"{" + HEAD + b',"hookId":[[1,2]],"data":{"a":[1,{"b":[2,3]}],"c":{}}}',
        b"{ " + HEAD + b' , "x" : [ [ ] , { } , "],}" ] , "hookId" : { "k" : [ 1 , 2 ] } }',
    ],
)
def test_a_hook_id_is_cut_out_beside_arrays_and_objects_of_any_shape(value: bytes) -> None:
    event = decode(value, None, ORIGIN, 1 << 20)
    body = splice_hook_id(event.body_head, event.empty, hook_id_member("mine"))
    parsed = orjson.loads(body)
    expected = {k: v for k, v in orjson.loads(value).items() if k != "hookId"}
    assert parsed == {**expected, "hookId": "mine"}
    assert list(parsed)[-1] == "hookId"


@pytest.mark.parametrize(
    "value",
    [
        b'{"event":"User.Created","event":"Role.Deleted",'
        + HEAD[len(b'"event":"Role.Scopes.Updated",') :]
        + b"}",
        b'{"event":"User.Created","ev\\u0065nt":"Role.Deleted",'
        + HEAD[len(b'"event":"Role.Scopes.Updated",') :]
        + b"}",
    ],
)
def test_two_top_level_event_members_are_refused(value: bytes) -> None:
    # Found by a security trial: routing used the last one, a receiver may read the first.
    with pytest.raises(InvalidEventError) as refused:
        decode(value, None, ORIGIN, 1 << 20)
    assert refused.value.reason == "duplicate_event"


def test_an_event_member_nested_deeper_is_no_duplicate() -> None:
    value = b'{"event":"User.Created","data":{"event":"x"},"createdAt":"2026-08-21T09:15:42Z"}'
    assert decode(value, None, ORIGIN, 1 << 20).name == "User.Created"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)  # fmt: skip


@given(
    members=st.dictionaries(st.text(max_size=8), _JSON, max_size=5),
    hook_id=st.text(max_size=12),
    at=st.integers(0, 5),
)
def test_the_compact_hook_id_cut_gives_exactly_the_member_scans_bytes(
    members: dict[str, object], hook_id: str, at: int
) -> None:
    # The fast cut (Logto's bodies) must agree with the member scan wherever it applies.
    items = [(k, v) for k, v in members.items() if k != "hookId"]
    items.insert(min(at, len(items)), ("hookId", hook_id))
    text = orjson.dumps(dict(items))
    obj = orjson.loads(text)
    fast = _without_compact_hook_id(text, obj["hookId"])
    scanned = b"{" + b",".join(text[s:e] for key, s, e in _members(text) if key != "hookId")
    assert fast is None or fast == scanned


@pytest.mark.parametrize(
    "value",
    [
        b'{"event":"PostSignIn","createdAt":"2026-01-01T00:00:00Z","hookId":"hk1"}',
        b'{"event":"PostSignIn","hookId":"hk1","createdAt":"2026-01-01T00:00:00Z"}',
        b'{"hookId":"hk1","event":"PostSignIn","createdAt":"2026-01-01T00:00:00Z"}',
    ],
)
def test_logto_bodies_take_the_fast_cut(value: bytes) -> None:
    fast = _without_compact_hook_id(value, orjson.loads(value)["hookId"])
    assert fast is not None
    assert orjson.loads(fast + b"}") == {
        "event": "PostSignIn", "createdAt": "2026-01-01T00:00:00Z"
    }  # fmt: skip
    assert fast == b"{" + b",".join(value[s:e] for k, s, e in _members(value) if k != "hookId")
