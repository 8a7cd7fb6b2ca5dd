"""What waits in a deployment's retry topics now: every retry record past the group's
committed offsets that the daemon has not settled yet, read without joining the group.

A retry partition's committed offset only moves past settled records, and its commit's
offset map (``offsets.OpenOffsets``, in the metadata) names those settled above it, so the
records past the committed offset minus those are the retries still owed. Records settled
since the last commit (every ``kafka.commit_interval_s``) still count: the scan is as of that
commit. Tiers are the current ones and every topic the group committed as a retry tier
(``RETRY_COMMIT_METADATA``), so retries of an earlier schedule are counted too.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from hookrelay.config import Settings
from hookrelay.kafka.clients import closed, reader
from hookrelay.kafka.offsets import OpenOffsets
from hookrelay.kafka.retries import (
    HEADER_PREFIX,
    RETRY_COMMIT_METADATA,
    RetryRecord,
    claimed_elsewhere,
    split_commit_metadata,
)
from hookrelay.kafka.scan import group_offsets, scan
from hookrelay.ops.logs import get_logger
from hookrelay.ops.metrics import Metrics

log = get_logger("hookrelay.backlog")


@dataclass(frozen=True, slots=True)
class Waiting:
    """One retry still owed: the record (its value is the event, its key the event's key)
    and its parsed headers."""

    record: ConsumerRecord[bytes, bytes]
    retry: RetryRecord


@dataclass(slots=True)
class Backlog:
    """A scan's result: ``waiting`` in topic-partition-offset order; how many records were
    read, belonged to another deployment or did not parse; and where each scanned partition
    ended (``ends``: the scan saw every record below it)."""

    waiting: list[Waiting] = field(default_factory=list)
    read: int = 0
    other_deployments: int = 0
    unreadable: int = 0
    ends: dict[TopicPartition, int] = field(default_factory=dict)


Superseded = Callable[[str, str, int, int], bool]
"""``(hook id, topic, partition, offset)`` → True for a retry record an operator's release
re-drove a copy of (``control.ControlState.superseded``): no longer owed."""


async def scan_backlog(
    settings: Settings,
    superseded: Superseded,
    timeout_s: float = 60.0,
    role: str = "backlog",
) -> Backlog:
    """The retries this deployment owes now (see the module docstring), leaving out those
    ``superseded`` by a release. Raises aiokafka's ``KafkaError`` when the cluster is
    unreachable, ``TimeoutError`` past ``timeout_s`` per topic."""
    committed = await group_offsets(settings.kafka, settings.group_id, role=role)
    tiers = dict.fromkeys(settings.consumed_retry_topics)
    for tp, meta in committed.items():
        if split_commit_metadata(meta.metadata)[0] == RETRY_COMMIT_METADATA:
            tiers.setdefault(tp.topic)
    backlog = Backlog()
    events = frozenset(settings.kafka.topics)
    for topic in tiers:
        mine = {tp: meta for tp, meta in committed.items() if tp.topic == topic}
        start = {tp.partition: meta.offset for tp, meta in mine.items()}
        settled = {tp.partition: _offset_map(meta) for tp, meta in mine.items()}
        async for record in scan(settings.kafka, topic, start=start, timeout_s=timeout_s,
                                 role=role, ends=backlog.ends):  # fmt: skip
            known = settled.get(record.partition)
            if known is not None and known.settled(record.offset):
                continue  # settled by the daemon, above its committed offset
            _take(record, settings.group_id, events, backlog, superseded)
    return backlog


def _offset_map(meta: OffsetAndMetadata) -> OpenOffsets | None:
    offset_map = split_commit_metadata(meta.metadata)[1]
    if not offset_map:
        return None
    try:
        decoded = OpenOffsets.decode(offset_map)
    except ValueError:
        return None
    return decoded if decoded.start == meta.offset else None


def _take(
    record: ConsumerRecord[bytes, bytes],
    group: str,
    events: frozenset[str],
    backlog: Backlog,
    superseded: Superseded,
) -> None:
    backlog.read += 1
    headers = list(record.headers)
    if claimed_elsewhere(headers, group, events):
        backlog.other_deployments += 1
        return
    try:
        retry = RetryRecord.from_headers(headers)
    except (KeyError, ValueError):
        backlog.unreadable += 1
        return
    if not superseded(retry.hook_id, record.topic, record.partition, record.offset):
        backlog.waiting.append(Waiting(record, retry))


BACKLOG_SCAN_LIMIT: Final = 100_000
"""Records read per count, at most: past it, the rest of a partition is counted under the
hook id ``unscanned`` (from its offsets), so a tier's total stays exact and a count costs at
most about a second of CPU however large the backlog."""
_HOOK_HEADER: Final = HEADER_PREFIX + "hook-id"
UNSCANNED: Final = "unscanned"
"""The ``hook_id`` label of what a count did not read (past ``BACKLOG_SCAN_LIMIT``)."""


class BacklogGauge:
    """``hookrelay_retry_backlog{hook_id, tier}``: every ``admin.retry_backlog_interval_s``
    seconds (0: never), the retries
    waiting in the retry partitions this member is assigned (from their committed offsets to
    their end), counted by hook from the records' ``hookrelay-hook-id`` header. Summed over a
    deployment's replicas it is the deployment's backlog, since each retry partition has one
    owner. A hook id that is not configured is counted as ``other`` (labels stay bounded);
    records of another deployment, and those a release re-drove (``superseded``), are left
    out. ``starts`` is ``Source.retry_starts``."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        starts: Callable[[], dict[TopicPartition, int | None]],
        superseded: Superseded,
    ) -> None:
        self._settings = settings
        self._superseded = superseded
        self._gauge = metrics.retry_backlog
        self._starts = starts
        self._hooks = frozenset(h.id for h in settings.hooks)
        self._events = frozenset(settings.kafka.topics)
        self._shown: set[tuple[str, str]] = set()
        self.last: Counter[tuple[str, str]] = Counter()  # the last count, for the admin API

    def set_hooks(self, hook_ids: frozenset[str]) -> None:
        """The configured hook ids changed (a reload)."""
        self._hooks = hook_ids

    async def run(self) -> None:
        """Count every ``admin.retry_backlog_interval_s`` until cancelled (never when 0); a
        failed count is logged."""
        interval = self._settings.admin.retry_backlog_interval_s
        if not interval:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                self._publish(await self.count())
            except (KafkaError, OSError) as e:
                log.warning("retry_backlog_count_failed", error=f"{type(e).__name__}: {e}")

    async def count(self) -> Counter[tuple[str, str]]:
        """The retries waiting now per (hook label, tier), read with a consumer of its own
        (no group, nothing committed). Raises aiokafka's ``KafkaError``."""
        starts = self._starts()
        counts: Counter[tuple[str, str]] = Counter()
        if not starts:
            return counts
        consumer = reader(self._settings.kafka, "backlog")
        try:
            await consumer.start()
            await self._read(consumer, starts, counts)
        finally:
            await closed(consumer.stop())
        return counts

    async def _read(
        self,
        consumer: AIOKafkaConsumer,
        starts: dict[TopicPartition, int | None],
        counts: Counter[tuple[str, str]],
    ) -> None:
        tps = list(starts)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        for tp, offset in starts.items():
            if offset is not None:
                consumer.seek(tp, offset)
        begin = {tp: await consumer.position(tp) for tp in tps}  # before end_offsets: scan
        end = await consumer.end_offsets(tps)
        left = {tp for tp in tps if begin[tp] < end[tp]}
        budget = BACKLOG_SCAN_LIMIT
        while left and budget > 0:
            batches = await consumer.getmany(*left, timeout_ms=500, max_records=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < end[tp]:
                        self._take(record, counts)
                        budget -= 1
                if await consumer.position(tp) >= end[tp]:
                    left.discard(tp)
        for tp in left:  # past the budget: counted from the offsets, by tier only
            counts[(UNSCANNED, tp.topic)] += max(0, end[tp] - await consumer.position(tp))

    def _take(self, record: ConsumerRecord[bytes, bytes], counts: Counter[tuple[str, str]]) -> None:
        headers = list(record.headers)
        if claimed_elsewhere(headers, self._settings.group_id, self._events):
            return
        hook_id = next((v for k, v in headers if k == _HOOK_HEADER), None)
        name = (hook_id or b"").decode("utf-8", "replace")
        if self._superseded(name, record.topic, record.partition, record.offset):
            return  # a release sent its copy
        counts[(name if name in self._hooks else "other", record.topic)] += 1

    def of_hook(self, hook_id: str) -> dict[str, int]:
        """The last count's retries of ``hook_id`` by tier (this replica's partitions)."""
        return {tier: n for (hook, tier), n in self.last.items() if hook == hook_id and n}

    def unscanned(self) -> int:
        """The last count's records past ``BACKLOG_SCAN_LIMIT``, of any hook: while above 0,
        every hook's ``of_hook`` is a lower bound (a trial's API showed 100,173 of 400,000
        waiting, with nothing to say so)."""
        return sum(n for (hook, _tier), n in self.last.items() if hook == UNSCANNED)

    def _publish(self, counts: Counter[tuple[str, str]]) -> None:
        self.last = counts
        for labels in self._shown - set(counts):
            self._gauge.labels(*labels).set(0)  # emptied: 0, not gone, so alerts see it
        for labels, n in counts.items():
            self._gauge.labels(*labels).set(n)
        self._shown |= set(counts)
