"""The published event contract: a JSON Schema (draft 2020-12) of the records hookrelay consumes,
for producers to validate with any JSON Schema library (``config/event.schema.json``).

It states what the decoder requires (``events.decode``: an object with a non-empty ``event`` of
at most ``MAX_EVENT_NAME`` characters without control characters, and an ISO-8601
``createdAt``) in a form a schema validator checks, slightly stricter where a validator cannot
say "whatever Python's ``datetime.fromisoformat`` accepts": ``createdAt`` must be an RFC 3339
date-time, as Logto writes it (``new Date().toISOString()``). So every record the schema
accepts, the decoder accepts too, with two exceptions no schema can state: a day its month
does not have (February 30; schema libraries check ``format`` only on request), and a number
beyond an IEEE 754 double (``1e400``), which RFC 8259 §6 warns is not interoperable and orjson
refuses.

It also describes Logto's three payload families, keyed on the catalogue's names, so that a
producer writing Logto-shaped events gets their members' types checked. The members come from
Logto's source (logto-io/logto, ``packages/core/src/libraries/hook/index.ts``:
``triggerInteractionHooks`` for interaction events, ``buildWebhooks`` for data and exception
events; ``koa-management-api-hooks.ts`` and ``koa-experience-interaction-hooks.ts`` for the
context members). None of them is required: Logto itself leaves some out (``TrustedDevice.*``
carry no ``ip``; a DELETE answers no ``data``), and hookrelay forwards any other member as it
is. A name outside the catalogue is accepted: it reaches the hooks that name it, or ``*``.
"""

from __future__ import annotations

from typing import Any, Final

from hookrelay.events.catalogue import DATA_EVENTS, EXCEPTION_EVENTS, INTERACTION_EVENTS
from hookrelay.events.decode import MAX_EVENT_NAME

SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

RFC3339_DATE_TIME: Final = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""``createdAt`` as Logto writes it (``2026-08-21T08:58:54.138Z``), or with an offset; no leap
second (``fromisoformat``, which the decoder uses, refuses second 60)."""

INTERACTION_EVENT_VALUES: Final = ("SignIn", "Register", "ForgotPassword")
"""Logto's ``InteractionEvent`` enum (``packages/schemas/src/types/interactions.ts``)."""

_TEXT: Final = {"type": "string"}
_OBJECT: Final = {"type": "object"}
_IDS: Final = {"type": "array", "items": {"type": "string"}}


def event_schema() -> dict[str, Any]:
    """The contract as a JSON-ready dict (draft 2020-12), written to ``config/event.schema.json``
    by ``config.write_json_schemas``."""
    context = {
        "userAgent": _TEXT,
        "ip": {**_TEXT, "description": "The client's IP address (left out for TrustedDevice.*)."},
        "interactionEvent": {"enum": list(INTERACTION_EVENT_VALUES)},
        "applicationId": _TEXT,
        "sessionId": _TEXT,
        "application": _OBJECT,
    }
    management_api = {
        "path": _TEXT,
        "method": _TEXT,
        "status": {"type": "integer"},
        "params": _OBJECT,
        "matchedRoute": _TEXT,
    }
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "hookrelay input event",
        "description": (
            "One Kafka record value: a JSON object, UTF-8, at most delivery.max_event_bytes, "
            "its numbers within an IEEE 754 double (RFC 8259 section 6). "
            "hookrelay routes it on `event`, sends it to each matching hook with that hook's "
            "`hookId` appended as the last member, and forwards every other member byte for "
            "byte."
        ),
        "type": "object",
        "required": ["event", "createdAt"],
        "properties": {
            "event": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_EVENT_NAME,
                "pattern": "^[^\\u0000-\\u001f\\u007f]+$",
                "description": (
                    "The hook event name, e.g. User.Created. Names outside Logto's catalogue "
                    "are accepted and reach the hooks that name them, or `*`."
                ),
                "examples": [*INTERACTION_EVENTS, *DATA_EVENTS, *EXCEPTION_EVENTS],
            },
            "createdAt": {
                "type": "string",
                "format": "date-time",
                "pattern": RFC3339_DATE_TIME,
                "description": "When the event happened, RFC 3339 (Logto: toISOString()).",
            },
            "hookId": {
                "type": "string",
                "description": "Ignored: each hook's own id replaces it (Logto sends one).",
            },
        },
        "allOf": [
            _family(INTERACTION_EVENTS, "#/$defs/interaction"),
            _family(DATA_EVENTS, "#/$defs/data"),
            _family(EXCEPTION_EVENTS, "#/$defs/exception"),
        ],
        "$defs": {
            "interaction": {
                "description": "A user flow finished (triggerInteractionHooks).",
                "properties": {
                    "interactionEvent": context["interactionEvent"],
                    "sessionId": _TEXT,
                    "userAgent": _TEXT,
                    "userId": _TEXT,
                    "userIp": _TEXT,
                    "user": _OBJECT,
                    "application": _OBJECT,
                    "adaptiveMfaResult": _OBJECT,
                },
            },
            "data": {
                "description": (
                    "An entity changed (buildWebhooks), from the Management API (path, method, "
                    "status, params, matchedRoute) or a sign-in flow (the interaction context)."
                ),
                "properties": {
                    **context,
                    **management_api,
                    "data": {"description": "The entity after the change (any JSON)."},
                    "organizationId": _TEXT,
                    "addedUserIds": _IDS,
                    "removedUserIds": _IDS,
                    "addedApplicationIds": _IDS,
                    "removedApplicationIds": _IDS,
                },
            },
            "exception": {
                "description": "A protective limit tripped (buildWebhooks).",
                "properties": {**context, **management_api, "userId": _TEXT},
            },
        },
    }


def _family(names: tuple[str, ...], ref: str) -> dict[str, Any]:
    return {"if": {"properties": {"event": {"enum": list(names)}}}, "then": {"$ref": ref}}
