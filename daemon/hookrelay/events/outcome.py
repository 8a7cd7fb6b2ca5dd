"""The outcome record: how one delivery ended, as written to the deployment's outcome topic.

One compact JSON object per settled delivery (``outcomes.enabled``), and one per invalid
record, so "did event X reach hook Y?" can be answered from Kafka with any tool, long after
the process that did the work is gone (as Confluent's HTTP sink reports to its success and
error topics, or Svix keeps message attempts). The record's key is the delivery id (the
``webhook-id`` the receiver got), so all outcomes of one delivery share a partition; an
invalid record, which has no delivery, has no key.

Version 1 (``v``); the JSON Schema is ``config/outcome.schema.json`` (``outcome_schema``):

- ``v``: 1. A later version only adds members; a reader ignores members it does not know.
- ``status``: ``delivered`` (a 2xx), ``dead_lettered`` (in the dead-letter topic, with
  ``reason``; invalid records too), ``dropped`` (settled with neither: the broker refused
  even the 64 KiB dead letter; the original stays at its origin coordinates), ``skipped``
  (kept out by the hook's payload filter, without any attempt).
- ``reason``: for ``dead_lettered``, the dead letter's reason (``kafka.deadletter.REASONS``);
  for ``skipped``, why (``filtered``); else null.
- ``delivery_id``, ``hook_id``, ``event``: null for an invalid record.
- ``key``: the event record's Kafka key as text (producers key by user or organization id,
  so "did the event about user u42 reach hook Y?" can be asked), at most 256 characters,
  bytes that are not UTF-8 replaced; null for a record without a key.
- ``attempts``: POSTs that spent the retry schedule; ``last_status``: the HTTP status of
  the last POST (null: none, or no answer); ``error``: the last failure, at most 500
  characters, null after a 2xx.
- ``first_attempt_at``, ``last_attempt_at``, ``settled_at``: ISO-8601 UTC with
  milliseconds (null when there was no attempt). ``latency_ms``: from the origin record's
  timestamp to ``settled_at``.
- ``origin``: ``topic``, ``partition``, ``offset``, ``timestamp`` (ISO-8601) of the event
  record (for an invalid record: the record refused).
- ``group``: the consumer group (deployment) that wrote it (DESIGN §1.8).

No body, header, URL or signing key is ever written: the topic may be read more widely than
the hooks' configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from hookrelay.events.contract import SCHEMA_DIALECT
from hookrelay.events.decode import MAX_EVENT_NAME
from hookrelay.events.model import Delivery, Origin

VERSION: Final = 1
STATUSES: Final = ("delivered", "dead_lettered", "dropped", "skipped")
MAX_ERROR_CHARS: Final = 500
MAX_KEY_CHARS: Final = 256


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """An outcome record's members (see the module docstring); times in epoch milliseconds."""

    status: str
    reason: str | None
    delivery_id: str | None
    hook_id: str | None
    event: str | None
    attempts: int
    last_status: int | None
    error: str | None
    first_attempt_at_ms: int | None
    last_attempt_at_ms: int | None
    settled_at_ms: int
    origin: Origin
    group: str
    key: str | None = None

    @classmethod
    def of_delivery(
        cls, delivery: Delivery, status: str, reason: str | None, group: str, now_s: float
    ) -> OutcomeRecord:
        """The outcome of ``delivery``, settled at ``now_s`` (epoch seconds)."""
        return cls(
            status, reason, delivery.delivery_id, delivery.hook.id, delivery.event.name,
            delivery.attempts, delivery.last_status,
            None if status == "delivered" else _clip(delivery.last_error, MAX_ERROR_CHARS),
            _ms(delivery.first_attempt_at), _ms(delivery.last_attempt_at), int(now_s * 1000),
            delivery.event.origin, group, key_text(delivery.event.key),
        )  # fmt: skip

    @classmethod
    def of_invalid(
        cls, origin: Origin, reason: str, detail: str, group: str, now_s: float, *,
        key: bytes | None = None,
    ) -> OutcomeRecord:  # fmt: skip
        """The outcome of a record the decoder refused (dead-lettered with ``reason``)."""
        return cls(
            "dead_lettered", reason, None, None, None, 0, None, _clip(detail, MAX_ERROR_CHARS),
            None, None, int(now_s * 1000), origin, group, key_text(key),
        )  # fmt: skip

    @property
    def latency_ms(self) -> int:
        """Milliseconds from the origin record's timestamp to the settlement (≥ 0)."""
        return max(0, self.settled_at_ms - self.origin.timestamp_ms)

    def to_json(self) -> bytes:
        """The record's value: compact JSON, members in the documented order."""
        o = self.origin
        return orjson.dumps({
            "v": VERSION, "status": self.status, "reason": self.reason,
            "delivery_id": self.delivery_id, "hook_id": self.hook_id, "event": self.event,
            "key": self.key, "attempts": self.attempts, "last_status": self.last_status,
            "error": self.error,
            "first_attempt_at": iso_ms(self.first_attempt_at_ms),
            "last_attempt_at": iso_ms(self.last_attempt_at_ms),
            "settled_at": iso_ms(self.settled_at_ms), "latency_ms": self.latency_ms,
            "origin": {"topic": o.topic, "partition": o.partition, "offset": o.offset,
                       "timestamp": iso_ms(o.timestamp_ms)},
            "group": self.group,
        })  # fmt: skip

    @classmethod
    def from_json(cls, value: bytes) -> OutcomeRecord:
        """Parse a value ``to_json`` wrote (any version ≥ 1; unknown members ignored).

        Raises ``ValueError`` for anything else."""
        try:
            doc = orjson.loads(value)
            origin = doc["origin"]
            return cls(
                str(doc["status"]), doc["reason"], doc["delivery_id"], doc["hook_id"],
                doc["event"], int(doc["attempts"]), doc["last_status"], doc["error"],
                _parse_ms(doc["first_attempt_at"]), _parse_ms(doc["last_attempt_at"]),
                _required_ms(doc["settled_at"]),
                Origin(str(origin["topic"]), int(origin["partition"]), int(origin["offset"]),
                       _required_ms(origin["timestamp"])),
                str(doc["group"]), doc.get("key"),
            )  # fmt: skip
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not an outcome record: {e}") from e


