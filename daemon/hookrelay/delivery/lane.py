"""A hook's delivery lane, and what each attempt's result means for a delivery.

A **lane** serves one hook: a bounded FIFO of pending deliveries, a token bucket (the hook's
rate limit), a circuit breaker (``circuit``), and at most ``max_concurrency`` worker tasks,
spawned lazily when work arrives and exiting when the FIFO is empty (kopf's per-key worker).
Lanes share nothing but the sender's connection pool, so a slow, throttled or failing
endpoint only ever holds its own workers: other hooks' sends never wait behind it.

Nothing waits in memory for long. A delivery is **parked** — written to a retry topic (see
``retries``) and its source record settled once the broker acknowledged it — when:

- an attempt failed with a retryable outcome (the next tier of the schedule, never sooner
  than the endpoint's ``Retry-After``);
- the endpoint *throttled* it: a 429, or a 503 with ``Retry-After``. That pauses the lane
  for the ``Retry-After`` and parks the delivery without counting an attempt: throttling is
  not failure;
- the lane is *impaired*: its oldest queued delivery has waited longer than
  ``delivery.lane_max_wait_s`` (a slow endpoint), or a ``Retry-After`` paused it (the first
  tier that covers the pause), or its queue hit the hard bound (``delivery.lane_max_pending``
  plus one fetch batch, ``kafka.max_poll_records``);
- an operator paused the hook (``kafka.control``, ``hookrelay pause``): reason ``paused``,
  however long the pause, never dead-lettered;
- the circuit is open (see ``circuit``): the failure rate over the hook's recent real
  attempts reached ``circuit_failure_rate``, so the lane stops attempting for
  ``circuit_cooldown_s``, then lets one probe through (half-open) whose outcome closes or
  re-opens it.

**Parks never count as attempts**, and only real attempts spend the retry schedule: a
delivery is dead-lettered ``retries_exhausted`` once ``RetryPlan.max_attempts`` attempts
failed. Deliveries parked because the lane is slow, throttled or full never expire (the
endpoint is alive). Behind an open circuit (cooling down, not a half-open probe out), a
delivery older than the whole schedule (``RetryPlan.window_s`` from ``created_at``) is
dead-lettered ``retries_exhausted`` if it failed at least one real attempt, and otherwise
let through the open circuit for one real attempt: a dead endpoint still ends every delivery
in the dead-letter topic, and none gets there unattempted.

A delivery goes to the **dead-letter topic** on a permanent failure (other 4xx, 3xx), when
the schedule is exhausted, or when its hook answered ``410 Gone``: that pauses the hook
(every later delivery is dead-lettered too, reason ``hook_gone``) until the configuration is
reloaded.

The ``dispatcher`` owns the lanes and feeds them.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from hookrelay.config import DeliverySettings, Hook
from hookrelay.delivery.adaptive import (
    DECREASE_REASONS,
    AdaptiveLimiter,
    Turn,
    rate_limit_view,
)
from hookrelay.delivery.circuit import Circuit, CircuitBreaker
from hookrelay.delivery.ratelimit import Clock, TokenBucket
from hookrelay.delivery.sender import Sender
from hookrelay.events.model import AttemptResult, Delivery, OutboundRecord, Outcome
from hookrelay.events.signing import hook_id_member
from hookrelay.kafka.control import BlockedKeys
from hookrelay.kafka.deadletter import failed_delivery
from hookrelay.kafka.retries import RetryHeaders, RetryPlan, RetryRecord
from hookrelay.kafka.writer import DurableWriter
from hookrelay.ops.history import History
from hookrelay.ops.logs import debug_enabled, get_logger
from hookrelay.ops.metrics import Metrics
from hookrelay.ops.tracing import DeliveryTracer

# Lanes log as the dispatcher always did: log components are output (dashboards filter them).
log = get_logger("hookrelay.dispatcher")

__all__ = ["Lane", "LaneContext", "OnFinished", "RecentIds", "epoch_ms", "parked_record"]

_GONE = 410
_TOO_MANY_REQUESTS = 429
_UNAVAILABLE = 503


class RecentIds:
    """The last ``size`` ids added, oldest forgotten first; ``in`` costs one dict lookup."""

    def __init__(self, size: int) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, item: str) -> None:
        self._ids[item] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def __contains__(self, item: object) -> bool:
        return item in self._ids


class OnFinished(Protocol):
    def __call__(self, delivery: Delivery, outcome: Outcome, reason: str | None = None) -> None:
        """``delivery`` ended with ``outcome`` (a dead letter's ``reason``, if any)."""


@dataclass(frozen=True, slots=True)
class LaneContext:
    """What every lane shares: collaborators, settings, clock and bookkeeping callbacks."""

    sender: Sender
    writer: DurableWriter
    metrics: Metrics
    settings: DeliverySettings
    plan: RetryPlan
    dead_letter_topic: str
    group: str
    lane_hard_bound: int
    timeout_s: float  # http.timeout_s: an attempt's longest time unless its hook sets one
    clock: Clock
    jitter: Callable[[], float]
    on_finished: OnFinished
    on_released: Callable[[Delivery], None]
    others_hungry: Callable[[Lane], bool]
    history: History
    delivered: RecentIds
    tracer: DeliveryTracer | None
    # (hook id, topic, partition, offset) of a retry record → True once a release re-drove a
    # copy of it (kafka.control): the copy goes on, this one stops.
    superseded: Callable[[str, str, int, int], bool]
    # The control topic, where an ordered hook blocks a key whose head was dead-lettered
    # (ordering_after_dead_letter: block), and the keys blocked so far (kafka.control).
    control_topic: str = "hookrelay.control"
    blocked: BlockedKeys = field(default_factory=BlockedKeys)


class Lane:
    """One hook's delivery lane (see module docstring). Created and closed by ``Dispatcher``."""

    chains_keys = False
    """True for a lane that chains deliveries per record key (``ordering.OrderedLane``)."""
    held_bytes = 0
    followers = 0
    """Deliveries held behind their key's head (``ordering.OrderedLane``): bounded per
    partition by ``held_partitions``, not by ``delivery.max_in_flight``."""
    """Bytes of webhook bodies held in memory that backpressure bounds by size (an ordered
    lane's followers, ``delivery.ordering_max_held_bytes``); 0 for a lane that parks."""
    can_park = True
    """False for a lane that holds what it cannot send now (``ordering.OrderedLane``): its
    work then counts towards backpressure whatever its state."""

    def __init__(self, hook: Hook, ctx: LaneContext) -> None:
        self._ctx = ctx
        self._queue: deque[Delivery] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._starting = 0
        self._sending = 0
        self._not_before = 0.0
        self._breaker = CircuitBreaker.from_settings(ctx.settings, ctx.clock)
        self.last_intake = float("-inf")
        self.finish_by = float("inf")  # clock time sends must end by (Dispatcher.drain)
        self.gone = False
        self.held = False  # paused by an operator (the control topic): every delivery parks
        self.failure: BaseException | None = None
        self.member = hook_id_member(hook.id)
        self.hook = hook
        self._bucket: TokenBucket | None = None
        self._adaptive: AdaptiveLimiter | None = None  # rate_limit.adaptive
        self._m_rate_wait: Any = None  # exported for hooks with a rate limit only
        self.configure(hook)
        m = ctx.metrics
        # Read at scrape time: a gauge set on every delivery would cost the hot path.
        m.lane_pending.labels(hook.id).set_function(lambda: len(self._queue))
        m.lane_in_flight.labels(hook.id).set_function(lambda: self._sending)
        self.stats = m.hook_stats(hook.id)
        self.hourly = ctx.history.hourly(hook.id)
        self._m_circuit = m.circuit_state.labels(hook.id)
        self._m_circuit.set(0)
        m.hook_paused.labels(hook.id).set(0)

    def configure(self, hook: Hook) -> None:
        """Apply ``hook``'s (possibly changed) settings; a new rate limit applies at once."""
        self.hook = hook
        self.timeout_s = hook.timeout_s if hook.timeout_s is not None else self._ctx.timeout_s
        limit = hook.rate_limit
        if limit is None:
            self._bucket = self._adaptive = None
        elif limit.adaptive is not None:
            target_s = limit.adaptive.latency_target_ms
            target_s = self.timeout_s / 2 if target_s is None else target_s / 1000
            if self._adaptive is None:
                self._adaptive = AdaptiveLimiter(limit, target_s, self._ctx.clock)
                for reason in DECREASE_REASONS:  # exported at 0: a rate() of them has data
                    self._ctx.metrics.rate_limit_decreases.labels(hook.id, reason)
            else:
                self._adaptive.configure(limit, target_s)
            self._bucket = self._adaptive.bucket
        elif self._bucket is None or self._adaptive is not None:
            self._adaptive = None
            self._bucket = TokenBucket(limit.per_second, limit.capacity, self._ctx.clock)
        else:
            self._bucket.reconfigure(limit.per_second, limit.capacity)
        if limit is not None and self._m_rate_wait is None:
            m = self._ctx.metrics
            self._m_rate_wait = m.rate_limit_wait.labels(hook.id)
            m.rate_limit_current.labels(hook.id).set_function(self._current_rate)

    def _current_rate(self) -> float:
        """Requests/s the rate limit lets through now (0 once the hook has none)."""
        if self._adaptive is not None:
            return self._adaptive.rate
        return self._bucket.rate if self._bucket is not None else 0.0

    def finish_sends_by(self, deadline: float) -> None:
        """Shutting down: start no send that could not end by ``deadline`` (clock time)."""
        self.finish_by = deadline

    def held_partitions(self, bound: int) -> set[tuple[str, int]]:
        """The (topic, partition)s fetching must pause for this lane alone: none here."""
        return set()

    def retry_now(self) -> int:
        """An operator's release: what this lane holds for a retry goes now. A lane that
        parks holds nothing (its retries are in the retry topics, which the release copies);
        returns 0."""
        return 0

    def resume(self) -> None:
        """Lift a 410 Gone pause (a reload asked for it: the operator fixed the hook)."""
        if self.gone:
            self.gone = False
            self._set_paused_gauge()
            log.info("hook_resumed", hook_id=self.hook.id)

    def hold(self, paused: bool) -> None:
        """Pause (or resume) the lane for an operator: while paused every delivery is parked
        without an attempt (reason ``paused``), never dead-lettered."""
        if paused != self.held:
            self.held = paused
            self._set_paused_gauge()
            log.info("hook_paused_by_operator" if paused else "hook_resumed_by_operator",
                     hook_id=self.hook.id)  # fmt: skip

    def _set_paused_gauge(self) -> None:
        self._ctx.metrics.hook_paused.labels(self.hook.id).set(int(self.gone or self.held))

    def state(self) -> dict[str, Any]:
        """JSON-ready lane state for the admin API: paused, circuit, pending, in_flight, and
        rate_limit (``adaptive.rate_limit_view``)."""
        return {
            "paused": self.gone or self.held,
            "paused_by": "gone" if self.gone else "operator" if self.held else None,
            "circuit": self.circuit.name.lower(),
            "pending": len(self._queue),
            "in_flight": self._sending,
            "rate_limit": rate_limit_view(self.hook.rate_limit, self._adaptive),
            "ordering": None,  # ordering.OrderedLane's chains
        }

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing being sent, no worker left."""
        return not self._queue and not self._sending and not self._workers

    @property
    def pending(self) -> int:
        """Deliveries queued, not yet picked up by a worker."""
        return len(self._queue)

    @property
    def busy(self) -> int:
        """Deliveries queued or being sent."""
        return len(self._queue) + self._sending

    @property
    def circuit(self) -> Circuit:
        """The circuit state now (an open circuit past its cool-down reads half-open)."""
        return self._breaker.state

    # -- intake ---------------------------------------------------------------------------

    def submit(self, delivery: Delivery) -> None:
        """Queue ``delivery`` (or park or dead-letter it at once; see module docstring)."""
        if self.gone:
            self._dead_letter(delivery, "hook_gone")
            return
        reason = self._impaired_for(delivery)
        if reason == "slow" and len(self._queue) < self._ctx.settings.lane_max_pending:
            reason = None  # a slow lane still keeps its bound's worth, so it never runs dry
        if reason is None and len(self._queue) >= self._ctx.lane_hard_bound:
            reason = "lane_full"
        if reason is not None:
            self._park_unattempted(delivery, reason)
            return
        self._enqueue(delivery)

    def _enqueue(self, delivery: Delivery) -> None:
        """Queue ``delivery`` for a worker, starting one if the hook's concurrency allows."""
        delivery.enqueued_mono = self.last_intake = self._ctx.clock()
        self._queue.append(delivery)
        if len(self._workers) < self.hook.max_concurrency and len(self._queue) > self._starting:
            self._starting += 1
            task = asyncio.create_task(self._work(), name=f"lane:{self.hook.id}")
            self._workers.add(task)
            task.add_done_callback(self._worker_done)

    def reject(self, delivery: Delivery, reason: str) -> None:
        """Dead-letter ``delivery`` with ``reason`` without an attempt (its hook's payload
        filter could not be evaluated on it: ``filtering``)."""
        self._dead_letter(delivery, reason)

    def blocked_reason(self, delivery: Delivery | None = None) -> str | None:
        """Why a delivery must not be attempted now (``paused``: by an operator;
        ``circuit_open``: open or a half-open probe is out; ``throttled``: a Retry-After
        pause), or None. Given ``delivery``, an open circuit does not block it when it is let
        through for its first attempt (see ``_let_through``)."""
        if self._breaker.closed and not self._not_before and not self.held:
            return None  # the common case, without a clock read
        if self.held:
            return "paused"
        if self._breaker.blocks() and (delivery is None or not self._let_through(delivery)):
            return "circuit_open"
        if self._not_before - self._ctx.clock() > 1.0:
            return "throttled"
        return None

    def _let_through(self, delivery: Delivery) -> bool:
        """True for a delivery never attempted and older than the whole retry schedule while
        the circuit cools down: it gets one real attempt past the open circuit, so no
        delivery is ever dead-lettered ``retries_exhausted`` unattempted."""
        return delivery.attempts == 0 and self._breaker.cooling_down and self._expired(delivery)

    def _expired(self, delivery: Delivery) -> bool:
        """Older than the whole retry schedule (``RetryPlan.window_s``, from ``created_at``)."""
        return time.time() - delivery.created_at > self._ctx.plan.window_s

    @property
    def impaired(self) -> str | None:
        """Why new deliveries must not queue here now (``circuit_open``, ``throttled``,
        ``slow``), or None for a healthy lane.

        ``slow``: the oldest queued delivery waited over ``lane_max_wait_s`` *and* another
        lane fed within ``HUNGRY_WINDOW_S`` has room for more input. Parking only helps when
        this lane is what holds fetching back for others; a lane that is merely busy with a
        backlog nobody else shares is left to backpressure, because parking it would only
        rewrite its work to Kafka."""
        return self._impaired_for(None)

    def _impaired_for(self, delivery: Delivery | None) -> str | None:
        """``impaired``, for ``delivery`` when given (see ``blocked_reason``)."""
        reason = self.blocked_reason(delivery)
        if reason is None and self._queue:
            waited = self._ctx.clock() - self._queue[0].enqueued_mono
            if waited > self._ctx.settings.lane_max_wait_s and self._ctx.others_hungry(self):
                reason = "slow"
        return reason

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self._workers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failure = task.exception()

    # -- the worker loop ------------------------------------------------------------------

    async def _work(self) -> None:
        self._starting -= 1
        queue = self._queue
        while queue:
            self._shed_if_slow()
            delivery = queue.popleft()
            if not self._may_attempt(delivery):
                continue
            turn = None
            if self._bucket is not None or self._not_before:
                go, turn = await self._take_turn(delivery)
                if not go:
                    continue
            if self._ctx.clock() + self.timeout_s > self.finish_by:
                self._release_unfinishable(delivery)
                continue
            self._sending += 1
            try:
                if delivery.span is None:  # tracing off: the record's own trace context
                    result = await self._ctx.sender.attempt(
                        self.hook, delivery.delivery_id, delivery.body, delivery.event.trace
                    )
                else:
                    result = await self._traced_attempt(delivery)
            except Exception as e:  # a bug in the transport must not kill the lane
                log.exception("delivery_attempt_crashed", hook_id=self.hook.id)
                result = AttemptResult(None, f"internal error: {type(e).__name__}", True, None, 0.0)
            finally:
                self._sending -= 1
            self._handle(delivery, result)
            if turn is not None and self._adaptive is not None:
                self._adapt(turn, result)

    async def _take_turn(self, delivery: Delivery) -> tuple[bool, Turn | None]:
        """Wait for ``delivery``'s turn (``_wait_for_turn``); ``(False, _)`` when it must
        not be sent after all (released, or parked by a Retry-After that came meanwhile),
        else ``(True, the adaptive rate limit's turn or None)``."""
        turn = await self._wait_for_turn()
        if self._bucket is not None:
            # Per delivery, from entering the lane to its token: behind a rate
            # limit the queue is the wait (a counter of token waits summed every
            # worker's, 30 s in 1.5 s of wall time, and missed the queue).
            self._m_rate_wait.observe(self._ctx.clock() - delivery.enqueued_mono)
        if not delivery.ticket.live:  # revoked while it waited for its turn
            self._release(delivery)
            return False, None
        if self.blocked_reason() == "throttled":
            self._park_unattempted(delivery, "throttled")
            return False, None
        return True, turn

    def _adapt(self, turn: Turn, result: AttemptResult) -> None:
        """Tell the adaptive rate limit how an answer went; count and log a decrease."""
        assert self._adaptive is not None
        reason = self._adaptive.observe(turn, result)
        if reason is not None:
            self._ctx.metrics.rate_limit_decreases.labels(self.hook.id, reason).inc()
            if debug_enabled():
                rate = round(self._adaptive.rate, 2)
                log.debug("rate_limit_decreased", hook_id=self.hook.id, reason=reason,
                          status=result.status, per_second=rate)  # fmt: skip

    async def _traced_attempt(self, delivery: Delivery) -> AttemptResult:
        """One POST of ``delivery`` inside its attempt span, whose context the request
        carries (so the endpoint's spans are its children)."""
        tracer = self._ctx.tracer
        assert tracer is not None, "only a tracer sets delivery.span"
        attempt, trace = tracer.attempt_started(delivery)
        result = await self._ctx.sender.attempt(
            self.hook, delivery.delivery_id, delivery.body, trace
        )
        tracer.attempt_ended(attempt, delivery, result)
        return result

    def _may_attempt(self, delivery: Delivery) -> bool:
        """False when ``delivery`` must not be sent now: its partition is being revoked
        (released), the hook is gone (dead-lettered) or the lane is blocked (parked). A
        half-open circuit makes it the probe."""
        if not delivery.ticket.live:
            self._release(delivery)
            return False
        if delivery.delivery_id in self._ctx.delivered and not delivery.redrive:
            if debug_enabled():
                log.debug("delivery_duplicate_skipped", hook_id=self.hook.id,
                          delivery_id=delivery.delivery_id)  # fmt: skip
            self._ctx.on_finished(delivery, Outcome.DUPLICATE)
            return False
        if delivery.source is not None and self._taken_over(delivery):
            return False
        if self.gone:
            self._dead_letter(delivery, "hook_gone")
            return False
        reason = self.blocked_reason(delivery)
        if reason is not None:
            self._park_unattempted(delivery, reason)
            return False
        if not self._breaker.closed and self._breaker.take_probe(delivery):
            self._set_circuit(Circuit.HALF_OPEN)
            log.info("circuit_half_open", hook_id=self.hook.id, delivery_id=delivery.delivery_id)
        return True

    def _shed_if_slow(self) -> None:
        """A slow lane parks what it holds beyond ``lane_max_pending`` (a healthy lane may
        have taken up to one fetch batch more): fetching no longer waits for it, and it
        keeps a full bound's worth so it never runs dry (a rate limit stays exact)."""
        keep = self._ctx.settings.lane_max_pending
        if len(self._queue) > keep and self.impaired == "slow":
            while len(self._queue) > keep:
                self._park_unattempted(self._queue.pop(), "slow")

    async def _wait_for_turn(self) -> Turn | None:
        """Honour a short lane pause (Retry-After ≤ 1 s), then the token bucket, then a
        short pause that began while waiting for the token (a longer one: the caller parks).
        Returns the adaptive rate limit's turn, if the hook has one."""
        await self._short_pause()
        turn = None
        if self._adaptive is not None:
            wait, turn = self._adaptive.reserve()
        else:
            wait = self._bucket.reserve() if self._bucket is not None else 0.0
        if wait > 0:
            await asyncio.sleep(wait)
            # Taking a token must not let a request through a Retry-After that an answer
            # to another worker's request brought meanwhile.
            await self._short_pause()
        return turn

    async def _short_pause(self) -> None:
        """Sleep out a lane pause of at most 1 s; forget one that is over."""
        if self._not_before:
            pause = self._not_before - self._ctx.clock()
            if 0 < pause <= 1.0:
                await asyncio.sleep(pause)
            elif pause <= 0:
                self._not_before = 0.0  # over: back to the fast path in _may_attempt

    # -- outcomes -------------------------------------------------------------------------

    def _handle(self, delivery: Delivery, result: AttemptResult) -> None:
        if not result.ok and not delivery.ticket.live:
            # Its partition was revoked during the attempt: the next owner makes it again.
            # Parking it here would fork a second retry chain beside the next owner's.
            self.stats.count_attempt(result.status_class, result.duration_s)
            self._release(delivery)
            return
        throttled = _is_throttling(result)
        now = _record_attempt(delivery, result.status, result.error, counted=not throttled)
        self.stats.count_attempt(result.status_class, result.duration_s)
        if result.ok:
            self._note(delivery, result, now, "delivered")
            self._circuit_outcome(delivery, failed=False)
            self._delivered(delivery, result, now)
        elif throttled:
            self._note(delivery, result, now, "retrying")
            self._breaker.throttled(delivery)
            self._retry_throttled(delivery, result)
        elif result.retryable:
            gives_up = delivery.attempts >= self._ctx.plan.max_attempts
            self._note(delivery, result, now, "dead_lettered" if gives_up else "retrying")
            self._circuit_outcome(delivery, failed=True)
            self._retry_or_give_up(delivery, result)
        elif result.status == _GONE:
            self._note(delivery, result, now, "dead_lettered")
            self._circuit_outcome(delivery, failed=False)  # it answered: the endpoint is up
            self._log(delivery, result, "delivery_failed")
            self._pause_gone()
            self._dead_letter(delivery, "hook_gone")
        else:
            self._note(delivery, result, now, "dead_lettered")
            self._circuit_outcome(delivery, failed=False)  # a 4xx answer: the endpoint is up
            self._log(delivery, result, "delivery_failed")
            self._dead_letter(delivery, "permanent_failure")

    def _note(self, delivery: Delivery, result: AttemptResult, now: float, outcome: str) -> None:
        """Count the attempt for the admin API: the hook's 24 h counts and the attempt log."""
        self.hourly.count(result.ok, now)
        self._ctx.history.attempts.record(now, delivery, result, outcome)

    def _delivered(self, delivery: Delivery, result: AttemptResult, now: float) -> None:
        self._ctx.delivered.add(delivery.delivery_id)
        latency = now - delivery.event.origin.timestamp_ms / 1000.0
        self.stats.latency.observe(max(0.0, latency))
        first = delivery.first_attempt_at
        if first is not None and first < now:
            # Its failures were warnings: say at the same level of attention that it got there.
            log.info("delivery_recovered", hook_id=self.hook.id, delivery_id=delivery.delivery_id,
                     event_name=delivery.event.name, attempt=delivery.attempts,
                     first_attempt_at=_iso(first), total_delay_s=round(now - first, 3),
                     status=result.status)  # fmt: skip
        elif debug_enabled():
            self._log(delivery, result, "delivery_succeeded")
        self._ctx.on_finished(delivery, Outcome.DELIVERED)

    def _retry_or_give_up(self, delivery: Delivery, result: AttemptResult) -> None:
        plan = self._ctx.plan
        if delivery.attempts >= plan.max_attempts:
            self._log(delivery, result, "delivery_failed", gave_up=True)
            self._dead_letter(delivery, "retries_exhausted")
            return
        wait = result.retry_after_s or 0.0
        tier = plan.tier(delivery.attempts - 1, wait)
        where = self._retry_tier(tier)
        self._ctx.metrics.retries_scheduled.labels(self.hook.id, where).inc()
        due_ms = self._park(delivery, tier, wait, "retry")
        self._log(delivery, result, "delivery_failed", retry_tier=where,
                  due_at=_iso(due_ms / 1000) if due_ms else None)  # fmt: skip

    def _retry_throttled(self, delivery: Delivery, result: AttemptResult) -> None:
        """The endpoint asked to be called later (429, or 503 with Retry-After): pause the
        lane for its Retry-After, and park the delivery like an unattempted one, one tier
        further each time and never sooner than the pause. The answer counts towards neither
        the schedule nor the circuit: an endpoint that throttles is alive, so its deliveries
        never expire."""
        plan = self._ctx.plan
        wait = result.retry_after_s or 0.0
        if wait:
            self._not_before = max(self._not_before, self._ctx.clock() + wait)
        tier = plan.tier(max(delivery.attempts - 1, delivery.parks), wait)
        delivery.parks += 1
        where = self._retry_tier(tier)
        self._ctx.metrics.retries_scheduled.labels(self.hook.id, where).inc()
        due_ms = self._park(delivery, tier, wait, "throttled")
        log.info("delivery_throttled", hook_id=self.hook.id, delivery_id=delivery.delivery_id,
                 event_name=delivery.event.name, attempt=delivery.attempts,
                 status=result.status, retry_after_s=result.retry_after_s,
                 retry_tier=where,
                 due_at=_iso(due_ms / 1000) if due_ms else None)  # fmt: skip

    def _park_unattempted(self, delivery: Delivery, reason: str) -> None:
        """Park a delivery that was not attempted now (slow, throttled, circuit open, full).

        No attempt is counted: an endpoint that recovers gets its full schedule. Each park
        goes one tier further than the last (so a long impairment costs few rewrites), never
        sooner than the pause or cool-down it waits out. Behind a circuit that is open (not
        half-open with its probe out), a delivery older than the whole schedule
        (``RetryPlan.window_s``, counted from ``created_at``) that has failed a real attempt
        is given up instead, so a dead endpoint still ends every delivery in the dead-letter
        topic; one never attempted was let through for an attempt (``_let_through``). A
        slow, throttled or full lane's endpoint is alive, so its deliveries never expire."""
        plan = self._ctx.plan
        if self._expires_behind_circuit(delivery, reason):
            self._dead_letter(delivery, "retries_exhausted")
            return
        self._ctx.metrics.parked.labels(self.hook.id, reason).inc()
        wait = self._unattempted_wait_s(reason)
        tier = plan.tier(max(delivery.attempts - 1, delivery.parks), wait)
        delivery.parks += 1
        # The admin API's log shows parks too: "why does my hook get nothing?" has an answer.
        parked = AttemptResult(None, f"parked: {reason}", True, None, 0.0)
        self._ctx.history.attempts.record(time.time(), delivery, parked, "parked")
        if debug_enabled():
            log.debug("delivery_parked", hook_id=self.hook.id, delivery_id=delivery.delivery_id,
                      reason=reason, retry_tier=plan.topics[tier])  # fmt: skip
        self._park(delivery, tier, wait, reason)

    def _retry_tier(self, tier: int) -> str:
        """Where a retry of tier ``tier`` waits, as logs and ``retries_scheduled`` name it:
        the tier's retry topic."""
        return self._ctx.plan.topics[tier]

    def _expires_behind_circuit(self, delivery: Delivery, reason: str) -> bool:
        """True when ``delivery``, not attempted now for ``reason``, is given up instead
        (see ``_park_unattempted``): an open circuit cooling down, at least one real attempt
        failed, and older than the whole schedule."""
        return (
            reason == "circuit_open"
            and delivery.attempts > 0
            and self._breaker.cooling_down
            and self._expired(delivery)
        )

    def _unattempted_wait_s(self, reason: str) -> float:
        """Seconds a delivery not attempted for ``reason`` must wait at least: the circuit's
        cool-down left, else the lane's Retry-After pause left (0 for the others)."""
        if reason == "circuit_open":
            wait = self._breaker.cooldown_left_s
        else:
            wait = self._not_before - self._ctx.clock()
        return max(0.0, wait)

    def _park(self, delivery: Delivery, tier: int, min_wait_s: float, why: str) -> int | None:
        """Write ``delivery`` to retry tier ``tier``; return when it is due (epoch ms), or
        None when it was released instead (its partition is being revoked) or a release
        re-drove it (``_taken_over``)."""
        if not self._may_write(delivery):
            return None
        outbound, due_ms = parked_record(self._ctx, delivery, tier, min_wait_s)
        self._ctx.writer.submit(outbound, lambda: self._ctx.on_finished(delivery, Outcome.PARKED))
        return due_ms

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        if not self._may_write(delivery):
            return
        letter = failed_delivery(self._ctx.dead_letter_topic, delivery, reason, self._ctx.group)
        finished = self._ctx.on_finished

        def written() -> None:
            self._ctx.metrics.dead_lettered.labels(reason).inc()
            finished(delivery, Outcome.DEAD_LETTERED, reason)

        log.warning("delivery_dead_lettered", hook_id=self.hook.id, reason=reason,
                    delivery_id=delivery.delivery_id, event_name=delivery.event.name,
                    attempt=delivery.attempts, error=delivery.last_error)  # fmt: skip
        self._ctx.writer.submit(letter, written, lambda: finished(delivery, Outcome.DROPPED))

    # -- lane state -----------------------------------------------------------------------

    def _pause_gone(self) -> None:
        if not self.gone:
            self.gone = True
            self._set_paused_gauge()
            log.error("hook_paused_gone", hook_id=self.hook.id,
                      hint="the endpoint answered 410 Gone; fix the hook and reload")  # fmt: skip

    def _circuit_outcome(self, delivery: Delivery, *, failed: bool) -> None:
        """Tell the breaker how a real attempt went; log and export what that changed."""
        breaker = self._breaker
        probe = breaker.is_probe(delivery)
        if failed:
            change = breaker.failed(delivery, pending=self._sending)
        else:
            change = breaker.succeeded(delivery)
        if change is Circuit.OPEN:
            # After a failed probe the window is the one that opened the circuit before.
            failures, attempts = (None, None) if probe else breaker.counts()
            log.warning("circuit_opened", hook_id=self.hook.id, probe_failed=probe,
                        failures=failures, attempts=attempts,
                        cooldown_s=self._ctx.settings.circuit_cooldown_s)  # fmt: skip
        elif change is Circuit.CLOSED:
            log.info("circuit_closed", hook_id=self.hook.id)
        if change is not None:
            self._set_circuit(change)

    def _set_circuit(self, state: Circuit) -> None:
        self._m_circuit.set(state.value)

    def _log(self, delivery: Delivery, result: AttemptResult, name: str, **extra: object) -> None:
        # Successes are the bulk of traffic: debug keeps them out of a production log
        # (and off the hot path); every failure is a warning.
        level = log.debug if result.ok else log.warning
        level(
            name,
            hook_id=self.hook.id,
            delivery_id=delivery.delivery_id,
            event_name=delivery.event.name,
            attempt=delivery.attempts,
            status=result.status,
            error=result.error,
            duration_ms=round(result.duration_s * 1000, 1),
            **extra,
        )

    def _may_write(self, delivery: Delivery) -> bool:
        """True when ``delivery`` may be parked or dead-lettered now. Otherwise it was
        released (its partition is being revoked: see ``_handle``, never fork a revoked
        partition's work) or settled ``superseded`` (``_taken_over``)."""
        if not delivery.ticket.live:
            self._release(delivery)
            return False
        return not self._taken_over(delivery)

    def _taken_over(self, delivery: Delivery) -> bool:
        """True, and ``delivery`` settled ``superseded`` without a write, when it was taken
        back from a retry record an operator's release has re-drove a copy of since (see
        ``kafka.control``): parking or dead-lettering it too would fork a second chain of
        the same delivery beside the copy's."""
        source = delivery.source
        if source is None or not self._ctx.superseded(self.hook.id, *source):
            return False
        self._ctx.metrics.retries_superseded.inc()
        self._ctx.on_finished(delivery, Outcome.SUPERSEDED)
        return True

    def _release(self, delivery: Delivery) -> None:
        """Give ``delivery`` up here without an outcome (see ``Dispatcher._released``); a
        probe frees the circuit's probe slot."""
        self._breaker.released(delivery)
        self._ctx.on_released(delivery)

    def _release_unfinishable(self, delivery: Delivery) -> None:
        """Shutting down, and ``delivery`` (like every one queued behind it: same timeout)
        could not finish before the drain deadline: release them all, unsent."""
        self._release(delivery)
        while self._queue:
            self._release(self._queue.popleft())

    def release_revoked(self) -> int:
        """Release the queued deliveries whose partition is being revoked (not ``live``):
        neither sent nor parked, their next owner makes them. Returns how many."""
        released = [d for d in self._queue if not d.ticket.live]
        if released:
            kept = [d for d in self._queue if d.ticket.live]
            self._queue.clear()  # in place: workers hold a reference to this deque
            self._queue.extend(kept)
        for delivery in released:
            self._release(delivery)
        return len(released)

    async def close(self) -> int:
        """Cancel workers; return how many deliveries were abandoned (left unsettled)."""
        abandoned = len(self._queue) + self._sending
        self._queue.clear()
        workers = list(self._workers)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        return abandoned


def _is_throttling(result: AttemptResult) -> bool:
    """True for a retryable 429, or a 503 that says when to come back (``Retry-After``): the
    endpoint is alive and asks to be called later. A 503 without ``Retry-After`` is what a
    load balancer answers when no backend is left, so it is a failure like any 5xx."""
    if not result.retryable:
        return False
    return result.status == _TOO_MANY_REQUESTS or (
        result.status == _UNAVAILABLE and result.retry_after_s is not None
    )


def _record_attempt(
    delivery: Delivery, status: int | None, error: str | None, *, counted: bool = True
) -> float:
    """Note one POST on ``delivery``, counting it as an attempt of its schedule unless
    ``counted`` is False (a throttled answer); return its time (epoch seconds)."""
    now = time.time()
    delivery.attempts += counted
    if delivery.first_attempt_at is None:
        delivery.first_attempt_at = now
    delivery.last_attempt_at = now
    delivery.last_status = status
    delivery.last_error = error
    return now


def epoch_ms(epoch_s: float | None) -> int | None:
    """Epoch seconds as whole epoch milliseconds (None stays None)."""
    return None if epoch_s is None else int(epoch_s * 1000)


def parked_record(
    ctx: LaneContext, delivery: Delivery, tier: int, min_wait_s: float, partition: int | None = None
) -> tuple[OutboundRecord, int]:
    """The record that parks ``delivery`` in retry tier ``tier``, and when it is due (epoch
    ms): after the tier's (jittered) delay, not before ``min_wait_s``; ``partition`` as
    ``OutboundRecord``'s ``partition_hint`` (None: by key)."""
    due = ctx.plan.due_at_ms(tier, time.time(), ctx.jitter(), min_wait_s)
    headers = RetryHeaders(_retry_record(delivery, due, ctx.group))
    event = delivery.event
    topic = ctx.plan.topics[tier]
    return OutboundRecord(topic, event.raw, event.key, headers, "retry", partition), due


def _iso(epoch_s: float) -> str:
    """An epoch time as ISO-8601 UTC with milliseconds, as log timestamps are written."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def _retry_record(delivery: Delivery, due_at_ms: int, group: str) -> RetryRecord:
    """The retry record that parks ``delivery`` until ``due_at_ms``, written by ``group``."""
    origin = delivery.event.origin
    return RetryRecord(
        hook_id=delivery.hook.id,
        event=delivery.event.name,
        delivery_id=delivery.delivery_id,
        attempts=delivery.attempts,
        first_attempt_at_ms=epoch_ms(delivery.first_attempt_at),
        last_attempt_at_ms=epoch_ms(delivery.last_attempt_at),
        last_status=delivery.last_status,
        error=delivery.last_error or "",
        due_at_ms=due_at_ms,
        origin_topic=origin.topic,
        origin_partition=origin.partition,
        origin_offset=origin.offset,
        origin_timestamp_ms=origin.timestamp_ms,
        created_at_ms=int(delivery.created_at * 1000),
        parks=delivery.parks,
        group=group,
        unknown_since_ms=epoch_ms(delivery.unknown_since),
        unknown_parks=delivery.unknown_parks,
        redrive=delivery.redrive,
        trace=delivery.event.trace,
    )
