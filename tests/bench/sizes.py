"""How big each scenario is, at full size and scaled.

Full size follows issue 4 where it fits the 15-minute budget of ``make bench`` on a 2-core
machine; two figures are shortened there, and the report says so:

- memory: the daemon runs ``memory_s`` seconds *against* a 1,000,000-record backlog (the
  backlog sits in Kafka; backpressure bounds what the daemon holds, so draining all of it
  adds time, not information). The report gives how many records were consumed meanwhile.
- RSS growth: measured over a ``steady_s``-second steady-load run (the latency run), and
  extrapolated linearly to 10 minutes from the slope after warm-up. ``--size steady_s=600``
  runs the full 10 minutes.

Scaling (``--scale`` / ``BENCH_SCALE``, ``--quick`` = 0.05) multiplies counts and durations,
with floors below which a figure would mean nothing (a 10-second rate window, a hung
request's 10-second timeout).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

QUICK_SCALE = 0.05


@dataclass(frozen=True)
class Sizes:
    """Counts are events or deliveries; durations are seconds."""

    backlog_deliveries: int = 200_000
    """Throughput runs (1 and 10 hooks) stop after this many deliveries."""
    baseline_requests: int = 100_000
    """Requests the bare aiohttp client sends per baseline run."""
    memory_backlog: int = 1_000_000
    """Events in the backlog topic (the memory run's backlog; the others read part of it)."""
    memory_s: float = 90.0
    """Memory run: seconds against the backlog with one dead endpoint."""
    steady_s: float = 180.0
    """Latency and RSS-growth run at 50 % of the measured maximum."""
    isolation_s: float = 25.0
    """Each isolation throughput run (10 hooks: all healthy, then one never answering;
    ``scenarios.ISOLATION_PAIRS`` pairs)."""
    isolation_steady_s: float = 30.0
    """Each of the two isolation latency runs (with and without the dead endpoint)."""
    rate_limit_s: float = 60.0
    """Rate-limit run: six 10-second windows."""
    adaptive_phase_s: float = 60.0
    """Adaptive rate-limit run: seconds at each hidden capacity (50/s, then 100/s); the
    first 30 s of each are the time allowed to converge."""
    ceiling_s: float = 10.0
    """Receiver ceiling run."""
    startup_repeats: int = 5
    """Daemon starts timed to /readyz."""
    ingest_s: float = 10.0
    """Each of the ingest endpoint's four runs (bare and ingest, at full load and at half)."""

    def scaled(self, scale: float) -> Sizes:
        """These sizes times ``scale`` (1.0: unchanged), respecting each figure's floor."""
        if scale == 1.0:
            return self
        return Sizes(
            backlog_deliveries=max(5_000, int(self.backlog_deliveries * scale)),
            baseline_requests=max(5_000, int(self.baseline_requests * scale)),
            memory_backlog=max(50_000, int(self.memory_backlog * scale)),
            memory_s=max(15.0, self.memory_s * scale),
            steady_s=max(15.0, self.steady_s * scale),
            isolation_s=max(14.0, self.isolation_s * scale),
            isolation_steady_s=max(10.0, self.isolation_steady_s * scale),
            rate_limit_s=max(21.0, self.rate_limit_s * scale),
            adaptive_phase_s=max(45.0, self.adaptive_phase_s * scale),
            ceiling_s=max(3.0, self.ceiling_s * scale),
            startup_repeats=max(3, round(self.startup_repeats * scale)),
            ingest_s=max(4.0, self.ingest_s * scale),
        )

    def override(self, assignments: list[str]) -> Sizes:
        """Apply ``name=value`` overrides (e.g. ``steady_s=600``); ``ValueError`` if unknown."""
        changes: dict[str, float | int] = {}
        fields = {f.name: f for f in dataclasses.fields(self)}
        for assignment in assignments:
            name, _, text = assignment.partition("=")
            if name not in fields:
                raise ValueError(f"unknown size {name!r}; known: {', '.join(fields)}")
            changes[name] = int(text) if fields[name].type == "int" else float(text)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, float | int]:
        """JSON shape."""
        return dataclasses.asdict(self)
