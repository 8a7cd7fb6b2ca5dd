"""Figures from arrival logs: rates, percentiles, windows. Times are seconds (floats)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WARM_UP_FRACTION = 0.05
"""Share of the first arrivals left out of a throughput window (connection set-up, ramp)."""


@dataclass(frozen=True)
class Rate:
    """Arrivals per second over a window: ``count`` arrivals between ``start`` and ``end``."""

    per_s: float
    count: int
    start: float
    end: float

    def as_dict(self) -> dict[str, float]:
        """JSON shape: per_s (1/s), count, window_s (s)."""
        return {
            "per_s": round(self.per_s, 1),
            "count": self.count,
            "window_s": round(self.end - self.start, 3),
        }


def steady_rate(times: Sequence[float], warm_up: float = WARM_UP_FRACTION) -> Rate:
    """Rate over sorted arrival ``times`` after the first ``warm_up`` share of arrivals."""
    if len(times) < 2:
        return Rate(0.0, len(times), 0.0, 0.0)
    first = min(int(len(times) * warm_up), len(times) - 2)
    start, end = times[first], times[-1]
    count = len(times) - 1 - first
    return Rate(count / (end - start) if end > start else 0.0, count, start, end)


def rate_between(times: Sequence[float], start: float, end: float) -> Rate:
    """Rate of the sorted arrival ``times`` falling in ``[start, end)``."""
    count = sum(1 for t in times if start <= t < end)
    return Rate(count / (end - start) if end > start else 0.0, count, start, end)


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile ``p`` (0-100) of an ascending sequence; NaN when empty."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds, plus the sample count."""
    ordered = sorted(latencies_s)
    summary = {f"p{p}_ms": round(percentile(ordered, p) * 1000, 2) for p in (50, 95, 99)}
    summary["max_ms"] = round(ordered[-1] * 1000, 2) if ordered else math.nan
    summary["count"] = len(ordered)
    return summary


def window_counts(times: Sequence[float], width_s: float, start: float, end: float) -> list[int]:
    """Arrivals in each complete window ``[start + k*width, start + (k+1)*width)`` before end."""
    windows = int((end - start) // width_s)
    counts = [0] * windows
    for t in times:
        index = int((t - start) // width_s)
        if 0 <= index < windows:
            counts[index] += 1
    return counts


def max_in_sliding_window(times: Sequence[float], width_s: float) -> int:
    """Most arrivals in any half-open window of ``width_s`` seconds (sorted ``times``)."""
    best = 0
    left = 0
    for right, t in enumerate(times):
        while t - times[left] >= width_s:
            left += 1
        best = max(best, right - left + 1)
    return best


def linear_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (units of y per unit of x); 0.0 if undefined."""
    n = len(xs)
    if n < 2:
        return 0.0
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var


def p99_by_slice(samples: Sequence[tuple[float, float]], width_s: float) -> list[float]:
    """p99 in milliseconds of ``(time, latency s)`` samples in consecutive ``width_s`` slices
    of time (sorted samples): shows whether tail latency is steady or comes in bursts."""
    if not samples:
        return []
    start = samples[0][0]
    slices: dict[int, list[float]] = {}
    for when, latency in samples:
        slices.setdefault(int((when - start) // width_s), []).append(latency)
    return [
        round(percentile(sorted(slices.get(i, [])), 99) * 1000, 1) for i in range(max(slices) + 1)
    ]
