"""Whether the consumer group spread the event partitions evenly over a deployment's worker
processes, and what to tell the operator when it did not.

Each worker sends at most 1/N of a hook's rate limit (``workers`` = N), whatever share of
the events it holds. A worker without an event partition leaves its share unused; with
partitions that do not divide evenly (3 over 2 workers), the worker holding more of them is
held to the same share for more events. Either way a rate-limited hook delivers below its
limit (a trial: ``per_second: 3`` gave 3/s with one worker, 1.5/s with two over 3
partitions). Kafka's assignor decides the spread; hookrelay can only say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

UNEVEN_HINT: Final = (
    "each worker sends at most 1/workers of a hook's rate limit: give the event topics a "
    "partition count that is a multiple of workers (or fewer workers), or set the rate "
    "limits with this spread in mind"
)


@dataclass(frozen=True, slots=True)
class Spread:
    """Event partitions held by each worker (index → count), as one look saw them."""

    counts: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, counts: Mapping[int, int]) -> Spread:
        return cls(tuple(sorted(counts.items())))

    @property
    def even(self) -> bool:
        """Every worker holds the same number of event partitions (none idle)."""
        values = {count for _, count in self.counts}
        return len(values) == 1 and 0 not in values

    def describe(self) -> dict[str, int]:
        """``{"0": 2, "1": 1}``: for a log line."""
        return {str(index): count for index, count in self.counts}


def partitions_by_worker(answers: Mapping[int, Mapping[str, Any]], workers: int) -> dict[int, int]:
    """Event partitions each of ``workers`` workers holds, from their ``/v1/partitions``
    answers (worker index → answer); a worker that did not answer holds none (it is gone or
    restarting, and Kafka hands its partitions to the others at the next rebalance)."""
    return {
        worker: sum(p["role"] == "event" for p in answers[worker]["partitions"])
        if worker in answers
        else 0
        for worker in range(workers)
    }


class BalanceWatch:
    """Looks at the spread after each rebalance settles: ``observe`` returns ``"uneven"``
    when a spread that is not even was seen twice in a row (a rebalance in progress is not
    reported) and none was reported since the spread was last even, ``"even"`` when an even
    spread follows a reported uneven one, else None. An uneven stretch is reported once,
    however long it lasts and however often the spread changes within it (workers killed
    and restarted reshuffle it)."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._last: Spread | None = None
        self._uneven_reported = False

    def observe(self, counts: Mapping[int, int]) -> str | None:
        """``counts``: event partitions per worker index, from every worker (a look that
        missed a worker is ignored: it is restarting, and a rebalance will follow)."""
        if len(counts) != self._workers:
            self._last = None
            return None
        spread = Spread.of(counts)
        stable, self._last = spread == self._last, spread
        if not stable or spread.even != self._uneven_reported:
            return None
        self._uneven_reported = not spread.even
        return "uneven" if self._uneven_reported else "even"