def key_text(key: bytes | None) -> str | None:
    """A record key as the outcome record shows it (see the module docstring)."""
    return None if key is None else key.decode("utf-8", "replace")[:MAX_KEY_CHARS]


def _clip(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]


def _ms(epoch_s: float | None) -> int | None:
    return None if epoch_s is None else int(epoch_s * 1000)


def iso_ms(epoch_ms: int | None) -> str | None:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds, as outcome records write them."""
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


def _parse_ms(text: Any) -> int | None:
    return None if text is None else _required_ms(text)


def _required_ms(text: Any) -> int:
    if not isinstance(text, str):
        raise ValueError("expected an ISO-8601 time")
    return int(datetime.fromisoformat(text).timestamp() * 1000)


_TIME: Final = {"type": "string", "format": "date-time"}
_NULLABLE_TIME: Final = {"type": ["string", "null"], "format": "date-time"}


def outcome_schema() -> dict[str, Any]:
    """The outcome record's JSON Schema (draft 2020-12), written to
    ``config/outcome.schema.json`` by ``config.write_json_schemas``."""
    text = {"type": ["string", "null"]}
    properties: dict[str, Any] = {
        "v": {"const": VERSION, "description": "Schema version; later ones only add members."},
        "status": {"enum": list(STATUSES)},
        "reason": {
            **text,
            "description": "The dead letter's reason, or why it was skipped "
            "(filtered); null otherwise.",
        },
        "delivery_id": {**text, "description": "The webhook-id header; null: invalid record."},
        "hook_id": text,
        "event": {**text, "maxLength": MAX_EVENT_NAME},
        "key": {
            **text,
            "maxLength": MAX_KEY_CHARS,
            "description": "The event record's Kafka key as text; null: none.",
        },
        "attempts": {"type": "integer", "minimum": 0},
        "last_status": {"type": ["integer", "null"]},
        "error": {**text, "maxLength": MAX_ERROR_CHARS},
        "first_attempt_at": _NULLABLE_TIME,
        "last_attempt_at": _NULLABLE_TIME,
        "settled_at": _TIME,
        "latency_ms": {"type": "integer", "minimum": 0},
        "origin": {
            "type": "object",
            "required": ["topic", "partition", "offset", "timestamp"],
            "properties": {
                "topic": {"type": "string"},
                "partition": {"type": "integer", "minimum": 0},
                "offset": {"type": "integer", "minimum": 0},
                "timestamp": _TIME,
            },
        },
        "group": {"type": "string", "description": "The consumer group that wrote it."},
    }
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "hookrelay outcome record",
        "description": "One record of the outcome topic: how one delivery (or one invalid "
        "record) ended. Key: the delivery id. No body, header, URL or signing key.",
        "type": "object",
        "required": list(properties),
        "properties": properties,
    }
