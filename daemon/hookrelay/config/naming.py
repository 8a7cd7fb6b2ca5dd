"""Names of the topics a deployment owns, derived from its settings: one retry topic per delay
tier, named ``<retry_topic_prefix><label>`` where the label is the tier's delay (``5s``,
``2m``, ``1h30m``, ``250ms``), and the parse back from a name to its delay (``kafka.tiers``
finds former tiers by it). Also how long after its write a retry record can at most be due.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Final

DUE_HORIZON_MARGIN_S: Final = 86_400.0
TIER_LABEL: Final = re.compile(r"(?:([0-9]+)ms|(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?)")
"""What ``tier_label`` writes at the end of a tier topic's name; groups: ms, h, m, s."""


def tier_label(delay_s: float) -> str:
    """Human label of a delay for topic names: ``5s``, ``2m``, ``1h``, ``1h30m``, ``250ms``."""
    if delay_s < 1 or delay_s != int(delay_s):
        ms = round(delay_s * 1000)
        if ms % 1000:
            return f"{ms}ms"
        delay_s = ms / 1000
    total = int(delay_s)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{seconds}s" if seconds else "",
    ]
    return "".join(parts)


def tier_topics(prefix: str, schedule_s: tuple[float, ...]) -> tuple[str, ...]:
    """Retry topic per tier, in schedule order; equal delays share one topic."""
    return tuple(f"{prefix}{tier_label(delay)}" for delay in schedule_s)


@functools.lru_cache(maxsize=1024)
def tier_delay_s(topic: str) -> float | None:
    """The delay a tier topic's name ends with (``…5s``, ``…1h30m``, ``…250ms``), the
    inverse of ``tier_label``; None when the name ends with no delay."""
    for start in range(len(topic)):
        match = TIER_LABEL.fullmatch(topic, start)
        if match is not None and match.group(0):
            ms, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
            return ms / 1000 + hours * 3600 + minutes * 60 + seconds
    return None


def due_horizon_s(schedule_s: Sequence[float], jitter: float, max_retry_after_s: float) -> float:
    """Seconds after its write beyond which a retry record of a tier whose name gives no
    delay cannot be due: no tier of this schedule, nor a capped ``Retry-After``, parks a
    delivery that long, and a day's margin covers longer tiers of an earlier schedule."""
    return max(max(schedule_s) * (1.0 + jitter), max_retry_after_s) + DUE_HORIZON_MARGIN_S
