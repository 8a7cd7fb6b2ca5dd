"""The ack tracker: which offset of each partition is safe to commit.

Every consumed record is registered with the number of deliveries it owes (0 for a record
no hook subscribes to, 1 for an invalid record bound for the dead-letter topic). A record is
*settled* when each of those deliveries succeeded or was durably written to the dead-letter
topic (the producer's write acknowledged). Per partition the tracker commits the offset of
the first unsettled record, or one past the last record when all are settled: Kafka's
committed offset is "the next record to read", so nothing unsettled is ever skipped by a
restart or by the partition's next owner.

Records arrive in offset order per partition and settle in any order; each partition keeps a
FIFO of open records, so register, settle and commit are O(1) amortised.

On revocation the partition's state is dropped and its *generation* bumped: tickets issued
before that still settle without error, but no longer move any offset, so a delivery that
finishes after the hand-over is never committed by two owners.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple


class TopicPartition(NamedTuple):
    """Same shape as ``aiokafka.TopicPartition`` (which is also a ``NamedTuple``)."""

    topic: str
    partition: int


@dataclass(slots=True)
class AckTicket:
    """Handle for one registered record; ``settle()`` once per delivery it owes."""

    partition: _PartitionState
    offset: int
    remaining: int
    generation: int

    def settle(self) -> None:
        """Mark one of this record's deliveries as done (delivered or dead-lettered)."""
        self.remaining -= 1
        if self.remaining == 0:
            self.partition.on_settled(self)


@dataclass(slots=True)
class _PartitionState:
    generation: int
    open: deque[AckTicket] = field(default_factory=deque)
    next_offset: int | None = None  # one past the last registered record
    committed: int | None = None

    def register(self, offset: int, deliveries: int) -> AckTicket:
        ticket = AckTicket(self, offset, deliveries, self.generation)
        self.next_offset = offset + 1
        if deliveries > 0:
            self.open.append(ticket)
        return ticket

    def on_settled(self, ticket: AckTicket) -> None:
        if ticket.generation != self.generation:
            return
        while self.open and self.open[0].remaining <= 0:
            self.open.popleft()

    def committable(self) -> int | None:
        if self.open:
            return self.open[0].offset
        return self.next_offset


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

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Stop tracking revoked partitions; their outstanding tickets become inert."""
        for tp in partitions:
            state = self._partitions.pop(TopicPartition(tp.topic, tp.partition), None)
            if state is not None:
                state.generation = -1

    def register(self, tp: TopicPartition, offset: int, deliveries: int) -> AckTicket:
        """Register a consumed record owing ``deliveries`` settlements; return its ticket."""
        state = self._partitions.get(tp)  # aiokafka's TopicPartition hashes and compares equal
        if state is None:
            # A record fetched just before assign() ran, or after forget(): track it in a
            # detached state so settling it is harmless and never commits anything.
            state = _PartitionState(generation=-1)
        return state.register(offset, deliveries)

    def unsettled(self, partitions: list[TopicPartition] | None = None) -> int:
        """Number of open records, in ``partitions`` or in all tracked partitions."""
        keys = self._partitions.keys() if partitions is None else partitions
        return sum(
            len(state.open)
            for tp in keys
            if (state := self._partitions.get(TopicPartition(tp.topic, tp.partition)))
        )

    def to_commit(
        self, partitions: list[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """Offsets that moved since the last ``mark_committed``: ``{tp: next offset to read}``."""
        result: dict[TopicPartition, int] = {}
        for tp, state in self._partitions.items():
            if partitions is not None and tp not in partitions:
                continue
            offset = state.committable()
            if offset is not None and offset != state.committed:
                result[tp] = offset
        return result

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Record that the broker acknowledged a commit of ``offsets``."""
        for tp, offset in offsets.items():
            state = self._partitions.get(TopicPartition(tp.topic, tp.partition))
            if state is not None:
                state.committed = offset

    def committed(self, tp: TopicPartition) -> int | None:
        """The last offset committed for ``tp`` by this tracker, if any."""
        state = self._partitions.get(TopicPartition(tp.topic, tp.partition))
        return None if state is None else state.committed

    @property
    def partitions(self) -> list[TopicPartition]:
        """Partitions currently tracked (the consumer's assignment)."""
        return list(self._partitions)
