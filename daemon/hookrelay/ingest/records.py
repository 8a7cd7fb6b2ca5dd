"""From a Logto webhook's body to the Kafka record hookrelay consumes: the value and the key.

**Value.** Logto's body is the event plus its ``hookId`` member (last; second in Logto's "send
test" payload). The record value is that body with every ``hookId`` member cut out by the
decoder's byte-preserving splice (``events.decode``): every other byte stays as Logto wrote
it, so each hook's request later reads exactly like Logto's own, with that hook's id last.

**Key.** Kafka keeps one key's records in order on one partition, and hookrelay delivers them
from there; so the key names the entity the event is about. ``KeyRule`` ``auto`` picks it by
the event's entity (its name up to the first dot), from the first of these members that holds
a string (Logto's payloads: ``buildWebhooks`` and ``triggerInteractionHooks`` in
``packages/core/src/libraries/hook/index.ts``; Management API calls carry the route's
``params``, flows carry ``userId``):

====================  ====================================================
interaction events    ``userId``
User                  ``params.userId``, ``data.id``, ``userId``
TrustedDevice         ``params.userId``, ``data.userId``, ``userId``
Organization          ``organizationId`` (membership), ``params.id``, ``data.id``
Role, OrganizationRole, OrganizationScope
                      ``params.id``, ``data.id``
Scope                 ``params.scopeId``, ``data.id``
exception events      ``userId``
others                ``userId``, ``organizationId``, ``data.id``
====================  ====================================================

so a user's events share a key whichever route or flow sent them, and so do an
organization's. An event with none of its members gets no key (the producer spreads such
records over the partitions). A rule may instead name one member path (``data.id``), or
``none``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from hookrelay.events.catalogue import EXCEPTION_EVENTS, INTERACTION_EVENTS
from hookrelay.events.decode import decode_document
from hookrelay.events.model import Event, Origin

AUTO: Final = "auto"
NONE: Final = "none"

_BY_ENTITY: Final[Mapping[str, tuple[str, ...]]] = {
    "User": ("params.userId", "data.id", "userId"),
    "TrustedDevice": ("params.userId", "data.userId", "userId"),
    "Organization": ("organizationId", "params.id", "data.id"),
    "Role": ("params.id", "data.id"),
    "OrganizationRole": ("params.id", "data.id"),
    "OrganizationScope": ("params.id", "data.id"),
    "Scope": ("params.scopeId", "data.id"),
}
_INTERACTION: Final = ("userId",)
_EXCEPTION: Final = ("userId",)
_OTHER: Final = ("userId", "organizationId", "data.id")

_ORIGIN: Final = Origin("ingest", 0, 0, 0)


def event_record(
    body: bytes, max_bytes: int, rule: str = AUTO
) -> tuple[Event, bytes, bytes | None]:
    """The event in Logto's webhook ``body``, the record value to write (``body`` without
    its ``hookId`` members and surrounding whitespace, every other byte kept) and the record
    key by ``rule`` (``record_key``).

    Raises ``InvalidEventError`` (the decoder's reasons) for a body hookrelay would
    dead-letter: the endpoint refuses it instead of writing it.
    """
    event, document = decode_document(body, None, _ORIGIN, max_bytes)
    return event, event.body_head + b"}", key_of(document, event.name, rule)


def member_paths(name: str) -> tuple[str, ...]:
    """The members ``auto`` looks at for an event called ``name``, in order."""
    if name in INTERACTION_EVENTS:
        return _INTERACTION
    if name in EXCEPTION_EVENTS:
        return _EXCEPTION
    return _BY_ENTITY.get(name.partition(".")[0], _OTHER)


def record_key(value: bytes, name: str, rule: str = AUTO) -> bytes | None:
    """The record key for the event ``value`` called ``name``, by ``rule``: ``auto`` (see the
    module docstring), ``none``, or one member path such as ``data.id``. None when the
    member is absent or not a string."""
    return key_of(orjson.loads(value), name, rule)


def key_of(document: Mapping[str, Any], name: str, rule: str = AUTO) -> bytes | None:
    """``record_key`` of an event already parsed into ``document``."""
    if rule == NONE:
        return None
    paths = member_paths(name) if rule == AUTO else (rule,)
    for path in paths:
        found = _member(document, path)
        if isinstance(found, str) and found:
            return found.encode("utf-8")
    return None


def _member(document: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document
