"""The benchmark scenarios of issue 4. Each takes the ``Bench`` and returns a JSON-able dict.

Units in the results: rates per second, times in seconds (``_s``) or milliseconds
(``_ms``), memory in MiB (``_mb``), CPU in seconds or in cores (1.0 = one core busy).

Order matters: the baselines come before the throughput runs (ratios), the throughput runs
before the latency and isolation runs (their offered load is 50 % of a measured maximum).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import statistics
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import orjson

from tests.bench import baseline, ingest, loadgen
from tests.bench.daemon import DaemonProcess, HookSpec, write_config
from tests.bench.events import BENCH_KEYS
from tests.bench.harness import (
    Bench,
    Run,
    baseline_requests,
    keep_running,
    latencies,
    offer_load,
    raw_request,
    running,
    signatures_valid,
    wait_for_deliveries,
)
from tests.bench.kafka import PacedProducer
from tests.bench.procstat import MIB, Sampler, Series
from tests.bench.receiver import THROTTLED_PREFIX, Arrivals, free_port
from tests.bench.stats import (
    latency_summary,
    linear_slope,
    max_in_sliding_window,
    p99_by_slice,
    rate_between,
    steady_rate,
    window_counts,
)

FALLBACK_MAX_PER_S = 1000.0
"""Offered-load reference when the throughput run it derives from was not run or failed."""
BASELINE_DISTINCT_EVENTS = 1000
"""Distinct pre-signed bodies the baseline cycles through."""
LATENCY_WARM_UP_S = 2.0
"""Deliveries of events produced in the first seconds of a steady run are not counted."""
GROWTH_WARM_UP_FRACTION = 0.2
"""RSS growth is measured from this share of the steady run onwards."""
GROWTH_MIN_TREND_S = 60.0
"""A shorter growth measurement (quick runs) reports no 10-minute trend: it would be noise."""
RATE_WINDOW_S = 10.0
ADAPTIVE_CEILING_PER_S = 200.0
"""The adaptive hook's rate_limit.per_second: four times the first hidden capacity."""
ADAPTIVE_CAPACITIES_PER_S = (50.0, 100.0)
ADAPTIVE_CONVERGE_S = 30.0
"""The target: within this many seconds of a capacity change, the rate is within
``ADAPTIVE_TOLERANCE`` of it."""
ADAPTIVE_TOLERANCE = 0.10
ADAPTIVE_WINDOW_S = 5.0
"""Converged: every window of this many seconds from then to the phase's end is within
the tolerance."""


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return round(value / reference, 3)


def _spawn(target: Any, *args: Any) -> tuple[BaseProcess, Connection]:
    """Start ``target(*args, pipe)`` in a fresh interpreter; return it and our pipe end.

    Daemonic, so a child left behind by a failed scenario dies with the bench."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=target, args=(*args, theirs), daemon=True)
    process.start()
    theirs.close()
    return process, ours


def _reap(process: BaseProcess) -> None:
    """Wait for a child we started to exit; terminate it after 10 s."""
    process.join(10)
    if process.is_alive():
        process.terminate()
        process.join(5)


async def _receive(pipe: Connection, timeout_s: float) -> Any:
    """The next message on ``pipe``, waited for without blocking the event loop."""
    deadline = time.monotonic() + timeout_s
    while not pipe.poll():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from a bench process within {timeout_s} s")
        await asyncio.sleep(0.05)
    return pipe.recv()


def _duplicates(arrivals: Arrivals, paths: list[str]) -> int:
    """Requests that repeated an event already delivered on the same path."""
    total = 0
    for path in paths:
        pairs = arrivals.by_path.get(path, [])
        total += len(pairs) - len({seq for _, seq in pairs})
    return total


# -- receiver and baseline ----------------------------------------------------------------


async def receiver_ceiling(bench: Bench) -> dict[str, Any]:
    """The receiver's own ceiling: a raw load generator, same connections as the daemon."""
    [request] = baseline_requests(bench.receiver, [HookSpec("ceiling")], 1)
    payload = raw_request(request, bench.receiver.port)
    duration_s = bench.sizes.ceiling_s
    bench.receiver.reset()
    process, pipe = _spawn(loadgen.run, bench.receiver.port, payload, bench.concurrency, duration_s)
    try:
        async with Sampler(bench.processes(loadgen=process.pid or 0)) as sampler:
            answers = await _receive(pipe, duration_s + 60)
    finally:
        _reap(process)
    rate = steady_rate(bench.receiver.dump().times())
    return {
        "requests_per_s": round(rate.per_s, 1),
        "connections": bench.concurrency,
        "answers": answers,
        "window": rate.as_dict(),
        "cores": sampler.utilisation(rate.start, rate.end),
    }


