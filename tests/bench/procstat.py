"""CPU time and memory of other processes, read from ``/proc`` (Linux only).

``Sampler`` polls a few named processes (the daemon, the receiver, the broker, ...) in the
background, so a scenario can ask afterwards how much CPU a process used between two wall
clock instants, or how its resident set size moved.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024
MACHINE = "machine"
"""Name of the whole-machine CPU series in every ``Sampler``."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads).

    Raises ``OSError`` when the process is gone.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ")".
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS_PER_S


def tree_cpu_and_rss(pid: int) -> tuple[float, int]:
    """CPU seconds and RSS bytes of ``pid`` and every process below it: a supervisor with
    worker processes (``workers: N``) counts as the deployment it runs. CPU includes the
    children it already reaped (``cutime``/``cstime``: a restarted worker's). Raises
    ``OSError`` when ``pid`` is gone."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[13]) + int(stat[14])) / CLOCK_TICKS_PER_S  # reaped children
    rss = 0
    todo = [pid]
    while todo:
        member = todo.pop()
        try:
            cpu += cpu_seconds(member)
            rss += rss_bytes(member)
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        todo.extend(parents.get(member, ()))
    return cpu, rss


def machine_cpu_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``), by every process on
    the machine: set against the bench's own processes it shows how much others took."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS_PER_S


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes now (``/proc/<pid>/statm``)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES


def peak_rss_bytes(pid: int) -> int:
    """High-water mark of ``pid``'s resident set size in bytes (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Series:
    """One process's samples: wall-clock times (s), CPU seconds, RSS bytes."""

    times: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)

    def cpu_at(self, when: float) -> float:
        """CPU seconds at wall-clock ``when``, linearly interpolated; NaN outside the samples."""
        if not self.times or when < self.times[0] or when > self.times[-1]:
            return math.nan
        right = bisect.bisect_left(self.times, when)
        if self.times[right] == when or right == 0:
            return self.cpu_s[right]
        t0, t1 = self.times[right - 1], self.times[right]
        c0, c1 = self.cpu_s[right - 1], self.cpu_s[right]
        return c0 + (c1 - c0) * (when - t0) / (t1 - t0)


class Sampler:
    """Samples CPU and RSS of ``pids`` (name → pid) every ``interval_s`` seconds.

    Use as ``async with Sampler({"daemon": pid}) as sampler: ...``; a process that exits is
    simply no longer sampled. The series ``machine`` is the whole machine's busy CPU (RSS 0).
    """

    def __init__(
        self, pids: dict[str, int], interval_s: float = 0.25, trees: Iterable[str] = ()
    ) -> None:
        self.pids = dict(pids)
        self.trees = frozenset(trees)
        """Names whose series count the process and every process below it."""
        self.interval_s = interval_s
        self.series = {name: Series() for name in pids}
        self.series[MACHINE] = Series()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self.sample()
        self._task = asyncio.create_task(self._run(), name="bench-sampler")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.sample()

    def sample(self) -> None:
        """Take one sample of every process still alive, and of the whole machine."""
        machine = self.series[MACHINE]
        machine.times.append(time.time())
        machine.cpu_s.append(machine_cpu_seconds())
        machine.rss.append(0)
        for name, pid in self.pids.items():
            try:
                now = time.time()
                if name in self.trees:
                    cpu, rss = tree_cpu_and_rss(pid)
                else:
                    cpu, rss = cpu_seconds(pid), rss_bytes(pid)
            except (OSError, IndexError, ValueError):
                continue
            series = self.series[name]
            series.times.append(now)
            series.cpu_s.append(cpu)
            series.rss.append(rss)

    def cpu_between(self, name: str, start: float, end: float) -> float:
        """CPU seconds ``name`` used between wall-clock ``start`` and ``end``."""
        series = self.series[name]
        return series.cpu_at(end) - series.cpu_at(start)

    def cores_used(self, name: str, start: float, end: float) -> float:
        """Average cores ``name`` kept busy between ``start`` and ``end`` (1.0 = one core)."""
        if end <= start:
            return math.nan
        return self.cpu_between(name, start, end) / (end - start)

    def utilisation(self, start: float, end: float) -> dict[str, float]:
        """``{name: cores used}`` for every sampled process, rounded for reports."""
        return {name: round(self.cores_used(name, start, end), 3) for name in self.series}
