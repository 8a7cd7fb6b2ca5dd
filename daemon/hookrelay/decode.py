"""Decode one Kafka record value into an ``Event``, or say exactly why it is invalid.

Input contract (DESIGN §1.2): a UTF-8 JSON object with at least ``event`` (a non-empty
string) and ``createdAt`` (ISO-8601 text, e.g. ``2026-08-21T09:15:42.123Z``); every other
member passes through untouched. Anything else raises ``InvalidEventError`` with a bounded
``reason`` code (a metric label and dead-letter header) and a human ``detail``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from hookrelay.errors import InvalidEventError
from hookrelay.model import Event, Origin

_WHITESPACE = b" \t\r\n"


def decode(value: bytes | None, key: bytes | None, origin: Origin, max_bytes: int) -> Event:
    """Return the ``Event`` in ``value``.

    Raises ``InvalidEventError`` with reason ``empty``, ``oversized``, ``not_json``,
    ``not_object``, ``missing_event`` or ``bad_created_at``. Never raises anything else.
    """
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
    head, empty = _body_head(value, obj)
    return Event(name, created_at, value, head, empty, key, origin)


def _required_event_name(obj: dict[str, Any]) -> str:
    name = obj.get("event")
    if not isinstance(name, str) or not name:
        raise InvalidEventError("missing_event", "member 'event' must be a non-empty string")
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
    compact producer matches Logto byte for byte. Only when the input already carries a
    ``hookId`` member is the object re-serialised without it, because DESIGN §1.4 says the
    hook's own id replaces it and JSON must not carry the member twice.
    """
    if "hookId" in obj:
        del obj["hookId"]
        return orjson.dumps(obj)[:-1], not obj
    # orjson accepted it as an object, so after stripping whitespace it ends with "}".
    return value.strip(_WHITESPACE)[:-1], not obj
