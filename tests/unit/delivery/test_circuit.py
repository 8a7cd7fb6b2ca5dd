"""The circuit breaker's arithmetic and states, with an injected clock (no sleeping)."""

from __future__ import annotations

import random

from hookrelay.config import DeliverySettings
from hookrelay.delivery.circuit import Circuit, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: FakeClock, **settings: float) -> CircuitBreaker:
    values = {"failure_rate": 0.5, "window": 10, "min_attempts": 5, "max_age_s": 60.0,
              "cooldown_s": 30.0, **settings}  # fmt: skip
    return CircuitBreaker(
        failure_rate=values["failure_rate"],
        window=int(values["window"]),
        min_attempts=int(values["min_attempts"]),
        max_age_s=values["max_age_s"],
        cooldown_s=values["cooldown_s"],
        clock=clock,
    )


def feed(b: CircuitBreaker, outcomes: str) -> list[Circuit | None]:
    """``outcomes`` as letters: F failed, S succeeded, T throttled; returns each change."""
    changes: list[Circuit | None] = []
    for letter in outcomes:
        token = object()
        if letter == "F":
            changes.append(b.failed(token))
        elif letter == "S":
            changes.append(b.succeeded(token))
        else:
            b.throttled(token)
            changes.append(None)
    return changes


def open_then_cool_down(clock: FakeClock, b: CircuitBreaker) -> None:
    feed(b, "FFFFF")
    assert b.state is Circuit.OPEN
    clock.now += 30.0
    assert b.state is Circuit.HALF_OPEN


def test_failures_below_the_minimum_volume_never_open_the_circuit() -> None:
    b = breaker(FakeClock())
    assert feed(b, "FFFF") == [None] * 4  # 100 % failed, but only 4 of the 5 needed
    assert feed(b, "F") == [Circuit.OPEN]
    assert b.state is Circuit.OPEN
    assert b.blocks()
    assert b.counts() == (5, 5)


def test_the_circuit_opens_on_the_failure_rate_not_on_a_run_of_failures() -> None:
    b = breaker(FakeClock(), window=20, min_attempts=10)
    feed(b, "S" * 15)
    assert feed(b, "FFFFF") == [None] * 5  # five in a row, but 5 of 20: 25 %
    assert feed(b, "FFFF") == [None] * 4  # 9 of 20
    assert feed(b, "F") == [Circuit.OPEN]  # 10 of 20: 50 %


def test_the_window_slides_over_the_last_outcomes() -> None:
    b = breaker(FakeClock(), window=4, min_attempts=4)
    feed(b, "FFSSSS")
    assert b.counts() == (0, 4)  # the two failures slid out
    assert feed(b, "F") == [None]  # S S S F: 25 %
    assert feed(b, "F") == [Circuit.OPEN]  # S S F F: 50 %


def test_old_outcomes_age_out_so_a_quiet_hook_is_judged_on_recent_attempts() -> None:
    clock = FakeClock()
    b = breaker(clock, min_attempts=3)
    feed(b, "FF")
    clock.now += 61.0  # past circuit_window_max_age_s: those two are stale
    assert feed(b, "F") == [None]
    assert b.counts() == (1, 1)
    assert b.state is Circuit.CLOSED


def test_throttled_answers_count_as_neither_failure_nor_success() -> None:
    b = breaker(FakeClock(), min_attempts=2)
    feed(b, "TTTTTTTTTT")
    assert b.counts() == (0, 0)
    assert b.state is Circuit.CLOSED
    feed(b, "FTTTTTTTTS")
    assert b.counts() == (1, 2)


def test_a_random_30_percent_failure_rate_never_opens_the_default_circuit() -> None:
    """The trial's flaky endpoint: with the default window (50 % of the last 100, at least
    20), 20,000 attempts failing 30 % at random never open it; 5 consecutive failures (the
    old rule) happen about every 600 attempts."""
    rng = random.Random(7)
    b = CircuitBreaker.from_settings(DeliverySettings(), FakeClock())
    changes = feed(b, "".join("F" if rng.random() < 0.3 else "S" for _ in range(20_000)))
    assert Circuit.OPEN not in changes


def test_fast_failures_answered_before_slow_successes_do_not_open_the_circuit() -> None:
    """20% of 64 concurrent attempts fail at once, the others succeed later: the first
    answers are all failures, yet the rate is 20%, not 100%."""
    b = breaker(FakeClock(), min_attempts=5, window=100)
    pending = 64
    changes = []
    for _ in range(13):  # the fast failures come back first
        pending -= 1
        changes.append(b.failed(object(), pending=pending))
    assert changes == [None] * 13
    assert b.failed(object(), pending=0) is Circuit.OPEN  # nothing pending: 14 of 14 failed


def test_a_dead_endpoint_always_busy_still_opens_a_small_windows_circuit() -> None:
    """Pending attempts fill at most the window's room: eight sends to a dead endpoint are
    always out, and a window of 3 must still open (it never did when they all counted)."""
    b = breaker(FakeClock(), min_attempts=3, window=3)
    assert [b.failed(object(), pending=7) for _ in range(3)] == [None, None, Circuit.OPEN]


def test_a_dead_endpoint_opens_the_default_circuit_within_its_window() -> None:
    b = CircuitBreaker.from_settings(DeliverySettings(), FakeClock())
    feed(b, "S" * 100)
    changes = feed(b, "F" * 50)
    assert changes.index(Circuit.OPEN) == 49  # 50 of the last 100


def test_one_probe_at_a_time_and_its_success_closes_and_clears_the_window() -> None:
    clock = FakeClock()
    b = breaker(clock)
    open_then_cool_down(clock, b)
    assert not b.blocks()
    probe = object()
    assert b.take_probe(probe)
    assert b.state is Circuit.HALF_OPEN
    assert b.blocks()  # everyone else waits for the probe
    assert not b.take_probe(object())
    assert b.succeeded(probe) is Circuit.CLOSED
    assert b.counts() == (0, 0)
    assert feed(b, "FFFF") == [None] * 4  # a fresh window: the old failures are gone


def test_a_failed_probe_opens_the_circuit_for_another_cool_down() -> None:
    clock = FakeClock()
    b = breaker(clock)
    open_then_cool_down(clock, b)
    probe = object()
    b.take_probe(probe)
    assert b.failed(probe) is Circuit.OPEN
    assert b.cooling_down
    assert b.cooldown_left_s == 30.0


def test_a_throttled_probe_frees_the_slot_and_the_circuit_stays_half_open() -> None:
    clock = FakeClock()
    b = breaker(clock)
    open_then_cool_down(clock, b)
    probe = object()
    b.take_probe(probe)
    b.throttled(probe)
    assert b.state is Circuit.HALF_OPEN
    assert not b.blocks()
    after_the_pause = object()
    assert b.take_probe(after_the_pause)
    assert b.succeeded(after_the_pause) is Circuit.CLOSED


def test_outcomes_of_other_attempts_never_move_a_circuit_that_is_not_closed() -> None:
    clock = FakeClock()
    b = breaker(clock)
    feed(b, "FFFFF")
    assert feed(b, "SSSSSF") == [None] * 6  # sent before it opened, or let through
    assert b.state is Circuit.OPEN
    clock.now += 30.0
    probe = object()
    b.take_probe(probe)
    assert feed(b, "SF") == [None, None]  # not the probe
    assert b.is_probe(probe)
    assert b.state is Circuit.HALF_OPEN
