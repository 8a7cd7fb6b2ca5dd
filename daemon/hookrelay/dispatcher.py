"""Fan deliveries out to one lane per hook, and decide what each attempt's result means.

A **lane** serves one hook: a FIFO of pending deliveries, a token bucket (the hook's rate
limit), and at most ``max_concurrency`` worker tasks, spawned lazily when work arrives and
exiting when the FIFO is empty (kopf's per-key worker). Lanes share nothing but the sender's
connection pool, so a slow, throttled or failing endpoint only ever holds its own workers:
other hooks' sends never wait behind it.

After each attempt:

- delivered → settle the record's ack ticket;
- retryable failure with attempts left → wait ``retry_schedule_s[n]`` (± jitter, and no
  earlier than the endpoint's ``Retry-After``), then queue it again in its lane; a 429/503
  with ``Retry-After`` also pauses the whole lane until then;
- permanent failure, or schedule exhausted → hand it to the dead-letter writer, which settles
  the ticket once the broker acknowledged the write.

Retries wait in process (timer handles, not tasks) in this version; they count as in flight,
so backpressure still bounds memory. ``in_flight`` counts deliveries accepted and not yet
settled; the source pauses fetching when it reaches ``delivery.max_in_flight``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hookrelay.config import DeliverySettings, Hook
from hookrelay.deadletter import DeadLetterWriter, failed_delivery
from hookrelay.logs import get_logger
from hookrelay.metrics import Metrics
from hookrelay.model import AttemptResult, Delivery, Event, Outcome
from hookrelay.offsets import AckTicket
from hookrelay.ratelimit import Clock, TokenBucket
from hookrelay.sender import Sender
from hookrelay.signing import delivery_id, hook_id_member, splice_hook_id

log = get_logger("hookrelay.dispatcher")

_LANE_PAUSING_STATUSES = (429, 503)


@dataclass(frozen=True, slots=True)
class _Context:
    """What every lane shares: collaborators, settings, clock and bookkeeping callbacks."""

    sender: Sender
    dead_letters: DeadLetterWriter
    metrics: Metrics
    settings: DeliverySettings
    clock: Clock
    jitter: Callable[[], float]
    on_finished: Callable[[Delivery, Outcome], None]


class Lane:
    """One hook's delivery lane (see module docstring). Created and closed by ``Dispatcher``."""

    def __init__(self, hook: Hook, ctx: _Context) -> None:
        self._ctx = ctx
        self._queue: deque[Delivery] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._starting = 0
        self._sending = 0
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._not_before = 0.0
        self.failure: BaseException | None = None
        self.member = hook_id_member(hook.id)
        self.hook = hook
        self._bucket: TokenBucket | None = None
        self.configure(hook)
        m = ctx.metrics
        self._m_pending = m.lane_pending.labels(hook.id)
        self._m_sending = m.lane_in_flight.labels(hook.id)
        self._m_waiting = m.lane_retry_waiting.labels(hook.id)
        self._m_duration = m.request_duration.labels(hook.id)
        self._m_rate_wait = m.rate_limit_wait.labels(hook.id)

    def configure(self, hook: Hook) -> None:
        """Apply ``hook``'s (possibly changed) settings; a new rate limit applies at once."""
        self.hook = hook
        limit = hook.rate_limit
        if limit is None:
            self._bucket = None
        elif self._bucket is None:
            self._bucket = TokenBucket(limit.per_second, limit.capacity, self._ctx.clock)
        else:
            self._bucket.reconfigure(limit.per_second, limit.capacity)

    @property
    def pending(self) -> int:
        """Deliveries queued, not yet picked up by a worker."""
        return len(self._queue)

    @property
    def busy(self) -> int:
        """Deliveries queued or being sent (not those waiting for a retry)."""
        return len(self._queue) + self._sending

    @property
    def retry_waiting(self) -> int:
        """Deliveries waiting in process for their next attempt."""
        return len(self._timers)

    def submit(self, delivery: Delivery) -> None:
        """Queue ``delivery`` and make sure a worker will pick it up."""
        delivery.enqueued_mono = self._ctx.clock()
        self._queue.append(delivery)
        self._m_pending.set(len(self._queue))
        if len(self._workers) < self.hook.max_concurrency and len(self._queue) > self._starting:
            self._starting += 1
            task = asyncio.create_task(self._work(), name=f"lane:{self.hook.id}")
            self._workers.add(task)
            task.add_done_callback(self._worker_done)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self._workers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failure = task.exception()

    async def _work(self) -> None:
        self._starting -= 1
        while self._queue:
            delivery = self._queue.popleft()
            self._m_pending.set(len(self._queue))
            await self._wait_for_turn()
            self._sending += 1
            self._m_sending.set(self._sending)
            try:
                result = await self._attempt(delivery)
            finally:
                self._sending -= 1
                self._m_sending.set(self._sending)
            self._handle(delivery, result)

    async def _wait_for_turn(self) -> None:
        """Honour a lane pause (Retry-After), then the token bucket."""
        pause = self._not_before - self._ctx.clock()
        if pause > 0:
            await asyncio.sleep(pause)
        if self._bucket is not None:
            wait = self._bucket.reserve()
            if wait > 0:
                self._m_rate_wait.inc(wait)
                await asyncio.sleep(wait)

    async def _attempt(self, delivery: Delivery) -> AttemptResult:
        try:
            return await self._ctx.sender.attempt(self.hook, delivery.delivery_id, delivery.body)
        except Exception as e:  # a bug in the transport must not kill the lane
            log.exception("delivery_attempt_crashed", hook_id=self.hook.id)
            return AttemptResult(None, f"internal error: {type(e).__name__}", True, None, 0.0)

    def _handle(self, delivery: Delivery, result: AttemptResult) -> None:
        now = time.time()
        delivery.attempts += 1
        if delivery.first_attempt_at is None:
            delivery.first_attempt_at = now
        delivery.last_attempt_at = now
        delivery.last_status = result.status
        delivery.last_error = result.error
        metrics = self._ctx.metrics
        metrics.attempts.labels(self.hook.id, result.status_class).inc()
        self._m_duration.observe(result.duration_s)
        if result.ok:
            latency = now - delivery.event.origin.timestamp_ms / 1000.0
            metrics.end_to_end_latency.labels(self.hook.id).observe(max(0.0, latency))
            self._log(delivery, result, "delivery_succeeded")
            self._ctx.on_finished(delivery, Outcome.DELIVERED)
        elif result.retryable and delivery.attempts <= len(self._ctx.settings.retry_schedule_s):
            self._schedule_retry(delivery, result)
        else:
            self._dead_letter(delivery, result)

    def _retry_delay(self, delivery: Delivery, result: AttemptResult) -> float:
        base = self._ctx.settings.retry_schedule_s[delivery.attempts - 1]
        spread = self._ctx.settings.retry_jitter
        delay = base * (1.0 + spread * (2.0 * self._ctx.jitter() - 1.0))
        if result.retry_after_s is not None:
            delay = max(delay, result.retry_after_s)
        return max(0.0, delay)

    def _schedule_retry(self, delivery: Delivery, result: AttemptResult) -> None:
        delay = self._retry_delay(delivery, result)
        if result.retry_after_s is not None and result.status in _LANE_PAUSING_STATUSES:
            self._not_before = max(self._not_before, self._ctx.clock() + result.retry_after_s)
        self._ctx.metrics.retries_scheduled.labels(self.hook.id).inc()
        self._log(delivery, result, "delivery_retry_scheduled", retry_in_s=round(delay, 3))
        key = id(delivery)
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._retry_due, key, delivery)
        self._m_waiting.set(len(self._timers))

    def _retry_due(self, key: int, delivery: Delivery) -> None:
        self._timers.pop(key, None)
        self._m_waiting.set(len(self._timers))
        self.submit(delivery)

    def _dead_letter(self, delivery: Delivery, result: AttemptResult) -> None:
        reason = "retries_exhausted" if result.retryable else "permanent_failure"
        self._log(delivery, result, "delivery_dead_lettered", reason=reason)
        self._ctx.dead_letters.submit(
            failed_delivery(delivery, reason),
            lambda: self._ctx.on_finished(delivery, Outcome.DEAD_LETTERED),
        )

    def _log(self, delivery: Delivery, result: AttemptResult, name: str, **extra: object) -> None:
        level = log.info if result.ok else log.warning
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

    async def close(self) -> int:
        """Cancel workers and pending retry timers; return how many deliveries were abandoned."""
        abandoned = len(self._queue) + len(self._timers) + self._sending
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._queue.clear()
        workers = list(self._workers)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._m_pending.set(0)
        self._m_waiting.set(0)
        return abandoned


