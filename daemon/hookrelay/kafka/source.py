"""The Kafka source: a consumer-group member that feeds records to the pipeline.

- Auto-commit is off; offsets come from the ack tracker and are committed every
  ``kafka.commit_interval_s``, on partition revocation and on shutdown. Each commit's
  metadata names the partition's role (``hookrelay:retry`` or ``hookrelay:event``), and a
  retry partition without a committed offset starts at its beginning (whatever
  ``auto_offset_reset`` says: a retry written before this member was assigned is owed) and
  has that offset committed at once, so the broker remembers every tier the group used
  (``tiers`` finds them again after a configuration change).
- Backpressure: when the dispatcher holds ``delivery.max_in_flight`` unsettled deliveries,
  every assigned partition is paused; fetching resumes below the low-water mark. The poll
  loop keeps calling ``getmany`` while paused, so the consumer never exceeds
  ``max.poll.interval`` and stays in the group however slow the endpoints are.
- Every commit also carries, in its metadata, the offset map of the records settled above
  the committed offset (``offsets.OpenOffsets``), and an assignment takes over the map the
  previous owner committed: a restart after kill -9, a rebalance or a new replica skips
  the work already done instead of sending it again. Assigned partitions stay paused until
  that look at the group's commits is done, so no record is handed out before.
- Revocation: stop handing out records of the revoked partitions, release the deliveries
  of theirs that have not started (``release``: neither sent nor parked; the next owner
  makes them), wait (bounded by ``revoke_timeout_s``) for those being sent or written,
  commit what settled, then forget them; a delivery finishing after the hand-over no
  longer moves any offset, and is never parked or dead-lettered (see ``offsets``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    IllegalStateError,
    InvalidSessionTimeoutError,
    KafkaError,
    OffsetMetadataTooLargeError,
    TopicAuthorizationFailedError,
)
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from hookrelay.config import KafkaSettings
from hookrelay.config.naming import DUE_HORIZON_MARGIN_S
from hookrelay.kafka.clients import (
    client_options,
    closed,
    committed_with_metadata,
    topics_present,
)
from hookrelay.kafka.membership import GrowthAwareAssignor, InstanceGuard, static_member_id
from hookrelay.kafka.offsets import AckTracker
from hookrelay.kafka.retries import (
    DUE_AT_HEADER,
    EVENT_COMMIT_METADATA,
    RETRY_COMMIT_METADATA,
    claimed_elsewhere,
    commit_metadata,
    latest_due_s,
    split_commit_metadata,
)
from hookrelay.ops.logs import get_logger
from hookrelay.ops.metrics import Metrics

log = get_logger("hookrelay.source")

_FATAL_FETCH_ERRORS = (
    InvalidSessionTimeoutError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)

PROBE_INTERVAL_S = 3.0
"""Seconds between metadata probes of the cluster (readiness)."""

RecordHandler = Callable[[ConsumerRecord[bytes, bytes]], None]


POLL_MS = 200
"""Longest wait of one fetch for new records."""
PAUSED_POLL_MS = 5
"""Poll interval while backpressure pauses fetching: a lane drains its whole bound
(``delivery.lane_max_pending``, 1000) in about 200 ms at 5,000 deliveries/s."""


class Backpressure:
    """Pause/resume decision with hysteresis on a load figure (``Dispatcher.load``): pause
    at ``load() >= 1.0``, resume once ``load() < resume_at`` (e.g. 0.8)."""

    def __init__(self, load: Callable[[], float], resume_at: float) -> None:
        self._load = load
        self.resume_at = resume_at
        self.paused = False

    def update(self) -> bool:
        """Return True when fetching should be paused now."""
        load = self._load()
        if self.paused and load < self.resume_at:
            self.paused = False
        elif not self.paused and load >= 1.0:
            self.paused = True
        return self.paused


class Source(ConsumerRebalanceListener):  # type: ignore[misc]
    """Consumer-group member on ``settings.topics``; see the module docstring."""

    def __init__(
        self,
        settings: KafkaSettings,
        tracker: AckTracker,
        metrics: Metrics,
        backpressure: Backpressure,
        *,
        retry_topics: tuple[str, ...] = (),
        revoke_timeout_s: float = 10.0,
        due_horizon_s: float = DUE_HORIZON_MARGIN_S,
        release: Callable[[], int] = lambda: 0,
        caught_up: Callable[[float], Awaitable[None]] | None = None,
        held_partitions: Callable[[], set[tuple[str, int]]] = set,
    ) -> None:
        self._settings = settings
        # ControlFollower.caught_up: an assignment's first records wait for the operators'
        # and the lanes' latest decisions (a key blocked by the partition's former owner).
        self._caught_up = caught_up
        # Dispatcher.held_partitions: partitions an ordered hook's blocked keys hold enough
        # of, paused alone (reason ordered_keys_held) while the others are fetched.
        self._ordered_held = held_partitions
        self._held_now: set[TopicPartition] = set()
        self._topics = list(dict.fromkeys([*settings.topics, *retry_topics]))
        self._retry_topics = frozenset(retry_topics)
        self._waiting: dict[TopicPartition, float] = {}  # retry partition → head due (epoch s)
        self._lag: dict[TopicPartition, int] = {}  # as update_lag last measured it
        self._unfetched: dict[TopicPartition, int] = {}  # event partitions: end - position
        self._held: dict[TopicPartition, bool] = {}
        self._tracker = tracker
        self._metrics = metrics
        self._backpressure = backpressure
        self._revoke_timeout_s = revoke_timeout_s
        self._due_horizon_s = due_horizon_s
        self._revoking: set[TopicPartition] = set()
        self._starting: set[TopicPartition] = set()
        self._release = release
        self._halted = False  # the poll loop stopped, leaving fetched records unhandled
        self._offset_maps = True  # False once the broker refused one as too large
        self._heartbeat_s = min(3.0, settings.session_timeout_s / 3)
        self._assignor = GrowthAwareAssignor()
        self.consumer = AIOKafkaConsumer(
            **client_options(settings),
            group_id=settings.group_id,
            # Static membership (KIP-345): a restart within the session timeout keeps the
            # assignment, without a rebalance, as long as it subscribes to the same topics
            # (the id is made in start(), from the topics it subscribes to then).
            group_instance_id=settings.group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            # Events of an aborted transaction (outbox relays, Kafka Streams, Debezium's
            # exactly-once mode) must never become webhooks; an open one holds back only
            # its own partition, up to its last stable offset.
            isolation_level="read_committed",
            max_poll_records=settings.max_poll_records,
            max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
            fetch_max_bytes=settings.fetch_max_bytes,
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self._heartbeat_s * 1000),
            max_poll_interval_ms=int(settings.max_poll_interval_s * 1000),
            request_timeout_ms=int(settings.request_timeout_s * 1000),
            # A topic created, or a partition added, after start-up is picked up within this
            # bound (aiokafka's default is 5 min).
            metadata_max_age_ms=int(settings.metadata_max_age_s * 1000),
            partition_assignment_strategy=(self._assignor,),
        )
        self._assignor.attach(self.consumer._client.cluster, self._request_rejoin)
        self.started = False
        self.joined = False
        self.instance = InstanceGuard(
            settings, self.consumer, metrics, heartbeat_s=self._heartbeat_s,
            resubscribe=lambda: self.consumer.subscribe(self._topics, listener=self),
        )  # fmt: skip
        self._commit_timeout_s = min(10.0, settings.request_timeout_s)
        self.last_contact_ok = 0.0
        self.probe_failing = False
        self.missing_topics: list[str] = []

    async def start(self) -> None:
        """Connect and subscribe (raises ``KafkaError`` when the cluster is unreachable)."""
        # The topics include the former tiers start-up found still holding retries: a
        # worker restarted after it drained one subscribes to fewer topics, and must not be
        # handed the assignment that held it (membership.static_member_id). aiokafka reads
        # the id when it starts; it offers no other way to set it then.
        self.consumer._group_instance_id = static_member_id(self._settings, self._topics)
        await self.consumer.start()
        self.consumer.subscribe(self._topics, listener=self)
        self.started = True
        self.last_contact_ok = time.monotonic()
        log.info("consumer_started", topics=self._topics)

    def _request_rejoin(self) -> None:
        """Ask the group to rebalance (aiokafka's coordinator exists once started)."""
        coordinator = getattr(self.consumer, "_coordinator", None)
        if coordinator is not None:
            coordinator.request_rejoin()

    def add_retry_topics(self, topics: list[str]) -> None:
        """Also consume ``topics`` as retry tiers (an earlier configuration's tiers that
        still hold retries); re-subscribes when already started."""
        new = [t for t in topics if t not in self._retry_topics]
        if not new:
            return
        self._retry_topics = self._retry_topics | frozenset(new)
        self._topics = list(dict.fromkeys([*self._topics, *new]))
        if self.started:
            self.consumer.subscribe(self._topics, listener=self)

    def remove_retry_topics(self, topics: Collection[str]) -> None:
        """Stop consuming ``topics``, former tiers drained (``add_retry_topics``);
        re-subscribes when already started. A topic stays subscribed only while it holds
        retries: a drained tier an operator deletes would otherwise come back at once (the
        consumer's metadata requests let the broker create what it subscribes to)."""
        gone = {t for t in topics if t in self._retry_topics}
        if not gone:
            return
        self._retry_topics = self._retry_topics - gone
        self._topics = [t for t in self._topics if t not in gone]
        if self.started:
            self.consumer.subscribe(self._topics, listener=self)

    async def stop(self) -> None:
        """Leave the group and close connections (no commit here; see ``commit``). Safe to
        call after a failed or no ``start()``."""
        self.started = False
        await closed(self.consumer.stop())

    # -- rebalance listener (awaited by aiokafka around a group rebalance) ------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Release, drain (bounded), commit and forget the revoked partitions."""
        partitions = list(revoked)
        if not partitions:
            return  # the first join of this member also calls here, with nothing to revoke
        self._metrics.rebalances.inc()
        self._revoking.update(partitions)
        self._starting.difference_update(partitions)
        self._tracker.revoke(partitions)
        released = self._release()
        sending = self._tracker.outstanding(partitions)
        deadline = time.monotonic() + self._revoke_timeout_s
        # Settlements come from many lanes; a short poll bounded by the deadline is enough.
        while self._tracker.outstanding(partitions) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await self.commit(partitions)
        left = self._tracker.unsettled(partitions)
        self._tracker.forget(partitions)
        for tp in partitions:
            self._waiting.pop(tp, None)
            self._lag.pop(tp, None)
            self._unfetched.pop(tp, None)
            self._held.pop(tp, None)
            self._metrics.forget_partition(tp.topic, tp.partition)
        self._revoking.difference_update(partitions)
        log.info(
            "partitions_revoked", partitions=_names(partitions), released=released,
            sending=sending, left_unsettled=left,
        )  # fmt: skip

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Track newly assigned partitions; keep them paused if backpressure is on; start
        uncommitted retry partitions at their beginning (module docstring)."""
        self.joined = True
        if self.instance.replaced():
            return
        self._tracker.assign(list(assigned))
        log.info("partitions_assigned", partitions=_names(assigned))
        if not assigned:
            return
        # Nothing is handed out before the start check: it may seek, and it takes over the
        # previous owner's offset map (records fetched meanwhile are dropped by aiokafka).
        self._starting.update(assigned)
        self.consumer.pause(*assigned)
        try:
            async with asyncio.timeout(self._commit_timeout_s):
                await self._check_starts(list(assigned))
                if self._caught_up is not None:
                    await self._caught_up(self._commit_timeout_s)
        except (KafkaError, TimeoutError) as e:
            # Not fatal: with auto_offset_reset earliest nothing is skipped anyway, a tier
            # is remembered at its first regular commit, and without the previous owner's
            # offset map its settled records are only sent again.
            log.warning("partition_start_check_failed", error=f"{type(e).__name__}: {e}")
        finally:
            self._starting.difference_update(assigned)

    def membership_problems(self) -> list[str]:
        """Why this member does not consume although connected (readiness reasons)."""
        return self.instance.problems()

    async def _check_starts(self, partitions: list[TopicPartition]) -> None:
        """Where each assigned partition starts, from one look at the group's committed
        offsets and the log starts: an uncommitted retry partition at its beginning, event
        partitions as ``_check_start_offsets`` says."""
        found = await committed_with_metadata(self.consumer, partitions)
        committed = {tp: _offset(found.get(tp)) for tp in partitions}
        for tp, offset in committed.items():
            if offset is not None:
                self._note_committed(tp, offset)
        self._inherit(found)
        begins = await self.consumer.beginning_offsets(partitions)
        retry = [tp for tp in partitions if tp.topic in self._retry_topics]
        events = [tp for tp in partitions if tp.topic not in self._retry_topics]
        # An uncommitted retry partition starts at its beginning, whatever
        # auto_offset_reset says: a retry written before this member was assigned is owed.
        await self._commit_starts({tp: begins[tp] for tp in retry if committed[tp] is None})
        if events:
            await self._check_start_offsets(events, committed, begins)

    def _inherit(self, found: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Take over the offset maps committed with these partitions' offsets (settled
        records above the committed offset are skipped, see ``offsets``)."""
        inherited = []
        for tp, meta in found.items():
            offset_map = split_commit_metadata(meta.metadata)[1]
            if meta.offset < 0 or not offset_map:
                continue
            try:
                if self._tracker.inherit(tp, meta.offset, offset_map):
                    inherited.append(tp)
            except Exception:  # a bug must not skip the start check of every partition
                log.exception("offset_map_unreadable", partition=f"{tp.topic}[{tp.partition}]")
        if inherited:
            log.info("settled_records_inherited", partitions=_names(inherited))

    async def _check_start_offsets(
        self,
        partitions: list[TopicPartition],
        committed: dict[TopicPartition, int | None],
        begins: dict[TopicPartition, int],
    ) -> None:
        """Where each assigned event partition starts, never silently away from its commit:

        - committed, but below the log start (retention deleted records past it): the
          earliest record still there, warned and counted as reset ``out_of_range``;
        - not committed, in a topic whose other partitions are (a partition added while the
          group ran): its first record, whatever ``auto_offset_reset`` says;
        - not committed, in a topic the group has no offsets on (a new group, or offsets the
          broker expired): ``auto_offset_reset``, warned and counted as ``no_committed_offset``.

        Either uncommitted start is committed at once (``_commit_starts``).
        """
        fresh = [tp for tp in partitions if committed[tp] is None]
        for tp in partitions:
            offset = committed[tp]
            if offset is not None and offset < begins[tp]:
                self._reset(tp, offset, begins[tp], "out_of_range")
                self.consumer.seek(tp, begins[tp])
        chosen: dict[TopicPartition, int] = {}
        for topic in sorted({tp.topic for tp in fresh}):
            new = [tp for tp in fresh if tp.topic == topic]
            if await self._group_knows(topic, new, committed):
                chosen.update((tp, begins[tp]) for tp in new)
                log.info("new_partitions_from_first_record", partitions=_names(new))
                continue
            starts = begins
            if self._settings.auto_offset_reset == "latest":
                starts = await self.consumer.end_offsets(new)
            for tp in new:
                self._reset(tp, None, starts[tp], "no_committed_offset")
                chosen[tp] = starts[tp]
        await self._commit_starts(chosen)

    async def _commit_starts(self, starts: dict[TopicPartition, int]) -> None:
        """Start these uncommitted partitions where decided, and commit that at once, with
        their role tag: an event partition that gets no record for a while must not look
        new at the next assignment (it would be read from its first record, whatever
        ``latest`` said), and the broker remembers every retry tier the group used."""
        if not starts:
            return
        for tp, offset in starts.items():
            self.consumer.seek(tp, offset)
        await self.consumer.commit(
            self._kafka_offsets({tp: (offset, "") for tp, offset in starts.items()})
        )
        for tp, offset in starts.items():
            self._note_committed(tp, offset)

    def _note_committed(self, tp: TopicPartition, offset: int) -> None:
        """The group's committed offset of a partition just assigned, as found or set."""
        self._tracker.note_committed(tp, offset)
        self._metrics.committed_offset.labels(tp.topic, str(tp.partition)).set(offset)

    async def _group_knows(
        self, topic: str, fresh: list[TopicPartition], committed: dict[TopicPartition, int | None]
    ) -> bool:
        """True when the group has a committed offset on another partition of ``topic``
        (partitions this member was just assigned are already in ``committed``)."""
        siblings = [
            TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or ()
        ]
        if any(committed.get(tp) is not None for tp in siblings):
            return True
        others = [tp for tp in siblings if tp not in fresh and tp not in committed]
        known = await asyncio.gather(*(self.consumer.committed(tp) for tp in others))
        return any(offset is not None for offset in known)

    def _reset(self, tp: TopicPartition, old: int | None, new: int, reason: str) -> None:
        self._metrics.offset_resets.labels(reason).inc()
        log.warning(
            "offset_reset", group=self._settings.group_id, partition=f"{tp.topic}[{tp.partition}]",
            old_offset=old, new_offset=new, reason=reason,
            hint=_RESET_HINTS[reason],
        )  # fmt: skip

    def partitions(self) -> list[dict[str, Any]]:
        """The assigned partitions for the admin API (``admin.AdminBackend.partitions``)."""
        paused = self.consumer.paused()
        result = []
        for tp in sorted(self.consumer.assignment()):
            reason = None
            if tp in self._starting:
                reason = "starting"
            elif tp in self._waiting:
                reason = "retry_not_due"
            elif tp in self._held_now:
                reason = "ordered_keys_held"
            elif tp in paused:
                reason = "backpressure"
            result.append({
                "topic": tp.topic, "partition": tp.partition,
                "role": "retry" if tp.topic in self._retry_topics else "event",
                "committed_offset": self._tracker.committed(tp), "lag": self._lag.get(tp),
                "unsettled": self._tracker.unsettled([tp]), "paused": reason,
                "held_by_open_transaction": self._held.get(tp, False),
            })  # fmt: skip
        return result

    def events_waiting(self) -> bool:
        """True when an assigned event partition held records not yet fetched at the last
        lag measurement (``update_lag``): work that may be another hook's, waiting while
        fetching is paused."""
        assigned = self.consumer.assignment() if self.started else set()
        return any(n > 0 for tp, n in self._unfetched.items() if tp in assigned)

    def retry_starts(self) -> dict[TopicPartition, int | None]:
        """The retry partitions this member is assigned, each with its committed offset (None:
        not committed yet, so its records start at the beginning): where the retries it owes
        begin (``backlog.BacklogGauge``)."""
        if not self.started:
            return {}
        return {
            tp: self._tracker.committed(tp)
            for tp in self.consumer.assignment()
            if tp.topic in self._retry_topics
        }

    @property
    def waiting_partitions(self) -> int:
        """Retry partitions paused until their head record is due."""
        return len(self._waiting)

    # -- the poll loop ---------------------------------------------------------------------

    async def run(self, handle: RecordHandler, stopping: asyncio.Event) -> None:
        """Fetch and hand records to ``handle`` until ``stopping`` is set."""
        while not stopping.is_set():
            if self.instance.contested:
                await self.instance.settle(stopping)
            if self.instance.conflict:
                with contextlib.suppress(TimeoutError):  # consumes nothing until restarted
                    async with asyncio.timeout(1.0):
                        await stopping.wait()
                continue
            self._apply_pauses()
            # Paused, getmany only waits out its timeout: a short one re-checks the load soon
            # enough that the lanes never run dry before fetching resumes.
            timeout_ms = PAUSED_POLL_MS if self._backpressure.paused else POLL_MS
            try:
                batches = await self.consumer.getmany(
                    timeout_ms=timeout_ms, max_records=self._settings.max_poll_records
                )
            except KafkaError as e:
                if isinstance(e, _FATAL_FETCH_ERRORS):
                    raise  # configuration the cluster refuses: exit loudly, not loop forever
                log.warning("fetch_failed", error=f"{type(e).__name__}: {e}")
                await asyncio.sleep(1.0)
                continue
            if stopping.is_set():
                self._halted = True
                break  # shutting down: these records stay unregistered and are re-read
            for tp, fetched in batches.items():
                if tp in self._revoking:
                    continue
                records = (
                    self._due_records(tp, fetched) if tp.topic in self._retry_topics else fetched
                )
                self._metrics.events_consumed.labels(tp.topic).inc(len(records))
                for record in records:
                    handle(record)
            # Yield so lanes run between large batches even when fetch returns at once.
            await asyncio.sleep(0)

    def _due_records(
        self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """The records of a retry partition that are due now. At the first one that is not,
        rewind the partition to it and keep it paused until it is due: a tier's records are
        in due order, so nothing behind the head can be due earlier (±jitter)."""
        now = time.time()
        k = self._settings
        for index, record in enumerate(records):
            if claimed_elsewhere(record.headers, k.group_id, k.topics) is not None:
                continue  # another deployment's: the pipeline leaves it alone, never waits
            due = due_at_s(record)
            # A due time later than the tier can hold is damage, not a wait: the pipeline
            # dead-letters it rather than let it hold back its whole partition.
            if now < due <= latest_due_s(record.topic, record.timestamp, self._due_horizon_s):
                self.consumer.seek(tp, record.offset)
                self._waiting[tp] = due
                self.consumer.pause(tp)
                return records[:index]
        return records

    def _apply_pauses(self) -> None:
        """Pause everything under backpressure; otherwise pause only retry partitions whose
        head is not yet due, and resume those that became due."""
        was_paused = self._backpressure.paused
        paused = self._backpressure.update()
        if paused != was_paused:
            self._metrics.consumer_paused.set(1 if paused else 0)
            # Debug: under a backlog it flips several times a second (374 of 426 lines in a
            # trial's 2.5 minutes); hookrelay_consumer_paused shows it, and so does lag.
            if paused:
                log.debug("fetch_paused", reason="backpressure")
            else:
                log.debug("fetch_resumed")
        now = time.time()
        for tp in [tp for tp, due in self._waiting.items() if due <= now]:
            del self._waiting[tp]
        assignment = self.consumer.assignment()
        want = set(assignment) if paused else {tp for tp in self._waiting if tp in assignment}
        want |= self._starting & assignment
        held = {tp for tp in assignment if (tp.topic, tp.partition) in self._ordered_held()}
        if held != self._held_now:
            log.info("ordered_keys_hold_partitions", partitions=_names(held))
            self._held_now = held
        want |= held
        have = self.consumer.paused()
        if want - have:
            self.consumer.pause(*(want - have))
        if have - want:
            self.consumer.resume(*(have - want))
        self._metrics.partitions_paused.labels("backpressure").set(len(want) if paused else 0)
        self._metrics.partitions_paused.labels("retry_not_due").set(len(self._waiting))
        self._metrics.partitions_paused.labels("ordered_keys_held").set(len(held))

    # -- offsets ---------------------------------------------------------------------------

    async def commit(self, partitions: list[TopicPartition] | None = None) -> bool:
        """Commit every settled offset that moved; a failure is logged and counted, never
        raised (the next commit retries it). Returns True when nothing was left to commit."""
        offsets = self._tracker.to_commit(partitions)
        if not offsets:
            return True
        try:
            # Shielded so a cancelled caller never leaves a half-sent commit; bounded so an
            # absent cluster cannot hold the committer (the next round retries).
            async with asyncio.timeout(self._commit_timeout_s):
                await asyncio.shield(self.consumer.commit(self._kafka_offsets(offsets)))
        except OffsetMetadataTooLargeError:
            self._offset_maps = False  # the next round commits role tags only
            self._metrics.commit_failures.inc()
            log.warning(
                "offset_map_refused", hint="the broker's offset.metadata.max.bytes is below "
                "4096; settled records above the committed offset are sent again after a "
                "rebalance or restart",
            )  # fmt: skip
            return False
        except (KafkaError, TimeoutError) as e:
            self._metrics.commit_failures.inc()
            log.warning("offset_commit_failed", error=f"{type(e).__name__}: {e}")
            return False
        self._tracker.mark_committed(offsets)
        self._metrics.offsets_committed.inc()
        for tp, (off, _) in offsets.items():
            self._metrics.committed_offset.labels(tp.topic, str(tp.partition)).set(off)
        log.debug(
            "offsets_committed",
            offsets={f"{t.topic}[{t.partition}]": o for t, (o, _) in offsets.items()},
        )
        return True

    def _kafka_offsets(
        self, offsets: dict[Any, tuple[int, str]]
    ) -> dict[TopicPartition, tuple[int, str]]:
        """``{tp: (offset, metadata)}``: the role tag, and the offset map when allowed."""
        result = {}
        for tp, (offset, offset_map) in offsets.items():
            role = (
                RETRY_COMMIT_METADATA if tp.topic in self._retry_topics else EVENT_COMMIT_METADATA
            )
            metadata = commit_metadata(role, offset_map if self._offset_maps else "")
            result[TopicPartition(tp.topic, tp.partition)] = (offset, metadata)
        return result

    async def run_committer(self, stopping: asyncio.Event) -> None:
        """Commit every ``commit_interval_s`` until stopping."""
        interval = self._settings.commit_interval_s
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stopping.wait()
            await self.commit()

    async def probe(self, timeout_s: float = 5.0) -> bool:
        """Ask the cluster for metadata; a timely answer refreshes ``last_contact_ok``, which
        readiness uses (aiokafka's fetch loop hides a lost broker, it just returns nothing).
        Also notes event topics that do not exist (``missing_topics``)."""
        try:
            async with asyncio.timeout(timeout_s):
                existing = await topics_present(self.consumer._client, self._settings.topics)
        except (KafkaError, TimeoutError) as e:
            if not self.probe_failing:
                log.warning("kafka_unreachable", error=f"{type(e).__name__}: {e}")
            self.probe_failing = True
            return False
        if self.probe_failing:
            log.info("kafka_reachable_again")
        self.probe_failing = False
        self.last_contact_ok = time.monotonic()
        missing = [t for t in self._settings.topics if t not in existing]
        if missing and missing != self.missing_topics:
            log.warning("event_topics_missing", topics=missing,
                        hint="create them; they are picked up within 30 s")  # fmt: skip
        self.missing_topics = missing
        return True

    async def update_lag(self) -> None:
        """Lag per assigned partition: end offset (the last stable offset, as this member
        reads committed records only) minus the committed offset (what
        ``kafka-consumer-groups --describe`` shows), so records fetched but not yet settled,
        and records waiting while fetching is paused, both count; a partition this member
        has not committed yet counts from its fetch position. Also notes partitions held
        back by an open transaction."""
        assignment = list(self.consumer.assignment())
        if not assignment:
            return
        try:
            async with asyncio.timeout(5.0):
                ends = await self.consumer.end_offsets(assignment)
        except (KafkaError, TimeoutError, AssertionError):
            return  # the cluster is away or the assignment changed; next round
        for tp, end in ends.items():
            if tp not in self.consumer.assignment():
                continue  # revoked while we waited: its series were forgotten
            position = await self._position(tp)
            if tp not in self.consumer.assignment():
                continue
            if position is not None and self._handed_out_all(tp):
                self._tracker.advance(tp, position)
            if position is not None and tp.topic not in self._retry_topics:
                self._unfetched[tp] = max(0, end - position)
            done = self._tracker.committed(tp)
            done = position if done is None else done
            labels = (tp.topic, str(tp.partition))
            if done is not None:
                self._lag[tp] = max(0, end - done)
                self._metrics.consumer_lag.labels(*labels).set(self._lag[tp])
            held = self._held_by_transaction(tp, position)
            self._held[tp] = held
            self._metrics.held_by_transaction.labels(*labels).set(1 if held else 0)

    def _handed_out_all(self, tp: TopicPartition) -> bool:
        """True when every record before ``tp``'s fetch position went to the record handler:
        the poll loop hands out a whole fetch before it next yields, except for a partition
        being revoked or started, or once it stopped (see ``run``)."""
        return not (self._halted or tp in self._revoking or tp in self._starting)

    async def _position(self, tp: TopicPartition) -> int | None:
        """The fetch position, when known (never waits for an offset reset)."""
        try:
            async with asyncio.timeout(0.5):
                return int(await self.consumer.position(tp))
        except (KafkaError, TimeoutError, AssertionError, IllegalStateError):
            return None

    def _held_by_transaction(self, tp: TopicPartition, position: int | None) -> bool:
        """Read up to the last stable offset while the high watermark is beyond it: an open
        transaction holds back the rest of this partition (read-committed)."""
        try:
            stable = self.consumer.last_stable_offset(tp)
            high = self.consumer.highwater(tp)
        except (AssertionError, IllegalStateError):
            return False  # revoked meanwhile (a rebalance ran during the awaits above)
        return (
            position is not None and stable is not None and high is not None
            and stable < high and position >= stable
        )  # fmt: skip


_RESET_HINTS = {
    "out_of_range": "records past the committed offset were deleted: check the topic's "
    "retention.ms against how long the group may lag or stay stopped",
    "no_committed_offset": "expected for a new group; for an existing deployment the broker "
    "expired its offsets: check offsets.retention.minutes against how long it may stay stopped",
}


def due_at_s(record: ConsumerRecord[bytes, bytes]) -> float:
    """A retry record's due time (epoch seconds) from its ``hookrelay-due-at`` header; 0.0
    (due now) when the header is missing or unreadable, so a damaged record is never stuck."""
    for key, value in record.headers:
        if key == DUE_AT_HEADER:
            try:
                return int(value) / 1000.0
            except (TypeError, ValueError):  # a null or non-numeric header value
                return 0.0
    return 0.0


def _offset(meta: OffsetAndMetadata | None) -> int | None:
    """A committed offset as ``AIOKafkaConsumer.committed`` gives it (None: none)."""
    return None if meta is None or meta.offset < 0 else int(meta.offset)


def _names(partitions: Any) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)
