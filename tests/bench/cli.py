"""``python -m tests.bench``: run the suite, print the table, write ``bench-results.json``.

Everything runs on this machine: a Kafka broker started here (free port, temporary data
dir), the receiver process(es), the baseline client, and the daemon as a subprocess. A
scenario that fails is reported with its error and the others still run; the exit status
is 1 when any failed. Missed targets do not fail the run: the table says which.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tests.bench import peer, report, scenarios
from tests.bench.harness import Bench
from tests.bench.kafka import Broker, create_topics, produce_backlog
from tests.bench.loops import run_loop
from tests.bench.machine import ROOT, load_average, machine_info
from tests.bench.profiling import profile_isolation, profile_throughput
from tests.bench.receiver import Receiver
from tests.bench.sizes import QUICK_SCALE, Sizes

GROUPS = (
    "ceiling", "baseline", "throughput", "peer", "workers", "latency", "isolation", "rate_limit",
    "adaptive", "ordering", "memory", "startup", "ingest", "profile",
)  # fmt: skip
Step = tuple[str, str, Callable[[], Awaitable[dict[str, Any]]]]


def say(message: str) -> None:
    """One progress line on stderr."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"scale {QUICK_SCALE} (~5 min)")
    parser.add_argument(
        "--scale", type=float, default=float(os.environ.get("BENCH_SCALE", "1.0")),
        help="multiply sizes and durations (default $BENCH_SCALE or 1.0)",
    )  # fmt: skip
    parser.add_argument(
        "--only", default=",".join(g for g in GROUPS if g != "profile"),
        help=f"comma-separated scenario groups, from: {', '.join(GROUPS)}",
    )  # fmt: skip
    parser.add_argument(
        "--size", action="append", default=[], metavar="NAME=VALUE",
        help="override one size after scaling, e.g. steady_s=600 (see tests/bench/sizes.py)",
    )  # fmt: skip
    parser.add_argument(
        "--concurrency", type=int, default=64,
        help="requests in flight in total: 1 hook gets all, 10 hooks a tenth each (default 64)",
    )  # fmt: skip
    parser.add_argument("--partitions", type=int, default=3, help="event topic partitions")
    parser.add_argument("--receiver-processes", type=int, default=1, help="default 1")
    parser.add_argument("--log-level", default="info", help="the daemon's logging.level")
    parser.add_argument("--profile", action="store_true", help="also run the py-spy profile")
    parser.add_argument(
        "--profile-out", type=Path, default=ROOT / ".cache" / "bench" / "profile.folded"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    args.groups = {g.strip() for g in args.only.split(",") if g.strip()}
    if args.profile:
        args.groups.add("profile")
    unknown = args.groups - set(GROUPS)
    if unknown:
        parser.error(f"unknown scenario group(s): {', '.join(sorted(unknown))}")
    return args


def steps(bench: Bench, args: argparse.Namespace, build: peer.PeerBuild | None) -> list[Step]:
    """Every scenario in running order: (group, result key, coroutine factory); the peer's
    only with a ``build`` (after hookrelay's throughput runs, for the ratios)."""
    s = scenarios
    peers: list[Step] = [
        (
            "peer",
            f"peer_benthos_{variant}_{hooks}",
            lambda hooks=hooks, keep=keep: peer.throughput(bench, build, hooks, keep),
        )
        for variant, keep in peer.VARIANTS.items()
        for hooks in (1, 10)
        if build is not None
    ]
    return [
        ("ceiling", "receiver_ceiling", lambda: s.receiver_ceiling(bench)),
        ("baseline", "baseline_1", lambda: s.bare_client(bench, 1)),
        ("baseline", "baseline_10", lambda: s.bare_client(bench, 10)),
        ("throughput", "throughput_1", lambda: s.throughput(bench, 1)),
        ("throughput", "throughput_10", lambda: s.throughput(bench, 10)),
        *peers,
        ("workers", "throughput_workers", lambda: s.throughput_workers(bench)),
        ("latency", "latency", lambda: s.latency_and_growth(bench)),
        ("isolation", "isolation", lambda: s.isolation(bench)),
        ("isolation", "isolation_latency", lambda: s.isolation_latency(bench)),
        ("rate_limit", "rate_limit", lambda: s.rate_limit(bench)),
        ("adaptive", "adaptive", lambda: s.adaptive(bench)),
        ("ordering", "ordering", lambda: s.ordering(bench)),
        ("memory", "memory", lambda: s.memory(bench)),
        ("startup", "startup", lambda: s.startup(bench)),
        ("ingest", "ingest", lambda: s.ingest_endpoint(bench)),
        ("profile", "profile", lambda: profile_throughput(bench, args.profile_out)),
        (
            "profile",
            "profile_10_hooks",
            lambda: profile_throughput(
                bench, args.profile_out.with_name(args.profile_out.stem + "-10.folded"), 10
            ),
        ),
        (
            "profile",
            "profile_isolation",
            lambda: profile_isolation(
                bench, args.profile_out.with_name(args.profile_out.stem + "-isolation.txt")
            ),
        ),
    ]


async def _step(key: str, work: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run one scenario; an exception becomes ``{"error": ...}`` so the others still run."""
    started = time.monotonic()
    say(f"{key} ...")
    try:
        result = await work()
    except Exception as e:
        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"[:2000]}
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    say(f"{key} done in {result['elapsed_s']} s" + (" (FAILED)" if "error" in result else ""))
    return result


def backlog_events(sizes: Sizes, groups: set[str]) -> int:
    """Events the shared backlog topic needs for the selected scenarios."""
    needed = sizes.backlog_deliveries * 2  # throughput, profile, and what parking runs read
    if "workers" in groups:
        needed = max(needed, scenarios.WORKERS_DELIVERIES // scenarios.WORKERS_HOOKS)
    if "adaptive" in groups:  # up to the ceiling at first, then the two capacities
        needed = max(needed, int(sizes.adaptive_phase_s * 3 * scenarios.ADAPTIVE_CEILING_PER_S))
    return max(needed, sizes.memory_backlog) if "memory" in groups else needed


async def prepare_peer(results: dict[str, dict[str, Any]]) -> peer.PeerBuild | None:
    """Build (or find) the Benthos peer and check its mappings against hookrelay's; record
    how in ``results["peer_build"]``. None, said in one line, when it cannot run here."""
    try:
        build = await asyncio.to_thread(peer.build_benthos)
        mappings = await asyncio.to_thread(peer.verify_mappings, build)
    except peer.PeerUnavailableError as e:
        say(f"Benthos peer skipped, the rest runs: {e}")
        results["peer_build"] = {"peer": "benthos", "version": peer.BENTHOS_VERSION,
                                 "skipped": str(e)}  # fmt: skip
        return None
    results["peer_build"] = {**build.as_dict(), "mappings_match_hookrelay": mappings}
    if not mappings["match"]:
        reason = f"its mappings differ from hookrelay's: {mappings}"
        results["peer_build"]["skipped"] = reason
        say(f"Benthos peer skipped, the rest runs: {reason}")
        return None
    how = "cached" if build.built_s is None else f"built in {build.built_s:g} s"
    say(f"Benthos {build.version} peer: {build.binary} ({how})")
    return build


async def run_bench(args: argparse.Namespace, sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Build the peer (before anything is measured), start the broker and the receiver,
    fill the backlog, run the selected scenarios."""
    broker = Broker(workdir / "kafka")
    receiver = Receiver(args.receiver_processes)
    results: dict[str, dict[str, Any]] = {}
    build = await prepare_peer(results) if "peer" in args.groups else None
    try:
        say("starting the Kafka broker")
        await asyncio.to_thread(broker.start)
        receiver.start()
        topic = "bench-backlog"
        await create_topics(broker.bootstrap, [topic], args.partitions)
        count = backlog_events(sizes, args.groups)
        say(f"producing a backlog of {count:,} events")
        produced_s = await produce_backlog(broker.bootstrap, topic, count, args.partitions)
        results["backlog"] = {"events": count, "produce_s": round(produced_s, 1)}
        bench = Bench(
            sizes, broker, receiver, workdir, topic, args.concurrency, args.partitions,
            args.log_level, results,
        )  # fmt: skip
        for group, key, work in steps(bench, args, build):
            if group in args.groups:
                results[key] = await _step(key, work)
    finally:
        receiver.stop()
        await asyncio.to_thread(broker.stop)
    return results


def _document(args: argparse.Namespace, sizes: Sizes, scale: float) -> dict[str, Any]:
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": machine_info(),
        "scale": scale,
        "sizes": sizes.as_dict(),
        "settings": {
            "concurrency": args.concurrency,
            "partitions": args.partitions,
            "receiver_processes": args.receiver_processes,
            "daemon_log_level": args.log_level,
        },
    }


def _peer_text(results: dict[str, dict[str, Any]]) -> str:
    build = results.get("peer_build", {})
    if "skipped" in build:
        return f", Benthos peer skipped ({build['skipped']})"
    return f", Benthos {build['version']} ({build['go']})" if build else ""


def _print_summary(document: dict[str, Any]) -> None:
    machine = document["machine"]
    packages = machine["packages"]
    print(
        f"\nhookrelay bench, scale {document['scale']:g}: {machine['cores']} cores "
        f"({machine['cpu_model']}), {machine['python']}, uvloop {packages['uvloop']}, "
        f"aiohttp {packages['aiohttp']}, aiokafka {packages['aiokafka']}, "
        f"Kafka {machine['kafka']}{_peer_text(document['results'])}; "
        f"load average {machine['load_average_at_start']} at start, "
        f"{document['load_average_at_end']} at end\n"
    )
    print(report.render(report.rows(document["results"])))
    print("\ncores used in each measurement window (1.00 = one core):")
    print("\n".join(report.cores_notes(document["results"])))
    failed = [key for key, result in document["results"].items() if "error" in result]
    for key in failed:
        print(f"\n{key} FAILED: {document['results'][key]['error']}")


def main(argv: list[str] | None = None) -> int:
    """Run the bench; return 0 when every selected scenario produced its figures."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the broker and the receiver are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    scale = QUICK_SCALE if args.quick else args.scale
    sizes = Sizes().scaled(scale).override(args.size)
    document = _document(args, sizes, scale)
    workdir = Path(tempfile.mkdtemp(prefix="hookrelay-bench-"))
    started = time.monotonic()
    try:
        document["results"] = run_loop(run_bench(args, sizes, workdir))
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    document["duration_s"] = round(time.monotonic() - started, 1)
    document["load_average_at_end"] = load_average()
    document["table"] = [asdict(row) for row in report.rows(document["results"])]
    args.out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    _print_summary(document)
    print(f"\nwrote {args.out} ({document['duration_s']:.0f} s)")
    return 1 if any("error" in result for result in document["results"].values()) else 0