class Dispatcher:
    """Owns the lanes; turns (event, matching hooks, ack ticket) into deliveries.

    ``in_flight`` counts deliveries accepted and not yet settled (delivered or
    dead-lettered). The clock (monotonic seconds) and jitter source (``[0, 1)``) are
    injectable for tests.
    """

    def __init__(
        self,
        sender: Sender,
        dead_letters: DeadLetterWriter,
        metrics: Metrics,
        settings: DeliverySettings,
        *,
        clock: Clock = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._ctx = _Context(sender, dead_letters, metrics, settings, clock, jitter, self._finished)
        self._lanes: dict[str, Lane] = {}
        self._retired: list[Lane] = []
        self.in_flight = 0
        self._metrics = metrics

    def set_hooks(self, hooks: Iterable[Hook]) -> None:
        """Create or reconfigure a lane per enabled hook; lanes of removed hooks are retired
        (their queued work still finishes)."""
        wanted = {h.id: h for h in hooks if h.enabled}
        for hook_id in list(self._lanes):
            if hook_id not in wanted:
                self._retired.append(self._lanes.pop(hook_id))
        for hook_id, hook in wanted.items():
            lane = self._lanes.get(hook_id)
            if lane is None:
                self._lanes[hook_id] = Lane(hook, self._ctx)
            else:
                lane.configure(hook)

    def lane(self, hook_id: str) -> Lane:
        """The lane serving ``hook_id`` (``KeyError`` if the hook is not enabled)."""
        return self._lanes[hook_id]

    def submit(self, event: Event, hooks: tuple[Hook, ...], ticket: AckTicket) -> None:
        """Queue one delivery of ``event`` per hook in ``hooks``; each settles ``ticket`` once."""
        origin = event.origin
        for hook in hooks:
            lane = self._lanes[hook.id]
            body = splice_hook_id(event.body_head, event.empty, lane.member)
            did = delivery_id(origin.topic, origin.partition, origin.offset, hook.id)
            lane.submit(Delivery(event, hook, did, body, ticket))
        self.in_flight += len(hooks)
        self._metrics.in_flight.set(self.in_flight)

    def _finished(self, delivery: Delivery, outcome: Outcome) -> None:
        self.in_flight -= 1
        self._metrics.in_flight.set(self.in_flight)
        self._metrics.deliveries.labels(delivery.hook.id, outcome.value).inc()
        delivery.ticket.settle()

    def check_health(self) -> None:
        """Re-raise the first unexpected crash of a lane worker (the supervisor calls this)."""
        for lane in (*self._lanes.values(), *self._retired):
            if lane.failure is not None:
                raise RuntimeError(f"lane {lane.hook.id} crashed") from lane.failure

    @property
    def busy(self) -> int:
        """Deliveries queued or being sent, plus dead letters not yet acknowledged."""
        lanes = (*self._lanes.values(), *self._retired)
        return sum(lane.busy for lane in lanes) + self._ctx.dead_letters.pending

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is queued or being sent (retry waits excluded), at most
        ``timeout_s`` seconds. Returns True when drained."""
        deadline = time.monotonic() + timeout_s
        # busy sums every lane and the dead-letter queue; a 50 ms poll during shutdown is
        # simpler than a condition all of them would have to signal.
        while self.busy and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return self.busy == 0

    async def close(self) -> int:
        """Stop every lane; return the number of deliveries abandoned (left unsettled, so
        their records are consumed again after restart)."""
        lanes = [*self._lanes.values(), *self._retired]
        self._lanes.clear()
        self._retired.clear()
        counts = await asyncio.gather(*(lane.close() for lane in lanes))
        for lane, count in zip(lanes, counts, strict=True):
            if count:
                self._metrics.deliveries.labels(lane.hook.id, Outcome.ABANDONED.value).inc(count)
        return sum(counts)
