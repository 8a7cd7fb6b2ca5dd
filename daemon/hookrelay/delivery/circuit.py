"""A hook's circuit breaker: it opens on a failure *rate* over recent attempts, never on a
run of failures, and it never counts throttling.

In: the outcome of each real attempt of one hook — ``succeeded`` (2xx, and any other answer
that proves the endpoint is up: a permanent 4xx, 3xx, 410) or ``failed`` (a retryable
failure) — and ``throttled`` for an attempt answered 429, or 503 with ``Retry-After``, which
counts as neither. Out: whether deliveries must wait (``blocks``), which single delivery is
the half-open probe, and the state changes, for the lane to log and export.

States (``Circuit``; its value is the ``hookrelay_circuit_state`` gauge)::

    CLOSED ──(window holds ≥ min_attempts outcomes, ≥ failure_rate of them failed)──▶ OPEN
    OPEN ──(cooldown_s passed)──▶ HALF_OPEN: the next attempt is the probe, and goes alone
    HALF_OPEN ── probe succeeded ─▶ CLOSED, window cleared
              ── probe failed ────▶ OPEN for another cooldown_s
              ── probe throttled ─▶ HALF_OPEN, probe slot free again

The **window** holds the last ``window`` outcomes, and none older than ``max_age_s``. A pure
count window would judge a quiet hook on failures from hours ago (one failure today could
open the circuit on yesterday's outage); the age bound keeps the judgement about *now*, at
the price that a hook with fewer than ``min_attempts`` attempts per ``max_age_s`` never
opens its circuit (its deliveries still get their whole retry schedule).

Only the probe's outcome moves a circuit that is not closed: attempts that finish while it
is open or half-open (sent before it opened, or let through past it by the lane) are
ignored. All times come from the injected monotonic ``clock`` (seconds).
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from hookrelay.config import DeliverySettings
from hookrelay.delivery.ratelimit import Clock


class Circuit(Enum):
    """Circuit-breaker state; the value is the ``hookrelay_circuit_state`` gauge."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """One hook's breaker (see the module docstring).

    ``failure_rate`` is in (0, 1]; ``window`` and ``min_attempts`` count outcomes
    (``min_attempts`` ≤ ``window``); ``max_age_s`` and ``cooldown_s`` are seconds. A probe
    is identified by the object passed as ``token`` (the lane passes the delivery).
    """

    def __init__(
        self,
        *,
        failure_rate: float,
        window: int,
        min_attempts: int,
        max_age_s: float,
        cooldown_s: float,
        clock: Clock,
    ) -> None:
        self._rate = failure_rate
        self._window = window
        self._min = min_attempts
        self._max_age_s = max_age_s
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._outcomes: deque[tuple[float, bool]] = deque()  # (when, failed), oldest first
        self._failed = 0
        self._state = Circuit.CLOSED
        self._open_until = 0.0
        self._probe: object | None = None

    @classmethod
    def from_settings(cls, settings: DeliverySettings, clock: Clock) -> CircuitBreaker:
        """A breaker with the ``delivery.circuit_*`` settings."""
        return cls(
            failure_rate=settings.circuit_failure_rate,
            window=settings.circuit_window,
            min_attempts=settings.circuit_min_attempts,
            max_age_s=settings.circuit_window_max_age_s,
            cooldown_s=settings.circuit_cooldown_s,
            clock=clock,
        )

    # -- reading --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True while closed (the common case; no clock read)."""
        return self._state is Circuit.CLOSED

    @property
    def state(self) -> Circuit:
        """The state now: an open circuit whose cool-down is over reads half-open."""
        if self._state is Circuit.OPEN and self._clock() >= self._open_until:
            return Circuit.HALF_OPEN
        return self._state

    @property
    def cooling_down(self) -> bool:
        """True while open and the cool-down still runs (open, not half-open)."""
        return self._state is Circuit.OPEN and self._clock() < self._open_until

    @property
    def cooldown_left_s(self) -> float:
        """Seconds until the cool-down ends (0 when it is over or the circuit is closed)."""
        return 0.0 if self.closed else max(0.0, self._open_until - self._clock())

    def blocks(self) -> bool:
        """True when no delivery may be attempted now: the cool-down runs, or a half-open
        circuit's probe is out."""
        if self._state is Circuit.CLOSED:
            return False
        return self._probe is not None or self.cooling_down

    def is_probe(self, token: object) -> bool:
        """True when ``token`` is the half-open probe now out."""
        return token is self._probe

    def counts(self) -> tuple[int, int]:
        """(failed, total) outcomes in the window, as last pruned."""
        return self._failed, len(self._outcomes)

    # -- writing --------------------------------------------------------------------------

    def take_probe(self, token: object) -> bool:
        """Make ``token`` the probe when the circuit is half-open and no probe is out;
        returns True when it did (the state is then ``HALF_OPEN``)."""
        if self._probe is not None or self.state is not Circuit.HALF_OPEN:
            return False
        self._probe = token
        self._state = Circuit.HALF_OPEN
        return True

    def succeeded(self, token: object) -> Circuit | None:
        """An attempt proved the endpoint up. Returns ``CLOSED`` when that closed the circuit
        (the probe succeeded), else None."""
        if token is self._probe:
            self._probe = None
            self._state = Circuit.CLOSED
            self._outcomes.clear()
            self._failed = 0
            return Circuit.CLOSED
        if self._state is Circuit.CLOSED:
            self._record(False)
        return None

    def failed(self, token: object, pending: int = 0) -> Circuit | None:
        """An attempt failed for real, while ``pending`` others of the hook are still being
        sent. Returns ``OPEN`` when that opened the circuit (the window's failure rate
        reached the threshold, or the probe failed), else None.

        Attempts still pending count in the rate as not failed (yet), as far as the window
        has room for them: an endpoint that
        fails fast and succeeds slowly (a 500 at once, a 2xx after its work) otherwise fills
        the first window of a burst with failures, and 20% of 64 concurrent requests
        failing read as 12 failed of the first 20 answers (measured, ordered hook)."""
        if token is self._probe:
            self._probe = None
            return self._open()
        if self._state is not Circuit.CLOSED:
            return None
        self._record(True)
        total = len(self._outcomes)
        # Pending attempts fill at most the window's room: with a window of 3 and 8 sends to
        # a dead endpoint always out, the rate would never reach the threshold.
        if total >= self._min and self._failed >= self._rate * min(self._window, total + pending):
            return self._open()
        return None

    def throttled(self, token: object) -> None:
        """An attempt was answered 429, or 503 with ``Retry-After``: no outcome. A throttled
        probe frees the probe slot; the circuit stays half-open."""
        if token is self._probe:
            self._probe = None

    def released(self, token: object) -> None:
        """The delivery ``token`` was given up without an outcome here (its partition was
        revoked, or a drain could not start it): a probe frees the probe slot, or the
        circuit would stay half-open with no probe ever sent again."""
        if token is self._probe:
            self._probe = None

    def _record(self, failed: bool) -> None:
        now = self._clock()
        outcomes = self._outcomes
        oldest = now - self._max_age_s
        while outcomes and (len(outcomes) >= self._window or outcomes[0][0] < oldest):
            self._failed -= outcomes.popleft()[1]
        outcomes.append((now, failed))
        self._failed += failed

    def _open(self) -> Circuit:
        self._state = Circuit.OPEN
        self._open_until = self._clock() + self._cooldown_s
        return Circuit.OPEN
