"""The ack tracker never commits past an unsettled record."""

from __future__ import annotations

from hookrelay.offsets import AckTracker, TopicPartition

TP = TopicPartition("identity.events", 0)


def tracker() -> AckTracker:
    t = AckTracker()
    t.assign([TP])
    return t


def test_commit_stops_at_the_first_unsettled_record() -> None:
    t = tracker()
    first = t.register(TP, 10, deliveries=2)
    second = t.register(TP, 11, deliveries=1)
    second.settle()
    assert t.to_commit() == {TP: 10}
    first.settle()
    assert t.to_commit() == {TP: 10}
    first.settle()
    assert t.to_commit() == {TP: 12}


def test_records_without_deliveries_settle_immediately() -> None:
    t = tracker()
    t.register(TP, 5, deliveries=0)
    t.register(TP, 6, deliveries=0)
    assert t.to_commit() == {TP: 7}


def test_unchanged_offsets_are_not_committed_twice() -> None:
    t = tracker()
    t.register(TP, 0, deliveries=0)
    t.mark_committed(t.to_commit())
    assert t.to_commit() == {}
    assert t.committed(TP) == 1


def test_settling_after_revocation_moves_nothing() -> None:
    t = tracker()
    ticket = t.register(TP, 3, deliveries=1)
    t.forget([TP])
    ticket.settle()
    assert t.to_commit() == {}
    t.assign([TP])  # re-assigned later: fresh state, old ticket stays inert
    assert t.to_commit() == {}
    assert t.unsettled() == 0


def test_unsettled_counts_per_partition() -> None:
    t = tracker()
    other = TopicPartition("identity.events", 1)
    t.assign([other])
    t.register(TP, 0, deliveries=1)
    t.register(other, 0, deliveries=3)
    assert t.unsettled([TP]) == 1
    assert t.unsettled() == 2


def test_records_of_unassigned_partitions_never_commit() -> None:
    t = tracker()
    stray = t.register(TopicPartition("x", 9), 0, deliveries=1)
    stray.settle()
    assert t.to_commit() == {}
