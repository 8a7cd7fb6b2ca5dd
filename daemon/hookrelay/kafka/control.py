"""The control topic: decisions an operator takes once and every replica follows, across
restarts (``control_topic``, compacted, one partition).

Records are keyed ``<kind>/<group>/<what>``, so compaction keeps the last decision per group
and hook even on a topic two deployments were given by hand:

- ``pause/<group>/<hook id>``: ``{"v": 1, "group", "paused": bool, "reason", "at"}``. A
  paused hook's deliveries are parked in the retry topics without an attempt (never
  dead-lettered) until it is resumed. Pausing is not a configuration change: a reload or
  restart keeps it.
- ``release/<group>/<hook id>``: ``{"v": 1, "group", "at", "below": [[topic, partition, offset],
  ...]}``. ``release`` copied every retry the hook was owed (``kafka.backlog``) into the
  retry topic of deliveries due now (``Settings.now_topic``), with its attempt history and
  ``webhook-id``; ``below`` holds where that scan ended in each retry partition. A replica
  then leaves a retry record of that hook *below* those offsets alone (settled, counted in
  ``hookrelay_retries_superseded_total``): its copy is delivered instead. Records parked
  after the scan are above them and served as usual.

- ``replayed/<group>/<dead-letter topic>/<partition>/<run id>``: ``{"v": 1, "group", "at",
  "offsets": [[from, to], ...]}``: the dead letters one ``hookrelay replay`` run re-drove
  (offsets ``from`` to ``to``, ``to`` excluded), so a later run leaves them alone unless
  asked ``--again``. Only ``replay`` reads these (``ControlState(replays=True)``).

- ``blocked/<group>/<hook id>/<key>``, ``<key>`` the record key in unpadded base64url:
  ``{"v": 1, "group", "hook", "key" (the record key as UTF-8 text, undecodable bytes
  replaced), "delivery_id", "reason", "at"}``. An ordered hook with
  ``ordering_after_dead_letter: block`` dead-lettered the head of that key's chain
  (``delivery_id``, for ``reason``), so every later delivery of the key to that hook is
  dead-lettered ``key_blocked``, in order, until a tombstone unblocks it (``unblock``:
  ``hookrelay unblock``, the admin API, or ``hookrelay replay`` of the key's letters). The
  daemon writes it through its ``DurableWriter`` before the head's dead letter, so a crash
  never leaves a settled head without its block (``delivery.ordering``).

- ``claim/<group>/<name>/<run id>``: ``{"v": 1, "group", "expires"}``, then a tombstone when
  the run ends: one run at a time of ``replay`` and of ``release`` per hook (``exclusive``).

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
import base64
import binascii
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError
from aiokafka.structs import TopicPartition

from hookrelay.config import Settings
from hookrelay.errors import RunClaimedError
from hookrelay.events.model import Delivery, OutboundRecord
from hookrelay.kafka.backlog import Backlog, Waiting, scan_backlog
from hookrelay.kafka.clients import closed, reader, write_all
from hookrelay.kafka.retries import GROUP_HEADER, RetryRecord
from hookrelay.kafka.scan import partitions_of, scan
from hookrelay.kafka.topics import ensure_control_topic
from hookrelay.ops.logs import get_logger

log = get_logger("hookrelay.control")

VERSION: Final = 1
PAUSE: Final = "pause/"
RELEASE: Final = "release/"
REPLAYED: Final = "replayed/"
CLAIM: Final = "claim/"
BLOCKED: Final = "blocked/"
CLAIM_TTL_S: Final = 1800.0
"""How long a claim holds when its run died without ending it (``exclusive``)."""
FOLLOW_POLL_MS: Final = 500


@dataclass(frozen=True, slots=True)
class Pause:
    """Why and since when (epoch ms) a hook is paused."""

    reason: str
    at_ms: int


class BlockedKeys:
    """The record keys blocked per hook (``blocked/`` records): hook id → keys. Shared by the
    ``ControlState`` that follows the topic and the ordered lanes that block keys (they add
    a key as soon as its record is acknowledged: the follower reads it up to half a second
    later). Memory: one entry per blocked key, which only an operator's unblock removes."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[str, set[bytes]] = {}

    def add(self, hook_id: str, key: bytes) -> None:
        self._keys.setdefault(hook_id, set()).add(key)

    def discard(self, hook_id: str, key: bytes) -> None:
        keys = self._keys.get(hook_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys[hook_id]

    def blocks(self, hook_id: str, key: bytes) -> bool:
        """True when ``key`` is blocked for ``hook_id``."""
        keys = self._keys.get(hook_id)
        return keys is not None and key in keys

    def of(self, hook_id: str) -> list[bytes]:
        """``hook_id``'s blocked keys, sorted."""
        return sorted(self._keys.get(hook_id, ()))

    def count(self, hook_id: str) -> int:
        """How many keys are blocked for ``hook_id``."""
        return len(self._keys.get(hook_id, ()))


def encode_key(key: bytes) -> str:
    """A record key as it appears in a ``blocked/`` record's key: unpadded base64url."""
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")


def decode_key(text: str) -> bytes:
    """The record key ``encode_key`` wrote. Raises ``ValueError`` for text it did not."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as e:
        raise ValueError(f"not base64url: {text[:40]!r}") from e


@dataclass(slots=True)
class ControlState:
    """The decisions read so far from the control topic, for one group."""

    group: str
    replays: bool = False  # keep what replay runs re-drove (only replay needs it)
    paused: dict[str, Pause] = field(default_factory=dict)
    released: dict[str, dict[tuple[str, int], int]] = field(default_factory=dict)
    replayed: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    blocked: BlockedKeys = field(default_factory=BlockedKeys)
    ignored: int = 0

    def apply(self, record: ConsumerRecord[bytes, bytes]) -> str | None:
        """Take one control record into account; return the hook id whose pause state it
        changed, else None. A record of another group, or one that does not parse, changes
        nothing (``ignored`` counts it)."""
        key = (record.key or b"").decode("utf-8", "replace")
        kind, _, rest = key.partition("/")
        mine = f"{self.group}/"
        if not rest.startswith(mine):
            return None  # another group's: its key names it, so compaction keeps both
        what = rest[len(mine) :]
        try:
            doc = orjson.loads(record.value) if record.value is not None else None
            if doc is not None and doc.get("group") != self.group:
                return None
            if kind == PAUSE[:-1]:
                return self._pause(what, doc)
            if kind == RELEASE[:-1]:
                self._release(what, doc)
            elif kind == REPLAYED[:-1] and self.replays and doc is not None:
                self._replayed(what, doc)
            elif kind == BLOCKED[:-1]:
                self._blocked(what, doc)
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

    def _blocked(self, where: str, doc: dict[str, Any] | None) -> None:
        hook_id, encoded = where.split("/")
        key = decode_key(encoded)
        if doc is None:
            self.blocked.discard(hook_id, key)
        else:
            self.blocked.add(hook_id, key)

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
        self,
        settings: Settings,
        state: ControlState,
        on_pause: Callable[[str, bool], None],
        on_release: Callable[[str], None] = lambda _hook_id: None,
    ) -> None:
        self._settings = settings
        self.state = state
        self._on_pause = on_pause
        # A release followed live (not at load: an old one is not news): an ordered hook's
        # replicas send the retries they hold in memory now.
        self._on_release = on_release
        self._consumer: AIOKafkaConsumer | None = None

    async def load(self, timeout_s: float = 30.0, *, created: bool = False) -> None:
        """Start a consumer (no group) on every partition of the control topic and apply
        it up to its end. ``created``: this start created the topic, so it holds nothing
        yet: ``run`` opens the consumer instead, and start-up does not wait for the new
        topic's partitions to be described (half a second). Raises aiokafka's
        ``KafkaError``, ``TimeoutError``."""
        if created:
            return
        consumer = await self._open(timeout_s)
        try:
            await self._read_to_end(consumer, timeout_s)
        except BaseException:
            await closed(consumer.stop())
            raise
        self._consumer = consumer
        # The end state only: the history of pauses and resumes is not news at start-up.
        for hook_id in sorted(self.state.paused):
            self._on_pause(hook_id, True)

    async def _open(self, timeout_s: float) -> AIOKafkaConsumer:
        """A started consumer assigned every partition of the control topic, from its
        beginning."""
        topic = self._settings.control_topic
        partitions = await self._partitions(topic, timeout_s)
        consumer = reader(self._settings.kafka, "control")
        try:
            await consumer.start()
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
        except BaseException:
            await closed(consumer.stop())
            raise
        return consumer

    async def _read_to_end(self, consumer: AIOKafkaConsumer, timeout_s: float) -> None:
        tps = list(consumer.assignment())
        begin = {tp: await consumer.position(tp) for tp in tps}  # before: see kafka.scan
        end = await consumer.end_offsets(tps)
        behind = [tp for tp in tps if begin[tp] < end[tp]]
        deadline = time.monotonic() + timeout_s
        while behind:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._settings.control_topic} not read to its end")
            self._apply(await consumer.getmany(*behind, timeout_ms=FOLLOW_POLL_MS), notify=False)
            behind = [tp for tp in behind if await consumer.position(tp) < end[tp]]

    async def _partitions(self, topic: str, timeout_s: float) -> list[int]:
        """The control topic's partitions. Just created (at start-up), a broker may describe
        it without partitions for a moment; raises ``UnknownTopicOrPartitionError`` (a
        ``KafkaError``: the daemon's start-up tries again) if that lasts ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not (partitions := await partitions_of(self._settings.kafka, topic, "control")):
            if time.monotonic() > deadline:
                raise UnknownTopicOrPartitionError(f"{topic} has no partitions")
            await asyncio.sleep(0.05)
        return partitions

    async def run(self) -> None:
        """Follow the control topic until cancelled (``load`` first). A failed fetch is
        logged and tried again a second later: a broker outage must not stop deliveries."""
        while self._consumer is None:  # the topic was created by this start (see load)
            try:
                self._consumer = await self._open(timeout_s=30.0)
            except KafkaError as e:
                log.warning("control_fetch_failed", error=f"{type(e).__name__}: {e}")
                await asyncio.sleep(1.0)
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=FOLLOW_POLL_MS)
            except KafkaError as e:
                log.warning("control_fetch_failed", error=f"{type(e).__name__}: {e}")
                await asyncio.sleep(1.0)
                continue
            self._apply(batches)

    async def caught_up(self, timeout_s: float) -> None:
        """Return once every decision written to the control topic before this call is
        applied (``run`` applies them): a member given partitions waits for it before their
        first record, so a key blocked or a hook paused by their former owner a moment ago
        holds here too. At once before the follower opened its consumer. Raises
        ``TimeoutError`` after ``timeout_s`` seconds, aiokafka's ``KafkaError``."""
        consumer = self._consumer
        if consumer is None:
            return
        tps = list(consumer.assignment())
        async with asyncio.timeout(timeout_s):
            end = await consumer.end_offsets(tps)
            # getmany moves a position and run applies its records with no await between,
            # so a position seen at the end means its records are applied. Positions are
            # the consumer's (compaction leaves gaps no record count could tell), and only
            # readable by asking: a short poll, at assignment only.
            while any([await consumer.position(tp) < end[tp] for tp in tps]):  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._consumer is not None:
            await closed(self._consumer.stop())
            self._consumer = None

    def _apply(
        self,
        batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        *,
        notify: bool = True,
    ) -> None:
        release = f"{RELEASE}{self.state.group}/".encode()
        for records in batches.values():
            for record in records:
                hook_id = self.state.apply(record)
                if not notify:
                    continue
                if hook_id is not None:
                    self._on_pause(hook_id, hook_id in self.state.paused)
                key = record.key or b""
                if key.startswith(release) and record.value is not None:
                    self._on_release(key[len(release) :].decode("utf-8", "replace"))


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
        _control_record(settings, f"{REPLAYED}{settings.group_id}/{topic}/{partition}/{run}",
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


async def resume(
    settings: Settings, hook_id: str, *, release_parked: bool = True
) -> Release | None:
    """Resume ``hook_id`` (``set_paused``) and, with ``release_parked``, release what it
    parked meanwhile (``release``), after waiting a commit interval and a follow poll: the
    retries that come due and are sent as soon as the replicas see the resume are committed
    by then, so the release does not copy them too. (Some still can be, in the second it
    scans: sent twice with one webhook-id.) Returns the release, or None."""
    await set_paused(settings, hook_id, False)
    if not release_parked:
        return None
    await asyncio.sleep(settings.kafka.commit_interval_s + 2 * FOLLOW_POLL_MS / 1000)
    return await release(settings, hook_id)


async def set_paused(settings: Settings, hook_id: str, paused: bool, reason: str = "") -> None:
    """Pause (or resume) ``hook_id`` for every replica of the deployment, now and after
    restarts. Raises aiokafka's ``KafkaError`` when the cluster cannot be reached."""
    doc = {"paused": paused, "reason": reason[:500], "at": _now_ms()}
    await write_decision(settings, f"{PAUSE}{settings.group_id}/{hook_id}", doc)


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
    One run at a time per hook (``exclusive``). Raises ``RunClaimedError``, aiokafka's
    ``KafkaError``, ``TimeoutError``."""
    if dry_run:
        return await _release(settings, hook_id, dry_run=True)
    async with exclusive(settings, f"release {hook_id}"):
        return await _release(settings, hook_id, dry_run=False)


async def _release(settings: Settings, hook_id: str, *, dry_run: bool) -> Release:
    state = await read_control(settings)
    backlog = await scan_backlog(settings, state.superseded, role="release")
    mine = _latest_per_delivery(w for w in backlog.waiting if w.retry.hook_id == hook_id)
    result = Release(hook_id, [w.retry for w in mine], backlog)
    # An ordered hook holds its retries in memory: the record alone tells its replicas to
    # send them now (ControlFollower's on_release), so it is written with nothing parked too.
    ordered = settings.ordered(hook_id)
    if dry_run or not (mine or ordered):
        return result
    now = _now_ms()
    below = [[tp.topic, tp.partition, end] for tp, end in sorted(backlog.ends.items())]
    copies = [
        OutboundRecord(settings.now_topic, w.record.value, w.record.key,
                       tuple(_due_now(w.retry, now, settings.group_id)), "retry")
        for w in mine
    ]  # fmt: skip
    await write_decision(settings, f"{RELEASE}{settings.group_id}/{hook_id}",
                         {"at": now, "below": below})  # fmt: skip
    await _write(settings, copies)
    return result


def _latest_per_delivery(waiting: Iterable[Waiting]) -> list[Waiting]:
    """One retry per delivery id: the one written last. A scan as of the group's last commit
    may hold a delivery twice (a retry the daemon took and parked again since that commit,
    or a release's copy and what became of it); copying both would fork two chains."""
    latest: dict[str, Waiting] = {}
    for w in waiting:
        kept = latest.get(w.retry.delivery_id)
        if kept is None or w.record.timestamp >= kept.record.timestamp:
            latest[w.retry.delivery_id] = w
    return list(latest.values())


def _due_now(retry: RetryRecord, now_ms: int, group: str) -> list[tuple[str, bytes]]:
    return list(replace(retry, due_at_ms=now_ms, group=group).headers())


async def _write(settings: Settings, records: list[OutboundRecord]) -> None:
    if any(record.topic == settings.control_topic for record in records):
        await ensure_control_topic(settings)
    await write_all(settings.kafka, records, "control")


def _control_record(settings: Settings, key: str, doc: dict[str, Any] | None) -> OutboundRecord:
    """A control record of this group (``doc`` None: a tombstone, which compaction keeps
    only until the key's earlier records are gone)."""
    return _record(settings.control_topic, settings.group_id, key, doc)


def _record(topic: str, group: str, key: str, doc: dict[str, Any] | None) -> OutboundRecord:
    headers = ((GROUP_HEADER, group.encode()),)
    value = None if doc is None else orjson.dumps({"v": VERSION, "group": group, **doc})
    return OutboundRecord(topic, value, key.encode(), headers, "control")


def blocked_record(topic: str, group: str, delivery: Delivery, reason: str) -> OutboundRecord:
    """The ``blocked/`` record (module docstring) that blocks the record key of ``delivery``
    (a keyed one) for its hook because it was dead-lettered for ``reason``; written to the
    control topic ``topic`` by the daemon's ``DurableWriter``."""
    key = delivery.event.key or b""
    hook_id = delivery.hook.id
    doc = {"hook": hook_id, "key": key.decode("utf-8", "replace"),
           "delivery_id": delivery.delivery_id, "reason": reason, "at": _now_ms()}  # fmt: skip
    return _record(topic, group, _blocked_key(group, hook_id, key), doc)


def _blocked_key(group: str, hook_id: str, key: bytes) -> str:
    return f"{BLOCKED}{group}/{hook_id}/{encode_key(key)}"


async def unblock(
    settings: Settings, hook_id: str, keys: Iterable[bytes] | None = None
) -> list[bytes]:
    """Unblock ``keys`` of ``hook_id`` (None: every key blocked now) for every replica: one
    tombstone each on the control topic, acknowledged before this returns. Returns the keys
    that were blocked and are not any more, sorted; a key that was not blocked gets no
    tombstone. Raises aiokafka's ``KafkaError``, ``TimeoutError``."""
    blocked = (await read_control(settings)).blocked
    wanted = blocked.of(hook_id) if keys is None else sorted(set(keys))
    found = [key for key in wanted if blocked.blocks(hook_id, key)]
    await unblock_keys(settings, [(hook_id, key) for key in found])
    return found


async def unblock_keys(settings: Settings, blocked: Iterable[tuple[str, bytes]]) -> None:
    """Write a tombstone for each (hook id, record key) of ``blocked``, whether blocked or
    not, and wait for their acknowledgement. Raises aiokafka's ``KafkaError``."""
    group = settings.group_id
    tombstones = [
        _record(settings.control_topic, group, _blocked_key(group, hook_id, key), None)
        for hook_id, key in blocked
    ]
    if tombstones:
        await _write(settings, tombstones)


def _now_ms() -> int:
    return int(time.time() * 1000)


@contextlib.asynccontextmanager
async def exclusive(settings: Settings, name: str) -> AsyncIterator[None]:
    """Run the block only if no other run of ``name`` (``replay``, ``release crm``) of this
    deployment holds a claim: two replays at once would re-drive each letter twice, two
    releases would fork each delivery. Each run appends a claim to the control topic (one
    partition: one order for every reader), reads the topic to its end, and goes on only if
    its claim is the first unexpired one not yet ended; it ends it (a tombstone) when done.
    A claim whose run died lapses after ``CLAIM_TTL_S``. Raises ``RunClaimedError``, and
    aiokafka's ``KafkaError``."""
    run = uuid.uuid4().hex[:12]
    key = f"{CLAIM}{settings.group_id}/{name}/{run}"
    expires = time.time() + CLAIM_TTL_S
    await _write(settings, [_control_record(settings, key, {"expires": expires})])
    try:
        holder = await _first_claim(settings, name)
        if holder is not None and holder[0] != run:
            raise RunClaimedError(name, holder[1])
        yield
    finally:
        await _write(settings, [_control_record(settings, key, None)])  # ended: a tombstone


async def _first_claim(settings: Settings, name: str) -> tuple[str, float] | None:
    """(run id, expiry) of the earliest claim of ``name`` that is neither ended nor lapsed."""
    prefix = f"{CLAIM}{settings.group_id}/{name}/"
    claims: dict[str, float] = {}  # in offset order: dicts keep insertion order
    async for record in scan(settings.kafka, settings.control_topic, role="control"):
        key = (record.key or b"").decode("utf-8", "replace")
        if not key.startswith(prefix):
            continue
        run = key[len(prefix) :]
        if record.value is None:
            claims.pop(run, None)
            continue
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            claims.setdefault(run, float(orjson.loads(record.value)["expires"]))
    now = time.time()
    return next(((run, until) for run, until in claims.items() if until > now), None)
