"""Consumer-group membership scenarios on real processes, shared by the tests and by a
command line that runs them at full size for an issue's figures.

``rebalance_scenario``: N events on 6 partitions, hooks ``hA`` and ``hB`` (fast) and ``hS``
(answers after ``slow_s``, ``max_concurrency: 32``), ``shutdown.grace_s: 2``. Daemon A runs
throughout; with ``churn`` a daemon B joins, leaves by SIGTERM, joins again and is killed
with SIGKILL at the offsets of ``timeline_s``. The figures: requests per (hook, event) pair,
the sends in flight at every revocation (from the daemons' ``partitions_revoked`` logs) and
at the kill (B's lane gauges scraped just before), and the time until every pair arrived.

``kill_scenario``: N events x 3 hooks under steady load, daemon killed with SIGKILL
``kills`` times and restarted; the figures: duplicate deliveries, and what the daemon had in
flight (lane gauges) and delivered during one commit interval before each kill.

Run at full size: ``python -m tests.integration.membership rebalance --events 1000
--slow-s 2.5 --timeline 10,30,42,57`` (needs ``HOOKRELAY_TEST_BOOTSTRAP``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.harness import (
    committed_offsets,
    edit_config,
    produce,
    start_daemon_process,
    unique,
    with_admin_port,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver, Reply

HOOKS = ("hA", "hB", "hS")


@dataclass
class Figures:
    """What a scenario measured; ``pairs`` is events x hooks."""

    pairs: int
    requests: int = 0
    max_copies: int = 0
    pairs_over_2: int = 0
    drain_s: float = 0.0
    in_flight_at_revocations: list[int] = field(default_factory=list)
    in_flight_at_kills: list[int] = field(default_factory=list)
    settled_in_commit_interval: list[int] = field(default_factory=list)
    webhook_ids_per_pair: int = 0  # most distinct webhook-id values seen for one pair

    @property
    def extra(self) -> int:
        """Requests beyond one per pair."""
        return self.requests - self.pairs

    @property
    def bound(self) -> int:
        """Extra requests the issue allows: sends in flight at each revocation and kill,
        plus one commit interval of settled work before each kill."""
        return (
            sum(self.in_flight_at_revocations)
            + sum(self.in_flight_at_kills)
            + sum(self.settled_in_commit_interval)
        )

    def summary(self) -> str:
        return (
            f"pairs={self.pairs} requests={self.requests} extra={self.extra} "
            f"bound={self.bound} max_copies={self.max_copies} "
            f"pairs_over_2={self.pairs_over_2} drain_s={self.drain_s:.1f} "
            f"revocations={self.in_flight_at_revocations} kills={self.in_flight_at_kills} "
            f"settled_before_kills={self.settled_in_commit_interval}"
        )


def events(count: int) -> list[bytes]:
    return [
        orjson.dumps({"event": "User.Data.Updated", "createdAt": "2026-08-21T09:15:42.123Z",
                      "data": {"id": f"u{i}"}})
        for i in range(count)
    ]  # fmt: skip


def copies(receiver: Receiver) -> Counter[tuple[str, str]]:
    return Counter(
        (r.hook_id, r.json["data"]["id"]) for r in receiver.requests if isinstance(r.json, dict)
    )


async def lanes_sending(port: int) -> int:
    """Sum of ``hookrelay_lane_in_flight`` (POSTs being sent) of a running daemon."""
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("hookrelay_lane_in_flight{")
        )
    )


def revocations(log: Path) -> list[int]:
    """``sending`` of every ``partitions_revoked`` line in a daemon log (0 when the field
    is missing: a build that does not report it)."""
    found = []
    for line in log.read_bytes().splitlines():
        if b"partitions_revoked" not in line:
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if entry.get("event") == "partitions_revoked":
            found.append(int(entry.get("sending", 0)))
    return found


def _config(tmp: Path, bootstrap: str, topic: str, receiver: Receiver, slow_s: float) -> Path:
    hooks = [
        {"id": "hA", "events": ["*"], "url": receiver.url("hA")},
        {"id": "hB", "events": ["*"], "url": receiver.url("hB")},
        {"id": "hS", "events": ["*"], "url": receiver.url("hS"), "max_concurrency": 32,
         "timeout_s": slow_s + 10},
    ]  # fmt: skip
    path = write_config(tmp, bootstrap, topic, hooks, delivery={"retry_schedule_s": [1, 5]})
    edit_config(path, "shutdown", grace_s=2, hard_deadline_s=20)
    edit_config(path, "kafka", session_timeout_s=6, commit_interval_s=1.0)
    receiver.script_forever("hS", Reply(delay_s=slow_s))
    return path


def _tally(figures: Figures, receiver: Receiver, started: float, done_at: float) -> None:
    ids: dict[tuple[str, str], set[str]] = {}
    for r in receiver.requests:
        if isinstance(r.json, dict):
            ids.setdefault((r.hook_id, r.json["data"]["id"]), set()).add(r.headers["webhook-id"])
    figures.webhook_ids_per_pair = max(len(found) for found in ids.values())
    counts = copies(receiver)
    figures.requests = sum(counts.values())
    figures.max_copies = max(counts.values())
    figures.pairs_over_2 = sum(1 for n in counts.values() if n > 2)
    figures.drain_s = done_at - started


async def _wait_all(receiver: Receiver, pairs: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while len(copies(receiver)) < pairs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(copies(receiver))} of {pairs} pairs after {timeout_s} s")
        await asyncio.sleep(0.1)
    return time.monotonic()


async def rebalance_scenario(
    bootstrap: str,
    tmp: Path,
    *,
    churn: bool,
    count: int = 600,
    slow_s: float = 1.5,
    timeline_s: tuple[float, float, float, float] = (4, 12, 17, 24),
    settle_s: float = 1.0,
) -> Figures:
    """See the module docstring. Every process is stopped before returning. Once every
    pair arrived, the figures wait until no copy can come any more (``_settled``), then
    ``settle_s`` more."""
    topic = unique("events")
    await create_topics(bootstrap, [topic, f"{topic}.dlq"], partitions=6)
    figures = Figures(pairs=count * len(HOOKS))
    async with Receiver() as receiver:
        path = _config(tmp, bootstrap, topic, receiver, slow_s)
        port_a = with_admin_port(path)
        path_b = tmp / f"b-{path.name}"
        path_b.write_bytes(path.read_bytes())
        port_b = with_admin_port(path_b)
        log_a, log_b = tmp / f"{topic}-a.log", tmp / f"{topic}-b.log"
        await produce(bootstrap, topic, events(count))
        started = time.monotonic()
        a = await start_daemon_process(path, log_a)
        try:
            if churn:
                figures.in_flight_at_kills = await _churn(path_b, log_b, port_b, started,
                                                          timeline_s)  # fmt: skip
            done_at = await _wait_all(receiver, figures.pairs, 600)
            # Late copies still count: B's unsettled work, redone by A once B's session
            # (after the kill) expires, arrives after the last pair did.
            await _wait_settled(bootstrap, group_of(path), topic, port_a, 120)
            await asyncio.sleep(settle_s)
        finally:
            a.send_signal(signal.SIGTERM)
            await asyncio.wait_for(a.wait(), 60)
        _tally(figures, receiver, started, done_at)
        figures.in_flight_at_revocations = revocations(log_a) + (
            revocations(log_b) if log_b.exists() else []
        )
    return figures


def group_of(path: Path) -> str:
    """The consumer group of a config written by ``write_config``."""
    return str(orjson.loads(path.read_bytes())["kafka"]["group_id"])


async def _settled(bootstrap: str, group: str, topic: str, port: int) -> bool:
    """True when nothing is left that could make another copy: the group is stable with one
    member (a member that left or was killed is gone, its partitions handed over), every
    partition it reads is committed at its end (``topic``'s among them), and the member
    listening on admin ``port`` has no send in flight."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    # DescribeGroups (aiokafka): groups of (error, id, state, protocol type, protocol,
    # members, ...).
    if [(g[2], len(g[5])) for r in responses for g in r.groups] != [("Stable", 1)]:
        return False
    committed = await committed_offsets(bootstrap, group)
    if not any(tp.topic == topic for tp in committed):
        return False
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(committed))
    finally:
        await consumer.stop()
    return committed == ends and await lanes_sending(port) == 0


