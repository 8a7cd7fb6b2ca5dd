"""Properties of the offset map committed with each offset (``offsets.OpenOffsets``): what
a previous owner settled is exactly what a next owner skips, a map cut to fit its budget
only ever skips less, and no text a broker hands back makes the decoder raise anything but
``ValueError``."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookrelay.kafka.offsets import OpenOffsets

HOOKS = ("hA", "hB", "hS", "crm-sync")


@st.composite
def partitions(draw: st.DrawFn) -> tuple[int, list[tuple[int, list[str] | None]], int, set[int]]:
    """(start, unsettled (offset, hooks done), end, settled offsets) of one partition."""
    start = draw(st.integers(0, 2**40))
    length = draw(st.integers(1, 120))
    # The committed offset is the first unsettled record.
    settled = [False, *draw(st.lists(st.booleans(), min_size=length - 1, max_size=length - 1))]
    unsettled = []
    for index, done in enumerate(settled):
        if not done:
            hooks = draw(st.lists(st.sampled_from(HOOKS), unique=True, max_size=3))
            unsettled.append((start + index, hooks or None))
    done_offsets = {start + i for i, done in enumerate(settled) if done}
    return start, unsettled, start + length, done_offsets


@given(partitions())
@settings(max_examples=200, deadline=None)
def test_a_next_owner_skips_exactly_what_was_settled_and_keeps_the_hooks_served(
    partition: tuple[int, list[tuple[int, list[str] | None]], int, set[int]],
) -> None:
    start, unsettled, end, settled = partition
    text = OpenOffsets.encode(start, unsettled, end)
    if not text:
        assert not settled and not any(hooks for _, hooks in unsettled)
        return
    read = OpenOffsets.decode(text)
    assert (read.start, read.end) == (start, end)
    assert {o for o in range(start - 2, end + 2) if read.settled(o)} == settled
    assert all(set(read.done_hooks(o) or ()) == set(hooks or ()) for o, hooks in unsettled)


@given(partitions(), st.integers(0, 200))
@settings(max_examples=200, deadline=None)
def test_a_map_cut_to_its_budget_only_ever_skips_less(
    partition: tuple[int, list[tuple[int, list[str] | None]], int, set[int]], budget: int
) -> None:
    start, unsettled, end, settled = partition
    text = OpenOffsets.encode(start, unsettled, end, budget=budget)
    assert len(text) <= budget
    if text:
        read = OpenOffsets.decode(text)
        assert {o for o in range(start, end) if read.settled(o)} <= settled
        served = dict(unsettled)
        assert all(
            set(read.done_hooks(o) or ()) in (set(), set(served[o] or ()))
            for o in range(start, end)
            if o in served
        )


@given(st.text(max_size=60) | st.binary(max_size=40).map(lambda b: b.hex()))
@settings(max_examples=500, deadline=None)
def test_any_metadata_text_decodes_or_raises_value_error(text: str) -> None:
    try:
        read = OpenOffsets.decode(text)
    except ValueError:
        return
    assert read.start <= read.end
    assert not read.settled(read.end) and not read.settled(read.start - 1)


def test_a_crafted_map_claiming_huge_runs_is_refused_at_once() -> None:
    """Run lengths are varints from the broker: a map committed by anyone with access to the
    group. 2**40 records, or a hook served on 2**40 of them, must not be expanded."""
    for crafted in ("kAQCAQEBAmhhAgCAgICAgCA", "AAIBAQECaGECAICHpw4", "AAKAgICAgIAgAQA"):
        tracemalloc.start()
        try:
            with pytest.raises(ValueError):
                OpenOffsets.decode(crafted)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1_000_000  # bytes: refused before anything was expanded
