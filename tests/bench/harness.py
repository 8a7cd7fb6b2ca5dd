"""What every scenario shares: the bench context, a running daemon, waiting, requests.

``Bench`` holds the broker, the receiver, the sizes and the results so far (later scenarios
derive their offered load from earlier maxima). ``running()`` starts a daemon on a generated
configuration, waits for ``/readyz``, samples CPU and RSS of the daemon, the receiver and the
broker while the scenario runs, and stops the daemon afterwards.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hookrelay import __version__
from hookrelay.events.signing import delivery_id
from tests.bench.baseline import Request
from tests.bench.daemon import DaemonProcess, HookSpec, bench_workers, write_config
from tests.bench.events import event_value, parse_seq, signature, signing_key, webhook_body
from tests.bench.kafka import Broker, PacedProducer, create_topics
from tests.bench.procstat import Sampler, peak_rss_bytes
from tests.bench.receiver import Arrivals, Receiver
from tests.bench.sizes import Sizes

STALL_S = 30.0
"""A run fails when no delivery arrived for this many seconds."""
DRAIN_WAIT_S = 15.0
"""After a paced producer stops: seconds to wait for the last deliveries."""


@dataclass
class Bench:
    """One benchmark run's shared state."""

    sizes: Sizes
    broker: Broker
    receiver: Receiver
    workdir: Path
    backlog_topic: str
    concurrency: int
    partitions: int
    log_level: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    _topics: int = 0

    def per_hook_concurrency(self, hooks: int) -> int:
        """``max_concurrency`` of each of ``hooks`` hooks: the total split evenly, at least 1."""
        return max(1, -(-self.concurrency // hooks))

    def hooks(self, count: int, *, hang: tuple[int, ...] = ()) -> list[HookSpec]:
        """``count`` hooks h0, h1, ... sharing the concurrency; numbers in ``hang`` never answer."""
        each = self.per_hook_concurrency(count)
        return [HookSpec(f"h{i}", each, hang=i in hang) for i in range(count)]

    def processes(self, **more: int) -> dict[str, int]:
        """Name → pid of the receiver process(es), the broker, this bench process (it runs
        the paced producer), and ``more``."""
        pids = {f"receiver{i}": pid for i, pid in enumerate(self.receiver.pids)}
        if len(pids) == 1:
            pids = {"receiver": self.receiver.pids[0]}
        return {**pids, "broker": self.broker.pid, "bench": os.getpid(), **more}

    async def fresh_topic(self, name: str) -> str:
        """Create an empty event topic named after ``name``; return its name."""
        self._topics += 1
        topic = f"bench-{name}-{self._topics}"
        await create_topics(self.broker.bootstrap, [topic], self.partitions)
        return topic


@dataclass
class Run:
    """A daemon run: the process, its sampler, readiness time, end state and counters."""

    daemon: DaemonProcess
    sampler: Sampler
    ready_s: float
    stopped_at: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    exit_code: int | None = None
    peak_rss: int = 0


@asynccontextmanager
async def running(
    bench: Bench,
    name: str,
    topic: str,
    hooks: list[HookSpec],
    delivery: dict[str, Any] | None = None,
    *,
    workers: int | None = None,
) -> AsyncIterator[Run]:
    """Run the daemon on ``topic`` with ``hooks`` for the duration of the block (with
    ``workers`` worker processes when given, else ``$BENCH_WORKERS``)."""
    config = bench.workdir / f"{name}.json"
    port = write_config(
        config, bootstrap=bench.broker.bootstrap, topic=topic, hooks=hooks,
        receiver_url=bench.receiver.url(""), log_level=bench.log_level, delivery=delivery,
        workers=workers,
    )  # fmt: skip
    daemon = DaemonProcess(config, port, bench.workdir / f"{name}.log")
    # Only a supervisor's tree is walked: reading every /proc entry each sample takes
    # milliseconds of this process, which also runs the paced producer (latency).
    trees = ("daemon",) if workers or bench_workers() else ()
    async with sampled(bench, daemon, "daemon", trees) as run:
        yield run


@asynccontextmanager
async def sampled(
    bench: Bench, process: Any, series: str, trees: tuple[str, ...] = ()
) -> AsyncIterator[Run]:
    """Start ``process`` (the daemon, or a peer: ``start``, ``wait_ready``, ``metrics``,
    ``stop``, ``pid``), sample it as ``series`` from its start (with worker processes,
    workers that own partitions deliver before the last one is ready), and yield its
    ``Run``; stop it at the end and record how it ended."""
    bench.receiver.reset()
    run: Run | None = None
    process.start()
    try:
        async with Sampler(bench.processes(**{series: process.pid}), trees=trees) as sampler:
            ready_s = await process.wait_ready()
            run = Run(process, sampler, ready_s)
            yield run
            run.stopped_at = time.time()
            run.metrics = await process.metrics()
            run.peak_rss = peak_rss_bytes(process.pid)
    finally:
        exit_code = await process.stop()
        if run is not None:
            run.exit_code = exit_code


async def wait_for_deliveries(bench: Bench, run: Run, paths: list[str], target: int) -> None:
    """Return once ``target`` requests arrived on ``paths``; raise if the daemon stalls."""
    last, changed = -1, time.monotonic()
    while True:
        counts = bench.receiver.counts()
        done = sum(counts.get(path, 0) for path in paths)
        if done >= target:
            return
        if done != last:
            last, changed = done, time.monotonic()
        elif time.monotonic() - changed > STALL_S:
            raise RuntimeError(f"stalled at {done}/{target} deliveries:\n{run.daemon.log_tail()}")
        run.daemon.check_alive()
        await asyncio.sleep(0.2)


async def keep_running(run: Run, duration_s: float) -> None:
    """Let the daemon run ``duration_s`` seconds, failing early if it exits."""
    deadline = time.monotonic() + duration_s
    while (left := deadline - time.monotonic()) > 0:
        run.daemon.check_alive()
        await asyncio.sleep(min(0.5, left))


async def offer_load(bench: Bench, run: Run, producer: PacedProducer, paths: list[str]) -> None:
    """Run ``producer`` to the end, then wait (bounded) until its events arrived on ``paths``."""
    task = asyncio.create_task(producer.run(), name="bench-paced-producer")
    while not task.done():
        run.daemon.check_alive()
        await asyncio.wait({task}, timeout=0.5)
    await task
    expected = len(producer.sent_at) * len(paths)
    deadline = time.monotonic() + DRAIN_WAIT_S
    while time.monotonic() < deadline:
        counts = bench.receiver.counts()
        if sum(counts.get(path, 0) for path in paths) >= expected:
            return
        await asyncio.sleep(0.2)


def latencies(
    arrivals: Arrivals, paths: list[str], sent_at: Any, after: float
) -> list[tuple[float, float]]:
    """``(sent at, seconds from produce to arrival)`` for events sent at or after ``after``
    (wall-clock seconds), sorted by send time."""
    result = []
    for path in paths:
        for arrived, seq in arrivals.by_path.get(path, []):
            if 0 <= seq < len(sent_at) and sent_at[seq] >= after:
                result.append((sent_at[seq], arrived - sent_at[seq]))
    result.sort()
    return result


def baseline_requests(receiver: Receiver, hooks: list[HookSpec], events: int) -> list[Request]:
    """The daemon's requests for events 0..events-1 to ``hooks``, built and signed ahead."""
    requests = []
    for seq in range(events):
        value = event_value(seq)
        for hook in hooks:
            body = webhook_body(value, hook.id)
            headers = (
                ("content-type", "application/json"),
                ("user-agent", f"hookrelay/{__version__}"),
                ("logto-signature-sha-256", signature(signing_key(hook.id), body)),
                ("webhook-id", delivery_id("bench", 0, seq, hook.id)),
            )
            requests.append(Request(receiver.url(hook.path), body, headers))
    return requests


def raw_request(request: Request, port: int) -> bytes:
    """``request`` as the bytes of one HTTP/1.1 POST (for the raw load generator)."""
    path = request.url.split(str(port), 1)[1]
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in request.headers]
    lines.append(f"Content-Length: {len(request.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + request.body


def signatures_valid(arrivals: Arrivals, hooks: list[HookSpec]) -> bool:
    """True when each hook's first request carries the exact body the bench expects for its
    ``benchSeq`` and a valid Logto signature (one check per hook: the receiver is cheap)."""
    for hook in hooks:
        request = arrivals.first_requests.get(hook.path)
        if request is None:
            continue
        head, _, body = request.partition(b"\r\n\r\n")
        headers = dict(
            line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:] if b":" in line
        )
        seq = parse_seq(body)
        sent = headers.get(b"logto-signature-sha-256", b"").strip().decode()
        if body != webhook_body(event_value(seq), hook.id):
            return False
        if sent != signature(signing_key(hook.id), body):
            return False
    return True
