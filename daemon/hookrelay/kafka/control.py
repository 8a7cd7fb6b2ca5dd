"""The control topic: decisions an operator takes once and every replica follows, across
restarts (``control_topic``, compacted, one partition).

Two kinds of record, keyed so compaction keeps the last decision per hook:

- ``pause/<hook id>``: ``{"v": 1, "group", "paused": bool, "reason", "at"}``. A paused hook's
  deliveries are parked in the retry topics without an attempt (never dead-lettered) until
  it is resumed. Pausing is not a configuration change: a reload or restart keeps it.
- ``release/<hook id>``: ``{"v": 1, "group", "at", "below": [[topic, partition, offset],
  ...]}``. ``release`` copied every retry the hook was owed (``kafka.backlog``) into the
  retry topic of deliveries due now (``Settings.now_topic``), with its attempt history and
  ``webhook-id``; ``below`` holds where that scan ended in each retry partition. A replica
  then leaves a retry record of that hook *below* those offsets alone (settled, counted in
  ``hookrelay_retries_superseded_total``): its copy is delivered instead. Records parked
  after the scan are above them and served as usual.

- ``replayed/<dead-letter topic>/<partition>/<run id>``: ``{"v": 1, "group", "at",
  "offsets": [[from, to], ...]}``: the dead letters one ``hookrelay replay`` run re-drove
  (offsets ``from`` to ``to``, ``to`` excluded), so a later run leaves them alone unless
  asked ``--again``. Only ``replay`` reads these (``ControlState(replays=True)``).

Times are epoch milliseconds. Records carry the ``hookrelay-group`` header and ``group``
member; a replica ignores another group's (DESIGN §1.8). A record that does not parse is
logged once and ignored: the control topic is written only by hookrelay's own commands.

**Ordering.** The release writes its ``release/`` record before any copy, and every replica
follows the topic within a second, so the original is normally left alone. A replica that
takes an original due in that second delivers it too (same ``webhook-id``: receivers
deduplicate on it, as at-least-once delivery asks anyway).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from hookrelay.config import Settings
from hookrelay.events.model import OutboundRecord
from hookrelay.kafka.backlog import Backlog, scan_backlog
from hookrelay.kafka.clients import client_options, write_all
from hookrelay.kafka.retries import GROUP_HEADER, RetryRecord
from hookrelay.kafka.scan import partitions_of, scan
from hookrelay.ops.logs import get_logger

log = get_logger("hookrelay.control")

VERSION: Final = 1
PAUSE: Final = "pause/"
RELEASE: Final = "release/"
REPLAYED: Final = "replayed/"
FOLLOW_POLL_MS: Final = 500


@dataclass(frozen=True, slots=True)
class Pause:
    """Why and since when (epoch ms) a hook is paused."""

    reason: str
    at_ms: int


@dataclass(slots=True)
class ControlState:
    """The decisions read so far from the control topic, for one group."""

    group: str
    replays: bool = False  # keep what replay runs re-drove (only replay needs it)
    paused: dict[str, Pause] = field(default_factory=dict)
    released: dict[str, dict[tuple[str, int], int]] = field(default_factory=dict)
    replayed: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    ignored: int = 0

    def apply(self, record: ConsumerRecord[bytes, bytes]) -> str | None:
        """Take one control record into account; return the hook id whose pause state it
        changed, else None. A record of another group, or one that does not parse, changes
        nothing (``ignored`` counts it)."""
        key = (record.key or b"").decode("utf-8", "replace")
        try:
            doc = orjson.loads(record.value) if record.value is not None else None
            if doc is not None and doc.get("group") != self.group:
                return None
            if key.startswith(PAUSE):
                return self._pause(key[len(PAUSE) :], doc)
            if key.startswith(RELEASE):
                self._release(key[len(RELEASE) :], doc)
            elif key.startswith(REPLAYED) and self.replays and doc is not None:
                self._replayed(key[len(REPLAYED) :], doc)
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            self.ignored += 1
            log.warning("control_record_ignored", key=key[:100], offset=record.offset)
        return None

    def _pause(self, hook_id: str, doc: dict[str, Any] | None) -> str | None:
        was = hook_id in self.paused
        if doc is not None and doc["paused"] is True:
            self.paused[hook_id] = Pause(str(doc.get("reason") or ""), int(doc["at"]))
        else:
            self.paused.pop(hook_id, None)
        return hook_id if was != (hook_id in self.paused) else None

    def _release(self, hook_id: str, doc: dict[str, Any] | None) -> None:
        if doc is None:
            self.released.pop(hook_id, None)
            return
        below = {(str(t), int(p)): int(o) for t, p, o in doc["below"]}
        known = self.released.setdefault(hook_id, {})
        for tp, offset in below.items():
            known[tp] = max(known.get(tp, 0), offset)

    def _replayed(self, where: str, doc: dict[str, Any]) -> None:
        topic, partition, _run = where.rsplit("/", 2)
        offsets = self.replayed.setdefault((topic, int(partition)), set())
        for start, end in doc["offsets"]:
            offsets.update(range(int(start), int(end)))

    def was_replayed(self, topic: str, partition: int, offset: int) -> bool:
        """True for a dead letter an earlier ``replay`` run re-drove."""
        return offset in self.replayed.get((topic, partition), ())

    def superseded(self, hook_id: str, topic: str, partition: int, offset: int) -> bool:
        """True for a retry record a release copied (see the module docstring)."""
        below = self.released.get(hook_id)
        return below is not None and offset < below.get((topic, partition), 0)


class ControlFollower:
    """Reads the control topic into a ``ControlState``: ``load`` to its end (before the
    daemon consumes anything), then ``run`` follows it; ``on_pause(hook_id, paused)`` runs
    for each change of a hook's pause state."""

    def __init__(
        self, settings: Settings, state: ControlState, on_pause: Callable[[str, bool], None]
    ) -> None:
        self._settings = settings
        self.state = state
        self._on_pause = on_pause
        self._consumer: AIOKafkaConsumer | None = None

    async def load(self, timeout_s: float = 30.0) -> None:
        """Start a consumer (no group) on every partition of the control topic and apply
        it up to its end. Raises aiokafka's ``KafkaError``, ``TimeoutError``."""
        topic = self._settings.control_topic
        partitions = await partitions_of(self._settings.kafka, topic, "control")
        consumer = AIOKafkaConsumer(
            **client_options(self._settings.kafka, "control"), enable_auto_commit=False,
            group_id=None,
        )  # fmt: skip
        try:
            await consumer.start()
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            begin = {tp: await consumer.position(tp) for tp in tps}  # before: see kafka.scan
            end = await consumer.end_offsets(tps)
            behind = [tp for tp in tps if begin[tp] < end[tp]]
            deadline = time.monotonic() + timeout_s
            while behind:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{topic} not read to its end in {timeout_s:g} s")
                self._apply(
                    await consumer.getmany(*behind, timeout_ms=FOLLOW_POLL_MS), notify=False
                )
                behind = [tp for tp in behind if await consumer.position(tp) < end[tp]]
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        # The end state only: the history of pauses and resumes is not news at start-up.
        for hook_id in sorted(self.state.paused):
            self._on_pause(hook_id, True)

    async def run(self) -> None:
        """Follow the control topic until cancelled (``load`` first). A failed fetch is
        logged and tried again a second later: a broker outage must not stop deliveries."""
        assert self._consumer is not None, "load() first"
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=FOLLOW_POLL_MS)
            except KafkaError as e:
                log.warning("control_fetch_failed", error=f"{type(e).__name__}: {e}")
                await asyncio.sleep(1.0)
                continue
            self._apply(batches)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def _apply(
        self,
        batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        *,
        notify: bool = True,
    ) -> None:
        for records in batches.values():
            for record in records:
                hook_id = self.state.apply(record)
                if hook_id is not None and notify:
                    self._on_pause(hook_id, hook_id in self.state.paused)


