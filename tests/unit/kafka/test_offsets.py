"""The ack tracker never commits past an unsettled record."""

from __future__ import annotations

import pytest

from hookrelay.kafka.offsets import EVERY_HOOK, AckTracker, OpenOffsets, TopicPartition
from tests.unit.tracking import commit_offsets

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
    assert commit_offsets(t) == {TP: 10}
    first.settle()
    assert commit_offsets(t) == {TP: 10}
    first.settle()
    assert commit_offsets(t) == {TP: 12}


def test_records_without_deliveries_settle_immediately() -> None:
    t = tracker()
    t.register(TP, 5, deliveries=0)
    t.register(TP, 6, deliveries=0)
    assert commit_offsets(t) == {TP: 7}


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


# -- the offset map committed with each offset --------------------------------------------


def test_the_commit_carries_the_settled_records_above_the_committed_offset() -> None:
    t = tracker()
    tickets = [t.register(TP, offset, deliveries=1) for offset in range(10, 20)]
    for ticket in tickets[1:5] + tickets[6:]:
        ticket.settle()
    [(offset, offset_map)] = t.to_commit().values()
    assert offset == 10
    inherited = OpenOffsets.decode(offset_map)
    assert [o for o in range(8, 22) if inherited.settled(o)] == [11, 12, 13, 14, 16, 17, 18, 19]


def test_nothing_settled_above_the_committed_offset_commits_no_map() -> None:
    t = tracker()
    for offset in range(3):
        t.register(TP, offset, deliveries=1)
    assert t.to_commit() == {TP: (0, "")}
    t.mark_committed(t.to_commit())
    assert t.to_commit() == {}


def test_a_map_that_changed_is_committed_again_at_the_same_offset() -> None:
    t = tracker()
    first = t.register(TP, 0, deliveries=1)
    second = t.register(TP, 1, deliveries=1)
    t.mark_committed(t.to_commit())
    second.settle()
    [(offset, offset_map)] = t.to_commit().values()
    assert offset == 0 and offset_map
    first.settle()
    assert t.to_commit() == {TP: (2, "")}


def test_a_new_owner_skips_exactly_what_the_previous_owner_settled() -> None:
    old = tracker()
    tickets = [old.register(TP, offset, deliveries=1) for offset in range(100)]
    for ticket in tickets:
        if ticket.offset % 3:
            ticket.settle()
    [(offset, offset_map)] = old.to_commit().values()
    new = tracker()
    assert new.inherit(TP, offset, offset_map)
    skipped = []
    for o in range(offset, 105):
        if new.done_before(TP, o) is EVERY_HOOK:
            skipped.append(o)
        else:
            new.register(TP, o, deliveries=1)  # delivered by the new owner
    assert skipped == [o for o in range(100) if o % 3]
    assert commit_offsets(new) == {TP: 0}  # offset 0 still owed by the new owner


def test_a_map_that_does_not_start_at_the_committed_offset_is_ignored() -> None:
    old = tracker()
    old.register(TP, 5, deliveries=1)
    old.register(TP, 6, deliveries=1).settle()
    [(_, offset_map)] = old.to_commit().values()
    new = tracker()
    assert not new.inherit(TP, 4, offset_map)  # the offset was reset by a tool meanwhile
    assert not new.inherit(TP, 5, "not*base64")
    assert not new.inherit(TP, 5, "AA")
    assert new.done_before(TP, 6) is None


def test_a_map_over_the_budget_is_cut_so_fewer_records_are_skipped_never_more() -> None:
    unsettled = list(range(0, 4000, 2))  # every other record settled: the worst case
    text = OpenOffsets.encode(0, [(o, None) for o in unsettled], 4000, budget=300)
    assert 0 < len(text) <= 300
    cut = OpenOffsets.decode(text)
    assert 0 < cut.end < 4000
    assert all(not cut.settled(o) for o in unsettled)
    assert all(cut.settled(o) for o in range(1, cut.end, 2))


def test_a_large_contiguous_backlog_encodes_in_a_few_bytes() -> None:
    backlog = [(o, None) for o in range(1_000_000, 1_001_000)]
    text = OpenOffsets.encode(1_000_000, backlog, 1_050_000)
    assert len(text) < 16
    assert OpenOffsets.decode(text).settled(1_001_000)


def test_revoked_tickets_are_not_live_and_released_ones_are_not_outstanding() -> None:
    t = tracker()
    queued = t.register(TP, 0, deliveries=2)
    assert queued.live and t.outstanding() == 2
    t.revoke([TP])
    assert not queued.live
    queued.release()
    queued.settle()
    assert t.outstanding([TP]) == 0
    assert commit_offsets(t) == {TP: 0}  # released: the next owner makes it
    t.forget([TP])
    assert not queued.live
    assert not t.register(TopicPartition("x", 1), 0, deliveries=1).live  # never assigned


def test_hooks_served_of_a_record_still_owed_travel_with_the_commit() -> None:
    old = tracker()
    fanned = [old.register(TP, offset, deliveries=3) for offset in range(50)]
    for ticket in fanned:  # hA and hB delivered everything, hS only the odd offsets
        ticket.settle("hA")
        ticket.settle("hB")
        if ticket.offset % 2:
            ticket.settle("hS")
    [(offset, offset_map)] = old.to_commit().values()
    assert offset == 0
    new = tracker()
    assert new.inherit(TP, offset, offset_map)
    assert new.done_before(TP, 0) == ["hA", "hB"]
    assert new.done_before(TP, 1) is EVERY_HOOK
    ticket = new.register(TP, 0, deliveries=1, done=["hA", "hB"])
    new.register(TP, 2, deliveries=1, done=["hA", "hB"])
    ticket.settle("hS")
    [(offset, again)] = new.to_commit().values()
    assert offset == 2
    assert OpenOffsets.decode(again).done_hooks(2) == ["hA", "hB"]  # kept for a third owner


def test_a_damaged_map_is_refused_whole() -> None:
    good = OpenOffsets.encode(7, [(7, ["hA"]), (9, None)], 12)
    assert OpenOffsets.decode(good).done_hooks(7) == ["hA"]
    for damaged in (good[:-2], good + "AAAA", "_" * 8, "gICAgICAgICAgICAAQ"):
        with pytest.raises(ValueError):
            OpenOffsets.decode(damaged)


def test_offsets_without_records_are_committed_once_everything_before_is_settled() -> None:
    """A transaction's commit or abort marker, or its aborted records, have offsets but are
    never handed out: the fetch position moves past them."""
    t = tracker()
    ticket = t.register(TP, 10, deliveries=1)
    t.advance(TP, 13)  # records 11-12 were markers; 10 still owed
    assert commit_offsets(t) == {TP: 10}
    ticket.settle()
    t.advance(TP, 13)
    assert commit_offsets(t) == {TP: 13}
    t.revoke([TP])
    t.advance(TP, 20)  # being given up: no more moves
    assert commit_offsets(t) == {TP: 13}


def test_the_broker_committed_offset_is_reported_until_this_member_commits() -> None:
    t = tracker()
    t.note_committed(TP, 42)
    assert t.committed(TP) == 42
    assert t.to_commit() == {}  # nothing new to commit
    t.advance(TP, 42)
    assert t.to_commit() == {}
    t.register(TP, 42, deliveries=0)
    assert commit_offsets(t) == {TP: 43}
