"""Key ``workers``: how many worker processes ``hookrelay run`` starts, and what each one's
share of the deployment's settings is.

- :func:`resolve_workers` turns the setting into a count: a number as written, ``auto`` the
  CPUs this process may use (its CPU affinity, capped by a cgroup CPU quota rounded up, as
  Go's runtime does for GOMAXPROCS: a 1.5-CPU limit gives 2 workers).
- :func:`worker_share` is the settings one of N workers runs with: every hook's rate limit
  divided by N (the rate, the burst and the adaptive floor), so that N processes together
  send no more than the configured limit. Without shared state between processes each
  worker's token bucket refills at ``per_second / N``; the price is that a hook whose events
  all land in one worker's partitions gets only its share (README: Worker processes).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from hookrelay.config.models import Hook, RateLimit, Settings

CGROUP_ROOT = Path("/sys/fs/cgroup")


def resolve_workers(
    setting: int | Literal["auto"],
    *,
    cpus: Callable[[], int] | None = None,
    quota: Callable[[], float | None] | None = None,
) -> int:
    """The worker count ``setting`` means here: itself when a number; for ``auto``,
    ``min(cpus(), ceil(quota()))``, at least 1 (``cpus`` defaults to the size of this
    process's CPU affinity, ``quota`` to its cgroup CPU quota in CPUs, None when unlimited)."""
    if setting != "auto":
        return setting
    count = (cpus or _affinity)()
    limit = (quota or cgroup_cpu_quota)()
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, own: str | None = None) -> float | None:
    """The tightest CPU quota (in CPUs, e.g. 1.5) on this process's cgroup and its ancestors,
    or None when none is set or it cannot be read. cgroup v2 (``cpu.max``: "quota period" or
    "max period") and v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, -1 unlimited).
    ``own`` is the content of /proc/self/cgroup (read when None)."""
    try:
        text = own if own is not None else Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    found: list[float] = []
    for line in text.splitlines():
        _hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        if controllers == "":  # v2: "0::/system.slice/hookrelay.service"
            found += _quotas(root, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            base = next((root / n for n in ("cpu", "cpu,cpuacct") if (root / n).is_dir()), None)
            if base is not None:
                found += _quotas(base, path, _v1_quota)
    return min(found) if found else None


def _quotas(base: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """Quotas set on the cgroup at ``path`` under ``base`` and on each of its ancestors (in a
    container the path is often "/", the namespace's root)."""
    parts = [p for p in path.split("/") if p]
    found = []
    for depth in range(len(parts), -1, -1):
        value = read(base.joinpath(*parts[:depth]))
        if value is not None:
            found.append(value)
    return found


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def worker_share(settings: Settings, workers: int) -> Settings:
    """``settings`` as one of ``workers`` worker processes runs them: every hook's rate
    limit divided by ``workers`` (:func:`shared_rate_limit`). ``workers`` 1 returns
    ``settings`` itself."""
    if workers <= 1:
        return settings
    hooks = tuple(_hook_share(hook, workers) for hook in settings.hooks)
    shared = settings.model_copy(update={"hooks": hooks})
    shared._source = settings._source  # warnings still cite the files' lines
    return shared


def _hook_share(hook: Hook, workers: int) -> Hook:
    if hook.rate_limit is None:
        return hook
    return hook.model_copy(update={"rate_limit": shared_rate_limit(hook.rate_limit, workers)})


def shared_rate_limit(limit: RateLimit, workers: int) -> RateLimit:
    """One worker's part of ``limit``: ``per_second / workers``; the burst divided and
    rounded up, at least 1 (a bucket holds a whole token, so the deployment's burst is at
    least ``workers``); an adaptive limit's floor divided too, so the deployment's floor
    stays the configured one. The other adaptive parameters are ratios and times: unchanged."""
    adaptive = limit.adaptive
    if adaptive is not None:
        floor = adaptive.effective_floor(limit.per_second) / workers
        adaptive = adaptive.model_copy(update={"floor": floor})
    burst = max(1, math.ceil(limit.effective_burst / workers))
    return limit.model_copy(
        update={"per_second": limit.per_second / workers, "burst": burst, "adaptive": adaptive}
    )
