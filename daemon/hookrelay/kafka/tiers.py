"""Find the retry topics of an earlier configuration that still hold this group's retries.

The retry tiers a daemon subscribes to come from ``delivery.retry_topic_prefix`` and
``delivery.retry_schedule_s``. Change either (restart-only keys) and the tiers the previous
run wrote to drop out of that list, with retries still waiting in them. So at start-up the
daemon looks for *former tiers* that still hold records past the group's committed offset,
and subscribes to them too ("draining"): each record carries its own due time, so it is
served when due, and a retry that fails again moves on in the current schedule.

Where a former tier is remembered:

1. **The group's committed offsets.** ``Source`` commits every retry partition with the
   metadata ``RETRY_COMMIT_METADATA`` (event partitions with ``EVENT_COMMIT_METADATA``), and
   commits a retry partition's start offset as soon as it is assigned, so every tier this
   group ever subscribed to is known to the broker, even one it never took a record from.
   Commits written before this existed carry no metadata: such a topic is confirmed by
   peeking at its pending records, one of which must be a retry record of this deployment
   (retry headers, this group or none, an origin topic it consumes).
2. **Names.** Topics named like a tier of the current prefix (``<prefix>30s``, ...), or of
   the pre-isolation default prefix ``hookrelay.retry.`` (upgrades), confirmed the same way,
   so another deployment's tiers are not drained here.

Whose records those are is still decided per record by the pipeline (group and origin
topic), so draining a topic another deployment also writes to serves only this
deployment's retries. The daemon looks at start-up and every minute after (a rolling update
that changes the schedule has old replicas writing to old tiers for a while), by name only
every tenth time: that look lists every topic of the cluster, the others ask only about the
topics the group has offsets on.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from hookrelay.config import Settings
from hookrelay.config.naming import TIER_LABEL
from hookrelay.kafka.clients import (
    client_options,
    closed,
    partitions_by_topic,
    reader,
)
from hookrelay.kafka.retries import (
    DUE_AT_HEADER,
    HEADER_PREFIX,
    RETRY_COMMIT_METADATA,
    claimed_elsewhere,
    split_commit_metadata,
)
from hookrelay.ops.logs import get_logger

log = get_logger("hookrelay.tiers")

LEGACY_PREFIX: Final = "hookrelay.retry."
"""The retry prefix every deployment used before names derived from ``kafka.group_id``."""
_HOOK_ID_HEADER: Final = HEADER_PREFIX + "hook-id"
PEEK_TIMEOUT_S: Final = 5.0
PEEK_RECORDS: Final = 1000
"""Pending records read, at most, to find one of this deployment's in an unconfirmed tier."""


@dataclass(frozen=True, slots=True)
class FormerTier:
    """A retry topic outside the current configuration with ``pending`` records (summed
    over partitions) past the group's committed offsets."""

    topic: str
    pending: int


def _tier_name(prefix: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + TIER_LABEL.pattern)


def candidate_topics(
    settings: Settings,
    existing: Iterable[str],
    committed: dict[TopicPartition, OffsetAndMetadata],
    *,
    by_name: bool = True,
) -> tuple[set[str], set[str]]:
    """``(known, unconfirmed)`` former-tier candidates among ``existing`` topics: ``known``
    were committed with ``RETRY_COMMIT_METADATA``; ``unconfirmed`` need a peek (untagged
    commits, or, with ``by_name``, a tier-like name). Pure; the current topics are never
    candidates."""
    current = {*settings.kafka.topics, *settings.consumed_retry_topics, settings.dead_letter_topic}
    existing = set(existing) - current
    roles: dict[str, set[str]] = {}
    for tp, meta in committed.items():
        roles.setdefault(tp.topic, set()).add(split_commit_metadata(meta.metadata)[0])
    known = {t for t, r in roles.items() if RETRY_COMMIT_METADATA in r and t in existing}
    untagged = {t for t, r in roles.items() if r == {""} and t in existing}
    names = [_tier_name(settings.delivery.retry_topic_prefix), _tier_name(LEGACY_PREFIX)]
    named = {
        t for t in existing if by_name and t not in roles and any(p.fullmatch(t) for p in names)
    }
    return known, (untagged | named) - known


