"""How the supervisor judges the spread of event partitions over its workers."""

from __future__ import annotations

from hookrelay.app.worker_balance import BalanceWatch, Spread, partitions_by_worker


def test_a_spread_is_even_only_when_every_worker_holds_the_same_nonzero_count() -> None:
    assert Spread.of({0: 2, 1: 2}).even
    assert not Spread.of({0: 2, 1: 1}).even
    assert not Spread.of({0: 1, 1: 0}).even
    assert not Spread.of({0: 0, 1: 0}).even
    assert Spread.of({1: 1, 0: 2}).describe() == {"0": 2, "1": 1}


def test_an_uneven_spread_is_reported_once_after_it_held_for_two_looks() -> None:
    watch = BalanceWatch(2)
    assert watch.observe({0: 3, 1: 0}) is None  # a rebalance may still be going on
    assert watch.observe({0: 2, 1: 1}) is None  # changed: not yet settled
    assert watch.observe({0: 2, 1: 1}) == "uneven"
    assert watch.observe({0: 2, 1: 1}) is None  # said once, however long it lasts


def test_an_even_spread_is_news_only_after_an_uneven_one_was_reported() -> None:
    watch = BalanceWatch(2)
    assert watch.observe({0: 2, 1: 2}) is None
    assert watch.observe({0: 2, 1: 2}) is None
    watch.observe({0: 3, 1: 1})
    assert watch.observe({0: 3, 1: 1}) == "uneven"
    watch.observe({0: 2, 1: 2})
    assert watch.observe({0: 2, 1: 2}) == "even"
    watch.observe({0: 1, 1: 3})
    assert watch.observe({0: 1, 1: 3}) == "uneven"  # uneven again after an even stretch


def test_an_uneven_stretch_is_reported_once_however_often_its_spread_changes() -> None:
    # A trial's kill -9 of workers reshuffled 3 partitions over 2 workers each time, and
    # each new spread was warned about again.
    watch = BalanceWatch(2)
    watch.observe({0: 2, 1: 1})
    assert watch.observe({0: 2, 1: 1}) == "uneven"
    for spread in ({0: 1, 1: 2}, {0: 3, 1: 0}, {0: 2, 1: 1}):
        assert watch.observe(spread) is None
        assert watch.observe(spread) is None
    watch.observe({0: 2, 1: 2})
    assert watch.observe({0: 2, 1: 2}) == "even"


def test_a_look_that_missed_a_worker_is_ignored_and_restarts_the_settling() -> None:
    watch = BalanceWatch(2)
    assert watch.observe({0: 2, 1: 1}) is None
    assert watch.observe({0: 2}) is None  # worker 1 restarting
    assert watch.observe({0: 2, 1: 1}) is None
    assert watch.observe({0: 2, 1: 1}) == "uneven"


def test_a_worker_that_did_not_answer_holds_no_partition() -> None:
    # The gauge kept a killed worker's last count until every worker was ready again.
    event = {"role": "event"}
    answers = {0: {"partitions": [event, event, {"role": "retry"}]}}
    assert partitions_by_worker(answers, 2) == {0: 2, 1: 0}
    assert partitions_by_worker({}, 2) == {0: 0, 1: 0}
