"""CPU per delivery of hookrelay's own machinery, from fetched record to settled delivery.

    .venv/bin/python -m tests.bench.hot_path                  # 1 and 10 hooks
    .venv/bin/python -m tests.bench.hot_path --hooks 10 --profile
    .venv/bin/python -m tests.bench.hot_path --against 42f300b

A micro-benchmark of what the daemon adds around the HTTP client (issue 17, item 1): the
real ``Pipeline`` (decode, route, register with the ack tracker), ``Dispatcher`` and lanes
(queues, workers, rate limits, circuits, history, metrics, settling), fed the bench's
~600-byte events in batches of ``kafka.max_poll_records`` with the source's backpressure,
and a sender that answers 200 after one turn of the event loop (no HTTP, no signing: those
are the sender's, measured by ``tests.bench.sender_attempt``). No Kafka: records are built
in memory, and the committer's offset computation runs every ``commit_interval_s`` as in
the daemon.

The figure is this process's CPU time (``time.process_time``) per delivery, the median of
``--rounds`` rounds; ``--against REV`` measures ``daemon/hookrelay`` as it was at a git
revision in the same run (a worktree in a temporary directory, imported in a subprocess),
each round alternating, and prints the ratio. ``--profile`` prints cProfile's top functions
by own time for one round (cProfile slows everything; only the shares mean something).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.structs import TopicPartition

from hookrelay.config import load_settings
from hookrelay.delivery.dispatcher import Dispatcher
from hookrelay.delivery.sender import HttpSender
from hookrelay.events.model import AttemptResult
from hookrelay.kafka.offsets import AckTracker
from hookrelay.kafka.writer import DurableWriter
from hookrelay.ops.history import History
from hookrelay.ops.metrics import Metrics
from hookrelay.pipeline import Pipeline
from tests.bench.events import event_key, event_value, signing_key
from tests.bench.loops import run_loop
from tests.bench.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]


def _config(directory: Path, hooks: int, base_url: str) -> Path:
    per_hook = max(1, 64 // hooks)
    config = {
        "kafka": {"bootstrap_servers": ["127.0.0.1:9"], "topics": ["bench"], "group_id": "g"},
        "http": {"allow_networks": ["127.0.0.0/8"]},
        "hooks": [
            {
                "id": f"h{i}",
                "url": f"{base_url}/h{i}",
                "events": ["PostSignIn"],
                "signing_key": signing_key(f"h{i}"),
                "max_concurrency": per_hook,
            }
            for i in range(hooks)
        ],
    }
    path = directory / "hookrelay.yaml"
    path.write_text(json.dumps(config))
    return path


class _Producer:
    """Never written to: every delivery succeeds."""

    async def send(self, *_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the hot-path bench writes nothing to Kafka")


class _Sender:
    """Answers 200 after one turn of the loop, as a request's response arrives later."""

    def __init__(self) -> None:
        self.attempts = 0

    async def attempt(self, *_args: Any, **_kwargs: Any) -> Any:

        await asyncio.sleep(0)
        self.attempts += 1
        return AttemptResult(200, None, False, None, 0.001)


class _Counting:
    """The real ``HttpSender``, counting attempts that came back 2xx."""

    def __init__(self, sender: Any) -> None:
        self._sender = sender
        self.attempts = 0
        self.start = sender.start
        self.close = sender.close

    async def attempt(self, *args: Any, **kwargs: Any) -> Any:
        result = await self._sender.attempt(*args, **kwargs)
        if not result.ok:
            raise RuntimeError(f"bench request failed: {result.error}")
        self.attempts += 1
        return result


def _records(events: int) -> list[ConsumerRecord[bytes, bytes]]:
    """The bench's events as consumed records of 4 partitions, in offset order."""
    records = []
    for seq in range(events):
        partition, offset, timestamp = seq % 4, seq // 4, 1_787_302_822_000 + seq
        key, value = event_key(seq), event_value(seq)
        records.append(
            ConsumerRecord("bench", partition, offset, timestamp, 0, key, value, None, 0, 0, [])
        )
    return records


