"""The ack tracker: which offset of each partition is safe to commit, and what is settled
above it.

Every consumed record is registered with the number of deliveries it owes (0 for a record
no hook subscribes to, 1 for an invalid record bound for the dead-letter topic). A record is
*settled* when each of those deliveries succeeded or was durably written to a retry or the
dead-letter topic (the producer's write acknowledged). Per partition the tracker commits the
offset of the first unsettled record, or one past the last record when all are settled:
Kafka's committed offset is "the next record to read", so nothing unsettled is ever skipped
by a restart or by the partition's next owner, and Kafka's own tools read a correct offset.

**Settled work above the committed offset** travels with the commit, in its metadata (see
``OpenOffsets``; the idea is Confluent's Parallel Consumer's offset map): the unsettled
offsets between the committed offset and the last registered record. The partition's next
owner — this process after a rebalance, another replica, or a restart after kill -9 —
takes it over at assignment (``inherit``) and skips those settled records instead of sending them
again. Fan-out settles per delivery, so the map also names, for each unsettled record, the
hooks already served: the next owner makes only the other deliveries. Only what a previous
owner settled is ever skipped; everything else is delivered.

Records arrive in offset order per partition and settle in any order; each partition keeps a
FIFO of open records, so register, settle and commit are O(1) amortised.

**Revocation** (see ``source``): ``revoke`` marks the partitions' tickets not ``live``: a
delivery not yet started is released (``AckTicket.release``: neither sent nor parked, its
record stays unsettled for the next owner), one in flight may still finish and settle;
``outstanding`` counts what is still being sent or written. ``forget`` then drops the state
and bumps the *generation*: tickets issued before still settle without error, but no longer
move any offset, so a delivery that finishes after the hand-over is never committed by two
owners.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

PROGRESS_BUDGET_CHARS: Final = 3000
"""Longest encoded offset map per partition: well inside the broker's default
``offset.metadata.max.bytes`` (4096) with the role tag beside it. A longer map is cut at a
run boundary, which only means fewer records are known settled (they are sent again)."""


_MAX_UNSETTLED: Final = 200_000
"""More unsettled records than any member holds in one partition (``delivery.max_in_flight``
is 10,000 deliveries by default): a map claiming more is damaged, not read."""

EVERY_HOOK: Final[tuple[str, ...]] = ("*",)
"""``AckTracker.done_before``'s answer for a record settled whole (no hook id holds ``*``)."""


class TopicPartition(NamedTuple):
    """Same shape as ``aiokafka.TopicPartition`` (which is also a ``NamedTuple``)."""

    topic: str
    partition: int


@dataclass(slots=True)
class AckTicket:
    """Handle for one registered record; ``settle()`` or ``release()`` once per delivery
    it owes. ``done`` holds the hooks whose delivery settled while others are still owed,
    as bits of its partition's hook table (they travel in the offset map, so a next owner
    makes only the others): an int per record, not a list, under a backlog of thousands."""

    partition: _PartitionState
    offset: int
    remaining: int
    generation: int
    done: int = 0

    def settle(self, hook_id: str = "") -> None:
        """Mark one of this record's deliveries (to ``hook_id``, when it has one) as done:
        delivered, parked or dead-lettered."""
        self.partition.outstanding -= 1
        self.remaining -= 1
        if self.remaining == 0:
            self.partition.on_settled(self)
        elif hook_id:
            self.done |= self.partition.hook_bit(hook_id)

    def release(self) -> None:
        """One of this record's deliveries will not be made here: its partition was revoked
        before it started. The record stays unsettled, so its next owner makes it."""
        self.partition.outstanding -= 1

    @property
    def live(self) -> bool:
        """True while this member owns the record's partition and is not giving it up: only
        then may a delivery of it start, or be parked or dead-lettered (a retry record or
        dead letter written by a former owner would fork what the next owner does again)."""
        state = self.partition
        return self.generation == state.generation > 0 and not state.revoking


