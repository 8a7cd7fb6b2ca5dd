"""Write records to the dead-letter topic, durably, and only then settle them.

Two kinds of record land there:

- an *invalid* Kafka record (DESIGN §1.2): value = the original bytes, untouched;
- a *failed delivery* (permanent failure, or the retry schedule exhausted): value = the
  original event bytes as consumed (without ``hookId``), so ``replay`` can re-drive it.

Everything else travels in headers (``hookrelay-*``, UTF-8 text): reason, error, hook id,
event, delivery id, attempts, first/last attempt times (ISO-8601), last status, and the
origin topic/partition/offset. Headers never carry a signing key or the request headers.

Dead letters are written by the ``writer.DurableWriter``: a source record is settled only
after the broker acknowledged its dead letter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from hookrelay.model import Delivery, Origin
from hookrelay.writer import OutboundRecord

HEADER_PREFIX: Final = "hookrelay-"
KIND: Final = "dead_letter"


def _iso(epoch_s: float | None) -> str:
    if epoch_s is None:
        return ""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def _origin_headers(origin: Origin) -> list[tuple[str, str]]:
    return [
        ("origin-topic", origin.topic),
        ("origin-partition", str(origin.partition)),
        ("origin-offset", str(origin.offset)),
        ("origin-timestamp", str(origin.timestamp_ms)),
    ]


def _encode(pairs: list[tuple[str, str]]) -> tuple[tuple[str, bytes], ...]:
    return tuple((HEADER_PREFIX + name, value.encode("utf-8")) for name, value in pairs)


def invalid_record(
    topic: str,
    reason: str,
    detail: str,
    *,
    value: bytes | None,
    key: bytes | None,
    origin: Origin,
) -> OutboundRecord:
    """A dead letter for a record the decoder refused (``reason`` from ``InvalidEventError``)."""
    pairs = [("reason", reason), ("error", detail), *_origin_headers(origin)]
    return OutboundRecord(topic, value or b"", key, _encode(pairs), KIND)


def failed_delivery(topic: str, delivery: Delivery, reason: str) -> OutboundRecord:
    """A dead letter for a delivery that did not succeed.

    ``reason``: ``permanent_failure`` (4xx, 3xx), ``retries_exhausted``, ``hook_gone`` (the
    endpoint answered 410 and the hook is paused), or ``hook_removed`` (a retry found its hook
    removed or disabled by a configuration change).
    """
    event = delivery.event
    pairs = [
        ("reason", reason),
        ("error", delivery.last_error or ""),
        ("hook-id", delivery.hook.id),
        ("event", event.name),
        ("delivery-id", delivery.delivery_id),
        ("attempts", str(delivery.attempts)),
        ("first-attempt-at", _iso(delivery.first_attempt_at)),
        ("last-attempt-at", _iso(delivery.last_attempt_at)),
        ("last-status", "" if delivery.last_status is None else str(delivery.last_status)),
        *_origin_headers(event.origin),
    ]
    return OutboundRecord(topic, event.raw, event.key, _encode(pairs), KIND)
