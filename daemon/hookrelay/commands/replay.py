"""``hookrelay replay``: re-drive dead-lettered deliveries through the normal path.

The dead-letter topic is read from its beginning up to its end as of the start of the run
(no consumer group, nothing committed, so a replay never changes what the daemon consumes).
Each failed delivery that passes the filters is written to the retry topic of deliveries due
now (``Settings.now_topic``: a tier would hold it behind its not-yet-due records) as a fresh
retry record — same hook, same event bytes, same ``webhook-id``, attempt count reset,
due now, and a fresh schedule counted from the replay (``created-at`` = now) — so the
running daemon delivers it exactly like any new delivery: through the hook's lane, its rate
limit and circuit breaker, and its full retry schedule.

Only this deployment's letters are replayed: those its consumer group wrote (the
``hookrelay-group`` header), or, for letters written before that header existed, those whose
origin topic is one of ``kafka.topics``. ``groups`` widens that (a renamed group's letters),
and a letter whose origin topic this deployment does not consume is never replayed: the
daemon would leave such a retry alone.

Dead letters of *invalid records* (``not_json``, ``oversized``...) carry no hook and are
reported as not replayable: replaying them would only fail again.

**Replay remembers.** After the retries are written, the control topic records which letters
this run re-drove (``kafka.control``, ``replayed/`` records); a later run leaves those alone
and counts them as already replayed, unless ``again``. A run that fails between the two
writes is not remembered: its letters are re-driven again next time (at least once, never
lost).

**Replay unblocks.** A letter of a key that an ordered hook keeps blocked after a dead letter
(``ordering_after_dead_letter: block``, ``kafka.control``'s ``blocked/`` records) would be
dead-lettered ``key_blocked`` again: the run first unblocks every such (hook, key) it
re-drives (tombstones), waits for the replicas to follow the control topic (a second), then
writes the retries. Within a key the re-driven letters keep their order (one retry partition
per key, read in order; a replayed delivery that fails for good blocks its key again, and the
key's next replayed letters go back to the dead-letter topic, in order). But the key's new
events, read from ``kafka.topics`` once it is unblocked, are **not** held behind the
replayed ones (they form another chain: another partition): an event arriving between the
unblock and the replayed letters' delivery may overtake them. The README says when that
matters and what to do.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import ConsumerRecord

from hookrelay.config import Settings
from hookrelay.events.model import OutboundRecord
from hookrelay.events.tracecontext import TraceContext, trace_context
from hookrelay.kafka.clients import write_all
from hookrelay.kafka.control import (
    FOLLOW_POLL_MS,
    ControlState,
    exclusive,
    note_replayed,
    read_control,
    unblock_keys,
)
from hookrelay.kafka.retries import HEADER_PREFIX, RetryRecord
from hookrelay.kafka.scan import scan


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which dead letters to replay; empty tuples and ``None`` bounds match everything.

    ``since_ms``/``until_ms`` bound the dead letter's Kafka timestamp (when it was written),
    in epoch milliseconds, ``until`` exclusive.
    """

    hook_ids: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, letter: DeadLetterView) -> bool:
        """True when ``letter`` is selected."""
        return (
            (not self.hook_ids or letter.hook_id in self.hook_ids)
            and (not self.events or letter.event in self.events)
            and (not self.reasons or letter.reason in self.reasons)
            and (self.since_ms is None or letter.timestamp_ms >= self.since_ms)
            and (self.until_ms is None or letter.timestamp_ms < self.until_ms)
        )


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    """A dead-letter record as replay sees it: its ``hookrelay-*`` headers and value, and the
    event's W3C trace context (``traceparent``/``tracestate``), which the retry record keeps."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes
    key: bytes | None
    headers: dict[str, str]
    trace: TraceContext | None = None

    @property
    def hook_id(self) -> str:
        return self.headers.get("hook-id", "")

    @property
    def event(self) -> str:
        return self.headers.get("event", "")

    @property
    def reason(self) -> str:
        return self.headers.get("reason", "")

    @property
    def group(self) -> str:
        """The consumer group that wrote the letter; empty for letters from before the
        ``hookrelay-group`` header existed."""
        return self.headers.get("group", "")

    @property
    def origin_topic(self) -> str:
        return self.headers.get("origin-topic", "")

    def describe(self) -> str:
        """One line for people: what would be (or was) replayed."""
        written = (
            datetime.fromtimestamp(self.timestamp_ms / 1000)
            .astimezone()
            .isoformat(timespec="seconds")
        )
        status = self.headers.get("last-status") or "-"
        return (
            f"hook={self.hook_id} event={self.event} webhook-id={self.headers.get('delivery-id')}"
            f" reason={self.reason} last_status={status} attempts={self.headers.get('attempts')}"
            f" dead_lettered_at={written} at={self.partition}:{self.offset}"
        )

    def damage(self) -> str | None:
        """Why this letter cannot become a retry record the daemon accepts, or None: its
        retry record is built and read back with the daemon's own checks."""
        try:
            RetryRecord.from_headers(self.retry_record(0, "check").headers())
        except (KeyError, ValueError) as e:
            return str(e) if isinstance(e, ValueError) else f"no header hookrelay-{e.args[0]}"
        return None

    def retry_record(self, now_ms: int, group: str) -> RetryRecord:
        """A fresh retry record for this delivery, written by ``group``: due at ``now_ms``,
        no attempt and no park counted, its retry window starting at ``now_ms``."""
        h = self.headers
        return RetryRecord(
            hook_id=self.hook_id,
            event=self.event,
            delivery_id=h["delivery-id"],
            attempts=0,
            first_attempt_at_ms=None,
            last_attempt_at_ms=None,
            last_status=None,
            error="replayed from the dead-letter topic",
            due_at_ms=now_ms,
            origin_topic=h["origin-topic"],
            origin_partition=int(h["origin-partition"]),
            origin_offset=int(h["origin-offset"]),
            origin_timestamp_ms=int(h.get("origin-timestamp") or self.timestamp_ms),
            created_at_ms=now_ms,
            group=group,
            redrive=True,
            trace=self.trace,
        )