@dataclass(slots=True)
class _PartitionState:
    generation: int
    open: deque[AckTicket] = field(default_factory=deque)
    next_offset: int | None = None  # one past the last registered record
    committed: tuple[int, str] | None = None
    outstanding: int = 0  # deliveries owed, neither settled nor released
    revoking: bool = False
    inherited: OpenOffsets | None = None
    hooks: dict[str, int] = field(default_factory=dict)  # hook id -> its bit in ``done``

    def hook_bit(self, hook_id: str) -> int:
        bit = self.hooks.get(hook_id)
        if bit is None:
            bit = self.hooks[hook_id] = 1 << len(self.hooks)
        return bit

    def register(self, offset: int, deliveries: int, done: int = 0) -> AckTicket:
        ticket = AckTicket(self, offset, deliveries, self.generation, done)
        self.next_offset = offset + 1
        if deliveries > 0:
            self.outstanding += deliveries
            self.open.append(ticket)
        return ticket

    def on_settled(self, ticket: AckTicket) -> None:
        if ticket.generation != self.generation:
            return
        while self.open and self.open[0].remaining <= 0:
            self.open.popleft()

    def progress(self) -> tuple[int, str] | None:
        """(offset to commit, encoded offset map above it), or None before any record."""
        if not self.open:
            return None if self.next_offset is None else (self.next_offset, "")
        assert self.next_offset is not None  # set by the register that opened self.open[0]
        unsettled = [(t.offset, t.done) for t in self.open if t.remaining > 0]
        start = self.open[0].offset
        names = list(self.hooks)  # in bit order
        return start, OpenOffsets.encode_masks(start, unsettled, self.next_offset, names)


