"""Token buckets for per-hook rate limits.

A bucket holds up to ``capacity`` tokens (the burst) and refills at ``rate`` tokens per
second. ``reserve()`` takes one token now and returns how long the caller must wait before
using it; the balance may go negative, which queues concurrent callers fairly, one slot of
``1/rate`` seconds apart, without a lock. The clock is injected so tests need no sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    """Token bucket: ``rate`` tokens/s, at most ``capacity`` tokens; starts full."""

    __slots__ = ("_clock", "_stamp", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: int, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = float(capacity)
        self._stamp = clock()

    def reserve(self) -> float:
        """Take one token; return the wait in seconds (0.0 when a token was available)."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1.0
        if self._tokens >= 0.0:
            return 0.0
        return -self._tokens / self.rate

    def reconfigure(self, rate: float, capacity: int) -> None:
        """Apply a new limit at once, keeping the current balance (capped to the new burst)."""
        self.reserve()
        self._tokens = min(float(capacity), self._tokens + 1.0)
        self.rate = rate
        self.capacity = capacity

    def restart(self, at: float | None = None) -> None:
        """Empty the bucket: no token is saved up before ``at`` (clock seconds; default now),
        and the next one comes ``1/rate`` seconds after it. Turns already handed out keep
        their places (a negative balance stays)."""
        now = self._clock()
        self.reserve()
        self._tokens = min(0.0, self._tokens + 1.0)
        if at is not None and at > now:
            self._stamp = at
