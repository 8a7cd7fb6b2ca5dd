"""Fan deliveries out to one lane per hook (``lane``): one delivery per (event, matching
hook), retries taken back from the retry topics, releases on revocation, and backpressure.

Backpressure is for healthy lanes only. ``Dispatcher.load()`` is the largest of (work held by
unimpaired lanes and the Kafka writer) / ``delivery.max_in_flight``, the fullest unimpaired
lane's queue / ``delivery.lane_max_pending``, and the bodies ordered lanes hold /
``delivery.ordering_max_held_bytes`` (an ordered lane's work counts whatever its state: it
cannot be parked); the source pauses fetching at 1.0. An ordered lane's followers (behind a
blocked key's head) count in the bytes only: a partition they reach
``delivery.lane_max_pending`` in is paused alone (``held_partitions``).
So a backlog for a fast hook slows fetching to that hook's pace (nothing parked, nothing
lost), while an impaired hook's work goes to the retry topics and never holds the others.
``Dispatcher.in_flight`` counts deliveries accepted and not yet settled.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from hookrelay.config import DeliverySettings, Hook
from hookrelay.delivery.circuit import Circuit
from hookrelay.delivery.filtering import EventScreen, FilterGate
from hookrelay.delivery.lane import Lane, LaneContext, RecentIds, parked_record
from hookrelay.delivery.ordering import OrderedLane
from hookrelay.delivery.ratelimit import Clock
from hookrelay.delivery.sender import Sender
from hookrelay.events.model import Delivery, Event, Outcome
from hookrelay.events.signing import delivery_id, hook_id_member
from hookrelay.kafka.control import BlockedKeys
from hookrelay.kafka.deadletter import failed_delivery
from hookrelay.kafka.offsets import AckTicket
from hookrelay.kafka.outcomes import OutcomeLog
from hookrelay.kafka.retries import RetryPlan, RetryRecord
from hookrelay.kafka.writer import DurableWriter
from hookrelay.ops.history import History
from hookrelay.ops.logs import get_logger
from hookrelay.ops.metrics import Metrics
from hookrelay.ops.tracing import DeliveryTracer

log = get_logger("hookrelay.dispatcher")

__all__ = ["HUNGRY_WINDOW_S", "Circuit", "Dispatcher", "Lane"]

HUNGRY_WINDOW_S = 30.0
"""A lane fed within this many seconds still wants work (fetching may be paused)."""
UNKNOWN_HOOK_RECHECK_S = 60.0
"""A retry for a hook this replica does not know is parked again in the tiers that wait at
most this long (see ``Dispatcher._park_unknown``), so a replica looks at it again soon."""
RECENTLY_DELIVERED: Final = 20_000
"""Webhook-ids of the last deliveries this process delivered, kept to settle a copy of one
without a request: after a kill -9 the records settled in the last commit interval come back,
a parked delivery both from its re-read event and from its retry record (a slow hook parks
hundreds a second). About 3 MB."""


class Dispatcher:
    """Owns the lanes; turns (event, matching hooks, ack ticket) into deliveries.

    ``in_flight`` counts deliveries accepted and not yet settled. The clock (monotonic
    seconds) and jitter source (``[0, 1)``) are injectable for tests. ``tracer``, when
    given (``tracing.enabled``), gets a span per delivery, from here until it settles, and
    one per attempt. ``blocked`` holds the keys ordered hooks keep blocked after a dead
    letter (``kafka.control.BlockedKeys``, the daemon's ``ControlState.blocked``); lanes
    write new blocks to ``control_topic``.
    """

    def __init__(
        self,
        sender: Sender,
        writer: DurableWriter,
        metrics: Metrics,
        settings: DeliverySettings,
        *,
        retry_topics: tuple[str, ...],
        dead_letter_topic: str,
        group: str = "hookrelay",
        batch_size: int = 500,
        timeout_s: float = 10.0,
        clock: Clock = time.monotonic,
        jitter: Callable[[], float] = random.random,
        history: History | None = None,
        outcomes: OutcomeLog | None = None,
        tracer: DeliveryTracer | None = None,
        superseded: Callable[[str, str, int, int], bool] = lambda *_: False,
        events_waiting: Callable[[], bool] = lambda: False,
        control_topic: str = "hookrelay.control",
        blocked: BlockedKeys | None = None,
    ) -> None:
        plan = RetryPlan(settings.retry_schedule_s, retry_topics, settings.retry_jitter)
        # Backpressure acts between fetch batches, so a healthy lane may overshoot its bound
        # by one batch; only beyond that is its excess parked.
        hard_bound = settings.lane_max_pending + batch_size
        self._ctx = LaneContext(
            sender, writer, metrics, settings, plan, dead_letter_topic, group, hard_bound,
            timeout_s, clock, jitter, self._finished, self._released, self._others_hungry,
            history or History(), RecentIds(RECENTLY_DELIVERED), tracer, superseded,
            control_topic, blocked or BlockedKeys(),
        )  # fmt: skip
        self._lanes: dict[str, Lane] = {}
        self._retired: list[Lane] = []
        self._held: set[str] = set()  # hooks an operator paused (kafka.control)
        self._events_waiting = events_waiting  # Source.events_waiting
        self.in_flight = 0
        self._metrics = metrics
        self._outcomes = outcomes
        self._filters = FilterGate(metrics, self._finished)
        metrics.in_flight.set_function(lambda: self.in_flight)

    def set_hooks(self, hooks: Iterable[Hook]) -> None:
        """Create or reconfigure a lane per enabled hook (a changed rate limit applies at
        once, a 410 pause is lifted); lanes of removed or disabled hooks are retired: their
        queued work still finishes, then they are dropped."""
        wanted = {h.id: h for h in hooks if h.enabled}
        for hook_id in list(self._lanes):
            if hook_id not in wanted:
                self._retired.append(self._lanes.pop(hook_id))
        for hook_id, hook in wanted.items():
            lane = self._lanes.get(hook_id) or self._revive(hook_id)
            if lane is not None and hook.ordering == "key" and not lane.chains_keys:
                # Switched on: what the plain lane holds finishes there, unordered.
                self._retired.append(self._lanes.pop(hook_id))
                lane = None
            if lane is None:
                lane_type = OrderedLane if hook.ordering == "key" else Lane
                lane = self._lanes[hook_id] = lane_type(hook, self._ctx)
                lane.hold(hook_id in self._held)
            else:
                # An ordered lane switched off keeps its chains and starts no new one: a key
                # it holds is not overtaken by its next events (``prune_retired`` replaces
                # it by a plain lane once it is idle).
                lane.configure(hook)
                lane.resume()
        self.prune_retired()

    def _revive(self, hook_id: str) -> Lane | None:
        """The retired ordered lane of a hook enabled again (or switched back on) while it
        still holds chains: it serves the hook again, so the keys it holds stay ahead of
        their later events. None when there is none."""
        for lane in reversed(self._retired):
            if lane.hook.id == hook_id and lane.chains_keys and not lane.idle:
                self._retired.remove(lane)
                self._lanes[hook_id] = lane
                return lane
        return None

    def set_paused(self, hook_id: str, paused: bool) -> None:
        """Pause or resume ``hook_id`` for an operator (``kafka.control``); remembered for a
        hook not configured yet, whose lane starts paused."""
        if paused:
            self._held.add(hook_id)
        else:
            self._held.discard(hook_id)
        lane = self._lanes.get(hook_id)
        if lane is not None:
            lane.hold(paused)

    def retry_held_now(self, hook_id: str) -> None:
        """An operator released ``hook_id`` (``kafka.control``): the retries its lane holds
        in memory (an ordered hook's) are attempted now; logged with their count."""
        lane = self._lanes.get(hook_id)
        count = lane.retry_now() if lane is not None else 0
        if count:
            log.info("held_retries_released", hook_id=hook_id, count=count)

    def prune_retired(self) -> None:
        """Drop retired lanes that finished their work, and their per-lane gauges; an
        ordered lane whose hook was switched to ``ordering: none`` is replaced by a plain
        one once it holds nothing."""
        for hook_id, lane in list(self._lanes.items()):
            if lane.chains_keys and lane.hook.ordering != "key" and lane.idle:
                plain = self._lanes[hook_id] = Lane(lane.hook, self._ctx)
                plain.hold(hook_id in self._held)
                plain.gone = lane.gone  # a 410 pause lasts until a reload lifts it
                self._metrics.forget_ordering(hook_id)
        done = [lane for lane in self._retired if lane.idle and lane.failure is None]
        for lane in done:
            self._retired.remove(lane)
            if lane.hook.id not in self._lanes:
                self._metrics.forget_lane(lane.hook.id)

    def lane_state(self, hook_id: str) -> dict[str, Any] | None:
        """``Lane.state()`` of an enabled hook, or None."""
        lane = self._lanes.get(hook_id)
        return None if lane is None else lane.state()

    def lane(self, hook_id: str) -> Lane:
        """The lane serving ``hook_id`` (``KeyError`` if the hook is not enabled)."""
        return self._lanes[hook_id]

    def has_lane(self, hook_id: str) -> bool:
        """True when ``hook_id`` is an enabled hook."""
        return hook_id in self._lanes

    def submit(self, event: Event, hooks: tuple[Hook, ...], ticket: AckTicket) -> None:
        """Queue one delivery of ``event`` per hook in ``hooks``; each settles ``ticket`` once.
        A hook's payload filter may settle its pair here instead (``filtering``)."""
        origin = event.origin
        tracer = self._ctx.tracer
        self.in_flight += len(hooks)
        screen: EventScreen | None = None  # the event's JSON, parsed once if a filter asks
        for hook in hooks:
            lane = self._lanes[hook.id]
            did = delivery_id(origin.topic, origin.partition, origin.offset, hook.id)
            delivery = Delivery(event, hook, did, lane.member, ticket)
            if hook.filter is not None:
                screen = screen or EventScreen(event.raw)
                if not self._filters.admits(screen, lane, delivery):
                    continue
            if tracer is not None:
                tracer.delivery_started(delivery)
            lane.submit(delivery)

    def resubmit(
        self,
        event: Event,
        retry: RetryRecord,
        ticket: AckTicket,
        source: tuple[str, int, int] | None = None,
    ) -> None:
        """Take a delivery back from a retry topic, with its attempt history.

        A retry for a hook this replica does not know (removed, disabled, or not yet added:
        a rolling update runs replicas with different hook sets) is parked again for up to
        ``delivery.unknown_hook_grace_s`` from when a replica first met it, each time in the
        next (tier, partition) of the tiers that wait at most ``UNKNOWN_HOOK_RECHECK_S``, so
        it visits every partition of them, and so every replica that owns one, until one that
        knows the hook takes it; after the grace period it is dead-lettered ``hook_removed``.
        Everything that can fail runs before any state changes, so an exception (a bug)
        leaves nothing behind and the caller can dead-letter the record instead. ``source``
        is the retry record's (topic, partition, offset), for a release that re-drives it
        while it is here (``Lane._taken_over``).
        """
        lane = self._lanes.get(retry.hook_id)
        hook = lane.hook if lane is not None else _placeholder_hook(retry.hook_id)
        member = lane.member if lane is not None else hook_id_member(retry.hook_id)
        delivery = Delivery(
            event, hook, retry.delivery_id, member, ticket, attempts=retry.attempts,
            created_at=retry.created_at_ms / 1000.0, parks=retry.parks,
        )  # fmt: skip
        delivery.first_attempt_at = _seconds(retry.first_attempt_at_ms)
        delivery.last_attempt_at = _seconds(retry.last_attempt_at_ms)
        delivery.last_status = retry.last_status
        delivery.last_error = retry.error or None
        delivery.redrive = retry.redrive
        delivery.source = source
        self.in_flight += 1
        if self._ctx.tracer is not None:
            self._ctx.tracer.delivery_started(delivery)
        if lane is not None:
            lane.submit(delivery)
            return
        now = time.time()
        since = _seconds(retry.unknown_since_ms)
        delivery.unknown_since = now if since is None or since > now else since
        delivery.unknown_parks = retry.unknown_parks
        if now - delivery.unknown_since < self._ctx.settings.unknown_hook_grace_s:
            self._park_unknown(delivery, first_time=retry.unknown_since_ms is None)
        else:
            self._dead_letter_removed(delivery)

    def _park_unknown(self, delivery: Delivery, *, first_time: bool) -> None:
        """Park a retry for an unknown hook again, no attempt and no park counted (it is not
        this endpoint's fault). The k-th time it goes to tier ``k mod U`` of the U tiers that
        wait at most ``UNKNOWN_HOOK_RECHECK_S`` (the first tier if none does), partition
        ``k div U`` (modulo the partition count): over its re-parks it visits every partition
        of those tiers, so it reaches every replica that owns any of them, whatever the
        group's assignor gave whom."""
        plan = self._ctx.plan
        short = [i for i, delay in enumerate(plan.schedule_s) if delay <= UNKNOWN_HOOK_RECHECK_S]
        tiers = short or [0]
        k = delivery.unknown_parks
        tier = tiers[k % len(tiers)]
        delivery.unknown_parks = k + 1
        outbound, _ = parked_record(self._ctx, delivery, tier, 0.0, k // len(tiers))
        if first_time:  # later re-parks of the same record stay quiet
            log.info(
                "retry_for_unknown_hook_parked", hook_id=delivery.hook.id,
                delivery_id=delivery.delivery_id, grace_s=self._ctx.settings.unknown_hook_grace_s,
                hint="another replica of the group may know this hook (rolling update)",
            )  # fmt: skip

        def written() -> None:
            self.in_flight -= 1
            self._metrics.unknown_hook_retries.labels("parked").inc()
            self._span_ended(delivery, Outcome.PARKED)
            delivery.ticket.settle()

        self._ctx.writer.submit(outbound, written)

    def _dead_letter_removed(self, delivery: Delivery) -> None:
        """A retry for a hook that is no longer configured (or disabled). Its id came from a
        record header, so it is logged but never becomes a metric label."""
        log.warning("delivery_dead_lettered", hook_id=delivery.hook.id, reason="hook_removed",
                    delivery_id=delivery.delivery_id, event_name=delivery.event.name,
                    attempt=delivery.attempts,
                    grace_s=self._ctx.settings.unknown_hook_grace_s)  # fmt: skip
        letter = failed_delivery(
            self._ctx.dead_letter_topic, delivery, "hook_removed", self._ctx.group
        )

        def written() -> None:
            self._metrics.unknown_hook_retries.labels("dead_lettered").inc()
            self._metrics.dead_lettered.labels("hook_removed").inc()
            self._outcome(
                delivery, Outcome.DEAD_LETTERED, "hook_removed",
                lambda: settle(Outcome.DEAD_LETTERED, "hook_removed"),
            )  # fmt: skip

        def settle(outcome: Outcome, reason: str | None) -> None:
            self.in_flight -= 1
            self._span_ended(delivery, outcome, reason)
            delivery.ticket.settle()

        def dropped() -> None:
            self._outcome(delivery, Outcome.DROPPED, None, lambda: settle(Outcome.DROPPED, None))

        self._ctx.writer.submit(letter, written, dropped)

    def release_revoked(self) -> int:
        """Release every queued delivery of a partition being revoked (see ``offsets``):
        it is neither sent nor parked, and its record stays unsettled for the partition's
        next owner. Returns how many were released; those being sent finish (a failure is
        then released too, never parked)."""
        return sum(lane.release_revoked() for lane in (*self._lanes.values(), *self._retired))

    def _released(self, delivery: Delivery) -> None:
        self.in_flight -= 1
        self._metrics.hook_stats(delivery.hook.id).count_outcome(Outcome.ABANDONED.value)
        self._span_ended(delivery, Outcome.ABANDONED)
        delivery.ticket.release()

    def _finished(self, delivery: Delivery, outcome: Outcome, reason: str | None = None) -> None:
        if self._outcomes is None or outcome not in _RECORDED:
            self._settle(delivery, outcome, reason)  # the hot path: no closure
        else:
            self._outcome(
                delivery, outcome, reason, lambda: self._settle(delivery, outcome, reason)
            )

    def _outcome(
        self, delivery: Delivery, outcome: Outcome, reason: str | None, then: Callable[[], None]
    ) -> None:
        """Write the outcome record of a delivery that ended (delivered, dead-lettered,
        dropped or skipped) and call ``then`` once it is acknowledged; at once for the rest
        (parked: it comes back; duplicate: its first copy wrote one) or without an outcome
        topic."""
        if self._outcomes is None or outcome not in _RECORDED:
            then()
        else:
            self._outcomes.delivery(delivery, outcome.value, reason, then)

    def _settle(self, delivery: Delivery, outcome: Outcome, reason: str | None = None) -> None:
        self.in_flight -= 1
        if outcome is not Outcome.PARKED and outcome is not Outcome.SKIPPED:
            self._metrics.hook_stats(delivery.hook.id).count_outcome(outcome.value)
        if delivery.span is not None:
            self._span_ended(delivery, outcome, reason)
        delivery.ticket.settle(delivery.hook.id)

    def _span_ended(self, delivery: Delivery, outcome: Outcome, reason: str | None = None) -> None:
        """End the delivery's span, if it has one: it settled with ``outcome``."""
        tracer = self._ctx.tracer
        if delivery.span is not None and tracer is not None:
            tracer.delivery_ended(delivery, outcome.value, reason)

    def check_health(self) -> None:
        """Re-raise the first unexpected crash of a lane worker (the supervisor calls this)."""
        for lane in (*self._lanes.values(), *self._retired):
            if lane.failure is not None:
                raise RuntimeError(f"lane {lane.hook.id} crashed") from lane.failure

    def _others_hungry(self, lane: Lane) -> bool:
        """True when some other lane that is receiving work right now, or could be (records
        wait unfetched in the event partitions), and is not blocked itself, has room for
        more: only then does parking ``lane`` let anyone go faster."""
        settings = self._ctx.settings
        room = settings.lane_max_pending // 2
        # Fed within the window: a lane starved by a paused fetch still counts as hungry.
        # Past the window (a long pause, or a hook that had no traffic before it), records
        # waiting unfetched may be another hook's: a lone hook's backlog still waits in
        # Kafka (backpressure), but beside another healthy lane the slow one is parked.
        recent = self._ctx.clock() - HUNGRY_WINDOW_S
        waiting: bool | None = None
        for other in self._lanes.values():
            if other is lane or other.pending >= room or other.blocked_reason() is not None:
                continue
            if other.last_intake > recent:
                return True
            if waiting is None:
                waiting = self._events_waiting()
            if waiting:
                return True
        return False

    def load(self) -> float:
        """Backpressure signal (see the module docstring): fetching pauses at 1.0."""
        settings = self._ctx.settings
        held = self._ctx.writer.pending
        fullest = 0
        for lane in self._lanes.values():
            if lane.impaired is None or not lane.can_park:
                # An ordered lane's followers are bounded per partition (held_partitions).
                held += lane.busy - lane.followers
                fullest = max(fullest, lane.pending)
        # Ordered lanes hold bodies that cannot be parked: bounded by size as well as count
        # (3,000 held events of 100 KB took 958 MB in a trial, under max_in_flight).
        held_bytes = sum(lane.held_bytes for lane in (*self._lanes.values(), *self._retired))
        return max(
            held / settings.max_in_flight,
            fullest / settings.lane_max_pending,
            held_bytes / settings.ordering_max_held_bytes,
        )

    def held_partitions(self) -> set[tuple[str, int]]:
        """(topic, partition)s an ordered lane holds ``delivery.lane_max_pending`` followers
        from, behind blocked keys: the source pauses them alone, so a key blocked long holds
        its own partition, never the others (nor other topics, nor the retry topics)."""
        bound = self._ctx.settings.lane_max_pending
        held: set[tuple[str, int]] = set()
        for lane in (*self._lanes.values(), *self._retired):
            if lane.followers >= bound:
                held |= lane.held_partitions(bound)
        return held

    @property
    def busy(self) -> int:
        """Deliveries queued or being sent, plus Kafka writes not yet acknowledged."""
        lanes = (*self._lanes.values(), *self._retired)
        return sum(lane.busy for lane in lanes) + self._ctx.writer.pending

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is queued, being sent or being written, at most ``timeout_s``
        seconds. Returns True when drained.

        From now on a lane starts a queued delivery only when it can finish before the
        deadline even at its hook's timeout; the others are released (left unsettled and
        made again after the restart, counted ``abandoned``): a send cancelled by the
        deadline would reach its endpoint twice."""
        deadline = time.monotonic() + timeout_s
        finish_by = self._ctx.clock() + timeout_s
        for lane in (*self._lanes.values(), *self._retired):
            lane.finish_sends_by(finish_by)
        # busy sums every lane and the writer queue; a 50 ms poll during shutdown is
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
                lane.stats.count_outcome(Outcome.ABANDONED.value, count)
        return sum(counts)


_RECORDED: Final = frozenset(
    {Outcome.DELIVERED, Outcome.DEAD_LETTERED, Outcome.DROPPED, Outcome.SKIPPED}
)
"""Outcomes that end a delivery here for good, each written to the outcome topic."""


def _seconds(epoch_ms: int | None) -> float | None:
    return None if epoch_ms is None else epoch_ms / 1000.0


def _placeholder_hook(hook_id: str) -> Hook:
    """A stand-in for a hook no longer configured, so its dead letter can name it."""
    return Hook.model_validate({"id": hook_id, "events": ["*"], "url": "http://removed.invalid/"})
