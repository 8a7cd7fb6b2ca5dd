"""Logto-style sample payloads for ``hookrelay send-test``.

Mirrors what Logto's console button "Send test payload" makes the server send:
``generateHookTestPayload`` in Logto's ``packages/core/src/libraries/hook/utils.ts``, called by
``triggerTestHook`` (``packages/core/src/libraries/hook/index.ts``) from the route
``POST /api/hooks/:id/test`` (``packages/core/src/routes/hook.ts``). The console posts the
hook's whole ``events`` list and Logto sends one test request per event; there is no default
event upstream, so :data:`DEFAULT_TEST_EVENT` is our choice (Logto's first ``hookEvents`` name).

Logto builds only two test shapes, and so do we:

- interaction events (``PostRegister``, ``PostSignIn``, ...)::

      {"event", "createdAt", "userAgent", "sessionId", "userIp", "userId",
       "user": {id, username, primaryEmail, primaryPhone, name, avatar, customData,
                identities, profile, applicationId, cimdClientId, isSuspended,
                lastSignInAt, createdAt, updatedAt},
       "application": {id, type, name, description}}

- every other name, exception events and unknown names included::

      {"event", "createdAt", "userAgent", "path", "method", "status", "params", "data"}

The values are Logto's own obvious fakes (``fake-id``, ``fake-user-agent``, ...) so that nobody
mistakes a test for a real event. Unlike real events, Logto's test payload has no
``interactionEvent``, ``ip`` or ``matchedRoute``, and exception events get the data envelope
without their extra members (``type``/``value``, ``action``/``recipient``, ...).

``hookId`` is left out: hookrelay appends it as the last member when sending, as for every
event. (Logto's test payload carries it second, right after ``event``; receivers that parse
JSON cannot tell the difference, and the signature is over the bytes actually sent.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import orjson

from hookrelay.events.catalogue import event_family
from hookrelay.events.signing import delivery_id, hook_id_member, splice_hook_id

DEFAULT_TEST_EVENT: Final = "PostRegister"
"""Event used when ``send-test`` is given none (the first name in Logto's ``hookEvents``)."""

_FAKE_USER_ID: Final = "fake-id"


def test_payload(event: str, *, now: datetime | None = None) -> bytes:
    """Return the compact JSON bytes of a Logto-style test payload for ``event``, without hookId.

    ``event`` is any hook event name; names outside the catalogue get the data-family envelope,
    as in Logto. ``now`` (timezone-aware; default: the current time) gives ``createdAt``
    (ISO-8601 UTC with milliseconds, e.g. ``2026-08-21T09:15:42.123Z``) and the user's entity
    timestamps (epoch milliseconds). Key order is Logto's. The bytes are what ``orjson.dumps``
    produces, i.e. the same as JavaScript's ``JSON.stringify`` for this content.

    Raises ``ValueError`` for an empty event name or a naive ``now``.
    """
    if not event:
        raise ValueError("event name must not be empty")
    when = _utc(now)
    envelope: dict[str, object] = {
        "event": event,
        "createdAt": _iso_millis(when),
        "userAgent": "fake-user-agent",
    }
    if event_family(event) == "interaction":
        envelope.update(_interaction_context(_epoch_millis(when)))
    else:
        envelope.update(_data_context())
    return orjson.dumps(envelope)


# pytest collects module-level callables named ``test_*`` from any test module that imports
# this function; the marker tells it this is not a test.
test_payload.__test__ = False  # type: ignore[attr-defined]


def test_request(hook_id: str, event: str, now_ms: int) -> tuple[str, bytes]:
    """``(webhook-id, body)`` of a test send of ``event`` to ``hook_id`` at ``now_ms`` (epoch
    milliseconds): the test payload with ``hookId`` appended, as every delivery carries it,
    and a delivery id of its own (origin ``send-test``), so a receiver never mistakes it for
    a real event's retry. Raises ``ValueError`` for an empty event name."""
    body = test_payload(event, now=datetime.fromtimestamp(now_ms / 1000, UTC))
    # test_payload writes a compact object with members, so its last byte is the brace.
    spliced = splice_hook_id(body[:-1], False, hook_id_member(hook_id))
    return delivery_id("send-test", 0, now_ms, hook_id), spliced


test_request.__test__ = False  # type: ignore[attr-defined]


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def _iso_millis(when: datetime) -> str:
    # JavaScript's Date.prototype.toISOString(): always milliseconds, always "Z".
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _epoch_millis(when: datetime) -> int:
    # Integer arithmetic: float timestamps can be off by one millisecond.
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _interaction_context(now_ms: int) -> dict[str, object]:
    """Logto's ``interactionHookContext`` sample, in its key order."""
    return {
        "sessionId": "fake-session-id",
        "userIp": "fake-user-ip",
        "userId": _FAKE_USER_ID,
        "user": {
            "id": _FAKE_USER_ID,
            "username": "fake-user",
            "primaryEmail": "fake-user@fake-service.com",
            "primaryPhone": "1234567890",
            "name": "Fake User",
            "avatar": "https://fake-service.com/avatars/fake-user.png",
            "customData": {"theme": "light"},
            "identities": {"google": {"userId": "fake-google-user-id"}},
            "profile": {},
            "applicationId": "fake-application-id",
            "cimdClientId": None,
            "isSuspended": False,
            "lastSignInAt": now_ms,
            "createdAt": now_ms,
            "updatedAt": now_ms,
        },
        "application": {
            "id": "fake-spa-application-id",
            "type": "SPA",
            "name": "Fake Application",
            "description": "Fake application data for testing",
        },
    }


def _data_context() -> dict[str, object]:
    """Logto's ``dataHookContext`` sample (a fake Management API call), in its key order."""
    return {
        "path": "/fake-path/:id",
        "method": "POST",
        "status": 200,
        "params": {"id": _FAKE_USER_ID},
        "data": {"result": "success"},
    }
