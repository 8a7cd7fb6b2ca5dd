"""The adaptive rate limit's AIMD controller, on a fake clock (no sleeping, no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from hookrelay.config import AdaptiveRate, RateLimit
from hookrelay.delivery.adaptive import AdaptiveLimiter, Turn, rate_limit_view
from hookrelay.events.model import AttemptResult


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(
    clock: FakeClock, per_second: float = 100.0, latency_target_s: float = 0.5, **adaptive: Any
) -> AdaptiveLimiter:
    limit = RateLimit(per_second=per_second, adaptive=AdaptiveRate(**adaptive))
    return AdaptiveLimiter(limit, latency_target_s, clock)


def ok(duration_s: float = 0.01) -> AttemptResult:
    return AttemptResult(200, None, False, None, duration_s)


def throttled(status: int = 429, retry_after_s: float | None = None) -> AttemptResult:
    return AttemptResult(status, f"http {status}", True, retry_after_s, 0.01)


def busy(rate: AdaptiveLimiter) -> Turn:
    """A turn of a request that waited for its token (the rate set the pace)."""
    return Turn(rate.epoch, limited=True)


# -- decrease ----------------------------------------------------------------------------


def test_it_starts_at_the_ceiling() -> None:
    rate = limiter(FakeClock(), per_second=200)

    assert rate.rate == 200
    assert rate.bucket.rate == 200


def test_a_429_decreases_the_rate_by_the_factor() -> None:
    rate = limiter(FakeClock())

    assert rate.observe(busy(rate), throttled()) == "throttled"

    assert rate.rate == pytest.approx(90)
    assert rate.bucket.rate == pytest.approx(90)
    assert (rate.decreases, rate.last_decrease) == (1, "throttled")


def test_a_503_decreases_the_rate_too() -> None:
    rate = limiter(FakeClock())

    assert rate.observe(busy(rate), throttled(503)) == "throttled"
    assert rate.rate == pytest.approx(90)


def test_a_burst_of_429s_already_in_flight_decreases_once() -> None:
    rate = limiter(FakeClock())
    in_flight = [busy(rate) for _ in range(20)]  # all paced at the ceiling

    reasons = [rate.observe(turn, throttled()) for turn in in_flight]

    assert reasons == ["throttled"] + [None] * 19
    assert rate.rate == pytest.approx(90)


def test_a_429_to_a_request_paced_at_the_new_rate_decreases_again() -> None:
    rate = limiter(FakeClock())
    rate.observe(busy(rate), throttled())

    assert rate.observe(busy(rate), throttled()) == "throttled"
    assert rate.rate == pytest.approx(81)


def test_the_floor_holds_however_many_429s() -> None:
    rate = limiter(FakeClock(), floor=5)

    for _ in range(100):
        rate.observe(busy(rate), throttled())

    assert rate.rate == 5
    assert rate.bucket.rate == 5


def test_a_decrease_empties_the_bucket_so_the_lower_rate_starts_spaced() -> None:
    clock = FakeClock()
    rate = limiter(clock, per_second=100)  # a full bucket: 98 tokens of burst

    rate.observe(busy(rate), throttled())

    assert rate.reserve()[0] == pytest.approx(1 / 90)


def test_the_burst_shrinks_with_the_rate() -> None:
    clock = FakeClock()
    rate = limiter(clock, per_second=100, decrease_factor=0.5)
    rate.observe(busy(rate), throttled())

    clock.now += 60  # a long quiet period refills the bucket to its (smaller) burst

    waits = [rate.reserve()[0] for _ in range(50)]
    assert waits.count(0.0) == 49  # half the ceiling's 98 tokens, not 98
    assert rate.bucket.capacity == 49


# -- Retry-After ---------------------------------------------------------------------------


def test_a_retry_after_leaves_no_token_before_it_passes() -> None:
    clock = FakeClock()
    rate = limiter(clock, per_second=100)

    rate.observe(busy(rate), throttled(retry_after_s=2.0))

    # The lane pauses for the Retry-After; the bucket saves nothing up meanwhile.
    assert rate.reserve()[0] == pytest.approx(2.0 + 1 / 90)
    clock.now += 2.0
    assert rate.reserve()[0] == pytest.approx(2 / 90)


def test_a_stale_retry_after_still_empties_the_bucket_without_decreasing() -> None:
    clock = FakeClock()
    rate = limiter(clock, per_second=100)
    old = busy(rate)
    rate.observe(busy(rate), throttled())

    assert rate.observe(old, throttled(retry_after_s=1.0)) is None

    assert rate.rate == pytest.approx(90)
    clock.now += 1.0
    assert rate.reserve()[0] == pytest.approx(1 / 90)


# -- increase ------------------------------------------------------------------------------


def test_each_fast_answer_of_a_rate_bound_hook_adds_the_increase() -> None:
    rate = limiter(FakeClock(), decrease_factor=0.5, increase_per_s=0.1)
    rate.observe(busy(rate), throttled())  # 50/s

    for _ in range(50):  # one second's answers at 50/s
        assert rate.observe(busy(rate), ok()) is None

    assert rate.rate == pytest.approx(55)  # +10 % in a second
    assert rate.bucket.rate == pytest.approx(55)


def test_the_rate_climbs_back_to_the_ceiling_and_stays_there() -> None:
    clock = FakeClock()
    rate = limiter(clock, decrease_factor=0.5)
    rate.observe(busy(rate), throttled())

    for _ in range(2000):
        clock.now += 1 / rate.rate
        rate.observe(busy(rate), ok())

    assert rate.rate == 100


def test_a_doubled_capacity_is_reached_within_eleven_seconds() -> None:
    clock = FakeClock()
    rate = limiter(clock, per_second=200, decrease_factor=0.5)
    for _ in range(2):
        rate.observe(busy(rate), throttled())  # 50/s
    start = clock.now

    while rate.rate < 100:
        clock.now += 1 / rate.rate
        rate.observe(busy(rate), ok())

    # ln 2 / ln 1.08 = 8.7 s at the full step, and about 1.9 s more at a quarter step
    # through the plateau around 100/s, where the last 429 came
    assert clock.now - start == pytest.approx(10.6, abs=0.3)


def test_a_hook_that_sends_less_than_its_rate_does_not_raise_it() -> None:
    rate = limiter(FakeClock(), decrease_factor=0.5)
    rate.observe(busy(rate), throttled())

    for _ in range(500):
        rate.observe(Turn(rate.epoch, limited=False), ok())

    assert rate.rate == 50


def test_failures_and_slow_answers_do_not_raise_the_rate() -> None:
    rate = limiter(FakeClock(), decrease_factor=0.5)
    rate.observe(busy(rate), throttled())

    rate.observe(busy(rate), AttemptResult(500, "http 500", True, None, 0.01))
    rate.observe(busy(rate), ok(duration_s=0.8))

    assert rate.rate == 50


# -- latency -------------------------------------------------------------------------------


def test_a_window_whose_median_is_over_the_target_decreases_once_at_its_end() -> None:
    clock = FakeClock()
    rate = limiter(clock, latency_target_s=0.5)

    reasons = []
    for _ in range(10):
        clock.now += 0.099
        reasons.append(rate.observe(busy(rate), ok(duration_s=0.8)))
    clock.now += 0.02  # the window (1 s) is over

    reasons.append(rate.observe(busy(rate), ok(duration_s=0.8)))
    assert reasons == [None] * 10 + ["latency"]
    assert rate.rate == pytest.approx(90)
    assert rate.last_decrease == "latency"


def test_a_few_slow_answers_in_a_window_do_not_decrease() -> None:
    clock = FakeClock()
    rate = limiter(clock, latency_target_s=0.5)

    for n in range(11):
        clock.now += 0.1
        assert rate.observe(busy(rate), ok(duration_s=0.8 if n % 3 == 0 else 0.05)) is None

    assert rate.decreases == 0


def test_a_timeout_counts_as_slow() -> None:
    clock = FakeClock()
    rate = limiter(clock, latency_target_s=0.5)
    timeout = AttemptResult(None, "timeout", True, None, 0.5)

    rate.observe(busy(rate), timeout)
    clock.now += 1.0

    assert rate.observe(busy(rate), timeout) == "latency"


def test_a_window_that_already_decreased_on_a_429_does_not_decrease_for_latency() -> None:
    clock = FakeClock()
    rate = limiter(clock, latency_target_s=0.5)
    rate.observe(busy(rate), throttled())

    clock.now += 0.5
    rate.observe(busy(rate), ok(duration_s=0.8))
    clock.now += 0.6
    assert rate.observe(busy(rate), ok(duration_s=0.8)) is None
    clock.now += 1.0  # a whole window of slow answers after it does
    assert rate.observe(busy(rate), ok(duration_s=0.8)) == "latency"


# -- reload and the admin view ---------------------------------------------------------------


def test_a_reload_keeps_the_rate_within_the_new_floor_and_ceiling() -> None:
    rate = limiter(FakeClock(), per_second=100, decrease_factor=0.5)
    rate.observe(busy(rate), throttled())  # 50/s

    rate.configure(RateLimit(per_second=400, adaptive=AdaptiveRate()), 0.5)
    assert rate.rate == 50  # a higher ceiling is climbed to, not jumped to
    rate.configure(RateLimit(per_second=30, adaptive=AdaptiveRate()), 0.5)
    assert rate.rate == 30
    rate.configure(RateLimit(per_second=100, adaptive=AdaptiveRate(floor=60)), 0.5)
    assert rate.rate == 60
    assert rate.bucket.rate == 60


def test_the_admin_view_shows_the_current_rate_and_why_it_last_fell() -> None:
    rate = limiter(FakeClock(), per_second=100, floor=5)
    rate.observe(busy(rate), throttled())

    assert rate_limit_view(rate.limit, rate) == {
        "per_second": 100,
        "burst": 100,
        "current_per_second": 90.0,
        "adaptive": {
            "floor": 5,
            "latency_target_ms": 500.0,
            "decreases": 1,
            "last_decrease": "throttled",
        },
    }
    static = RateLimit(per_second=20, burst=40)
    assert rate_limit_view(static, None) == {
        "per_second": 20,
        "burst": 40,
        "current_per_second": 20,
        "adaptive": None,
    }


def test_a_429_brings_the_rate_to_what_the_endpoint_took_over_the_last_window() -> None:
    """A fixed-window endpoint answers 429 once a window: one factor per 429 took 13 s and
    hundreds of 429s from 200/s to 50/s in a trial."""
    clock = FakeClock()
    rate = limiter(clock, per_second=100)
    clock.now += 5.0  # idle first: not part of the estimate
    for _ in range(50):  # 50 requests answered 2xx, 20 ms apart
        clock.now += 0.02
        rate.observe(Turn(rate.epoch, False), ok())
    clock.now += 0.1
    rate.observe(Turn(rate.epoch, False), ok())  # closes the window: 51 2xx in 1.08 s
    rate.observe(busy(rate), throttled())
    assert rate.rate == pytest.approx(51 / 1.08, rel=0.01)  # not 90 (100 x 0.9)
    clock.now += 1.1  # an idle window: no estimate, so the next 429 cuts by the factor
    rate.observe(busy(rate), ok())
    before = rate.rate
    rate.observe(busy(rate), throttled())
    assert rate.rate == pytest.approx(before * 0.9)


def test_near_the_rate_a_429_came_at_the_rate_creeps_then_climbs_past_it() -> None:
    clock = FakeClock()
    rate = limiter(clock, per_second=200, decrease_factor=0.5)
    rate.observe(busy(rate), throttled())  # at 200: now 100
    rate._set_rate(192.0)  # type: ignore[attr-defined]
    before = rate.rate
    rate.observe(busy(rate), ok())
    assert rate.rate - before == pytest.approx(0.08 / 4)  # within 5% of 200: a quarter step
    rate._set_rate(150.0)  # type: ignore[attr-defined]
    rate.observe(busy(rate), ok())
    assert rate.rate == pytest.approx(150.08)  # well below it: the whole step