class OpenOffsets:
    """What is settled in ``[start, end)`` of a partition: every offset there is settled
    (or does not exist: transaction markers, compacted records) except the unsettled
    records, and of those, ``done_hooks`` names the hooks whose delivery settled already.

    Encoded (``encode``) as URL-safe base64 of unsigned LEB128 varints: ``start``, the
    number of runs, the run lengths alternating unsettled, settled, unsettled, ... from
    ``start`` (summing to ``end - start``); then the number of hooks, and per hook its id
    (length, ASCII bytes), the number of runs and run lengths alternating not done, done
    over the unsettled records in offset order. A map longer than the budget keeps a prefix
    of the unsettled records (``end`` moves down), so fewer records are known settled,
    never more. A contiguous backlog costs a few bytes; alternating settled and unsettled
    records about 2 bytes each.
    """

    __slots__ = ("_bounds", "_done", "end", "start")

    def __init__(self, start: int, runs: list[int], done: dict[str, list[int]]) -> None:
        """Raises ``ValueError`` for runs that claim more unsettled records than a member
        ever holds, or hook runs beyond the unsettled records: the map comes from the
        broker, and a damaged or crafted one must cost neither memory nor time."""
        self.start = start
        open_runs = runs[0::2]
        count = sum(open_runs)
        if count > _MAX_UNSETTLED:
            raise ValueError("offset map names more unsettled records than a member holds")
        bounds = []  # unsettled intervals as flattened [lo, hi) pairs
        unsettled: list[int] = []
        position = start
        for index, length in enumerate(runs):
            if index % 2 == 0:
                bounds += [position, position + length]
                if done:
                    unsettled.extend(range(position, position + length))
            position += length
        self.end = position
        self._bounds = bounds
        self._done: dict[int, list[str]] = {}
        for hook_id, hook_runs in done.items():
            if sum(hook_runs) > count:
                raise ValueError("offset map names more records than it holds")
            for index in _members(hook_runs):
                self._done.setdefault(unsettled[index], []).append(hook_id)

    def settled(self, offset: int) -> bool:
        """True when ``offset`` is in ``[start, end)`` and not unsettled."""
        if not self.start <= offset < self.end:
            return False
        # Inside an unsettled [lo, hi) exactly when an odd number of bounds are <= offset.
        return bisect.bisect_right(self._bounds, offset) % 2 == 0

    def done_hooks(self, offset: int) -> list[str] | None:
        """Hooks whose delivery of the unsettled record at ``offset`` settled, or None."""
        return self._done.get(offset)

    @classmethod
    def encode(
        cls,
        start: int,
        unsettled: Sequence[tuple[int, Sequence[str] | None]],
        end: int,
        budget: int = PROGRESS_BUDGET_CHARS,
    ) -> str:
        """The map of the ``unsettled`` records (ascending ``(offset, hooks done)``, the
        first at ``start``) below ``end``; ``""`` when it would tell a next owner nothing
        (no settled record above ``start``, no hook done) or nothing fits ``budget``."""
        names: dict[str, int] = {}
        masks = []
        for offset, hooks in unsettled:
            mask = 0
            for hook_id in hooks or ():
                mask |= 1 << names.setdefault(hook_id, len(names))
            masks.append((offset, mask))
        return cls.encode_masks(start, masks, end, list(names), budget)

    @classmethod
    def encode_masks(
        cls,
        start: int,
        unsettled: list[tuple[int, int]],
        end: int,
        names: Sequence[str],
        budget: int = PROGRESS_BUDGET_CHARS,
    ) -> str:
        """``encode`` with each record's hooks done as bits: bit ``i`` is ``names[i]``."""
        keep = len(unsettled)
        while True:
            limit = end if keep == len(unsettled) else unsettled[keep][0]
            text = cls._encode(start, unsettled[:keep], limit, names)
            if len(text) <= budget or keep == 0:
                return text if len(text) <= budget else ""
            keep //= 2

    @staticmethod
    def _encode(
        start: int, unsettled: list[tuple[int, int]], end: int, names: Sequence[str]
    ) -> str:
        runs: list[int] = []
        position = start  # first offset not yet covered by runs
        for offset, _ in unsettled:
            if offset > position:  # a settled gap after the unsettled run so far
                runs += [offset - position] if len(runs) % 2 else [0, offset - position]
            if len(runs) % 2 == 0:
                runs.append(1)
            else:
                runs[-1] += 1
            position = offset + 1
        if end > position:
            runs.append(end - position)
        done = _hook_runs([mask for _, mask in unsettled], names)
        if len(runs) < 2 and not done:
            return ""
        numbers = [start, len(runs), *runs, len(done)]
        data = bytearray(_varints(numbers))
        for hook_id, hook_runs in done.items():
            name = hook_id.encode("ascii")
            data += _varints([len(name)]) + name + _varints([len(hook_runs), *hook_runs])
        return _b64(bytes(data))

    @classmethod
    def decode(cls, text: str) -> OpenOffsets:
        """Parse ``encode``'s output; raises ``ValueError`` on anything else."""
        try:
            data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"offset map is not base64: {e}") from e
        reader = _Reader(data)
        start = reader.number()
        runs = [reader.number() for _ in range(reader.count())]
        done = {}
        for _ in range(reader.count()):
            hook_id = reader.text()
            done[hook_id] = [reader.number() for _ in range(reader.count())]
        if not reader.at_end():
            raise ValueError("offset map has bytes past its end")
        return cls(start, runs, done)