@dataclass(slots=True)
class ReplaySummary:
    """Counts of one run; ``lines`` describes each selected dead letter."""

    read: int = 0
    selected: int = 0
    not_replayable: int = 0
    unknown_hook: int = 0
    damaged: int = 0
    other_group: int = 0
    foreign_origin: int = 0
    already_replayed: int = 0
    unblocked: int = 0  # blocked (hook, key) pairs the run unblocked (or, dry, would)
    lines: list[str] = field(default_factory=list)


def view_of(record: ConsumerRecord[bytes, bytes]) -> DeadLetterView:
    """A dead-letter record's view: its ``hookrelay-*`` headers without the prefix."""
    headers = {
        k[len(HEADER_PREFIX) :]: (v or b"").decode("utf-8", "replace")
        for k, v in record.headers
        if k.startswith(HEADER_PREFIX)
    }
    return DeadLetterView(
        record.topic, record.partition, record.offset, record.timestamp, record.value or b"",
        record.key, headers, trace_context(record.headers),
    )  # fmt: skip


async def read_dead_letters(
    settings: Settings, timeout_s: float = 30.0, *, topic: str | None = None
) -> list[DeadLetterView]:
    """Every record of the dead-letter topic (or ``topic``) up to its current end, oldest
    first per partition (``kafka.scan.scan``: its errors)."""
    topic = topic or settings.dead_letter_topic
    return [
        view_of(r) async for r in scan(settings.kafka, topic, timeout_s=timeout_s, role="replay")
    ]


async def replay(
    settings: Settings,
    selection: ReplayFilter,
    *,
    dry_run: bool,
    limit: int | None = None,
    groups: tuple[str, ...] = (),
    topic: str | None = None,
    again: bool = False,
) -> ReplaySummary:
    """Replay the selected dead letters of this deployment (or only describe them when
    ``dry_run``). ``groups`` adds consumer groups whose letters count as this deployment's;
    ``topic`` reads another dead-letter topic (one of an earlier configuration). A letter an
    earlier run re-drove (the control topic remembers, see ``kafka.control``) is left alone
    unless ``again``; what this run re-drives is remembered once written. One run at a time
    per deployment (``kafka.control.exclusive``): raises ``RunClaimedError`` while another
    runs."""
    if dry_run:
        return await _replay(settings, selection, dry_run=True, limit=limit, groups=groups,
                             topic=topic, again=again)  # fmt: skip
    async with exclusive(settings, "replay"):
        return await _replay(settings, selection, dry_run=False, limit=limit, groups=groups,
                             topic=topic, again=again)  # fmt: skip


