"""The small typed values that flow between pipeline stages.

``Origin`` → where a Kafka record came from; ``Event`` → a decoded, valid identity event;
``Delivery`` → one (event, hook) pair on its way to an endpoint; ``AttemptResult`` → what one
POST of a delivery produced; ``OutboundRecord`` → a record hookrelay writes to Kafka (a retry
or a dead letter). Stages exchange these values, never each other's internals.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple

from hookrelay.events.signing import splice_hook_id

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from hookrelay.config import Hook
    from hookrelay.events.tracecontext import TraceContext
    from hookrelay.kafka.offsets import AckTicket


class Origin(NamedTuple):
    """Kafka coordinates of a record: topic, partition, offset, and the record's timestamp
    in epoch milliseconds (producer create time or broker append time).

    ``Origin``, ``Event`` and ``AttemptResult`` are named tuples, not frozen dataclasses:
    as immutable, and built once per record or attempt for a fifth of the CPU (a frozen
    dataclass sets each field through ``object.__setattr__``: 0.9 µs against 0.2 µs for
    eight fields, measured with ``timeit``)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


class Event(NamedTuple):
    """A valid identity event.

    ``name`` is the ``event`` member; ``raw`` the record value exactly as consumed (what the
    dead-letter topic keeps); ``body_head`` the producer's JSON object bytes with surrounding
    whitespace, any ``hookId`` member and the closing ``}`` removed, so a hook's body is
    ``body_head + member + b"}"`` without re-serialising (see ``signing.splice_hook_id``);
    ``empty`` says the object had no other member (no comma before ``hookId``); ``trace``
    the W3C trace context of the record's ``traceparent``/``tracestate`` headers, ``None``
    without a valid one (``tracecontext``).
    """

    name: str
    created_at: str
    raw: bytes
    body_head: bytes
    empty: bool
    key: bytes | None
    origin: Origin
    trace: TraceContext | None = None


class Outcome(Enum):
    """How a delivery ended, as counted in ``hookrelay_deliveries_total{outcome}``."""

    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"
    PARKED = "parked"  # written to a retry topic; it comes back later (not counted)
    # Shutdown reached, or its partition was revoked, before it settled: the partition's
    # next owner (or this daemon after a restart) makes it.
    ABANDONED = "abandoned"
    # The broker refused even its small dead letter (writer): settled without one; the
    # event stays readable at its origin coordinates.
    DROPPED = "dropped"
    # Taken back from a retry record that an operator's release re-drove a copy of: the
    # copy goes on; this one is settled without a request (no outcome record).
    SUPERSEDED = "superseded"
    # Kept out by its hook's payload filter (``delivery.filtering``): settled without a
    # request, counted in hookrelay_deliveries_skipped_total instead of deliveries_total.
    SKIPPED = "skipped"
    # A copy of a delivery this process delivered already (the same webhook-id: an event read
    # again after a crash, and its retry record), settled without a request.
    DUPLICATE = "duplicate"


@dataclass(slots=True)
class Delivery:
    """One (event, hook) pair: the signed request to make, and its attempt history.

    ``attempts`` counts the attempts that spent its retry schedule: POSTs made so far, less
    those the endpoint throttled (429, or 503 with Retry-After); ``parks`` how often it went
    back to a retry topic without spending one (slow lane, Retry-After pause, open circuit,
    full lane, or a throttled answer); ``first_attempt_at``, ``last_attempt_at``,
    ``last_status`` and ``last_error`` describe its POSTs, throttled ones included. Times
    are epoch seconds (``time.time()``): ``created_at`` when hookrelay first took the event
    for this hook; ``enqueued_mono`` is ``time.monotonic()`` when it entered its lane;
    ``unknown_since`` when a replica first met it for a hook it did not know, else ``None``.
    ``span`` is its tracing span (``ops.tracing``) from when it was taken until it settled;
    always ``None`` with tracing off, which is the one test the hot path makes.
    """

    event: Event
    hook: Hook
    delivery_id: str
    member: bytes
    """The hook's ``"hookId":"<id>"}`` (``signing.hook_id_member``), shared by its lane."""
    ticket: AckTicket
    attempts: int = 0
    first_attempt_at: float | None = None
    last_attempt_at: float | None = None
    last_status: int | None = None
    last_error: str | None = None
    enqueued_mono: float = field(default=0.0)
    created_at: float = field(default_factory=time.time)
    parks: int = 0
    unknown_since: float | None = None
    unknown_parks: int = 0
    redrive: bool = False  # asked for by an operator: sent even if delivered a moment ago
    source: tuple[str, int, int] | None = None  # the retry record it was taken back from
    span: Span | None = None

    @property
    def body(self) -> bytes:
        """The request body, ``signing.splice_hook_id`` of the event and the member: made at
        each use, so a delivery waiting in a lane or a retry holds no copy of its own (10,000
        in flight held 6 MB of bodies, for one attempt each)."""
        return splice_hook_id(self.event.body_head, self.event.empty, self.member)

    @property
    def body_size(self) -> int:
        """``len(self.body)``, without making it."""
        return len(self.event.body_head) + len(self.member) + (0 if self.event.empty else 1)


_STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}


class AttemptResult(NamedTuple):
    """What one POST produced.

    ``status`` is the HTTP status when the endpoint answered; ``error`` a short reason when
    the attempt failed (``None`` on 2xx); ``retryable`` whether another attempt may succeed;
    ``retry_after_s`` the endpoint's usable ``Retry-After`` in seconds (capped), if any;
    ``duration_s`` the time from sending the request to reading the capped response.
    """

    status: int | None
    error: str | None
    retryable: bool
    retry_after_s: float | None
    duration_s: float
    response_head: bytes = b""

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return self.error is None

    @property
    def status_class(self) -> str:
        """Bounded label for metrics: ``2xx``..``5xx``, ``timeout``, ``connection_error``,
        ``refused``."""
        if self.status is not None:
            return _STATUS_CLASSES.get(self.status // 100) or f"{self.status // 100}xx"
        if self.error and self.error.startswith("timeout"):
            return "timeout"
        if self.error and self.error.startswith("refused"):
            return "refused"
        return "connection_error"


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    """One record to write: ``topic``, ``value``, ``key``, ``headers``; ``kind`` is a bounded
    label (``dead_letter`` or ``retry``) for metrics and logs."""

    topic: str
    value: bytes | None
    key: bytes | None
    headers: Sequence[tuple[str, bytes]]
    kind: str
    partition_hint: int | None = None
    """None: the producer's partitioner (by key). Otherwise the record goes to the topic's
    partition number ``partition_hint`` modulo its partition count."""
