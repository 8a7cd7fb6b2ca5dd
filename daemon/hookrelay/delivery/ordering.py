"""Ordered delivery per key: a lane for a hook with ``ordering: key``.

Deliveries of events with the same Kafka record key, read from the same partition, form a
**chain**; only a chain's head is queued, sent or retried, and the next one starts when it
ended (delivered, dead-lettered, a duplicate). Other chains go on concurrently, up to the
hook's ``max_concurrency``, under the same rate limit and circuit breaker as any lane.

A failing head is **retried in memory**, never parked in a retry topic: a retry topic would
let the key's later events overtake it. It waits the schedule's delay for its attempt
(``delivery.retry_schedule_s``, jittered, never sooner than ``Retry-After``) on a timer, so
a blocked key holds no worker and delays no other key. Behind an operator's pause, an open
circuit or a ``Retry-After`` pause the head waits too, unattempted. After the schedule's
last attempt it is dead-lettered like any delivery and its chain goes on.

**Why order survives restarts, kill -9 and rebalances without state of its own:** a held
delivery's record is unsettled, so the group's committed offset never passes it (``offsets``)
and the chain's later records, unsettled too, lie above it in the same partition. Whoever
reads the partition next — this process after a restart, another replica after a rebalance —
reads the head before its followers, in the log's order, and makes only the deliveries the
offset map does not name settled. A delivery made before a kill -9 and not yet committed is
made again, in its place in the chain: an endpoint may see a key's events again (with the
same ``webhook-id``), never a later event before an earlier one's first delivery. What is
lost across a restart is the head's attempt count: it starts its schedule again.

**Memory:** every held delivery counts towards ``delivery.max_in_flight`` whatever the
lane's state (it cannot be parked), so a key blocked long enough pauses fetching rather
than growing memory: with an endpoint down for long, an ordered hook holds the partitions it
reads, other hooks of the deployment included (README: give such a hook a deployment of its
own).

**When a head is dead-lettered** (a permanent failure, its schedule exhausted, its hook gone)
the hook's ``ordering_after_dead_letter`` decides. ``skip`` (the
default): its chain goes on. ``block``: the key becomes **blocked** for the hook. A
``blocked/`` record (``kafka.control``) is written through the ``DurableWriter`` first, and
only once the broker acknowledged it is the head's dead letter written and its record
settled: a crash in between leaves the head unsettled behind its block, so the next start
dead-letters it ``key_blocked`` (never attempts it again). Then every delivery of the key —
this chain's followers, any later chain of the key, on any partition or replica (every
replica follows the control topic) — is dead-lettered at once, reason ``key_blocked``, one at
a time in chain order, so the dead-letter topic holds the key's events in their order for a
replay. Nothing of a blocked key is held in memory beyond the dead letter being written. The
lane consults ``LaneContext.blocked``, which the follower fills and to which the lane adds
the key as soon as its record is acknowledged (the follower reads it up to half a second
later). An operator's ``hookrelay unblock`` (tombstones), or a ``hookrelay replay`` of the
key's letters, unblocks it. A hook set back to ``skip`` ignores its blocks.

Events without a key are delivered unordered: no chain. A key whose events a producer
spread over several partitions is ordered per partition, as Kafka orders it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter, deque
from typing import Any

from hookrelay.config import Hook
from hookrelay.delivery.lane import Lane, LaneContext, epoch_ms
from hookrelay.events.model import Delivery, Outcome
from hookrelay.events.outcome import iso_ms
from hookrelay.kafka.control import blocked_record
from hookrelay.ops.logs import get_logger

log = get_logger("hookrelay.dispatcher")

__all__ = ["OrderedLane", "chain_key"]

ChainKey = tuple[str, int, bytes]
"""(topic, partition, record key) of the records a chain's deliveries were read from."""

KEY_BLOCKED = "key_blocked"
"""The dead-letter reason of a delivery whose key an earlier dead letter blocked."""

