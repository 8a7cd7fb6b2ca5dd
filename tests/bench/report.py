"""The printed table: one row per figure, with its ratio to the baseline and its target.

Targets are issue 4's, for the CI machine class (2 cores, receiver and broker on the same
machine). "met" is only a reading of this run; on a loaded machine it says little.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Results = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    figure: str
    value: str
    vs_baseline: str = ""
    target: str = ""
    met: bool | None = None


def _n(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _met(ok: bool | None) -> str:
    return {True: "yes", False: "NO", None: ""}[ok]


def _check(value: float | None, test: Callable[[float], bool]) -> bool | None:
    return None if value is None else test(value)


def _receiver_rows(results: Results) -> list[Row]:
    rows = []
    ceiling = results.get("receiver_ceiling", {})
    base = results.get("baseline_1", {}).get("requests_per_s")
    if "requests_per_s" in ceiling:
        times = ceiling["requests_per_s"] / base if base else None
        rows.append(Row(
            f"receiver ceiling (raw client, {ceiling['connections']} connections)",
            f"{_n(ceiling['requests_per_s'])} req/s",
            f"{_n(times, 1)}x baseline", "not the bottleneck", _check(times, lambda x: x >= 2),
        ))  # fmt: skip
    for hooks in (1, 10):
        base_run = results.get(f"baseline_{hooks}", {})
        if "requests_per_s" in base_run:
            rows.append(Row(
                f"baseline: bare aiohttp, {hooks} path(s), concurrency {base_run['concurrency']}",
                f"{_n(base_run['requests_per_s'])} req/s", "1.00",
            ))  # fmt: skip
    return rows


def _throughput_rows(results: Results) -> list[Row]:
    rows = []
    for hooks in (1, 10):
        run = results.get(f"throughput_{hooks}", {})
        if "deliveries_per_s" not in run:
            continue
        ratio = run["ratio_to_baseline"]
        rows.append(Row(
            f"throughput, {hooks} hook(s), backlog: deliveries/s",
            f"{_n(run['deliveries_per_s'])} /s", _n(ratio, 2), ">= 0.85",
            _check(ratio, lambda r: r >= 0.85),
        ))  # fmt: skip
        rows.append(Row(
            "  CPU s per 1,000 deliveries (baseline: per 1,000 requests)",
            _n(run["cpu_s_per_1000"], 3), f"base {_n(run['baseline_cpu_s_per_1000'], 3)}",
        ))  # fmt: skip
        # Issue 17: deliveries per CPU-second against the bare client's requests per CPU-second.
        per_cpu = _ratio(run["baseline_cpu_s_per_1000"], run["cpu_s_per_1000"])
        floor = 0.75 if hooks == 1 else 0.7
        rows.append(Row(
            "  deliveries per CPU-second (baseline: requests per CPU-second)",
            _n(_per_cpu_s(run["cpu_s_per_1000"])), _n(per_cpu, 2), f">= {floor}",
            _check(per_cpu, lambda r: r >= floor),  # noqa: B023  (called at once)
        ))  # fmt: skip
    return rows


def _workers_rows(results: Results) -> list[Row]:
    """Worker processes against one process and Benthos of the same run (issue 17)."""
    run = results.get("throughput_workers", {})
    if "deliveries_per_s" not in run:
        return []
    rows = [Row(
        f"{run['workers']} worker processes, {run['hooks']} hooks, backlog: deliveries/s",
        f"{_n(run['deliveries_per_s'])} /s",
        f"{_n(run['ratio_to_one_process'], 2)}x one process", ">= 1.5x",
        _check(run["ratio_to_one_process"], lambda r: r >= 1.5),
    )]  # fmt: skip
    if run.get("ratio_to_benthos") is not None:
        rows.append(Row(
            "  the same, against Benthos (stock) of this run", "",
            f"{_n(run['ratio_to_benthos'], 2)}x Benthos", ">= 1.0x",
            _check(run["ratio_to_benthos"], lambda r: r >= 1.0),
        ))  # fmt: skip
    return rows


def _per_cpu_s(cpu_s_per_1000: float | None) -> float | None:
    return 1000 / cpu_s_per_1000 if cpu_s_per_1000 else None


def _ratio_text(hookrelay: float | None, benthos: float | None) -> str:
    return f"hookrelay / Benthos {_n(_ratio(hookrelay, benthos), 2)}"


def _peer_rows(results: Results) -> list[Row]:
    """hookrelay, Benthos and the bare client side by side (issue 17): deliveries/s and
    deliveries per CPU-second of the process doing the work, with hookrelay / Benthos;
    then Benthos keeping its connections alive (one row)."""
    build = results.get("peer_build", {})
    if "skipped" in build:
        return [Row(f"peer: Benthos {build['version']}", "skipped", build["skipped"])]
    rows = []
    for hooks in (1, 10):
        ours = results.get(f"throughput_{hooks}", {})
        base = results.get(f"baseline_{hooks}", {})
        stock = results.get(f"peer_benthos_stock_{hooks}", {})
        if "deliveries_per_s" in stock:
            rows += _peer_stock_rows(hooks, ours, stock, base)
        keep = results.get(f"peer_benthos_keepalive_{hooks}", {})
        if "deliveries_per_s" in keep:
            rows.append(_peer_keepalive_row(hooks, ours, keep))
    return rows


def _peer_stock_rows(
    hooks: int, ours: dict[str, Any], run: dict[str, Any], base: dict[str, Any]
) -> list[Row]:
    rates = (ours.get("deliveries_per_s"), run["deliveries_per_s"], base.get("requests_per_s"))
    per_cpu = [_per_cpu_s(r.get("cpu_s_per_1000")) for r in (ours, run, base)]
    rows = [
        Row(
            f"peer, {hooks} hook(s): deliveries/s, hookrelay / Benthos {run['version']} / "
            "bare client",
            " / ".join(_n(rate) for rate in rates) + " /s",
            _ratio_text(rates[0], rates[1]),
        ),
        Row(
            "  deliveries per CPU-second, hookrelay / Benthos / bare client",
            " / ".join(_n(value) for value in per_cpu),
            _ratio_text(per_cpu[0], per_cpu[1]),
            ">= 1.2",
            _check(_ratio(per_cpu[0], per_cpu[1]), lambda r: r >= 1.2),
        ),
        Row(
            "  connections the receiver accepted, hookrelay / Benthos / bare client",
            " / ".join(_n(r.get("connections_opened")) for r in (ours, run, base)),
        ),
    ]
    if not (run.get("signatures_valid") and run.get("webhook_ids_well_formed")):
        rows.append(Row("  Benthos bodies, signatures, webhook-ids as hookrelay's", "NO"))
    return rows


def _peer_keepalive_row(hooks: int, ours: dict[str, Any], run: dict[str, Any]) -> Row:
    rate, per_cpu = run["deliveries_per_s"], _per_cpu_s(run.get("cpu_s_per_1000"))
    ratios = (
        _ratio_text(ours.get("deliveries_per_s"), rate),
        _n(_ratio(_per_cpu_s(ours.get("cpu_s_per_1000")), per_cpu), 2),
    )
    checked = run.get("signatures_valid") and run.get("webhook_ids_well_formed")
    return Row(
        f"  Benthos keeping {run['go_max_idle_conns_per_host']} idle connections: deliveries/s, "
        "per CPU-second, connections",
        f"{_n(rate)} /s, {_n(per_cpu)}, {_n(run.get('connections_opened'))}"
        + ("" if checked else " (bodies or signatures NOT as hookrelay's)"),
        f"{ratios[0]}, {ratios[1]}",
    )


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def _latency_text(latency: dict[str, Any]) -> str:
    keys = ("p50_ms", "p95_ms", "p99_ms", "max_ms")
    return " / ".join(_n(latency.get(key), 1) for key in keys) + " ms"


def _latency_rows(results: Results) -> list[Row]:
    run = results.get("latency", {})
    if "latency" not in run:
        return []
    latency = run["latency"]
    ok = _check(latency["p50_ms"], lambda p: p <= 5) and _check(
        latency["p99_ms"], lambda p: p <= 25
    )
    rows = [Row(
        f"latency at {_n(run['offered_events_per_s'])}/s (50% of max): p50/p95/p99/max",
        _latency_text(latency), "", "p50 <= 5, p99 <= 25 ms", ok,
    )]  # fmt: skip
    growth = run.get("rss_growth", {})
    if "growth_pct" in growth:
        trend = growth["trend_10min_pct"]
        trend_text = "too short for a trend" if trend is None else f"trend {trend:+.1f}%"
        rows.append(Row(
            f"RSS growth over {_n(growth['measured_over_s'])} s steady load (trend -> 10 min)",
            f"{growth['growth_pct']:+.1f}% ({trend_text})", "", "<= 5% over 10 min",
            _check(trend, lambda g: g <= 5),
        ))  # fmt: skip
    return rows


def _isolation_rows(results: Results) -> list[Row]:
    rows = []
    run = results.get("isolation", {})
    if "nine_per_s" in run:
        rows.append(Row(
            "isolation: nine healthy hooks' deliveries/s, one never answers",
            f"{_n(run['nine_per_s'])} /s",
            f"{_n(run['ratio'], 2)} of all-healthy (median of "
            + ", ".join(_n(r, 2) for r in run["ratios"]) + ")",
            ">= 0.95", _check(run["ratio"], lambda r: r >= 0.95),
        ))  # fmt: skip
    steady = results.get("isolation_latency", {})
    if "p99_ratio" in steady:
        healthy, dead = steady["all_healthy"]["latency"], steady["one_dead"]["latency"]
        rows.append(Row(
            "isolation: nine healthy hooks' p99 at 50% load, dead vs healthy",
            f"{_n(dead['p99_ms'], 1)} vs {_n(healthy['p99_ms'], 1)} ms",
            f"{_n(steady['p99_ratio'], 2)}x", "<= 1.5x",
            _check(steady["p99_ratio"], lambda r: r <= 1.5),
        ))  # fmt: skip
    return rows


def _rate_limit_rows(results: Results) -> list[Row]:
    rows = []
    run = results.get("rate_limit", {})
    for hook in ("rl50", "rl500"):
        limit = run.get(hook)
        if not limit:
            continue
        worst = limit["worst_deviation_after_first_pct"]
        rates = ", ".join(f"{r:g}" for r in limit["window_rates_per_s"])
        rows.append(Row(
            f"rate limit {limit['limit_per_s']:g}/s: 10-s windows (first holds the burst)",
            f"{rates} /s", f"worst {_n(worst, 1)}%", "+-3% per window",
            _check(worst, lambda w: abs(w) <= 3),
        ))  # fmt: skip
        rows.append(Row(
            f"rate limit {limit['limit_per_s']:g}/s: most requests in any 1 s",
            f"{limit['max_in_any_1s']} ({limit['max_in_any_1s_after_first_window']} after 10 s)",
            "", f"<= {limit['bound_1s']:g} (limit + burst)",
            limit["max_in_any_1s"] <= limit["bound_1s"],
        ))  # fmt: skip
    return rows


def _adaptive_rows(results: Results) -> list[Row]:
    rows = []
    run = results.get("adaptive", {})
    for key in ("capacity_50", "capacity_100"):
        phase = run.get(key)
        if not phase:
            continue
        capacity, converged = phase["capacity_per_s"], phase["converged_after_s"]
        rate, share = phase["sent_per_s_after_30s"], phase["share_429_after_30s"]
        within = None if rate is None else abs(rate / capacity - 1) <= 0.10
        few = None if share is None else share < 0.05
        rows.append(Row(
            f"adaptive rate, hidden capacity {capacity:g}/s: within +-10% for good after",
            "never" if converged is None else f"{converged:g} s", "", "<= 30 s",
            converged is not None and converged <= 30,
        ))  # fmt: skip
        rows.append(Row(
            f"adaptive rate, hidden capacity {capacity:g}/s: sent/s and 429 share after 30 s",
            f"{_n(rate, 1)} /s, {_n(None if share is None else share * 100, 1)}% 429 "
            f"(whole phase {_n((phase['share_429_whole_phase'] or 0) * 100, 1)}%)",
            "", f"{capacity * 0.9:g}-{capacity * 1.1:g} /s, < 5% 429",
            None if within is None or few is None else within and few,
        ))  # fmt: skip
    return rows


def _ordering_rows(results: Results) -> list[Row]:
    run = results.get("ordering", {})
    if run.get("median_ratio") is None:
        return []
    rates = ", ".join(
        f"{p['ordered']['deliveries_per_s']:g} vs {p['unordered']['deliveries_per_s']:g}"
        for p in run["pairs"]
    )
    return [Row(
        f"ordered delivery, {_n(run['keys'])} keys: deliveries/s ordered vs unordered "
        "(median ratio of pairs)",
        f"{rates} /s", f"{run['median_ratio']:.2f}x", ">= 0.7x",
        run["median_ratio"] >= 0.7,
    )]  # fmt: skip


def _memory_rows(results: Results) -> list[Row]:
    run = results.get("memory", {})
    if "peak_rss_mb" not in run:
        return []
    return [Row(
        f"memory: {_n(run['backlog_events'])}-event backlog + dead endpoint, "
        f"{_n(run['duration_s'])} s: peak / steady RSS",
        f"{_n(run['peak_rss_mb'], 1)} / {_n(run['steady_rss_mb'], 1)} MB", "",
        "steady <= 150 MB", _check(run["steady_rss_mb"], lambda m: m <= 150),
    )]  # fmt: skip


def _startup_rows(results: Results) -> list[Row]:
    run = results.get("startup", {})
    if "median_s" not in run:
        return []
    return [Row(
        "start-up: process start -> /readyz 200 (median, later starts)",
        f"{run['median_s']:.2f} s (first {run['first_s']:.2f} s)", "", "<= 1.5 s",
        run["median_s"] <= 1.5,
    )]  # fmt: skip


def _ingest_rows(results: Results) -> list[Row]:
    run = results.get("ingest", {})
    if "ratio_to_bare" not in run:
        return []
    ratio, added = run["ratio_to_bare"], run["added_latency_ms"]
    paced = run["paced_ingest"]["latency"]
    return [
        Row(
            f"ingest: requests/s, each 204 after the broker's ack ({run['connections']} "
            "connections; baseline: bare aiohttp answering 204)",
            f"{_n(run['ingest']['requests_per_s'])} /s",
            f"{_n(ratio, 2)} (bare {_n(run['bare']['requests_per_s'])} /s)",
            ">= 0.5",
            _check(ratio, lambda r: r >= 0.5),
        ),
        Row(
            f"  added latency at {_n(run['offered_per_s'])} req/s (half): p50",
            f"{added['p50_ms']:.2f} ms",
            f"ingest p50 {paced['p50_ms']:.2f} ms",
            "<= 5 ms",
            added["p50_ms"] <= 5,
        ),
        Row(
            "  added latency at half load: p99",
            f"{added['p99_ms']:.2f} ms",
            f"ingest p99 {paced['p99_ms']:.2f} ms",
            "<= 25 ms",
            added["p99_ms"] <= 25,
        ),
    ]


def rows(results: Results) -> list[Row]:
    """Every table row the results allow, in scenario order."""
    sections = (
        _receiver_rows, _throughput_rows, _peer_rows, _workers_rows, _latency_rows, _isolation_rows,
        _rate_limit_rows, _adaptive_rows, _ordering_rows, _memory_rows, _startup_rows, _ingest_rows,
    )  # fmt: skip
    return [row for section in sections for row in section(results)]


def render(table: list[Row]) -> str:
    """The rows as a fixed-width text table."""
    header = Row("figure", "value", "vs baseline", "target", None)
    lines = [(r.figure, r.value, r.vs_baseline, r.target, _met(r.met)) for r in table]
    cells = [(header.figure, header.value, header.vs_baseline, header.target, "met"), *lines]
    widths = [max(len(row[i]) for row in cells) for i in range(5)]
    out = []
    for index, row in enumerate(cells):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in out)


def cores_notes(results: Results) -> list[str]:
    """One line per scenario: cores used by each process in its measurement window; with
    ``machine`` (every process on the machine) it also says how much went to others."""
    notes = []
    for name, result in results.items():
        cores = dict(result.get("cores") or {}) if isinstance(result, dict) else {}
        if not cores:
            continue
        machine = cores.pop("machine", None)
        used = ", ".join(f"{proc} {value:.2f}" for proc, value in cores.items())
        if machine is not None:
            others = max(0.0, machine - sum(cores.values()))
            used += f"; whole machine {machine:.2f}, other processes {others:.2f}"
        notes.append(f"  {name}: {used}")
    return notes