async def read_control(settings: Settings, *, replays: bool = False) -> ControlState:
    """The control topic's decisions as of now (for one-shot commands; the daemon follows it
    with ``ControlFollower``). Raises aiokafka's ``KafkaError``, ``TimeoutError``."""
    state = ControlState(settings.group_id, replays=replays)
    async for record in scan(settings.kafka, settings.control_topic, role="control"):
        state.apply(record)
    return state


async def note_replayed(settings: Settings, topic: str, offsets: dict[int, list[int]]) -> None:
    """Remember that dead letters at ``offsets`` (partition → offsets) of ``topic`` were
    re-driven, one record per partition. Raises aiokafka's ``KafkaError``."""
    run = uuid.uuid4().hex[:12]
    records = [
        _control_record(settings, f"{REPLAYED}{topic}/{partition}/{run}",
                        {"at": _now_ms(), "offsets": _ranges(sorted(found))})
        for partition, found in sorted(offsets.items())
    ]  # fmt: skip
    await _write(settings, records)


def _ranges(offsets: list[int]) -> list[list[int]]:
    """Sorted offsets as ``[from, to)`` runs: 3, 4, 5, 9 → [[3, 6], [9, 10]]."""
    runs: list[list[int]] = []
    for offset in offsets:
        if runs and runs[-1][1] == offset:
            runs[-1][1] = offset + 1
        else:
            runs.append([offset, offset + 1])
    return runs


