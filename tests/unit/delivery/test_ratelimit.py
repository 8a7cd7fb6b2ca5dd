"""Token bucket arithmetic, with an injected clock (no sleeping)."""

from __future__ import annotations

import pytest

from hookrelay.delivery.ratelimit import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_is_free_then_reservations_are_spaced_by_one_over_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=20, capacity=5, clock=clock)
    assert [bucket.reserve() for _ in range(5)] == [0.0] * 5
    waits = [bucket.reserve() for _ in range(3)]
    assert waits == pytest.approx([0.05, 0.10, 0.15])


def test_tokens_refill_with_time_up_to_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, capacity=2, clock=clock)
    bucket.reserve()
    bucket.reserve()
    clock.now += 10.0  # long idle: refills to 2, not 100
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.1])


def test_a_hundred_requests_at_twenty_per_second_take_at_least_the_limit() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=20, capacity=20, clock=clock)
    last_wait = max(bucket.reserve() for _ in range(100))
    assert last_wait == pytest.approx(80 / 20)


def test_reconfigure_applies_the_new_rate_at_once() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, capacity=1, clock=clock)
    bucket.reserve()
    bucket.reconfigure(rate=100, capacity=1)
    assert bucket.reserve() == pytest.approx(0.01)


def test_nonsense_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0, capacity=1)