class _Rig:
    """The daemon's pipeline, dispatcher and ack tracker for ``config``'s hooks."""

    def __init__(self, config: Path, sender: Any) -> None:
        self.settings = settings = load_settings(config)
        metrics = Metrics()
        writer = DurableWriter(_Producer(), metrics, dead_letter_topic=settings.dead_letter_topic)  # type: ignore[arg-type]
        self.sender = sender
        self.dispatcher = Dispatcher(
            sender, writer, metrics, settings.delivery,
            retry_topics=settings.retry_topics, dead_letter_topic=settings.dead_letter_topic,
            group=settings.group_id, batch_size=settings.kafka.max_poll_records,
            history=History(settings.admin.recent_attempts, settings.admin.keep_response_bodies),
            timeout_s=settings.http.timeout_s, control_topic=settings.control_topic,
        )  # fmt: skip
        self.dispatcher.set_hooks(list(settings.hooks))
        self.tracker = AckTracker()
        self.tracker.assign([TopicPartition("bench", p) for p in range(4)])
        self.pipeline = Pipeline(settings, self.tracker, self.dispatcher, writer, metrics)

    async def feed(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Hand ``records`` over as the source does: a fetch batch at a time, paused while
        the dispatcher is full, the committer's offsets computed every interval; return
        once every delivery settled."""
        d = self.settings.delivery
        resume = d.resume_below / d.max_in_flight
        batch = self.settings.kafka.max_poll_records
        commit_every = self.settings.kafka.commit_interval_s
        expected = len(records) * len(self.settings.hooks)
        last_commit = time.perf_counter()
        for start in range(0, len(records), batch):
            while self.dispatcher.load() >= 1.0:  # paused until below the resume mark
                while self.dispatcher.load() > resume:
                    await asyncio.sleep(0.005)
            for record in records[start : start + batch]:
                self.pipeline.handle(record)
            await asyncio.sleep(0)
            if time.perf_counter() - last_commit >= commit_every:
                self.tracker.to_commit()
                last_commit = time.perf_counter()
        while self.sender.attempts < expected or self.dispatcher.in_flight:
            await asyncio.sleep(0.001)
        self.tracker.to_commit()


async def _round(
    config: Path, events: int, profile: cProfile.Profile | None, http: bool
) -> dict[str, Any]:
    sender: Any = _Sender()
    if http:
        settings = load_settings(config)
        sender = _Counting(HttpSender(settings.http, settings.delivery))
        await sender.start()
    rig = _Rig(config, sender)
    records = _records(events)
    started = time.process_time()
    wall = time.perf_counter()
    if profile is not None:
        profile.enable()
    await rig.feed(records)
    if profile is not None:
        profile.disable()
    cpu = time.process_time() - started
    wall = time.perf_counter() - wall
    await rig.dispatcher.close()
    if http:
        await sender.close()
    deliveries = events * len(rig.settings.hooks)
    return {"deliveries": deliveries, "cpu_s": cpu, "wall_s": wall, "us": cpu / deliveries * 1e6}


def _measure(hooks: int, events: int, profile: bool, url: str | None = None) -> dict[str, Any]:
    """One round; ``url``: the receiver's base URL for real HTTP, None for no HTTP."""
    with tempfile.TemporaryDirectory() as directory:
        config = _config(Path(directory), hooks, url or "http://127.0.0.1:9")
        profiler = cProfile.Profile() if profile else None
        result = run_loop(_round(config, events, profiler, url is not None))
        if profiler is not None:
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(35)
        return result


def _in_subprocess(tree: Path, hooks: int, events: int, url: str | None) -> float:
    """µs per delivery of the ``hookrelay`` package under ``tree`` (one round)."""
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]);"
        "from tests.bench.hot_path import _measure;"
        "url = sys.argv[5] or None;"
        "print(json.dumps(_measure(int(sys.argv[3]), int(sys.argv[4]), False, url)))"
    )
    argv = [str(tree / "daemon"), str(ROOT), str(hooks), str(events), url or ""]
    out = subprocess.run(
        [sys.executable, "-c", code, *argv],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout  # fmt: skip
    return float(json.loads(out.strip().splitlines()[-1])["us"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hooks", type=int, action="append", help="default: 1 and 10")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--against", help="a git revision to compare with")
    parser.add_argument(
        "--http", action="store_true", help="the real HttpSender to tests.bench.receiver"
    )
    args = parser.parse_args()
    receiver = Receiver()
    if args.http:
        receiver.start()
    url = receiver.url("") if args.http else None
    try:
        _main(args, url)
    finally:
        if args.http:
            receiver.stop()


def _main(args: argparse.Namespace, url: str | None) -> None:
    if args.profile:
        for hooks in args.hooks or [10]:
            print(f"--- {hooks} hook(s)")
            print(_measure(hooks, args.events, True, url))
        return
    with tempfile.TemporaryDirectory() as scratch:
        other: Path | None = None
        if args.against:
            other = Path(scratch) / "against"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(other), args.against],
                check=True, cwd=ROOT, capture_output=True,
            )  # fmt: skip
        try:
            for hooks in args.hooks or [1, 10]:
                current: list[float] = []
                former: list[float] = []
                for _ in range(args.rounds):
                    current.append(_in_subprocess(ROOT, hooks, args.events, url))
                    if other is not None:
                        former.append(_in_subprocess(other, hooks, args.events, url))
                line = f"{hooks:>2} hook(s): {statistics.median(current):6.1f} µs/delivery"
                if former:
                    ratios = [c / f for c, f in zip(current, former, strict=True)]
                    line += (
                        f"  {args.against}: {statistics.median(former):6.1f}"
                        f"  ratio {statistics.median(ratios):.2f}"
                    )
                print(line, flush=True)
        finally:
            if other is not None:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=False
                )


if __name__ == "__main__":
    main()