async def write_decision(settings: Settings, key: str, doc: dict[str, Any]) -> None:
    """Write one control record (acks=all, idempotent) and wait for its acknowledgement."""
    await _write(settings, [_control_record(settings, key, doc)])


async def set_paused(settings: Settings, hook_id: str, paused: bool, reason: str = "") -> None:
    """Pause (or resume) ``hook_id`` for every replica of the deployment, now and after
    restarts. Raises aiokafka's ``KafkaError`` when the cluster cannot be reached."""
    doc = {"paused": paused, "reason": reason[:500], "at": _now_ms()}
    await write_decision(settings, PAUSE + hook_id, doc)


@dataclass(frozen=True, slots=True)
class Release:
    """What ``release`` found (and, unless a dry run, re-drove): the hook's retries."""

    hook_id: str
    waiting: list[RetryRecord]
    backlog: Backlog


async def release(settings: Settings, hook_id: str, *, dry_run: bool = False) -> Release:
    """Send ``hook_id``'s parked deliveries now: copy each retry it is owed into the retry
    topic of deliveries due now (``Settings.now_topic``; attempts, parks and ``webhook-id``
    kept), after a ``release/`` record that makes every replica leave the originals alone.
    Raises aiokafka's ``KafkaError``, ``TimeoutError``."""
    state = await read_control(settings)
    backlog = await scan_backlog(settings, state.superseded, role="release")
    mine = [w for w in backlog.waiting if w.retry.hook_id == hook_id]
    result = Release(hook_id, [w.retry for w in mine], backlog)
    if dry_run or not mine:
        return result
    now = _now_ms()
    below = [[tp.topic, tp.partition, end] for tp, end in sorted(backlog.ends.items())]
    copies = [
        OutboundRecord(settings.now_topic, w.record.value, w.record.key,
                       tuple(_due_now(w.retry, now, settings.group_id)), "retry")
        for w in mine
    ]  # fmt: skip
    await write_decision(settings, RELEASE + hook_id, {"at": now, "below": below})
    await _write(settings, copies)
    return result


def _due_now(retry: RetryRecord, now_ms: int, group: str) -> list[tuple[str, bytes]]:
    return list(replace(retry, due_at_ms=now_ms, group=group).headers())


def _value(settings: Settings, doc: dict[str, Any]) -> bytes:
    return orjson.dumps({"v": VERSION, "group": settings.group_id, **doc})


async def _write(settings: Settings, records: list[OutboundRecord]) -> None:
    await write_all(settings.kafka, records, "control")


def _control_record(settings: Settings, key: str, doc: dict[str, Any]) -> OutboundRecord:
    headers = ((GROUP_HEADER, settings.group_id.encode()),)
    return OutboundRecord(settings.control_topic, _value(settings, doc), key.encode(), headers,
                          "control")  # fmt: skip


def _now_ms() -> int:
    return int(time.time() * 1000)
