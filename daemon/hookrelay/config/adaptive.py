"""Key ``rate_limit.adaptive`` of a hook: the adaptive rate limit's parameters.

The hook's ``rate_limit.per_second`` is the ceiling; ``delivery.adaptive`` moves the rate
between ``floor`` and that ceiling (additive increase, multiplicative decrease) from what the
endpoint answers. How each parameter acts is said where the controller is
(``hookrelay.delivery.adaptive``) and in the README.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_core import PydanticCustomError

from hookrelay.config.fields import FrozenModel, Number, refuse

DEFAULT_FLOOR_PER_S = 1.0


class AdaptiveRate(FrozenModel):
    """Adapt the hook's rate to its endpoint: slow down on 429/503, Retry-After and latency
    over a target, speed up again towards rate_limit.per_second (the ceiling) while the
    endpoint keeps up."""

    floor: Number | None = Field(None, gt=0)
    """Requests/s the rate never goes below, however the endpoint answers (a Retry-After
    still pauses the hook for as long as it says); at most rate_limit.per_second. null
    means 1, or rate_limit.per_second when that is lower."""
    decrease_factor: Number = Field(0.9, gt=0, lt=1)
    """The rate is multiplied by this on a 429, a 503 or latency over the target, at most
    once per observation window."""
    increase_per_s: Number = Field(0.08, gt=0, le=1)
    """Share of the current rate added per second while the hook has more to send than its
    rate lets through and the endpoint keeps up (0.08: +8 %/s, twice the rate in ~9 s)."""
    latency_target_ms: Number | None = Field(None, gt=0)
    """Milliseconds: a window whose median answer took longer decreases the rate; null
    means half the hook's attempt timeout (timeout_s, else http.timeout_s)."""
    window_s: Number = Field(1.0, ge=0.05, le=60)
    """Seconds of one latency observation window."""

    def effective_floor(self, ceiling: float) -> float:
        """``floor`` in requests/s, or ``min(1, ceiling)`` when unset."""
        return self.floor if self.floor is not None else min(DEFAULT_FLOOR_PER_S, ceiling)

    def refusal(self, ceiling: float) -> PydanticCustomError | None:
        """Why these parameters cannot work under a ceiling of ``ceiling`` requests/s (the
        key path relative to ``rate_limit``), or None."""
        if self.floor is not None and self.floor > ceiling:
            return refuse(
                f"expected a floor <= per_second ({ceiling:g}): the configured rate is the "
                f"ceiling the adaptive rate moves under",
                at=("adaptive", "floor"),
            )
        return None
