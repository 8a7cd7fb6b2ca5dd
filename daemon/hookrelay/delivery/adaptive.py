"""The adaptive rate limit of a hook: an AIMD controller over the lane's token bucket.

A hook with ``rate_limit.adaptive`` starts at its ceiling (``rate_limit.per_second``) and
moves its rate between ``floor`` and that ceiling from what the endpoint answers, as TCP
congestion control moves its window (and Netflix's concurrency-limits its ``AIMDLimit``):

- **Multiplicative decrease** by ``decrease_factor`` on a *congestion signal*: a 429, a
  503, or an observation window (``window_s``) whose median answer took longer than the
  latency target. At most once per observation window: every turn (token) is stamped with
  the controller's *epoch*, which a decrease advances, so the 429s of requests that were
  paced at the old rate and still in flight are not taken as news (TCP NewReno's "once per
  window of data"). The first 429 of a request paced at the new rate decreases again: the
  new rate is still too high. A latency decrease needs a whole window without another
  decrease.
- **Additive increase**, gradual and proportional: every answer that was a 2xx within the
  latency target, to a request that had to wait for its token, adds ``increase_per_s``
  requests/s (``rate`` such answers arrive per second, so the rate grows by that share of
  itself per second; like TCP's ``1/cwnd`` per acknowledgement). A hook that sends less
  than its rate never waits for a token, so its rate does not grow without evidence that
  the endpoint takes more (RFC 7661's rule for an application-limited sender).
- ``Retry-After`` is honoured by the lane (``Lane`` pauses every worker until it passes);
  here it empties the bucket until then, so the pause saves up no burst for its end.
- The bucket's burst shrinks with the rate (the configured burst is the ceiling's), and a
  decrease empties the bucket: a lower rate starts spaced, not with a saved-up burst.

Reload keeps the current rate (clamped into the new floor and ceiling), so a changed hook
does not start again from its ceiling; a restart does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from hookrelay.config import AdaptiveRate, RateLimit
from hookrelay.delivery.ratelimit import Clock, TokenBucket
from hookrelay.events.model import AttemptResult

__all__ = ["DECREASE_REASONS", "AdaptiveLimiter", "Turn", "rate_limit_view"]

MIN_ACCEPTED: Final = 5
"""2xx answers a window needs for its rate to estimate the endpoint's capacity."""
MAX_CUT: Final = 0.25
"""The deepest one decrease goes to the estimated capacity: a quarter of the rate."""
PLATEAU_LOW: Final = 0.95
PLATEAU_HIGH: Final = 1.05
"""Around the rate the last 429 came at, the rate grows by a quarter step (``_increase_step``)."""
CONGESTION_STATUSES: Final = frozenset({429, 503})
"""Answers that say "too much": Too Many Requests, and Service Unavailable (overloaded)."""
THROTTLED: Final = "throttled"
LATENCY: Final = "latency"
DECREASE_REASONS: Final = (THROTTLED, LATENCY)
"""The ``reason`` label values of ``hookrelay_rate_limit_decreases_total``."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One request's turn: the controller's ``epoch`` when it took its token, and whether
    it had to wait for it (``limited``: the rate, not the traffic, set its pace)."""

    epoch: int
    limited: bool


