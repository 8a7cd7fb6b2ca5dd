"""``hookrelay backfill HOOK_ID --since T [--until T]``: deliver past events to one hook.

A hook added today receives events from the next record on; backfill sends it the events
of a past window. It reads the event topics (``kafka.topics``) from the first record written
at ``since`` (Kafka's time index) up to ``until`` (or their end as of the start), decodes
each record with the daemon's own rules, routes it with the daemon's router, and for each
event the hook subscribes to writes a retry record to the retry topic of deliveries due now
(``Settings.now_topic``). The running daemon then delivers them through the normal path: the
hook's lane, its rate limit and circuit breaker, its retry schedule and dead-letter topic,
and the ``webhook-id`` a delivery of that record to that hook always has (topic, partition,
offset, hook id), so a receiver that got one already deduplicates it.

Invalid records in the window are skipped (they were dead-lettered when consumed). Records
are marked ``redrive``: the daemon sends them even when it delivered the same webhook-id a
moment ago. Nothing is committed and no consumer group is joined.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from hookrelay.config import Hook, Settings
from hookrelay.delivery.router import Router
from hookrelay.errors import InvalidEventError
from hookrelay.events.decode import decode
from hookrelay.events.model import Origin, OutboundRecord
from hookrelay.events.signing import delivery_id
from hookrelay.events.tracecontext import trace_context
from hookrelay.kafka.clients import write_all
from hookrelay.kafka.retries import RetryRecord
from hookrelay.kafka.scan import scan, window


@dataclass(slots=True)
class BackfillSummary:
    """What a run read (records in the window), found for the hook (``matched``), skipped as
    invalid, and wrote (0 for a dry run)."""

    read: int = 0
    matched: int = 0
    invalid: int = 0
    written: int = 0


async def window_size(settings: Settings, since_ms: int, until_ms: int | None) -> int:
    """How many records the event topics hold in the window, without reading them (Kafka's
    time index). Raises aiokafka's ``KafkaError``."""
    total = 0
    for topic in settings.kafka.topics:
        bounds = await window(settings.kafka, topic, since_ms, until_ms, role="backfill")
        total += sum(end - start for start, end in bounds.values())
    return total


async def backfill(
    settings: Settings,
    hook: Hook,
    since_ms: int,
    until_ms: int | None,
    *,
    dry_run: bool,
    progress: Callable[[int], None] | None = None,
) -> BackfillSummary:
    """Send ``hook`` the events of the window (see the module docstring); with ``dry_run``
    only count them. ``progress(n)`` is called as records are read. Raises aiokafka's
    ``KafkaError``, ``TimeoutError``."""
    summary = BackfillSummary()
    records = _retries(settings, hook, since_ms=since_ms, until_ms=until_ms, summary=summary,
                       progress=progress)  # fmt: skip
    if dry_run:
        async for _ in records:
            pass
        return summary
    summary.written = await write_all(settings.kafka, records, "backfill")
    return summary


async def _retries(
    settings: Settings,
    hook: Hook,
    *,
    since_ms: int,
    until_ms: int | None,
    summary: BackfillSummary,
    progress: Callable[[int], None] | None,
) -> AsyncIterator[OutboundRecord]:
    router = Router([hook])
    limit = settings.delivery.max_event_bytes
    for topic in settings.kafka.topics:
        async for record in scan(settings.kafka, topic, since_ms=since_ms, until_ms=until_ms,
                                 role="backfill", timeout_s=3600.0):  # fmt: skip
            summary.read += 1
            if progress is not None:
                progress(1)
            origin = Origin(record.topic, record.partition, record.offset, record.timestamp)
            try:
                event = decode(
                    record.value, record.key, origin, limit, trace_context(record.headers)
                )
            except InvalidEventError:
                summary.invalid += 1
                continue
            if not router.match(event.name):
                continue
            summary.matched += 1
            now_ms = int(time.time() * 1000)
            retry = RetryRecord(
                hook_id=hook.id, event=event.name,
                delivery_id=delivery_id(origin.topic, origin.partition, origin.offset, hook.id),
                attempts=0, first_attempt_at_ms=None, last_attempt_at_ms=None,
                last_status=None, error="backfilled", due_at_ms=now_ms,
                origin_topic=origin.topic, origin_partition=origin.partition,
                origin_offset=origin.offset, origin_timestamp_ms=origin.timestamp_ms,
                created_at_ms=now_ms, group=settings.group_id, trace=event.trace,
                redrive=True,
            )  # fmt: skip
            yield OutboundRecord(
                settings.now_topic, record.value, record.key, tuple(retry.headers()), "retry"
            )
