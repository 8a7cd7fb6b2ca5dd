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
  first consumed, so the delivery id and end-to-end latency survive every hop;
- ``group``: the consumer group (deployment) that wrote it. A daemon serves only its own
  group's records whose origin topic is one of its ``kafka.topics``; records written before
  this header existed carry none and are judged by their origin topic alone;
- ``unknown-since``: epoch ms when a replica first met the record for a hook it does not
  know (a rolling update), empty otherwise; ``unknown-parks``: how often it was parked
  again for that reason (it walks the short tiers' partitions, see ``Dispatcher``);
- ``redrive``: ``1`` on a retry an operator asked for (``replay``, ``backfill``): it is
  sent even when this process delivered the same ``webhook-id`` a moment ago (a copy it
  would otherwise settle without a request); absent otherwise.
- ``traceparent`` and ``tracestate`` (no prefix: the W3C names, as on the event record) when
  the event record carried a valid trace context, so every retry's request carries it too.
  Records written before they existed simply have none.

Every header is untrusted input (anyone who may write to the topic can write one), so
``RetryRecord.from_headers`` checks each value's shape — ASCII digits for numbers, a valid
hook id, a ``webhook-id`` safe as an HTTP header value — and raises ``ValueError`` for
anything else; the pipeline turns that into a ``bad_retry_record`` dead letter. The trace
context is the exception: an invalid one is ignored, as on an event record
(``events.tracecontext``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, overload

from hookrelay.config.naming import tier_delay_s
from hookrelay.events.tracecontext import TraceContext, trace_context

HEADER_PREFIX: Final = "hookrelay-"
DUE_AT_HEADER: Final = HEADER_PREFIX + "due-at"
GROUP_HEADER: Final = HEADER_PREFIX + "group"
ORIGIN_TOPIC_HEADER: Final = HEADER_PREFIX + "origin-topic"
RETRY_COMMIT_METADATA: Final = "hookrelay:retry"
"""Offset-commit metadata of a retry partition, so the broker remembers every tier a group
consumed, even after a configuration change drops it (see ``tiers``)."""
EVENT_COMMIT_METADATA: Final = "hookrelay:event"
"""Offset-commit metadata of an event partition: a removed event topic is never drained."""
COMMIT_MAP_SEPARATOR: Final = ";"
"""Between the role tag and the offset map of settled records above the committed offset
(``offsets.OpenOffsets``): ``hookrelay:event;<map>``."""


def commit_metadata(role: str, offset_map: str) -> str:
    """A commit's metadata: the role tag, then the offset map when there is one."""
    return f"{role}{COMMIT_MAP_SEPARATOR}{offset_map}" if offset_map else role


def split_commit_metadata(metadata: str | None) -> tuple[str, str]:
    """``(role tag, offset map)`` of a commit's metadata (``("", "")`` for none)."""
    role, _, offset_map = (metadata or "").partition(COMMIT_MAP_SEPARATOR)
    return role, offset_map


_HOOK_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,21}")
"""Hook ids as the configuration accepts them (``config.models.HookId``)."""
_TOPIC: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
_DELIVERY_ID: Final = re.compile(r"[\x21-\x7e]{1,200}")
"""Visible ASCII: the value becomes the ``webhook-id`` request header."""
_COUNT: Final = re.compile(r"[0-9]{1,18}")
"""Non-negative integers as ASCII digits only (``int()`` would also take ``١٢``, ``1_0``)."""
_TEXT_LIMIT: Final = 1000


@dataclass(frozen=True, slots=True)
class RetryRecord:
    """A delivery parked in a retry topic (see the module docstring for the wire format).

    Times are epoch milliseconds; ``last_status`` is ``None`` when there was no HTTP answer;
    ``trace`` is the event record's W3C trace context, if it had one.
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
    group: str = ""
    unknown_since_ms: int | None = None
    unknown_parks: int = 0
    trace: TraceContext | None = None
    redrive: bool = False

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
            "group": self.group,
            "unknown-since": _opt(self.unknown_since_ms),
            "unknown-parks": str(self.unknown_parks),
        }
        pairs = [(HEADER_PREFIX + k, v.encode("utf-8")) for k, v in fields.items()]
        if self.redrive:
            pairs.append((HEADER_PREFIX + "redrive", b"1"))
        if self.trace is not None:
            pairs += self.trace.headers()
        return pairs

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes]]) -> RetryRecord:
        """Parse and check a retry record's headers.

        Raises ``ValueError`` naming the first header that is missing, repeated, not UTF-8,
        or not of its expected shape (see the module docstring).
        """
        h: dict[str, str] = {}
        for key, value in headers:
            if not key.startswith(HEADER_PREFIX):
                continue
            name = key[len(HEADER_PREFIX) :]
            if name in h:
                raise ValueError(f"header {key} appears twice")
            try:
                h[name] = value.decode("utf-8") if value is not None else ""
            except UnicodeDecodeError as e:
                raise ValueError(f"header {key} is not UTF-8") from e
        fields = _Fields(h)
        return cls(
            hook_id=fields.matching("hook-id", _HOOK_ID, "a hook id"),
            event=fields.text("event", required=True),
            delivery_id=fields.matching("delivery-id", _DELIVERY_ID, "visible ASCII"),
            attempts=fields.count("attempts"),
            first_attempt_at_ms=fields.optional_count("first-attempt-at"),
            last_attempt_at_ms=fields.optional_count("last-attempt-at"),
            last_status=fields.optional_count("last-status"),
            error=fields.text("error"),
            due_at_ms=fields.count("due-at"),
            origin_topic=fields.matching("origin-topic", _TOPIC, "a topic name"),
            origin_partition=fields.count("origin-partition"),
            origin_offset=fields.count("origin-offset"),
            origin_timestamp_ms=fields.count("origin-timestamp"),
            created_at_ms=fields.optional_count("created-at") or fields.count("due-at"),
            parks=fields.optional_count("parks") or 0,
            group=fields.text("group"),
            unknown_since_ms=fields.optional_count("unknown-since"),
            unknown_parks=fields.optional_count("unknown-parks") or 0,
            trace=trace_context(headers),
            redrive=fields.text("redrive") == "1",
        )


class _Fields:
    """Typed reads of decoded ``hookrelay-*`` header values; each raises ``ValueError``."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    def _get(self, name: str, required: bool) -> str:
        value = self._values.get(name)
        if value is None:
            if required:
                raise ValueError(f"retry record lacks header {HEADER_PREFIX}{name}")
            return ""
        return value

    def text(self, name: str, *, required: bool = False) -> str:
        value = self._get(name, required)
        if required and not value:
            raise ValueError(f"header {HEADER_PREFIX}{name} is empty")
        return value[:_TEXT_LIMIT]

    def matching(self, name: str, pattern: re.Pattern[str], what: str) -> str:
        value = self._get(name, True)
        if pattern.fullmatch(value) is None:
            raise ValueError(f"header {HEADER_PREFIX}{name} is not {what}")
        return value

    def count(self, name: str) -> int:
        return _count(name, self._get(name, True))

    def optional_count(self, name: str) -> int | None:
        value = self._get(name, False)
        return _count(name, value) if value else None


def _count(name: str, value: str) -> int:
    if _COUNT.fullmatch(value) is None:
        raise ValueError(f"header {HEADER_PREFIX}{name} is not a non-negative integer")
    return int(value)


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


DUE_SLACK_S: Final = 300.0
"""Clock skew tolerated between the writer of a retry record and its reader."""


def latest_due_s(topic: str, written_ms: int, fallback_horizon_s: float) -> float:
    """Epoch seconds after which a record written to ``topic`` at ``written_ms`` (its Kafka
    timestamp) cannot legitimately be due: a tier's records are due at most its delay times
    (1 + jitter ≤ 2) after their write (``RetryPlan.due_at_ms`` caps every wait at the
    tier's delay). A record claiming a later due time is damaged, and must not hold back
    its whole tier partition by making it wait."""
    delay = tier_delay_s(topic)
    horizon = fallback_horizon_s if delay is None else 2.0 * delay
    # A producer sets the timestamp, and the broker takes one up to an hour ahead: a record
    # "written" in the future is judged as written now.
    return min(written_ms / 1000.0, time.time()) + horizon + DUE_SLACK_S


def claimed_elsewhere(
    headers: Sequence[tuple[str, bytes | None]], group: str, event_topics: Container[str]
) -> tuple[str, str, str] | None:
    """``(reason, group, origin topic)`` when a retry record belongs to another deployment
    (the origin topic as the record names it, empty when it names none):
    ``other_group`` when any ``hookrelay-group`` header names another group,
    ``foreign_origin`` when any origin topic is not one this deployment consumes; else None.
    Read leniently and before anything else: a malformed record another deployment claims is
    still its own, never dead-lettered or waited for here."""
    other_group = foreign_origin = None
    origin = ""
    for key, value in headers:
        if key == GROUP_HEADER:
            text = _lenient(value)
            if text and text != group:
                other_group = text
        elif key == ORIGIN_TOPIC_HEADER:
            text = _lenient(value)
            origin = origin or text
            if text and text not in event_topics:
                foreign_origin = text
    if other_group is not None:
        # The origin topic as the record names it (a foreign one first), for the log line.
        return "other_group", other_group, foreign_origin or origin
    if foreign_origin is not None:
        return "foreign_origin", "", foreign_origin
    return None


def _lenient(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")


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


class RetryHeaders(Sequence[tuple[str, bytes]]):
    """``record.headers()``, made each time they are read (``OutboundRecord.headers`` of a
    parked delivery): until the producer takes it, a parked delivery holds its
    ``RetryRecord`` (about 0.3 KB) instead of some twenty header pairs (about 2.4 KB). In the
    memory bench (1,000,000-event backlog, a dead endpoint), tracemalloc found 18 MB of
    such pairs in the 7,600 parked records waiting to be written."""

    __slots__ = ("_record",)

    def __init__(self, record: RetryRecord) -> None:
        self._record = record

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return iter(self._record.headers())

    def __len__(self) -> int:
        return len(self._record.headers())

    @overload
    def __getitem__(self, index: int) -> tuple[str, bytes]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, bytes]]: ...
    def __getitem__(self, index: int | slice) -> tuple[str, bytes] | Sequence[tuple[str, bytes]]:
        return self._record.headers()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"RetryHeaders({self._record.headers()!r})"
