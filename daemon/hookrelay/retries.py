"""Durable, non-blocking retries: one Kafka topic per delay tier.

A failed, retryable delivery is not held in memory: it is written (``acks=all``) to the retry
topic of its next delay tier, and only then is its source record settled, so the source
partition's offset moves on. Tier *n* holds deliveries waiting ``retry_schedule_s[n]``
seconds. Every record of a tier waits the same delay, so each tier partition is in due order
and its consumer only ever waits for the head record (``Source`` pauses that partition until
then); tiers never block each other.

A retry record (``RetryRecord``) is self-contained — value: the original event bytes, exactly
as first consumed; key: the original key; headers (``hookrelay-*``, UTF-8 text):

- ``hook-id``, ``event``, ``delivery-id`` (the stable ``webhook-id``)
- ``attempts``: attempts that spent the schedule (POSTs, less those answered 429 or 503
  with Retry-After); ``first-attempt-at``/``last-attempt-at``: epoch ms of any POST
- ``parks``: times sent back without spending an attempt (parked, or throttled);
  ``created-at``: epoch ms when hookrelay first took the event for this hook (the retry
  window counts from there)
- ``last-status`` (empty when there was no HTTP answer) and ``error``
- ``due-at``: epoch ms before which it must not be attempted (jittered delay, or the
  endpoint's ``Retry-After`` when later)
- ``origin-topic``/``origin-partition``/``origin-offset``/``origin-timestamp``: the record
  first consumed, so the delivery id and end-to-end latency survive every hop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

HEADER_PREFIX: Final = "hookrelay-"
DUE_AT_HEADER: Final = HEADER_PREFIX + "due-at"


def tier_label(delay_s: float) -> str:
    """Human label of a delay for topic names: ``5s``, ``2m``, ``1h``, ``1h30m``, ``250ms``."""
    if delay_s < 1 or delay_s != int(delay_s):
        ms = round(delay_s * 1000)
        if ms % 1000:
            return f"{ms}ms"
        delay_s = ms / 1000
    total = int(delay_s)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{seconds}s" if seconds else "",
    ]
    return "".join(parts)


def tier_topics(prefix: str, schedule_s: tuple[float, ...]) -> tuple[str, ...]:
    """Retry topic per tier, in schedule order; equal delays share one topic."""
    return tuple(f"{prefix}{tier_label(delay)}" for delay in schedule_s)


@dataclass(frozen=True, slots=True)
class RetryRecord:
    """A delivery parked in a retry topic (see the module docstring for the wire format).

    Times are epoch milliseconds; ``last_status`` is ``None`` when there was no HTTP answer.
    """

    hook_id: str
    event: str
    delivery_id: str
    attempts: int
    first_attempt_at_ms: int | None
    last_attempt_at_ms: int | None
    last_status: int | None
    error: str
    due_at_ms: int
    origin_topic: str
    origin_partition: int
    origin_offset: int
    origin_timestamp_ms: int
    created_at_ms: int = 0
    parks: int = 0

    def headers(self) -> list[tuple[str, bytes]]:
        """The record's Kafka headers."""
        fields = {
            "hook-id": self.hook_id,
            "event": self.event,
            "delivery-id": self.delivery_id,
            "attempts": str(self.attempts),
            "first-attempt-at": _opt(self.first_attempt_at_ms),
            "last-attempt-at": _opt(self.last_attempt_at_ms),
            "last-status": _opt(self.last_status),
            "error": self.error,
            "due-at": str(self.due_at_ms),
            "origin-topic": self.origin_topic,
            "origin-partition": str(self.origin_partition),
            "origin-offset": str(self.origin_offset),
            "origin-timestamp": str(self.origin_timestamp_ms),
            "created-at": str(self.created_at_ms),
            "parks": str(self.parks),
        }
        return [(HEADER_PREFIX + k, v.encode("utf-8")) for k, v in fields.items()]

    @classmethod
    def from_headers(
        cls, headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]
    ) -> RetryRecord:
        """Parse a retry record's headers; raises ``ValueError`` naming what is missing or bad."""
        h = {
            k[len(HEADER_PREFIX) :]: v.decode("utf-8")
            for k, v in headers
            if k.startswith(HEADER_PREFIX)
        }
        try:
            return cls(
                hook_id=h["hook-id"],
                event=h["event"],
                delivery_id=h["delivery-id"],
                attempts=int(h["attempts"]),
                first_attempt_at_ms=_int_or_none(h.get("first-attempt-at", "")),
                last_attempt_at_ms=_int_or_none(h.get("last-attempt-at", "")),
                last_status=_int_or_none(h.get("last-status", "")),
                error=h.get("error", ""),
                due_at_ms=int(h["due-at"]),
                origin_topic=h["origin-topic"],
                origin_partition=int(h["origin-partition"]),
                origin_offset=int(h["origin-offset"]),
                origin_timestamp_ms=int(h["origin-timestamp"]),
                created_at_ms=int(h.get("created-at") or h["due-at"]),
                parks=int(h.get("parks") or 0),
            )
        except KeyError as e:
            raise ValueError(f"retry record lacks header {HEADER_PREFIX}{e.args[0]}") from e


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


def _int_or_none(text: str) -> int | None:
    return int(text) if text else None


class RetryPlan:
    """Which retry topic a delivery goes to, and when it becomes due.

    ``schedule_s`` is ``delivery.retry_schedule_s``; ``topics`` the matching tier topics.
    A tier is never chosen shorter than a wait the endpoint asked for (``Retry-After``), so
    every record of a tier is due ``delay`` after it was written and tiers stay in due order.
    """

    def __init__(
        self, schedule_s: tuple[float, ...], topics: tuple[str, ...], jitter: float
    ) -> None:
        self.schedule_s = schedule_s
        self.topics = topics
        self.jitter = jitter

    @property
    def max_attempts(self) -> int:
        """First attempt plus one per tier."""
        return len(self.schedule_s) + 1

    def tier(self, index: int, min_wait_s: float = 0.0) -> int:
        """The smallest tier ≥ ``index`` whose delay covers ``min_wait_s`` (else the last)."""
        last = len(self.schedule_s) - 1
        index = min(max(index, 0), last)
        while index < last and self.schedule_s[index] < min_wait_s:
            index += 1
        return index

    @property
    def window_s(self) -> float:
        """The whole schedule: a delivery older than this is given up (dead-lettered)."""
        return float(sum(self.schedule_s))

    def due_at_ms(
        self, tier: int, now_s: float, unit_random: float, min_wait_s: float = 0.0
    ) -> int:
        """Epoch ms when a record written to ``tier`` now becomes due: the tier's delay
        spread by ± ``jitter`` (``unit_random`` in [0, 1)), not before ``min_wait_s`` — but
        never later than the tier's own delay, so one long ``Retry-After`` cannot hold back a
        tier's other records (the lane's own pause makes the record wait again)."""
        delay = self.schedule_s[tier] * (1.0 + self.jitter * (2.0 * unit_random - 1.0))
        floor = min(min_wait_s, self.schedule_s[tier])
        return int((now_s + max(delay, floor)) * 1000)
