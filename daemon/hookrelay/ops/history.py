"""What the admin API shows about recent deliveries, kept in memory and bounded.

- ``AttemptLog``: the last ``admin.recent_attempts`` POST attempts (and parks) of every hook, newest
  first on read (``GET /v1/deliveries``): time, hook, delivery id, event, attempt number,
  status, duration, error, outcome, and the first KiB of the answer only when
  ``admin.keep_response_bodies`` is on (an endpoint may echo personal data back).
- ``HourlyCounts``: one hook's requests and successes over the last 24 hours, in hourly
  slots (Logto's console shows a hook's success rate and request count over 24 h).

Both are written on the delivery hot path, once per attempt: an append of a tuple and two
integer increments. Nothing here survives a restart; Prometheus keeps the long history.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import Any, Final

from hookrelay.events.model import AttemptResult, Delivery
from hookrelay.ops.logs import masked

HOURS: Final = 24
RESPONSE_HEAD_BYTES: Final = 1024
OUTCOMES: Final = ("delivered", "retrying", "dead_lettered", "parked")
"""What became of a delivery: sent; failed and parked for a retry; given up; or parked
without an attempt (slow lane, Retry-After, open circuit: ``status`` is None and ``error``
says ``parked: <reason>``)."""

_Entry = tuple[float, str, str, str, int, int | None, float, str | None, str, bytes | None]


class AttemptLog:
    """A ring of the last ``size`` attempts (0 keeps none)."""

    def __init__(self, size: int, keep_bodies: bool) -> None:
        self._entries: deque[_Entry] = deque(maxlen=size)
        self._keep_bodies = keep_bodies
        self.size = size

    def record(self, now: float, delivery: Delivery, result: AttemptResult, outcome: str) -> None:
        """Keep one attempt; ``now`` is epoch seconds, ``outcome`` one of ``OUTCOMES``."""
        head = result.response_head[:RESPONSE_HEAD_BYTES] if self._keep_bodies else None
        self._entries.append(
            (now, delivery.hook.id, delivery.delivery_id, delivery.event.name,
             delivery.attempts, result.status, result.duration_s, result.error, outcome, head)
        )  # fmt: skip

    def recent(
        self, *, hook_id: str | None = None, outcome: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first, at most ``limit``, filtered by hook and outcome when given; each a
        JSON-ready dict (see ``AdminBackend.deliveries``)."""
        found: list[dict[str, Any]] = []
        for entry in reversed(self._entries):
            if len(found) >= limit:
                break
            if (hook_id is None or entry[1] == hook_id) and (
                outcome is None or entry[8] == outcome
            ):
                found.append(_as_dict(entry))
        return found


def _as_dict(entry: _Entry) -> dict[str, Any]:
    now, hook_id, delivery_id, event, attempt, status, duration_s, error, outcome, head = entry
    item: dict[str, Any] = {
        "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        "hook_id": hook_id,
        "delivery_id": delivery_id,
        "event": event,
        "attempt": attempt,
        "status": status,
        "duration_ms": round(duration_s * 1000, 1),
        "error": error,
        "outcome": outcome,
    }
    if head is not None:
        item["response_body"] = masked(head.decode("utf-8", errors="replace"))
    return item


class HourlyCounts:
    """Requests and successes of one hook in the current hour and the 23 before it."""

    __slots__ = ("_hours", "_requests", "_succeeded")

    def __init__(self) -> None:
        self._hours = [-1] * HOURS  # which hour (epoch // 3600) each slot counts
        self._requests = [0] * HOURS
        self._succeeded = [0] * HOURS

    def count(self, ok: bool, now: float) -> None:
        """One attempt at ``now`` (epoch seconds)."""
        hour = int(now // 3600)
        slot = hour % HOURS
        if self._hours[slot] != hour:  # a slot from a day ago: start it over
            self._hours[slot] = hour
            self._requests[slot] = 0
            self._succeeded[slot] = 0
        self._requests[slot] += 1
        self._succeeded[slot] += ok

    def totals(self, now: float) -> tuple[int, int]:
        """``(requests, succeeded)`` over the 24 hourly slots ending with ``now``'s hour."""
        oldest = int(now // 3600) - HOURS + 1
        requests = succeeded = 0
        for hour, n, ok in zip(self._hours, self._requests, self._succeeded, strict=True):
            if hour >= oldest:
                requests += n
                succeeded += ok
        return requests, succeeded


class History:
    """The attempt log and every hook's hourly counts (kept across reloads, by hook id)."""

    def __init__(self, size: int = 1000, keep_bodies: bool = False) -> None:
        self.attempts = AttemptLog(size, keep_bodies)
        self._hourly: dict[str, HourlyCounts] = {}

    def hourly(self, hook_id: str) -> HourlyCounts:
        """``hook_id``'s counts, created on first use."""
        counts = self._hourly.get(hook_id)
        if counts is None:
            counts = self._hourly[hook_id] = HourlyCounts()
        return counts

    def last_24h(self, hook_id: str, now: float) -> dict[str, Any]:
        """``{"requests", "succeeded", "success_rate"}`` (rate ``None`` without requests)."""
        counts = self._hourly.get(hook_id)
        requests, succeeded = counts.totals(now) if counts is not None else (0, 0)
        rate = round(succeeded / requests, 4) if requests else None
        return {"requests": requests, "succeeded": succeeded, "success_rate": rate}
