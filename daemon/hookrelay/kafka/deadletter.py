"""Build the records of the dead-letter topic (``writer`` writes them, durably, and only then
are their sources settled).

Two kinds of record land there:

- an *invalid* Kafka record (DESIGN §1.2): value = the original bytes, untouched;
- a *failed delivery* (permanent failure, or the retry schedule exhausted): value = the
  original event bytes as consumed (without ``hookId``), so ``replay`` can re-drive it.

Everything else travels in headers (``hookrelay-*``, UTF-8 text): reason, error, hook id,
event, delivery id, attempts, first/last attempt times (ISO-8601), last status, the
origin topic/partition/offset, and ``group``: the consumer group (deployment) that wrote the
letter, so ``replay`` re-drives only its own. A failed delivery's letter also keeps the
event record's W3C ``traceparent``/``tracestate`` (under those names), so a replayed
delivery stays in its trace. Headers never carry a signing key or the request headers.

Dead letters are written by the ``writer.DurableWriter``: a source record is settled only
after the broker acknowledged its dead letter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from hookrelay.events.model import Delivery, Origin, OutboundRecord
from hookrelay.kafka.retries import HEADER_PREFIX

KIND: Final = "dead_letter"
REASONS: Final = (
    # invalid records (decode.InvalidEventError, pipeline)
    "empty", "oversized", "not_json", "not_object", "missing_event", "bad_event_name",
    "duplicate_event", "bad_created_at",
    "bad_retry_record", "decode_error",
    # a record the broker refused as too large, rewritten small (writer)
    "record_too_large",
    # failed deliveries (dispatcher)
    "permanent_failure", "retries_exhausted", "hook_gone", "hook_removed",
    # a hook's payload filter could not be evaluated on the event (delivery.filtering)
    "filter_error",
    # an ordered hook with ordering_after_dead_letter: block dead-lettered an earlier
    # delivery of the event's key, which stays blocked until unblocked (delivery.ordering)
    "key_blocked",
)  # fmt: skip
"""Every ``reason`` header value (and ``hookrelay_dead_lettered_total`` label) written here."""
TRUNCATED_VALUE_BYTES: Final = 64 * 1024
"""A value too large for the dead-letter topic keeps only its first 64 KiB; the full record
stays readable at its origin coordinates (for the topic's retention)."""


def truncated(value: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    """The first ``TRUNCATED_VALUE_BYTES`` of ``value`` and the headers that say so."""
    return value[:TRUNCATED_VALUE_BYTES], [
        ("truncated", "true"),
        ("original-bytes", str(len(value))),
    ]


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


def rejected(record: OutboundRecord, topic: str, error: str) -> OutboundRecord:
    """A record the broker refused (too large) turned into a small dead letter: reason
    ``record_too_large``, the first 64 KiB of the value, the original headers kept."""
    kept = tuple(
        (k, v)
        for k, v in record.headers
        if k not in (HEADER_PREFIX + "reason", HEADER_PREFIX + "error")
    )
    value, notes = truncated(record.value or b"")
    extra = _encode([("reason", "record_too_large"), ("error", error[:500]), *notes])
    return OutboundRecord(topic, value, record.key, (*extra, *kept), "rejected")


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
    group: str,
) -> OutboundRecord:
    """A dead letter for a record the decoder refused (``reason`` from ``InvalidEventError``).

    The value is the record's bytes, untouched (``None`` for a tombstone), except for an
    ``oversized`` record, which would not fit the dead-letter topic either: its first 64 KiB
    are kept, with ``hookrelay-truncated`` and ``hookrelay-original-bytes`` headers.
    """
    pairs = [("reason", reason), ("error", detail), *_origin_headers(origin), ("group", group)]
    if reason == "oversized" and value is not None:
        value, notes = truncated(value)
        pairs += notes
    return OutboundRecord(topic, value, key, _encode(pairs), KIND)


def failed_delivery(topic: str, delivery: Delivery, reason: str, group: str) -> OutboundRecord:
    """A dead letter for a delivery that did not succeed.

    ``reason``: ``permanent_failure`` (4xx, 3xx), ``retries_exhausted``, ``hook_gone`` (the
    endpoint answered 410 and the hook is paused), or ``hook_removed`` (a retry found its hook
    removed or disabled by a configuration change, and no replica took it back within
    ``delivery.unknown_hook_grace_s``), or ``filter_error`` (the hook's payload filter could
    not be evaluated on the event), or ``key_blocked`` (an earlier delivery of the event's
    key was dead-lettered and its ordered hook blocks the key: ``delivery.ordering``).
    ``group`` is the writing deployment's consumer group.
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
        ("group", group),
    ]
    headers = _encode(pairs)
    if event.trace is not None:
        headers += tuple(event.trace.headers())
    return OutboundRecord(topic, event.raw, event.key, headers, KIND)
