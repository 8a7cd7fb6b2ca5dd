"""Decode one Kafka record value into an ``Event``, or say exactly why it is invalid.

Input contract (DESIGN §1.2): a UTF-8 JSON object with at least ``event`` (a non-empty
string) and ``createdAt`` (ISO-8601 text, e.g. ``2026-08-21T09:15:42.123Z``); every other
member passes through untouched. Anything else raises ``InvalidEventError`` with a bounded
``reason`` code (a metric label and dead-letter header) and a human ``detail``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Final

import orjson

from hookrelay.errors import InvalidEventError
from hookrelay.events.model import Event, Origin
from hookrelay.events.tracecontext import TraceContext

_WHITESPACE = b" \t\r\n"


def decode(
    value: bytes | None,
    key: bytes | None,
    origin: Origin,
    max_bytes: int,
    trace: TraceContext | None = None,
) -> Event:
    """Return the ``Event`` in ``value`` (carrying ``trace``, the record's trace context).

    Raises ``InvalidEventError`` with reason ``empty``, ``oversized``, ``not_json``,
    ``not_object``, ``missing_event``, ``bad_event_name``, ``duplicate_event`` or
    ``bad_created_at``. Never
    raises anything else.
    """
    return decode_document(value, key, origin, max_bytes, trace)[0]


def decode_document(
    value: bytes | None,
    key: bytes | None,
    origin: Origin,
    max_bytes: int,
    trace: TraceContext | None = None,
) -> tuple[Event, dict[str, Any]]:
    """``decode``, also returning the parsed object (for a caller that reads its members,
    such as the ingest endpoint choosing a record key, without parsing the bytes again).
    The object is orjson's; the caller must not change it."""
    if not value:
        raise InvalidEventError("empty", "record has no value (tombstone or empty bytes)")
    if len(value) > max_bytes:
        raise InvalidEventError("oversized", f"record is {len(value)} bytes; limit {max_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise InvalidEventError("not_json", f"not valid UTF-8 JSON: {e}") from e
    if not isinstance(obj, dict):
        raise InvalidEventError("not_object", f"JSON {type(obj).__name__} is not an object")
    name = _required_event_name(obj)
    created_at = _required_created_at(obj)
    _refuse_duplicate_event(value)
    head, empty = _body_head(value, obj)
    return Event(name, created_at, value, head, empty, key, origin, trace), obj


def _refuse_duplicate_event(value: bytes) -> None:
    """Refuse an object with two top-level ``event`` members: orjson (and hookrelay's
    routing) keep the last, a receiver's parser may keep the first, so a hook could receive
    an event it never subscribed to. The member scan runs only when the bytes hint at it
    (``"event"`` twice, or a backslash-u escape that could spell the key), so the common record
    costs two byte searches: a backslash, then ``"event"`` counted (a one-byte search is a
    ``memchr``, several times faster than looking for the two-byte escape)."""
    if value.count(b'"event"') < 2 and (b"\\" not in value or b"\\u" not in value):
        return
    keys = [key for key, _, _ in _members(value.strip(_WHITESPACE))]
    if keys.count("event") > 1:
        raise InvalidEventError(
            "duplicate_event", "member 'event' appears more than once at the top level"
        )


MAX_EVENT_NAME: Final = 256
"""Longest ``event`` accepted, in characters. Logto's names are under 50; the name travels in
every retry record's headers and every log line, so an unbounded one could push a valid
event's retry record past the broker's limit."""
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _required_event_name(obj: dict[str, Any]) -> str:
    name = obj.get("event")
    if not isinstance(name, str) or not name:
        raise InvalidEventError("missing_event", "member 'event' must be a non-empty string")
    if len(name) > MAX_EVENT_NAME or _CONTROL.search(name):
        raise InvalidEventError(
            "bad_event_name",
            f"member 'event' must be at most {MAX_EVENT_NAME} characters, without control "
            f"characters (it has {len(name)})",
        )
    return name


def _required_created_at(obj: dict[str, Any]) -> str:
    created_at = obj.get("createdAt")
    if not isinstance(created_at, str):
        raise InvalidEventError("bad_created_at", "member 'createdAt' must be ISO-8601 text")
    try:
        datetime.fromisoformat(created_at)
    except ValueError as e:
        raise InvalidEventError(
            "bad_created_at", "member 'createdAt' is not an ISO-8601 timestamp"
        ) from e
    return created_at


def _body_head(value: bytes, obj: dict[str, Any]) -> tuple[bytes, bool]:
    """The object's bytes without the closing brace, ready for ``hookId`` to be appended.

    The producer's bytes are kept as they are (number formatting, key order, escapes), so a
    compact producer matches Logto byte for byte. When the input already carries a ``hookId``
    member (under any spelling of the key, e.g. ``"hook\\u0049d"``, and as often as it is
    repeated), those members are cut out of the bytes, because DESIGN §1.4 says the hook's own
    id replaces it and JSON must not carry the member twice. Cutting instead of re-serialising
    keeps every other member byte for byte, and works at any depth orjson parsed (its
    serialiser stops at 255 levels, its parser at 1024).
    """
    text = value.strip(_WHITESPACE)
    if "hookId" not in obj:
        # orjson accepted it as an object, so after stripping whitespace it ends with "}".
        return text[:-1], not obj
    head = _without_compact_hook_id(text, obj["hookId"])
    if head is not None:
        return head, len(obj) == 1
    kept = [text[start:end] for key, start, end in _members(text) if key != "hookId"]
    return b"{" + b",".join(kept), not kept


def _without_compact_hook_id(text: bytes, hook_id: Any) -> bytes | None:
    """``_body_head`` of a body with one compact ``"hookId":<value>`` member between commas
    or braces, as every Logto webhook has (last; second in its test payload), cut by two byte
    searches instead of the member scan; None for anything else, which the scan handles.

    The quoted key appearing once, with no ``\\u`` escape anywhere, means no other member
    (nested, or spelled with an escape) and no string value is called hookId, so the one
    occurrence is the top-level member orjson read; its value must re-serialise to the very
    bytes that follow (otherwise the member is not compact)."""
    if text.count(b'"hookId"') != 1 or b"\\u" in text or not isinstance(hook_id, str):
        return None
    member = b'"hookId":' + orjson.dumps(hook_id)
    start = text.find(member)
    end = start + len(member)
    if start < 1 or end >= len(text):
        return None
    before, after = text[start - 1 : start], text[end : end + 1]
    if before == b"," and after == b"}":
        return text[: start - 1]
    if after == b"," and before in (b",", b"{"):
        return text[:start] + text[end + 1 : -1]
    if before == b"{" and after == b"}":
        return b"{"
    return None


_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STRUCTURAL: Final = re.compile(rb'["{}\[\],]')


def _members(text: bytes) -> Iterator[tuple[str, int, int]]:
    """``(key, start, end)`` of each top-level member of ``text``, a JSON object orjson has
    already accepted (so the scan needs no error handling): ``text[start:end]`` is the member
    from its key's opening quote to the end of its value, without surrounding whitespace."""
    pos = _skip_space(text, 1)
    while text[pos : pos + 1] == b'"':
        key_end = _string_end(text, pos)
        end = _value_end(text, _skip_space(text, key_end) + 1)
        last = end
        while text[last - 1] in _WHITESPACE:
            last -= 1
        yield orjson.loads(text[pos:key_end]), pos, last
        pos = _skip_space(text, end + 1)


def _skip_space(text: bytes, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _string_end(text: bytes, pos: int) -> int:
    """Index just past the JSON string whose opening quote is at ``pos``."""
    string = _STRING.match(text, pos)
    assert string is not None  # orjson accepted the object, so its strings close
    return string.end()


def _value_end(text: bytes, pos: int) -> int:
    """Index of the ``,`` or ``}`` that ends the top-level value starting at ``pos``."""
    depth = 0
    while True:
        mark = _STRUCTURAL.search(text, pos)
        assert mark is not None  # orjson accepted the object, so it closes
        char = mark.group()
        if char == b'"':
            pos = _string_end(text, mark.start())
            continue
        if char in (b"{", b"["):
            depth += 1
        elif depth == 0:
            return mark.start()  # the "," or "}" after the top-level value
        elif char != b",":  # a comma inside an array or object changes no depth
            depth -= 1
        pos = mark.end()