class _Reader:
    """Varints and length-prefixed ASCII out of an offset map; ``ValueError`` when short."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def number(self) -> int:
        value = shift = 0
        while True:
            if self._at >= len(self._data):
                raise ValueError("offset map ends inside a number")
            byte = self._data[self._at]
            self._at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("offset map holds a number longer than 64 bits")

    def count(self) -> int:
        n = self.number()
        if n > len(self._data):  # each item takes at least one byte
            raise ValueError("offset map holds a count longer than itself")
        return n

    def text(self) -> str:
        n = self.count()
        raw = self._data[self._at : self._at + n]
        if len(raw) != n:
            raise ValueError("offset map ends inside a hook id")
        self._at += n
        return raw.decode("ascii", errors="strict")

    def at_end(self) -> bool:
        return self._at == len(self._data)


def _hook_runs(masks: list[int], names: Sequence[str]) -> dict[str, list[int]]:
    """Per hook with any bit set, the unsettled records' indexes holding it, as run lengths
    alternating absent, present (from index 0). The masks are run-length encoded first:
    under a backlog most neighbours share one (every hook served but a slow one), so the
    per-hook work is per run of masks, not per record."""
    grouped: list[list[int]] = []  # [mask, how many in a row]
    for mask in masks:
        if grouped and grouped[-1][0] == mask:
            grouped[-1][1] += 1
        else:
            grouped.append([mask, 1])
    result: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        bit = 1 << index
        runs: list[int] = []
        present, length = False, 0
        for mask, count in grouped:
            if bool(mask & bit) != present:
                runs.append(length)
                present, length = not present, 0
            length += count
        if present:
            runs.append(length)
        if runs:
            result[name] = runs
    return result


def _members(runs: list[int]) -> list[int]:
    """The inverse of ``_runs``."""
    members: list[int] = []
    position = 0
    for index, length in enumerate(runs):
        if index % 2:
            members.extend(range(position, position + length))
        position += length
    return members


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _varints(numbers: list[int]) -> bytes:
    out = bytearray()
    for number in numbers:
        n = number
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
    return bytes(out)


class AckTracker:
    """Per-partition settled-offset bookkeeping for one consumer.

    Offsets are ints; partitions are ``TopicPartition`` (or aiokafka's, which compares
    equal). Not thread-safe; used only from the event loop.
    """

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _PartitionState] = {}
        self._generation = 0

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Start tracking newly assigned partitions (fresh state, new generation)."""
        for tp in partitions:
            self._generation += 1
            self._partitions[TopicPartition(tp.topic, tp.partition)] = _PartitionState(
                self._generation
            )

    def inherit(self, tp: TopicPartition, committed: int, metadata: str) -> bool:
        """Take over the offset map a previous owner committed with ``committed`` (the
        metadata's part after the role tag); its settled records are then skipped
        (``skip_settled``). Returns False, changing nothing, for a map that does not parse or
        does not start at ``committed`` (written by another tool, or the offset was reset)."""
        state = self._partitions.get(TopicPartition(tp.topic, tp.partition))
        if state is None or not metadata:
            return False
        try:
            inherited = OpenOffsets.decode(metadata)
        except ValueError:
            return False
        if inherited.start != committed:
            return False
        state.inherited = inherited
        return True

    def done_before(self, tp: TopicPartition, offset: int) -> Sequence[str] | None:
        """What a previous owner of the partition settled of this record (see ``inherit``):
        ``EVERY_HOOK`` for the whole record (it is then registered as settled here and must
        not be delivered again), the ids of the hooks already served for a record still
        owed to others, or None (nothing known: deliver it)."""
        state = self._partitions.get(tp)  # aiokafka's TopicPartition hashes and compares equal
        if state is None or state.inherited is None:
            return None
        inherited = state.inherited
        if offset >= inherited.end:
            state.inherited = None  # past the map: nothing more to skip
            return None
        if inherited.settled(offset):
            state.register(offset, 0)
            return EVERY_HOOK
        return inherited.done_hooks(offset)

    def advance(self, tp: TopicPartition, position: int) -> None:
        """The consumer's fetch position of ``tp`` is ``position`` and every record before it
        was handed to this tracker: when nothing is unsettled, the next commit may move up
        to it. Offsets without a record — transaction markers, an aborted transaction's
        records under read-committed — are never registered, so without this a partition
        whose last records were followed by a marker would commit short of its end and
        show lag forever."""
        state = self._partitions.get(TopicPartition(tp.topic, tp.partition))
        if state is None or state.open or state.revoking:
            return
        if state.next_offset is None or position > state.next_offset:
            state.next_offset = position

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """The partitions are being given up: their tickets stop being ``live``."""
        for tp in partitions:
            state = self._partitions.get(TopicPartition(tp.topic, tp.partition))
            if state is not None:
                state.revoking = True

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Stop tracking revoked partitions; their outstanding tickets become inert."""
        for tp in partitions:
            state = self._partitions.pop(TopicPartition(tp.topic, tp.partition), None)
            if state is not None:
                state.generation = -1

    def register(
        self, tp: TopicPartition, offset: int, deliveries: int, done: Sequence[str] | None = None
    ) -> AckTicket:
        """Register a consumed record owing ``deliveries`` settlements (besides the hooks
        ``done`` before, as ``done_before`` said); return its ticket."""
        state = self._partitions.get(tp)  # aiokafka's TopicPartition hashes and compares equal
        if state is None:
            # A record fetched just before assign() ran, or after forget(): track it in a
            # detached state so settling it is harmless and never commits anything (and
            # its ticket is not live: it is never sent).
            state = _PartitionState(generation=-1)
        mask = 0
        for hook_id in done or ():
            mask |= state.hook_bit(hook_id)
        return state.register(offset, deliveries, mask)

    def unsettled(self, partitions: list[TopicPartition] | None = None) -> int:
        """Number of open records, in ``partitions`` or in all tracked partitions."""
        return sum(len(state.open) for state in self._states(partitions))

    def outstanding(self, partitions: list[TopicPartition] | None = None) -> int:
        """Deliveries owed and neither settled nor released (being sent, queued or written),
        in ``partitions`` or in all tracked partitions."""
        return sum(state.outstanding for state in self._states(partitions))

    def _states(self, partitions: list[TopicPartition] | None) -> list[_PartitionState]:
        if partitions is None:
            return list(self._partitions.values())
        found = (self._partitions.get(TopicPartition(tp.topic, tp.partition)) for tp in partitions)
        return [state for state in found if state is not None]

    def to_commit(
        self, partitions: list[TopicPartition] | None = None
    ) -> dict[TopicPartition, tuple[int, str]]:
        """What moved since the last ``mark_committed``: ``{tp: (next offset to read, offset
        map of the settled records above it)}`` (``OpenOffsets``; ``""`` when none)."""
        result: dict[TopicPartition, tuple[int, str]] = {}
        for tp, state in self._partitions.items():
            if partitions is not None and tp not in partitions:
                continue
            progress = state.progress()
            if progress is not None and progress != state.committed:
                result[tp] = progress
        return result

    def mark_committed(self, offsets: dict[TopicPartition, tuple[int, str]]) -> None:
        """Record that the broker acknowledged a commit of ``offsets`` (``to_commit``'s)."""
        for tp, progress in offsets.items():
            state = self._partitions.get(TopicPartition(tp.topic, tp.partition))
            if state is not None:
                state.committed = progress

    def note_committed(self, tp: TopicPartition, offset: int) -> None:
        """The group's committed offset of a partition just assigned (read from the broker,
        or committed at assignment): what ``committed`` reports until this member commits."""
        state = self._partitions.get(TopicPartition(tp.topic, tp.partition))
        if state is not None and state.committed is None:
            state.committed = (offset, "")

    def committed(self, tp: TopicPartition) -> int | None:
        """The last offset committed for ``tp`` by this tracker, if any."""
        state = self._partitions.get(TopicPartition(tp.topic, tp.partition))
        return None if state is None or state.committed is None else state.committed[0]

    @property
    def partitions(self) -> list[TopicPartition]:
        """Partitions currently tracked (the consumer's assignment)."""
        return list(self._partitions)