async def _replay(
    settings: Settings,
    selection: ReplayFilter,
    *,
    dry_run: bool,
    limit: int | None,
    groups: tuple[str, ...],
    topic: str | None,
    again: bool,
) -> ReplaySummary:
    summary = ReplaySummary()
    control = await read_control(settings, replays=True)
    known_hooks = {h.id for h in settings.hooks if h.enabled}
    owners = {settings.group_id, *groups}
    consumed = set(settings.kafka.topics)
    chosen: list[DeadLetterView] = []
    for letter in await read_dead_letters(settings, topic=topic):
        summary.read += 1
        excluded = _excluded(letter, owners, consumed)
        if excluded is not None:
            setattr(summary, excluded, getattr(summary, excluded) + 1)
            continue
        if not selection.matches(letter) or (limit is not None and len(chosen) >= limit):
            continue
        if control.was_replayed(letter.topic, letter.partition, letter.offset):
            summary.already_replayed += 1
            if not again:
                continue
        if letter.hook_id not in known_hooks:
            summary.unknown_hook += 1
            summary.lines.append(f"skip (hook not configured or disabled): {letter.describe()}")
            continue
        problem = letter.damage()
        if problem is not None:
            summary.damaged += 1
            summary.lines.append(f"skip (damaged letter: {problem}): {letter.describe()}")
            continue
        chosen.append(letter)
        summary.lines.append(("would replay: " if dry_run else "replay: ") + letter.describe())
    summary.selected = len(chosen)
    blocked = _blocked_by(control, chosen)
    summary.unblocked = len(blocked)
    if chosen and not dry_run:
        await _redrive(settings, chosen, blocked)
    return summary


async def _redrive(
    settings: Settings, chosen: list[DeadLetterView], blocked: list[tuple[str, bytes]]
) -> None:
    """Unblock ``blocked``, write ``chosen`` as retries due now, and remember them."""
    if blocked:  # first, or the daemon dead-letters them key_blocked again
        await unblock_keys(settings, blocked)
        await asyncio.sleep(2 * FOLLOW_POLL_MS / 1000)  # every replica follows it by then
    await _write_retries(settings, chosen)
    offsets: dict[int, list[int]] = {}
    for letter in chosen:
        offsets.setdefault(letter.partition, []).append(letter.offset)
    await note_replayed(settings, chosen[0].topic, offsets)


def _blocked_by(control: ControlState, letters: list[DeadLetterView]) -> list[tuple[str, bytes]]:
    """(hook id, record key) of each blocked key (``ControlState.blocked``) ``letters``
    hold, in the order they first appear."""
    found: dict[tuple[str, bytes], None] = {}
    for letter in letters:
        if letter.key is not None and control.blocked.blocks(letter.hook_id, letter.key):
            found[letter.hook_id, letter.key] = None
    return list(found)


def _excluded(letter: DeadLetterView, owners: set[str], consumed: set[str]) -> str | None:
    """The ``ReplaySummary`` count a letter that is never replayed here goes to, or None."""
    if not letter.hook_id:
        return "not_replayable"  # an invalid record: it would only fail again
    if letter.group and letter.group not in owners:
        return "other_group"  # another deployment's: never re-driven here
    if letter.origin_topic not in consumed:
        return "foreign_origin"  # the daemon would leave such a retry alone
    return None


async def _write_retries(settings: Settings, letters: list[DeadLetterView]) -> None:
    now_ms = int(time.time() * 1000)
    retries = (
        OutboundRecord(settings.now_topic, letter.value, letter.key,
                       tuple(letter.retry_record(now_ms, settings.group_id).headers()), "retry")
        for letter in letters
    )  # fmt: skip
    await write_all(settings.kafka, retries, "replay")
