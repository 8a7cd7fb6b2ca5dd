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

from dataclasses import dataclass, field

from aiokafka import ConsumerRecord
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from hookrelay.config import Settings
from hookrelay.kafka.offsets import OpenOffsets
from hookrelay.kafka.retries import (
    RETRY_COMMIT_METADATA,
    RetryRecord,
    claimed_elsewhere,
    split_commit_metadata,
)
from hookrelay.kafka.scan import group_offsets, scan


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


async def scan_backlog(
    settings: Settings, timeout_s: float = 60.0, role: str = "backlog"
) -> Backlog:
    """The retries this deployment owes now (see the module docstring). Raises aiokafka's
    ``KafkaError`` when the cluster is unreachable, ``TimeoutError`` past ``timeout_s``
    per topic."""
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
            _take(record, settings.group_id, events, backlog)
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
    record: ConsumerRecord[bytes, bytes], group: str, events: frozenset[str], backlog: Backlog
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
    backlog.waiting.append(Waiting(record, retry))