class AdaptiveLimiter:
    """A hook's token bucket and the AIMD controller that sets its rate (module docstring).

    ``limit`` is the hook's ``rate_limit`` (with ``adaptive`` set); ``latency_target_s``
    the latency target in seconds already resolved; ``clock`` monotonic seconds. ``rate``
    is the current rate in requests/s, always within ``[floor, ceiling]``."""

    def __init__(self, limit: RateLimit, latency_target_s: float, clock: Clock) -> None:
        self._clock = clock
        self.rate = limit.per_second
        self.bucket = TokenBucket(limit.per_second, limit.capacity, clock)
        self.epoch = 0
        self.decreases = 0
        self.last_decrease: str | None = None
        self._window_start = clock()
        self._window_answers = 0
        self._window_slow = 0
        self._window_ok = 0
        self._window_first_ok = 0.0
        self._accepted_rate: float | None = None  # 2xx/s of the last whole window
        self._congested_rate: float | None = None  # the rate the last 429 came at
        self._decreased_at = float("-inf")
        self.configure(limit, latency_target_s)

    def configure(self, limit: RateLimit, latency_target_s: float) -> None:
        """Apply new parameters (a reload): the current rate is kept, clamped into the new
        ``[floor, ceiling]``."""
        settings = limit.adaptive if limit.adaptive is not None else AdaptiveRate()
        self.limit = limit
        self.settings = settings
        self.ceiling = limit.per_second
        self.floor = settings.effective_floor(limit.per_second)
        self.latency_target_s = latency_target_s
        self._set_rate(self.rate)

    def reserve(self) -> tuple[float, Turn]:
        """Take a token: ``(seconds to wait for it, the turn to pass to observe())``."""
        wait = self.bucket.reserve()
        return wait, Turn(self.epoch, wait > 0.0)

    def observe(self, turn: Turn, result: AttemptResult) -> str | None:
        """Learn from one answer to a request sent on ``turn``; return the reason when it
        decreased the rate (``throttled`` or ``latency``), else None."""
        now = self._clock()
        reason = None
        if result.status in CONGESTION_STATUSES:
            if turn.epoch == self.epoch:
                reason = THROTTLED
        elif self._count_latency(result) and result.ok and turn.limited:
            self._set_rate(self.rate + self._increase_step())
        if result.ok:
            if not self._window_ok:
                self._window_first_ok = now
            self._window_ok += 1
        if now - self._window_start >= self.settings.window_s:
            reason = reason or self._close_window(now)
        if reason is not None:
            self._decrease(reason, now)
        if result.retry_after_s:
            # The lane pauses until then; a bucket refilling meanwhile would end the pause
            # with a burst.
            self.bucket.restart(now + result.retry_after_s)
        return reason

    def _count_latency(self, result: AttemptResult) -> bool:
        """Count ``result`` in the window's latency; True when it was within the target (a
        timeout is slow; an answer that never came for another reason is not counted)."""
        slow = result.status_class == "timeout" or result.duration_s > self.latency_target_s
        if result.status is not None or slow:
            self._window_answers += 1
            self._window_slow += slow
        return not slow

    def _close_window(self, now: float) -> str | None:
        """End the observation window: ``latency`` when most of its answers were slower than
        the target and nothing decreased the rate during it."""
        slow = self._window_slow * 2 > self._window_answers
        quiet = self._decreased_at < self._window_start
        # 2xx/s from the window's first 2xx on: the idle start of a window (a hook that had
        # no traffic yet) is not what the endpoint refused.
        span = now - self._window_first_ok
        busy = self._window_ok >= MIN_ACCEPTED and span >= self.settings.window_s / 2
        self._accepted_rate = self._window_ok / span if busy else None
        self._window_start, self._window_answers, self._window_slow = now, 0, 0
        self._window_ok = 0
        return LATENCY if slow and quiet else None

    def _increase_step(self) -> float:
        """``increase_per_s``, a quarter of it near the rate the last 429 came at (CUBIC's
        plateau): a rate just decreased climbs back fast, then probes the capacity it met
        slowly (a fixed-window endpoint answered 16% of requests 429 with a full step), and
        fast again once well past it (the capacity rose)."""
        step = self.settings.increase_per_s
        congested = self._congested_rate
        if (
            congested is not None
            and PLATEAU_LOW * congested <= self.rate <= PLATEAU_HIGH * congested
        ):
            return step / 4
        return step

    def _decrease(self, reason: str, now: float) -> None:
        self.epoch += 1
        self.decreases += 1
        self.last_decrease = reason
        self._decreased_at = now
        rate = self.rate * self.settings.decrease_factor
        if reason == THROTTLED:
            self._congested_rate = self.rate
            # What the endpoint took over the last whole window is what it can take: a
            # rate far above it goes there at once, not by one factor a window (200/s to a
            # capacity of 50/s took 13 s and hundreds of 429s at one decrease a second).
            if self._accepted_rate:
                rate = min(rate, max(self._accepted_rate, self.rate * MAX_CUT))
        self._set_rate(rate)
        self.bucket.restart()

    def _set_rate(self, rate: float) -> None:
        """Clamp ``rate`` into ``[floor, ceiling]`` and give the bucket that rate, with a
        burst shrunk in proportion (at least one token)."""
        self.rate = min(self.ceiling, max(self.floor, rate))
        capacity = max(1, int(self.limit.capacity * self.rate / self.ceiling))
        self.bucket.reconfigure(self.rate, capacity)

    def view(self) -> dict[str, Any]:
        """JSON-ready state for the admin API (see ``rate_limit_view``)."""
        return {
            "floor": self.floor,
            "latency_target_ms": round(self.latency_target_s * 1000, 1),
            "decreases": self.decreases,
            "last_decrease": self.last_decrease,
        }


def rate_limit_view(
    limit: RateLimit | None, limiter: AdaptiveLimiter | None
) -> dict[str, Any] | None:
    """A hook's rate limit for the admin API, None without one: ``per_second`` (the
    ceiling when adaptive), ``burst``, ``current_per_second`` (requests/s now) and
    ``adaptive``: None when static, else ``floor``, ``latency_target_ms``, ``decreases``
    since start and ``last_decrease`` (``throttled``, ``latency`` or None). ``limiter`` is
    the lane's (None for a static or disabled hook, which shows its configuration)."""
    if limit is None:
        return None
    adaptive = limit.adaptive
    if limiter is not None:
        current, state = round(limiter.rate, 2), limiter.view()
    else:
        current, state = limit.per_second, None
        if adaptive is not None:
            floor = adaptive.effective_floor(limit.per_second)
            state = {"floor": floor, "latency_target_ms": adaptive.latency_target_ms,
                     "decreases": 0, "last_decrease": None}  # fmt: skip
    return {
        "per_second": limit.per_second,
        "burst": limit.effective_burst,
        "current_per_second": current,
        "adaptive": state,
    }