_RECHECK_S = 0.05
"""Shortest wait of a held head, so a pause ending now is not polled in a busy loop."""
BLOCKED_SHOWN = 20
"""Blocked keys the admin API lists per ordered hook (the longest-waiting first)."""
_PROBE_RECHECK_S = 0.5
"""How often a head behind a circuit whose half-open probe is out looks again."""


def chain_key(delivery: Delivery) -> ChainKey | None:
    """The chain ``delivery`` belongs to, None for an event without a key. A delivery taken
    back from a retry topic is chained in the partition it was read from (its ``source``):
    that partition's committed offset is what holds it."""
    key = delivery.event.key
    if key is None:
        return None
    if delivery.source is not None:
        return delivery.source[0], delivery.source[1], key
    origin = delivery.event.origin
    return origin.topic, origin.partition, key


class OrderedLane(Lane):
    """A ``Lane`` that delivers each chain's deliveries one at a time, in offset order (see
    module docstring). Created by the ``Dispatcher`` for hooks with ``ordering: key``."""

    can_park = False
    chains_keys = True

    def __init__(self, hook: Hook, ctx: LaneContext) -> None:
        self._chains: dict[ChainKey, deque[Delivery]] = {}
        # id(delivery) -> (the head, its timer, what it waits for: retry, throttled, ...)
        self._timers: dict[int, tuple[Delivery, asyncio.TimerHandle, str]] = {}
        self._paused_heads: list[Delivery] = []
        self.followers = 0
        self.held_bytes = 0  # bodies of the followers: what grows with a blocked key
        # (topic, partition) -> followers held from it: a partition whose blocked keys hold
        # too many is paused alone (``held_partitions``), the others go on.
        self._per_partition: Counter[tuple[str, int]] = Counter()
        self._settle = ctx.on_finished
        self._give_up = ctx.on_released
        own = dataclasses.replace(ctx, on_finished=self._finished, on_released=self._released)
        super().__init__(hook, own)
        m = ctx.metrics
        m.ordering_held.labels(hook.id).set_function(lambda: self.held_count)
        m.ordering_blocked_keys.labels(hook.id).set_function(lambda: self.blocked_count)
        m.ordering_dead_letter_blocked.labels(hook.id).set_function(
            lambda: ctx.blocked.count(self.hook.id)
        )

    # -- intake ---------------------------------------------------------------------------

    def submit(self, delivery: Delivery) -> None:
        """Start ``delivery`` now if it heads its chain, else hold it behind the head."""
        key = chain_key(delivery)
        if key is None:
            self._admit(delivery)
            return
        chain = self._chains.get(key)
        if chain is not None:
            chain.append(delivery)
            self.followers += 1
            self.held_bytes += delivery.body_size
            self._per_partition[key[:2]] += 1
            return
        if self.hook.ordering != "key":  # switched off: only the keys held keep their order
            self._admit(delivery)
            return
        self._chains[key] = deque((delivery,))
        self._admit(delivery)

    def _admit(self, delivery: Delivery) -> None:
        """Queue a head for its attempt; dead-letter it when the hook is gone; hold it,
        unattempted, while the lane is blocked. Never parked for a slow or full lane: it is
        the only one of its key that may move, and what is held counts towards
        backpressure instead (``Dispatcher.load``)."""
        if self._key_blocked(delivery):
            self._dead_letter(delivery, KEY_BLOCKED)
            return
        if self.gone:
            self._dead_letter(delivery, "hook_gone")
            return
        reason = self.blocked_reason(delivery)
        if reason is not None:
            self._park_unattempted(delivery, reason)
            return
        self._enqueue(delivery)

    def _key_blocked(self, delivery: Delivery) -> bool:
        """True when this hook blocks dead-lettered keys and ``delivery``'s key is one."""
        key = delivery.event.key
        return (
            key is not None
            and self.hook.ordering_after_dead_letter == "block"
            and self._ctx.blocked.blocks(self.hook.id, key)
        )

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Dead-letter ``delivery``; with ``ordering_after_dead_letter: block``, block its key
        first (module docstring): the dead letter is written once the ``blocked/`` record
        was acknowledged."""
        key = delivery.event.key
        if key is None or reason == KEY_BLOCKED or not self._blocks_after(delivery):
            super()._dead_letter(delivery, reason)
            return
        if not self._may_write(delivery):
            return
        record = blocked_record(self._ctx.control_topic, self._ctx.group, delivery, reason)
        hook_id = self.hook.id

        def blocked() -> None:
            self._ctx.blocked.add(hook_id, key)
            log.warning("ordering_key_blocked", hook_id=hook_id, reason=reason,
                        delivery_id=delivery.delivery_id,
                        event_name=delivery.event.name)  # fmt: skip
            super(OrderedLane, self)._dead_letter(delivery, reason)

        self._ctx.writer.submit(record, blocked)

    def _blocks_after(self, delivery: Delivery) -> bool:
        """True when dead-lettering ``delivery`` blocks its key: the hook says ``block`` and
        it heads its chain (a delivery its payload filter failed on never joined one: it is
        dead-lettered as it comes, like an event filtered out, and blocks nothing)."""
        key = chain_key(delivery)
        chain = self._chains.get(key) if key is not None else None
        return (
            self.hook.ordering_after_dead_letter == "block"
            and chain is not None
            and chain[0] is delivery
        )

    def _shed_if_slow(self) -> None:
        """A slow ordered lane keeps its queue: nothing it holds can be parked."""

    # -- held heads -----------------------------------------------------------------------

    def _park(self, delivery: Delivery, tier: int, min_wait_s: float, why: str) -> int | None:
        """Hold ``delivery`` in memory until the retry tier ``tier`` would have made it due
        (jittered, not before ``min_wait_s``), instead of writing it to a retry topic."""
        if not self._may_write(delivery):
            return None
        now = time.time()
        due_ms = self._ctx.plan.due_at_ms(tier, now, self._ctx.jitter(), min_wait_s)
        self._hold(delivery, due_ms / 1000.0 - now, why)
        return due_ms

    def _retry_tier(self, tier: int) -> str:
        """``memory``: an ordered hook's retries wait here, not in a retry topic."""
        return "memory"

    def _park_unattempted(self, delivery: Delivery, reason: str) -> None:
        """Hold a head the lane may not attempt now (paused, circuit open, throttled) for as
        long as that lasts; an operator's pause holds it until the hook is resumed. Given up
        like any delivery behind a circuit open past its whole schedule."""
        if self._expires_behind_circuit(delivery, reason):
            self._dead_letter(delivery, "retries_exhausted")
            return
        if not delivery.ticket.live:
            self._release(delivery)
            return
        if reason == "paused":
            if self.finish_by != float("inf"):
                self._release(delivery)
                return
            self._paused_heads.append(delivery)
            return
        wait = self._unattempted_wait_s(reason)
        if reason == "circuit_open":
            # A half-open probe may take a whole attempt's timeout, and every key's head
            # waits for it: polling each at 50 ms would cost thousands of wake-ups a second.
            wait = max(wait, _PROBE_RECHECK_S)
        self._hold(delivery, wait, reason)

    def _expired(self, delivery: Delivery) -> bool:
        """Older than the whole retry schedule counted from its first attempt: the time a
        delivery waited behind its chain's head is not its endpoint's failure (counted from
        ``created_at``, a follower held 4 s was dead-lettered at its first failed attempt
        behind an open circuit)."""
        first = delivery.first_attempt_at
        return first is not None and time.time() - first > self._ctx.plan.window_s

    def _hold(self, delivery: Delivery, delay_s: float, why: str) -> None:
        if self._after_deadline(delay_s):  # shutting down: the next start makes it
            self._release(delivery)
            return
        loop = asyncio.get_running_loop()
        handle = loop.call_later(max(_RECHECK_S, delay_s), self._readmit, delivery)
        self._timers[id(delivery)] = (delivery, handle, why)

    def retry_now(self) -> int:
        """An operator's release (``hookrelay release``): every head waiting for its next
        attempt goes now (a pause or an open circuit still holds it). Returns how many."""
        heads = [d for d, _, why in self._timers.values() if why in ("retry", "throttled")]
        for delivery in heads:
            self._timers.pop(id(delivery))[1].cancel()
            self._readmit(delivery)
        return len(heads)

    def _after_deadline(self, delay_s: float) -> bool:
        """True when an attempt in ``delay_s`` seconds could not end before shutdown."""
        return self._ctx.clock() + delay_s + self.timeout_s > self.finish_by

    def _readmit(self, delivery: Delivery) -> None:
        self._timers.pop(id(delivery), None)
        if not delivery.ticket.live:
            self._release(delivery)
            return
        self._admit(delivery)

    def finish_sends_by(self, deadline: float) -> None:
        """Shutting down (``Lane.finish_sends_by``): heads held past ``deadline``, and those
        an operator's pause holds, are released now with their chains (their records stay
        unsettled, so the next start reads them again, in order)."""
        super().finish_sends_by(deadline)
        loop_now = asyncio.get_running_loop().time()
        late = [d for d, h, _ in self._timers.values() if self._after_deadline(h.when() - loop_now)]
        for delivery in late:
            self._timers.pop(id(delivery))[1].cancel()
        heads, self._paused_heads = self._paused_heads, []
        for delivery in (*late, *heads):
            self._release(delivery)

    def hold(self, paused: bool) -> None:
        """Pause or resume for an operator (``Lane.hold``); resuming lets the held heads go."""
        super().hold(paused)
        if not paused:
            heads, self._paused_heads = self._paused_heads, []
            for delivery in heads:
                self._readmit(delivery)

    # -- chains ---------------------------------------------------------------------------

    def _finished(self, delivery: Delivery, outcome: Outcome, reason: str | None = None) -> None:
        self._settle(delivery, outcome, reason)
        self._next(delivery)

    def _released(self, delivery: Delivery) -> None:
        self._give_up(delivery)
        if delivery.ticket.live:
            # Released while its partition is still ours: the daemon is stopping and could
            # not finish it. Its key's later deliveries must not go before it: all of them
            # stay unsettled with it, and the next start reads them again in order.
            self._drop_chain(delivery)
        else:
            self._next(delivery)

    def _drop_chain(self, head: Delivery) -> None:
        """Release every follower of ``head``'s chain (``head`` itself was released)."""
        key = chain_key(head)
        chain = None if key is None else self._chains.get(key)
        if key is None or chain is None or chain[0] is not head:
            return
        del self._chains[key]
        chain.popleft()
        for follower in chain:
            self._give_up(self._unhold(key, follower))

    def _unhold(self, key: ChainKey, follower: Delivery) -> Delivery:
        """``follower`` of chain ``key`` leaves the held set (to be sent, or released)."""
        self.followers -= 1
        self.held_bytes -= follower.body_size
        where = key[:2]
        self._per_partition[where] -= 1
        if not self._per_partition[where]:
            del self._per_partition[where]
        return follower

    def held_partitions(self, bound: int) -> set[tuple[str, int]]:
        """The (topic, partition)s from which this lane holds ``bound`` or more followers:
        fetching pauses for them alone, so a blocked key holds its own partition and no
        other (``Dispatcher.held_partitions``)."""
        return {where for where, count in self._per_partition.items() if count >= bound}

    def _next(self, delivery: Delivery) -> None:
        """``delivery`` ended here: start the next delivery of its chain. Followers of a
        partition being revoked are released with it (its next owner makes them)."""
        key = chain_key(delivery)
        if key is None:
            return
        chain = self._chains.get(key)
        if chain is None or chain[0] is not delivery:
            return
        chain.popleft()
        while chain and not chain[0].ticket.live:
            self._give_up(self._unhold(key, chain.popleft()))
        if not chain:
            del self._chains[key]
            return
        self._admit(self._unhold(key, chain[0]))

    def release_revoked(self) -> int:
        """Release the deliveries of partitions being revoked: queued and held heads, and
        every follower behind them (``Lane.release_revoked``). Returns how many."""
        before = self.held_count + self.pending
        super().release_revoked()
        waiting = [d for d, _, _ in self._timers.values() if not d.ticket.live]
        for delivery in waiting:
            self._timers.pop(id(delivery))[1].cancel()
        paused = [d for d in self._paused_heads if not d.ticket.live]
        self._paused_heads = [d for d in self._paused_heads if d.ticket.live]
        for delivery in (*waiting, *paused):
            self._release(delivery)
        return before - self.held_count - self.pending

    # -- state ----------------------------------------------------------------------------

    @property
    def held_count(self) -> int:
        """Deliveries held in memory: followers behind their chain's head, and heads waiting
        for a retry, a pause or a cool-down to end."""
        return self.followers + len(self._timers) + len(self._paused_heads)

    @property
    def idle(self) -> bool:
        return super().idle and not self._chains and not self.held_count

    @property
    def busy(self) -> int:
        return super().busy + self.held_count

    @property
    def blocked_count(self) -> int:
        """Keys whose head waits: for its next attempt, a cool-down or a pause to end."""
        return len(self._timers) + len(self._paused_heads)

    def blocked_heads(self, limit: int = BLOCKED_SHOWN) -> list[dict[str, Any]]:
        """The ``limit`` heads that have waited longest (first attempt first; never
        attempted last), JSON-ready for the admin API: the record key (UTF-8, undecodable
        bytes escaped), delivery id, what it waits for, attempts, last status and error,
        first attempt (ISO-8601) and seconds to its next look (None while paused)."""
        loop_now = asyncio.get_running_loop().time()
        waiting: list[tuple[Delivery, str, float | None]] = [
            (d, why, h.when() - loop_now) for d, h, why in self._timers.values()
        ]
        waiting += [(d, "paused", None) for d in self._paused_heads]
        waiting.sort(key=lambda w: w[0].first_attempt_at or float("inf"))
        return [{
            "key": (d.event.key or b"").decode("utf-8", "backslashreplace"),
            "delivery_id": d.delivery_id, "waiting_for": why, "attempts": d.attempts,
            "last_status": d.last_status, "last_error": d.last_error,
            "first_attempt_at": iso_ms(epoch_ms(d.first_attempt_at)),
            "next_look_in_s": None if due is None else round(max(0.0, due), 3),
        } for d, why, due in waiting[:limit]]  # fmt: skip

    def state(self) -> dict[str, Any]:
        """``Lane.state()`` with the chains: keys in progress, keys waiting for a retry or
        a pause (``blocked_keys``), deliveries held behind them, the hook's
        ``ordering_after_dead_letter`` and the keys it keeps blocked after a dead letter."""
        state = super().state()
        state["ordering"] = {
            "keys": len(self._chains),
            "blocked_keys": self.blocked_count,
            "blocked": self.blocked_heads(),
            "held": self.held_count,
            "after_dead_letter": self.hook.ordering_after_dead_letter,
            "keys_blocked_by_dead_letter": self._ctx.blocked.count(self.hook.id),
        }
        return state

    async def close(self) -> int:
        """Cancel timers and workers; return how many deliveries were abandoned."""
        held = self.held_count
        for _, handle, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._paused_heads.clear()
        self._chains.clear()
        self.followers = 0
        self.held_bytes = 0
        self._per_partition.clear()
        return held + await super().close()