async def _wait_settled(
    bootstrap: str, group: str, topic: str, port: int, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await _settled(bootstrap, group, topic, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"group {group} not settled after {timeout_s} s")
        await asyncio.sleep(0.2)


async def _churn(
    path_b: Path, log_b: Path, port_b: int, started: float, timeline_s: tuple[float, ...]
) -> list[int]:
    """B joins, leaves by SIGTERM, joins again, is killed; returns B's sends at the kill."""
    join, leave, rejoin, kill = timeline_s

    async def at(offset_s: float) -> None:
        await asyncio.sleep(max(0.0, started + offset_s - time.monotonic()))

    await at(join)
    b = await start_daemon_process(path_b, log_b)
    await at(leave)
    b.send_signal(signal.SIGTERM)
    await asyncio.wait_for(b.wait(), 30)
    await at(rejoin)
    b = await start_daemon_process(path_b, log_b)
    await at(kill)
    try:
        sending = await lanes_sending(port_b)
    except aiohttp.ClientError:
        sending = 0
    b.kill()
    await b.wait()
    return [sending]


async def kill_scenario(
    bootstrap: str,
    tmp: Path,
    *,
    count: int = 3000,
    kills: int = 3,
    rate: float = 400.0,
    commit_interval_s: float = 1.0,
) -> Figures:
    """See the module docstring: steady load at ``rate`` events/s, a kill -9 and restart
    every ``count / rate / (kills + 1)`` seconds (once the daemon delivers again)."""
    topic = unique("events")
    await create_topics(bootstrap, [topic, f"{topic}.dlq"], partitions=4)
    figures = Figures(pairs=count * len(HOOKS))
    async with Receiver() as receiver:
        hooks = [
            {"id": h, "events": ["*"], "url": receiver.url(h), "max_concurrency": 8} for h in HOOKS
        ]
        receiver.script_forever("hS", Reply(delay_s=0.05))
        path = write_config(tmp, bootstrap, topic, hooks)
        # A killed member holds its partitions until its session expires: the restarted
        # daemon's join waits that long each time. 6 s is the shortest session Kafka allows.
        edit_config(path, "kafka", commit_interval_s=commit_interval_s, session_timeout_s=6)
        port = with_admin_port(path)
        log = tmp / f"{topic}.log"
        producing = asyncio.create_task(_steady(bootstrap, topic, count, rate))
        started = time.monotonic()
        daemon = await start_daemon_process(path, log)
        try:
            period = count / rate / (kills + 1)
            for n in range(kills):
                await asyncio.sleep(max(0.0, started + period * (n + 1) - time.monotonic()))
                # Kill only a daemon that is delivering (it may still be starting up).
                await receiver.wait_for(len(receiver.requests) + 50, timeout_s=60)
                before = len(receiver.requests)
                await asyncio.sleep(commit_interval_s)
                figures.settled_in_commit_interval.append(len(receiver.requests) - before)
                try:
                    figures.in_flight_at_kills.append(await lanes_sending(port))
                except aiohttp.ClientError:
                    figures.in_flight_at_kills.append(0)
                daemon.kill()
                await daemon.wait()
                daemon = await start_daemon_process(path, log)
            await producing
            done_at = await _wait_all(receiver, figures.pairs, 300)
            await _wait_settled(bootstrap, group_of(path), topic, port, 60)  # late copies count
            await asyncio.sleep(1.0)
        finally:
            daemon.send_signal(signal.SIGTERM)
            await asyncio.wait_for(daemon.wait(), 60)
            producing.cancel()
        _tally(figures, receiver, started, done_at)
    return figures


async def _steady(bootstrap: str, topic: str, count: int, rate: float) -> None:
    values = events(count)
    step = max(1, int(rate / 10))
    for i in range(0, count, step):
        tick = time.monotonic()
        await produce(bootstrap, topic, values[i : i + step])
        await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=["rebalance", "kill"])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--slow-s", type=float, default=2.5)
    parser.add_argument("--timeline", default="10,30,42,57")
    args = parser.parse_args()
    bootstrap = os.environ["HOOKRELAY_TEST_BOOTSTRAP"]

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            if args.scenario == "kill":
                figures = await kill_scenario(bootstrap, Path(tmp), count=args.events)
                print("kill -9 x3:", figures.summary())
                return
            timeline = tuple(float(x) for x in args.timeline.split(","))
            base = await rebalance_scenario(bootstrap, Path(tmp), churn=False, count=args.events,
                                            slow_s=args.slow_s)  # fmt: skip
            print("baseline:", base.summary())
            churn = await rebalance_scenario(
                bootstrap, Path(tmp), churn=True, count=args.events, slow_s=args.slow_s,
                timeline_s=timeline,  # type: ignore[arg-type]
            )  # fmt: skip
            print("churn:   ", churn.summary())
            print(f"drain ratio: {churn.drain_s / base.drain_s:.2f}")

    asyncio.run(run())


if __name__ == "__main__":
    main()