async def bare_client(bench: Bench, hooks: int) -> dict[str, Any]:
    """The baseline: bare aiohttp POSTing the daemon's requests, same concurrency, no Kafka."""
    specs = bench.hooks(hooks)
    events = max(1, BASELINE_DISTINCT_EVENTS // hooks)
    requests = baseline_requests(bench.receiver, specs, events)
    concurrency = sum(spec.max_concurrency for spec in specs)
    n = bench.sizes.baseline_requests
    bench.receiver.reset()
    process, pipe = _spawn(baseline.run, requests, n, concurrency)
    try:
        await _receive(pipe, 60)
        async with Sampler(bench.processes(baseline=process.pid or 0)) as sampler:
            pipe.send("go")
            failures = await _receive(pipe, 60 + n / 200)
    finally:
        _reap(process)
    arrivals = bench.receiver.dump()
    rate = steady_rate(arrivals.times())
    cpu_s = sampler.cpu_between("baseline", rate.start, rate.end)
    return {
        "hooks": hooks,
        "concurrency": concurrency,
        "requests_per_s": round(rate.per_s, 1),
        "cpu_s_per_1000": round(cpu_s / rate.count * 1000, 4) if rate.count else None,
        "failures": failures,
        "connections_opened": arrivals.connections,
        "window": rate.as_dict(),
        "cores": sampler.utilisation(rate.start, rate.end),
    }


# -- throughput and isolation ------------------------------------------------------------


async def throughput(bench: Bench, hooks: int) -> dict[str, Any]:
    """Deliveries/s through the daemon from the backlog, 1 hook or ``hooks``-fold fan-out."""
    specs = bench.hooks(hooks)
    paths = [spec.path for spec in specs]
    target = bench.sizes.backlog_deliveries
    async with running(bench, f"throughput-{hooks}", bench.backlog_topic, specs) as run:
        await wait_for_deliveries(bench, run, paths, target)
    arrivals = bench.receiver.dump()
    rate = steady_rate(arrivals.times(paths)[:target])
    base = bench.results.get(f"baseline_{hooks}", {})
    cpu_s = run.sampler.cpu_between("daemon", rate.start, rate.end)
    result = {
        "hooks": hooks,
        "concurrency_per_hook": specs[0].max_concurrency,
        "deliveries_per_s": round(rate.per_s, 1),
        "ratio_to_baseline": _ratio(rate.per_s, base.get("requests_per_s")),
        "cpu_s_per_1000": round(cpu_s / rate.count * 1000, 4) if rate.count else None,
        "baseline_cpu_s_per_1000": base.get("cpu_s_per_1000"),
        "window": rate.as_dict(),
        "cores": run.sampler.utilisation(rate.start, rate.end),
        **_run_facts(run, arrivals, specs),
    }
    if hooks > 1:
        per_hook = {
            s.id: rate_between(arrivals.times([s.path]), rate.start, rate.end) for s in specs
        }
        result["per_hook_per_s"] = {hook: round(r.per_s, 1) for hook, r in per_hook.items()}
        nine = rate_between(arrivals.times(paths[:9]), rate.start, rate.end)
        result["first_nine_per_s"] = round(nine.per_s, 1)
    return result


WORKERS_HOOKS = 10
WORKERS_DELIVERIES = 200_000
"""Deliveries the worker-process run reads, at any scale: its workers' group join and the
rebalance the second one starts take seconds, which a short run would mostly measure."""


async def throughput_workers(bench: Bench, workers: int = 2) -> dict[str, Any]:
    """Deliveries/s of ``workers`` worker processes at ``WORKERS_HOOKS``-fold fan-out (issue
    17), over the second half of the arrivals (the group settled), against the single
    process and Benthos of the same run."""
    specs = bench.hooks(WORKERS_HOOKS)
    paths = [spec.path for spec in specs]
    target = max(bench.sizes.backlog_deliveries, WORKERS_DELIVERIES)
    name = f"throughput-{WORKERS_HOOKS}-workers-{workers}"
    async with running(bench, name, bench.backlog_topic, specs, workers=workers) as run:
        await wait_for_deliveries(bench, run, paths, target)
    arrivals = bench.receiver.dump()
    rate = steady_rate(arrivals.times(paths)[:target], warm_up=0.5)
    cpu_s = run.sampler.cpu_between("daemon", rate.start, rate.end)
    single = bench.results.get(f"throughput_{WORKERS_HOOKS}", {}).get("deliveries_per_s")
    peer = bench.results.get(f"peer_benthos_stock_{WORKERS_HOOKS}", {}).get("deliveries_per_s")
    return {
        "hooks": WORKERS_HOOKS,
        "workers": workers,
        "deliveries_per_s": round(rate.per_s, 1),
        "ratio_to_one_process": _ratio(rate.per_s, single),
        "ratio_to_benthos": _ratio(rate.per_s, peer),
        "cpu_s_per_1000": round(cpu_s / rate.count * 1000, 4) if rate.count else None,
        "window": rate.as_dict(),
        "cores": run.sampler.utilisation(rate.start, rate.end),
        **_run_facts(run, arrivals, specs),
    }


def _run_facts(run: Run, arrivals: Arrivals, specs: list[HookSpec]) -> dict[str, Any]:
    """What every daemon run reports besides its figure."""
    ready_at = run.daemon.started_at + run.ready_s
    firsts = [pairs[0][0] for pairs in arrivals.by_path.values() if pairs]
    return {
        "ready_s": round(run.ready_s, 3),
        "first_delivery_after_ready_s": round(min(firsts) - ready_at, 3) if firsts else None,
        "signatures_valid": signatures_valid(arrivals, specs),
        "duplicates": _duplicates(arrivals, [spec.path for spec in specs]),
        "connections_opened": arrivals.connections,
        "exit_code": run.exit_code,
        "metrics": run.metrics,
    }


ORDERING_PAIRS = 2
"""Unordered / ordered run pairs; the figure is the median of their ratios."""


async def ordering(bench: Bench) -> dict[str, Any]:
    """One hook over the backlog (its 1,000 record keys), unordered then ``ordering: key``,
    same concurrency, ``ORDERING_PAIRS`` times: deliveries/s of each ordered run against
    the unordered run just before it, and the median of those ratios."""
    pairs = []
    for index in range(ORDERING_PAIRS):
        runs = {}
        for mode in ("none", "key"):
            spec = HookSpec("h0", bench.per_hook_concurrency(1), ordering=mode)
            target = bench.sizes.backlog_deliveries
            name = f"ordering-{mode}-{index}"
            async with running(bench, name, bench.backlog_topic, [spec]) as run:
                await wait_for_deliveries(bench, run, [spec.path], target)
            arrivals = bench.receiver.dump()
            rate = steady_rate(arrivals.times([spec.path])[:target])
            cpu_s = run.sampler.cpu_between("daemon", rate.start, rate.end)
            runs[mode] = {
                "deliveries_per_s": round(rate.per_s, 1),
                "cpu_s_per_1000": round(cpu_s / rate.count * 1000, 4) if rate.count else None,
                "duplicates": _duplicates(arrivals, [spec.path]),
            }
        ratio = _ratio(runs["key"]["deliveries_per_s"], runs["none"]["deliveries_per_s"])
        pairs.append({"unordered": runs["none"], "ordered": runs["key"], "ratio": ratio})
    ratios = [p["ratio"] for p in pairs if p["ratio"] is not None]
    return {
        "keys": BENCH_KEYS,
        "concurrency": bench.per_hook_concurrency(1),
        "pairs": pairs,
        "median_ratio": round(statistics.median(ratios), 3) if ratios else None,
    }


ISOLATION_PAIRS = 2
"""All-healthy / one-dead run pairs; the figure is the median of their ratios."""


async def isolation(bench: Bench) -> dict[str, Any]:
    """10 hooks from the backlog, all healthy then h9 never answering, ``ISOLATION_PAIRS``
    times: the other nine's deliveries/s in each dead run against the healthy run just
    before it (same duration, same backlog, minutes apart rather than a scenario apart, so
    the machine's drift cancels out), and the median of those ratios."""
    pairs = []
    for index in range(ISOLATION_PAIRS):
        healthy = await _nine_rate(bench, f"isolation-healthy-{index}", bench.hooks(10))
        dead = await _nine_rate(bench, f"isolation-dead-{index}", bench.hooks(10, hang=(9,)))
        dead["ratio"] = _ratio(dead["nine_per_s"], healthy["nine_per_s"])
        pairs.append({"all_healthy": healthy, "one_dead": dead})
    ratios = [pair["one_dead"]["ratio"] for pair in pairs]
    return {
        "nine_per_s": pairs[-1]["one_dead"]["nine_per_s"],
        "ratio": round(statistics.median(ratios), 3),
        "ratios": ratios,
        "pairs": pairs,
    }


async def _nine_rate(bench: Bench, name: str, specs: list[HookSpec]) -> dict[str, Any]:
    """The first nine hooks' steady deliveries/s over ``isolation_s`` from the backlog."""
    nine = [spec.path for spec in specs[:9]]
    async with running(bench, name, bench.backlog_topic, specs) as run:
        await keep_running(run, bench.sizes.isolation_s)
    arrivals = bench.receiver.dump()
    rate = steady_rate([t for t in arrivals.times(nine) if t <= run.stopped_at])
    return {
        "nine_per_s": round(rate.per_s, 1),
        "tenth_requests": arrivals.count(specs[9].path),
        "window": rate.as_dict(),
        "cores": run.sampler.utilisation(rate.start, rate.end),
        **_run_facts(run, arrivals, specs),
    }


# -- steady offered load: latency, isolation latency, RSS growth ------------------------


async def _steady(
    bench: Bench, name: str, specs: list[HookSpec], events_per_s: float, duration_s: float
) -> tuple[Run, dict[str, Any]]:
    """Offer ``events_per_s`` to a fresh topic for ``duration_s``; latency of healthy hooks."""
    topic = await bench.fresh_topic(name)
    healthy = [spec.path for spec in specs if not spec.hang]
    producer = PacedProducer(bench.broker.bootstrap, topic, events_per_s, duration_s)
    async with running(bench, name, topic, specs) as run:
        started = time.time()
        await offer_load(bench, run, producer, healthy)
    arrivals = bench.receiver.dump()
    samples = latencies(arrivals, healthy, producer.sent_at, started + LATENCY_WARM_UP_S)
    expected = len(producer.sent_at) * len(healthy)
    delivered = sum(arrivals.count(path) for path in healthy)
    end = min(run.stopped_at, started + duration_s)
    return run, {
        "offered_events_per_s": round(events_per_s, 1),
        "duration_s": round(duration_s, 1),
        "latency": latency_summary([latency for _, latency in samples]),
        "p99_ms_by_10s": p99_by_slice(samples, 10.0),
        "delivered": delivered,
        "expected": expected,
        "cores": run.sampler.utilisation(started + LATENCY_WARM_UP_S, end),
        **_run_facts(run, arrivals, specs),
    }


def _max_events_per_s(bench: Bench, source: str, hooks: int) -> tuple[float, str]:
    """Events/s the daemon sustained in throughput run ``source`` (deliveries / hooks)."""
    measured = bench.results.get(source, {}).get("deliveries_per_s")
    if measured:
        return measured / hooks, source
    return FALLBACK_MAX_PER_S / hooks, f"fallback {FALLBACK_MAX_PER_S:g}/s ({source} missing)"


def _rss_growth(series: Series, start: float, end: float) -> dict[str, Any]:
    """RSS change from ``GROWTH_WARM_UP_FRACTION`` into the run to its end, and the linear
    trend over that span extrapolated to a 10-minute run (MiB, %)."""
    warm = start + (end - start) * GROWTH_WARM_UP_FRACTION
    points = [(t, r) for t, r in zip(series.times, series.rss, strict=True) if warm <= t <= end]
    if len(points) < 2:
        return {"error": "too few RSS samples"}
    first, last = points[0][1], points[-1][1]
    span_s = points[-1][0] - points[0][0]
    slope_per_s = linear_slope([t for t, _ in points], [r for _, r in points])
    trend = span_s >= GROWTH_MIN_TREND_S
    return {
        "rss_after_warm_up_mb": round(first / MIB, 1),
        "rss_end_mb": round(last / MIB, 1),
        "measured_over_s": round(span_s, 1),
        "growth_pct": round((last - first) / first * 100, 2),
        "trend_mb_per_min": round(slope_per_s * 60 / MIB, 3),
        "trend_10min_pct": round(slope_per_s * 600 / first * 100, 2) if trend else None,
    }


async def latency_and_growth(bench: Bench) -> dict[str, Any]:
    """1 hook at 50 % of the measured maximum: produce → arrival latency, and RSS growth."""
    max_per_s, source = _max_events_per_s(bench, "throughput_1", 1)
    duration_s = bench.sizes.steady_s
    run, result = await _steady(bench, "latency", bench.hooks(1), max_per_s * 0.5, duration_s)
    start = run.daemon.started_at + run.ready_s
    result["load_reference"] = source
    result["rss_growth"] = _rss_growth(run.sampler.series["daemon"], start, run.stopped_at)
    return result


async def isolation_latency(bench: Bench) -> dict[str, Any]:
    """10 hooks at 50 % of the 10-hook maximum, with and without h9 never answering: the
    healthy hooks' latency."""
    max_per_s, source = _max_events_per_s(bench, "throughput_10", 10)
    duration_s = bench.sizes.isolation_steady_s
    _, healthy = await _steady(
        bench, "isolation-latency-healthy", bench.hooks(10), max_per_s * 0.5, duration_s
    )
    specs = bench.hooks(10, hang=(9,))
    _, dead = await _steady(bench, "isolation-latency-dead", specs, max_per_s * 0.5, duration_s)
    return {
        "load_reference": source,
        "all_healthy": healthy,
        "one_dead": dead,
        "p99_ratio": _ratio(dead["latency"]["p99_ms"], healthy["latency"]["p99_ms"]),
    }


# -- rate limits, memory, start-up -------------------------------------------------------


def _limit_accuracy(times: list[float], limit: float, end: float) -> dict[str, Any]:
    """10-second window rates (the first holds the initial burst) and the busiest second."""
    burst = max(1, math.ceil(limit))
    windows = window_counts(times, RATE_WINDOW_S, times[0], end) if times else []
    rates = [count / RATE_WINDOW_S for count in windows]
    deviations = [round((rate / limit - 1) * 100, 2) for rate in rates]
    after_burst = deviations[1:]
    return {
        "limit_per_s": limit,
        "burst": burst,
        "window_rates_per_s": rates,
        "window_deviation_pct": deviations,
        "worst_deviation_after_first_pct": max(after_burst, key=abs) if after_burst else None,
        "max_in_any_1s": max_in_sliding_window(times, 1.0),
        "bound_1s": limit + burst,
        "max_in_any_1s_after_first_window": max_in_sliding_window(
            [t for t in times if t >= times[0] + RATE_WINDOW_S] if times else [], 1.0
        ),
    }


async def rate_limit(bench: Bench) -> dict[str, Any]:
    """Hooks limited to 50/s and 500/s with a backlog: achieved rate per 10-second window."""
    specs = [HookSpec("rl50", per_second=50.0), HookSpec("rl500", per_second=500.0)]
    async with running(bench, "rate-limit", bench.backlog_topic, specs) as run:
        await keep_running(run, bench.sizes.rate_limit_s)
    arrivals = bench.receiver.dump()
    result: dict[str, Any] = {}
    for spec in specs:
        assert spec.per_second is not None
        times = [t for t in arrivals.times([spec.path]) if t <= run.stopped_at]
        result[spec.id] = _limit_accuracy(times, spec.per_second, run.stopped_at)
    return {**result, **_run_facts(run, arrivals, specs)}


async def adaptive(bench: Bench) -> dict[str, Any]:
    """A hook with an adaptive rate limit (ceiling 200/s) reading the backlog, against an
    endpoint whose hidden capacity is 50/s for ``adaptive_phase_s``, then 100/s for as
    long: how soon the rate follows each capacity, and how many requests are answered 429
    (without Retry-After; the 429s go through the retry topics like any throttled
    delivery, and come back)."""
    spec = HookSpec("adaptive", per_second=ADAPTIVE_CEILING_PER_S, adaptive={})
    phase_s = bench.sizes.adaptive_phase_s
    bench.receiver.set_capacity(ADAPTIVE_CAPACITIES_PER_S[0])
    try:
        async with running(bench, "adaptive", bench.backlog_topic, [spec]) as run:
            await keep_running(run, phase_s)
            raised_at = time.time()
            bench.receiver.set_capacity(ADAPTIVE_CAPACITIES_PER_S[1])
            await keep_running(run, phase_s)
    finally:
        bench.receiver.set_capacity(0)
    arrivals = bench.receiver.dump()
    accepted = [t for t in arrivals.times([spec.path]) if t <= run.stopped_at]
    throttled = [t for t in arrivals.times([THROTTLED_PREFIX + spec.path]) if t <= run.stopped_at]
    first = min(accepted[:1] + throttled[:1], default=raised_at)
    bounds = ((first, raised_at), (raised_at, run.stopped_at))
    phases = {
        f"capacity_{capacity:g}": _adaptive_phase(accepted, throttled, start, end, capacity)
        for (start, end), capacity in zip(bounds, ADAPTIVE_CAPACITIES_PER_S, strict=True)
    }
    return {"ceiling_per_s": ADAPTIVE_CEILING_PER_S, **phases, **_run_facts(run, arrivals, [spec])}


def _adaptive_phase(
    accepted: list[float], throttled: list[float], start: float, end: float, capacity: float
) -> dict[str, Any]:
    """One capacity's figures: requests/s (2xx and 429) per second, when the rate came
    within the tolerance for good, and the rate and 429 share after the time allowed."""
    sent = sorted(accepted + throttled)
    per_second = window_counts(sent, 1.0, start, end)
    windows = [sum(per_second[i : i + int(ADAPTIVE_WINDOW_S)]) / ADAPTIVE_WINDOW_S
               for i in range(len(per_second) - int(ADAPTIVE_WINDOW_S) + 1)]  # fmt: skip
    converged_s = None
    for index in range(len(windows)):
        if all(abs(rate / capacity - 1) <= ADAPTIVE_TOLERANCE for rate in windows[index:]):
            converged_s = float(index + ADAPTIVE_WINDOW_S)  # the end of the first good window
            break
    after = start + ADAPTIVE_CONVERGE_S

    def count(times: list[float], since: float) -> int:
        return sum(1 for t in times if since <= t < end)

    measured_s = end - after
    sent_after, throttled_after = count(sent, after), count(throttled, after)
    return {
        "capacity_per_s": capacity,
        "converged_after_s": converged_s,
        "sent_per_s_after_30s": round(sent_after / measured_s, 1) if measured_s > 0 else None,
        "accepted_per_s_after_30s": (
            round(count(accepted, after) / measured_s, 1) if measured_s > 0 else None
        ),
        "share_429_after_30s": round(throttled_after / sent_after, 4) if sent_after else None,
        "share_429_whole_phase": (
            round(count(throttled, start) / count(sent, start), 4) if count(sent, start) else None
        ),
        "requests_per_s_each_second": per_second,
    }


async def memory(bench: Bench) -> dict[str, Any]:
    """RSS against the large backlog with one healthy hook and one that never answers."""
    specs = [HookSpec("h0", bench.concurrency), HookSpec("dead", hang=True)]
    duration_s = bench.sizes.memory_s
    async with running(bench, "memory", bench.backlog_topic, specs) as run:
        await keep_running(run, duration_s)
    series = run.sampler.series["daemon"]
    half = run.stopped_at - duration_s / 2
    second_half = [rss for t, rss in zip(series.times, series.rss, strict=True) if t >= half]
    arrivals = bench.receiver.dump()
    highest = max(range(len(series.rss)), key=series.rss.__getitem__, default=None)
    return {
        "backlog_events": bench.sizes.memory_backlog,
        "rss_timeline_mb": _timeline(series, run.daemon.started_at),
        # Where the peak falls, as far as the samples (every 0.25 s) saw it.
        "sampled_peak": None
        if highest is None
        else {
            "rss_mb": round(series.rss[highest] / MIB, 1),
            "after_start_s": round(series.times[highest] - run.daemon.started_at, 2),
        },
        "duration_s": duration_s,
        "peak_rss_mb": round(run.peak_rss / MIB, 1),
        "steady_rss_mb": round(statistics.median(second_half) / MIB, 1) if second_half else None,
        "delivered_healthy": arrivals.count(specs[0].path),
        "dead_endpoint_requests": arrivals.count(specs[1].path),
        **_run_facts(run, arrivals, specs),
    }


def _timeline(series: Series, start: float, step_s: float = 5.0) -> list[list[float]]:
    """``[[seconds since start, RSS MiB], ...]`` about every ``step_s`` seconds."""
    points: list[list[float]] = []
    for t, rss in zip(series.times, series.rss, strict=True):
        if not points or t - start - points[-1][0] >= step_s:
            points.append([round(t - start, 1), round(rss / MIB, 1)])
    return points


async def startup(bench: Bench) -> dict[str, Any]:
    """Process start → ``/readyz`` 200 with the broker up; the first start also creates the
    retry and dead-letter topics, later starts find them."""
    topic = await bench.fresh_topic("startup")
    config = bench.workdir / "startup.json"
    seconds = []
    for _ in range(bench.sizes.startup_repeats):
        port = write_config(
            config, bootstrap=bench.broker.bootstrap, topic=topic, hooks=bench.hooks(1),
            receiver_url=bench.receiver.url(""), log_level=bench.log_level,
        )  # fmt: skip
        daemon = DaemonProcess(config, port, bench.workdir / "startup.log")
        daemon.start()
        try:
            seconds.append(await daemon.wait_ready(poll_s=0.005))
        finally:
            await daemon.stop()
    later = seconds[1:] or seconds
    return {
        "first_s": round(seconds[0], 3),
        "median_s": round(statistics.median(later), 3),
        "max_s": round(max(later), 3),
        "all_s": [round(s, 3) for s in seconds],
    }


# -- the ingest endpoint (issue 14) ---------------------------------------------------------


async def ingest_endpoint(bench: Bench) -> dict[str, Any]:
    """``hookrelay ingest`` vs a bare aiohttp server answering 204 (``tests/bench/ingest``):
    requests/s with every answer after the broker's ack, then the latency each adds at half
    the ingest process's rate."""
    duration_s = bench.sizes.ingest_s
    connections = bench.concurrency
    bare_port = free_port()
    server, server_pipe = _spawn(ingest.bare_server, bare_port)
    try:
        await _receive(server_pipe, 30)
        bare_url = f"http://127.0.0.1:{bare_port}{ingest.PATH}"
        bare = await _ingest_load(bare_url, connections, duration_s, None)
        topic = await bench.fresh_topic("ingest")
        config, port, metrics_port = _ingest_config(bench, topic)
        process = DaemonProcess(config, metrics_port, bench.workdir / "ingest.log", "ingest")
        process.start()
        try:
            await process.wait_ready()
            url = f"http://127.0.0.1:{port}{ingest.PATH}"
            # Unmeasured, as long as the measured run: the broker's JIT warms up on the produce
            # path (after only 3 s of warm-up the rate measured 15 % lower, same machine).
            await _ingest_load(url, connections, duration_s, None)
            async with Sampler(bench.processes(ingest=process.pid)) as sampler:
                window = time.time()
                loaded = await _ingest_load(url, connections, duration_s, None)
                window_end = time.time()
            half = loaded["requests_per_s"] / 2 or FALLBACK_MAX_PER_S / 2
            paced = await _ingest_load(url, connections, duration_s, half)
        finally:
            await process.stop()
        paced_bare = await _ingest_load(bare_url, connections, duration_s, half)
    finally:
        server_pipe.send("stop")
        _reap(server)
    added = {
        key: round(paced["latency"][key] - paced_bare["latency"][key], 2)
        for key in ("p50_ms", "p95_ms", "p99_ms")
    }
    return {
        "connections": connections,
        "bare": bare,
        "ingest": loaded,
        "ratio_to_bare": _ratio(loaded["requests_per_s"], bare["requests_per_s"]),
        "offered_per_s": round(half, 1),
        "paced_ingest": paced,
        "paced_bare": paced_bare,
        "added_latency_ms": added,
        "cores": sampler.utilisation(window, window_end),
    }


async def _ingest_load(
    url: str, connections: int, duration_s: float, rate: float | None
) -> dict[str, Any]:
    client, pipe = _spawn(ingest.client, url, connections, duration_s, rate)
    try:
        figures: dict[str, Any] = await _receive(pipe, duration_s + 60)
    finally:
        _reap(client)
    if figures.get("other_statuses"):
        raise RuntimeError(f"answers other than 204 from {url}: {figures['other_statuses']}")
    return figures


def _ingest_config(bench: Bench, topic: str) -> tuple[Path, int, int]:
    """A configuration for ``hookrelay ingest``: (file, listen port, metrics port)."""
    port, metrics_port = free_port(), free_port()
    config = {
        "kafka": {"bootstrap_servers": [bench.broker.bootstrap], "topics": [topic]},
        "logging": {"level": bench.log_level, "format": "json"},
        "ingest": {
            "listen": f"127.0.0.1:{port}", "metrics_listen": f"127.0.0.1:{metrics_port}",
            "sources": [{"id": "bench", "path": ingest.PATH, "signing_key": ingest.SIGNING_KEY}],
        },
    }  # fmt: skip
    path = bench.workdir / "ingest.json"
    path.write_bytes(orjson.dumps(config))
    return path, port, metrics_port
