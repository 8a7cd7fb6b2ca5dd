"""Key ``workers``: the count it resolves to, and each worker's share of the rate limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookrelay.config import (
    Hook,
    RateLimit,
    Settings,
    load_settings,
    resolve_workers,
    worker_share,
)
from hookrelay.config.adaptive import AdaptiveRate
from hookrelay.config.workers import cgroup_cpu_quota, shared_rate_limit
from hookrelay.errors import ConfigError


def test_a_number_is_taken_as_written_and_auto_is_the_usable_cpus_capped_by_the_quota() -> None:
    assert resolve_workers(3, cpus=lambda: 8, quota=lambda: 1.0) == 3
    assert resolve_workers("auto", cpus=lambda: 8, quota=lambda: None) == 8
    assert resolve_workers("auto", cpus=lambda: 8, quota=lambda: 1.5) == 2  # rounded up
    assert resolve_workers("auto", cpus=lambda: 2, quota=lambda: 4.0) == 2
    assert resolve_workers("auto", cpus=lambda: 4, quota=lambda: 0.2) == 1


def test_the_cgroup_v2_quota_is_the_tightest_on_the_path(tmp_path: Path) -> None:
    (tmp_path / "system.slice" / "hookrelay.service").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "system.slice" / "cpu.max").write_text("300000 100000\n")
    (tmp_path / "system.slice" / "hookrelay.service" / "cpu.max").write_text("150000 100000\n")
    own = "0::/system.slice/hookrelay.service\n"
    assert cgroup_cpu_quota(tmp_path, own) == 1.5
    (tmp_path / "system.slice" / "hookrelay.service" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path, own) == 3.0
    assert cgroup_cpu_quota(tmp_path, "0::/\n") is None


def test_the_cgroup_v1_quota_is_read_too(tmp_path: Path) -> None:
    (tmp_path / "cpu,cpuacct").mkdir()
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path, "4:cpu,cpuacct:/\n") == 0.5


@pytest.mark.parametrize(
    ("per_second", "burst", "workers", "expected"),
    [(20, 40, 2, (10, 20)), (10, None, 3, (10 / 3, 4)), (1, 1, 4, (0.25, 1))],
)
def test_each_worker_gets_its_share_of_the_rate_and_at_least_one_token_of_burst(
    per_second: float, burst: int | None, workers: int, expected: tuple[float, int]
) -> None:
    shared = shared_rate_limit(RateLimit(per_second=per_second, burst=burst), workers)
    assert (shared.per_second, shared.burst) == pytest.approx(expected)


def test_an_adaptive_limit_shares_its_floor_so_the_deployment_keeps_the_configured_one() -> None:
    limit = RateLimit(per_second=50, adaptive=AdaptiveRate(latency_target_ms=200))
    shared = shared_rate_limit(limit, 2)
    assert shared.adaptive is not None
    assert (shared.per_second, shared.adaptive.floor) == (25, 0.5)  # default floor 1, halved
    assert shared.adaptive.latency_target_ms == 200


def test_worker_share_leaves_hooks_without_a_limit_and_one_worker_alone() -> None:
    hooks = (
        Hook(id="a", events=("*",), url="https://a.example/h", rate_limit=RateLimit(per_second=8)),
        Hook(id="b", events=("*",), url="https://b.example/h"),
    )
    settings = Settings(hooks=hooks, workers=2)
    assert worker_share(settings, 1) is settings
    shared = worker_share(settings, 2)
    assert [h.rate_limit.per_second if h.rate_limit else None for h in shared.hooks] == [4, None]
    assert settings.hooks[0].rate_limit == RateLimit(per_second=8)  # the original is untouched


@pytest.mark.parametrize("value", ["0", "65", "two", '"2"', "true", "1.5"])
def test_a_bad_workers_value_is_one_problem_with_a_plain_key_path(
    tmp_path: Path, value: str
) -> None:
    """A trial's `workers: 0` gave two problems, each with pydantic's internals in the key
    path (`workers.function-after[functools.partial(...)]`)."""
    path = tmp_path / "hookrelay.yaml"
    path.write_text(f"workers: {value}\nhooks: []\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert [str(issue) for issue in caught.value.issues] == [
        f"{path}:1: workers: expected a whole number from 1 to 64, or auto"
    ]


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("64", 64), ("auto", "auto")])
def test_workers_takes_a_count_or_auto(tmp_path: Path, value: str, expected: object) -> None:
    path = tmp_path / "hookrelay.yaml"
    path.write_text(f"workers: {value}\nhooks: []\n")
    assert load_settings(path).workers == expected