async def find_former_tiers(
    settings: Settings, examined: dict[TopicPartition, int] | None = None, *, by_name: bool = True
) -> list[FormerTier]:
    """Former tiers holding records this group has not consumed yet, largest first;
    ``by_name=False`` looks only at topics the group has offsets on (fast: what start-up
    waits for), leaving tier-like names it never consumed to a later look.

    ``examined`` remembers, across calls, how far unconfirmed topics were read without
    finding a record of this deployment, so a later call reads only what came since (it is
    updated in place). Raises aiokafka's ``KafkaError`` (or ``TimeoutError``) when the
    cluster cannot answer.
    """
    examined = {} if examined is None else examined
    k = settings.kafka
    admin = AIOKafkaAdminClient(
        **client_options(k, "admin"), request_timeout_ms=int(k.request_timeout_s * 1000)
    )
    try:  # start inside: a client whose start failed is closed too
        await admin.start()
        committed = await admin.list_consumer_group_offsets(k.group_id)
        described: dict[str, list[Any]] | None = None
        if by_name:
            existing = set(await admin.list_topics())
        else:  # one request: the committed topics' partitions say which of them exist
            described = await partitions_by_topic(admin, {tp.topic for tp in committed})
            existing = set(described)
        known, unconfirmed = candidate_topics(settings, existing, committed, by_name=by_name)
        candidates = sorted(known | unconfirmed)
        if described is None:
            described = await partitions_by_topic(admin, candidates)
    finally:
        await closed(admin.close())
    partitions = {
        topic: sorted(p["partition"] for p in found) for topic, found in described.items()
    }
    if not candidates:
        return []
    consumer = reader(k, "tiers")
    try:  # start inside: a client whose start failed is closed too
        await consumer.start()
        found = []
        for topic in candidates:
            tps = [TopicPartition(topic, p) for p in partitions.get(topic, [])]
            starts = await _pending_starts(consumer, tps, committed)
            pending = sum(end - start for start, end in starts.values())
            if pending <= 0:
                continue
            if topic in known or await _unexamined_hold_own(consumer, starts, settings, examined):
                found.append(FormerTier(topic, pending))
        return sorted(found, key=lambda tier: (-tier.pending, tier.topic))
    finally:
        await closed(consumer.stop())


async def _pending_starts(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    committed: dict[TopicPartition, OffsetAndMetadata],
) -> dict[TopicPartition, tuple[int, int]]:
    """``{partition: (first unconsumed offset, end offset)}`` for those of ``tps`` with
    records past the group's committed offset (or past their start, uncommitted)."""
    if not tps:
        return {}
    begins = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    result = {}
    for tp in tps:
        meta = committed.get(tp)
        start = max(begins[tp], meta.offset if meta is not None and meta.offset >= 0 else 0)
        if ends[tp] > start:
            result[tp] = (start, ends[tp])
    return result


async def _unexamined_hold_own(
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, tuple[int, int]],
    settings: Settings,
    examined: dict[TopicPartition, int],
) -> bool:
    """``_holds_own_retry_records`` over what ``examined`` has not covered yet; a topic
    found to hold none is remembered as examined up to its end offsets."""
    fresh = {
        tp: (max(start, examined.get(tp, 0)), end)
        for tp, (start, end) in starts.items()
        if end > max(start, examined.get(tp, 0))
    }
    if not fresh:
        return False
    return await _holds_own_retry_records(consumer, fresh, settings, examined)


async def _holds_own_retry_records(
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, tuple[int, int]],
    settings: Settings,
    examined: dict[TopicPartition, int],
) -> bool:
    """True when one of the first ``PEEK_RECORDS`` pending records of these partitions is a
    retry record of this deployment: ``hookrelay-due-at`` and ``hookrelay-hook-id`` headers,
    and no header naming another group or an origin topic it does not consume. Reading
    stops at the partitions' end offsets, after ``PEEK_RECORDS`` or ``PEEK_TIMEOUT_S``;
    ``examined`` then holds how far each partition was read (the next look goes on from
    there, so a record of this deployment behind many of another's is found in time)."""
    consumer.assign(list(starts))
    for tp, (start, _end) in starts.items():
        consumer.seek(tp, start)
    remaining = {tp: end for tp, (_start, end) in starts.items()}
    seen = 0
    try:
        async with asyncio.timeout(PEEK_TIMEOUT_S):
            while remaining and seen < PEEK_RECORDS:
                batches = await consumer.getmany(*remaining, timeout_ms=200, max_records=100)
                for tp, records in batches.items():
                    seen += len(records)
                    if any(_is_own_retry(r.headers, settings) for r in records):
                        return True
                    if records:
                        examined[tp] = records[-1].offset + 1
                for tp, end in list(remaining.items()):
                    if await consumer.position(tp) >= end:
                        examined[tp] = end
                        del remaining[tp]
    except TimeoutError:
        pass
    return False


def _is_own_retry(headers: Sequence[tuple[str, bytes | None]], settings: Settings) -> bool:
    names = {key for key, _ in headers}
    return (
        DUE_AT_HEADER in names
        and _HOOK_ID_HEADER in names
        and claimed_elsewhere(headers, settings.group_id, settings.kafka.topics) is None
    )
