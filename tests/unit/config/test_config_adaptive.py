"""Key rate_limit.adaptive of a hook: defaults, and values refused at load time with the file,
the line and the key path."""

from __future__ import annotations

from pathlib import Path

from hookrelay.config import AdaptiveRate, RateLimit, load_settings
from tests.unit.config.test_config import HOOK, refusals, with_hooks


def test_adaptive_defaults_are_the_documented_ones() -> None:
    adaptive = AdaptiveRate()

    assert (adaptive.floor, adaptive.decrease_factor, adaptive.increase_per_s) == (None, 0.9, 0.08)
    assert (adaptive.latency_target_ms, adaptive.window_s) == (None, 1.0)
    assert adaptive.effective_floor(200) == 1.0
    assert adaptive.effective_floor(0.5) == 0.5  # never above the ceiling


def test_an_adaptive_rate_limit_loads_with_per_second_as_its_ceiling(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + """
      rate_limit:
        per_second: 200
        adaptive: {floor: 5, latency_target_ms: 800}
    """)  # fmt: skip

    [hook] = load_settings(path, env={}).hooks

    assert hook.rate_limit == RateLimit(
        per_second=200, adaptive=AdaptiveRate(floor=5, latency_target_ms=800)
    )


def test_a_floor_above_the_ceiling_is_refused_at_its_line(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + """
      rate_limit:
        per_second: 20
        adaptive:
          floor: 50
    """)  # fmt: skip

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:9: hooks[0].rate_limit.adaptive.floor: expected a floor "
        "<= per_second (20): the configured rate is the ceiling the adaptive rate moves under"
    ]


def test_factors_outside_their_ranges_are_refused(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + """
      rate_limit:
        per_second: 20
        adaptive: {decrease_factor: 1.5, increase_per_s: 0, window_s: 0.001, colour: red}
    """)  # fmt: skip

    issues = refusals(path)

    where = f"{tmp_path / 'hooks.yaml'}:8: hooks[0].rate_limit.adaptive"
    assert issues == [
        f"{where}.decrease_factor: expected a number < 1",
        f"{where}.increase_per_s: expected a number > 0",
        f"{where}.window_s: expected a number >= 0.05",
        f"{where}.colour: unknown key 'colour'; expected one of: floor, decrease_factor, "
        "increase_per_s, latency_target_ms, window_s",
    ]
