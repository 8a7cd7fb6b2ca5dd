"""Faults on real processes: kill -9, a broker restart, a consumer-group rebalance, and the
shutdown signals. Kafka is the system of record: every (event, hook) pair arrives at least
once, with one ``webhook-id`` however many times it is redelivered."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from hookrelay.app import Daemon
from tests.integration.harness import (
    edit_config,
    hookrelay_cli,
    produce,
    running_daemon,
    settings_for,
    start_daemon_process,
    unique,
    wait_until,
    with_admin_port,
    write_config,
)
from tests.kafka_broker import create_topics, free_port, run_kafkactl
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration


def events(count: int, start: int = 0) -> list[bytes]:
    return [
        orjson.dumps({"event": "User.Data.Updated", "createdAt": "2026-08-21T09:15:42.123Z",
                      "data": {"id": f"u{i}"}})
        for i in range(start, start + count)
    ]  # fmt: skip


def ids_seen(receiver: Receiver) -> set[str]:
    return {r.json["data"]["id"] for r in receiver.requests if r.json}


async def test_kill_9_mid_stream_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with Receiver(keys={"crm": None}) as receiver:
        receiver.script_forever("crm", Reply(delay_s=0.02))
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm"), "max_concurrency": 4}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        # The second daemon waits for the killed one's session to expire: the shortest (6 s).
        edit_config(path, "kafka", session_timeout_s=6)
        with_admin_port(path)
        await produce(kafka_bootstrap, topic, events(600))
        log = tmp_path / "daemon.log"
        first = await start_daemon_process(path, log)
        await receiver.wait_for(150, timeout_s=30)
        first.kill()  # SIGKILL: no drain, no final commit
        await first.wait()
        seen_before = ids_seen(receiver)
        assert len(seen_before) < 600
        second = await start_daemon_process(path, log)
        try:
            await wait_until(lambda: len(ids_seen(receiver)) == 600, 60, "all 600 events")
        finally:
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 30) == 0
    by_id: dict[str, set[str]] = {}
    for request in receiver.requests:
        by_id.setdefault(request.json["data"]["id"], set()).add(request.headers["webhook-id"])
    assert all(len(ids) == 1 for ids in by_id.values())  # a redelivery keeps its webhook-id


async def test_a_broker_restart_is_survived_and_reported_as_not_ready(tmp_path: Path) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    data_dir = tmp_path / "restarting-broker"
    started = await asyncio.to_thread(
        run_kafkactl, "start", "--port", str(port), "--data-dir", str(data_dir)
    )
    assert started.returncode == 0, started.stderr
    try:
        await create_topics(bootstrap, ["restart.events"])
        async with Receiver(keys={"r": None}) as receiver:
            hooks = [{"id": "r", "events": ["*"], "url": receiver.url("r")}]
            settings = settings_for(write_config(tmp_path, bootstrap, "restart.events", hooks))
            async with running_daemon(settings) as daemon:
                await produce(bootstrap, "restart.events", events(20))
                await receiver.wait_for(20, timeout_s=20)
                assert await readyz(daemon) == 200
                stopped = await asyncio.to_thread(run_kafkactl, "stop", "--data-dir", str(data_dir))
                assert stopped.returncode == 0, stopped.stderr
                await eventually_status(daemon, 503, timeout_s=30)
                restarted = await asyncio.to_thread(
                    run_kafkactl, "start", "--port", str(port), "--data-dir", str(data_dir)
                )
                assert restarted.returncode == 0, restarted.stderr
                await eventually_status(daemon, 200, timeout_s=60)
                await produce(bootstrap, "restart.events", events(20, start=20))
                await wait_until(lambda: len(ids_seen(receiver)) == 40, 60, "events after restart")
    finally:
        await asyncio.to_thread(run_kafkactl, "stop", "--data-dir", str(data_dir))


async def readyz(daemon: Daemon) -> int:
    url = f"http://127.0.0.1:{daemon.admin.port}/readyz"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status


async def eventually_status(daemon: Daemon, status: int, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await readyz(daemon) != status:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"/readyz never answered {status} within {timeout_s}s")
        await asyncio.sleep(0.5)


async def test_a_rebalance_between_two_daemons_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=6)
    async with Receiver(keys={"crm": None}) as receiver:
        receiver.script_forever("crm", Reply(delay_s=0.01))
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm"), "max_concurrency": 2}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        settings = settings_for(path)
        await produce(kafka_bootstrap, topic, events(600))
        async with running_daemon(settings) as first:
            await receiver.wait_for(100, timeout_s=30)
            async with running_daemon(settings) as second:  # joins: partitions move

                def shared() -> bool:
                    mine = [tp for tp in first.tracker.partitions if tp.topic == topic]
                    theirs = [tp for tp in second.tracker.partitions if tp.topic == topic]
                    return bool(theirs) and len(mine) < 6

                await wait_until(shared, 30, "the partitions to be shared")
                await receiver.wait_for(300, timeout_s=30)
            # The second leaves (SIGTERM path): its partitions come back to the first.
            await wait_until(lambda: len(ids_seen(receiver)) == 600, 60, "all 600 events")
    assert len(receiver.requests) >= 600


async def test_a_second_signal_exits_at_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with Receiver(keys={"hang": None}) as receiver:
        receiver.script_forever("hang", Reply(delay_s=3600))
        hooks = [{"id": "hang", "events": ["*"], "url": receiver.url("hang"), "timeout_s": 60}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        edit_config(path, "shutdown", grace_s=30, hard_deadline_s=60)
        with_admin_port(path)
        await produce(kafka_bootstrap, topic, events(3))
        daemon = await start_daemon_process(path, tmp_path / "daemon.log")
        await receiver.wait_for(3, timeout_s=30)
        daemon.send_signal(signal.SIGTERM)  # would drain for up to 30 s ...
        await asyncio.sleep(0.5)
        assert daemon.returncode is None
        daemon.send_signal(signal.SIGTERM)  # ... but the operator insists
        assert await asyncio.wait_for(daemon.wait(), 10) == 130
    log = await asyncio.to_thread((tmp_path / "daemon.log").read_text)
    assert "second_signal_exiting_now" in log


async def test_missing_topics_are_named_when_creation_is_off(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic])
    path = write_config(tmp_path, kafka_bootstrap, topic, [])
    edit_config(path, "kafka", create_topics=False)
    code, _, message = await hookrelay_cli("run", "-c", str(path))
    assert code == 1
    assert "kafka.create_topics is false" in message
    for missing in (f"{topic}.dlq", f"{topic}.retry.200ms", f"{topic}.retry.400ms"):
        assert missing in message


async def test_memory_stays_flat_under_a_backlog_with_a_dead_endpoint(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    backlog = 30_000
    await produce(kafka_bootstrap, topic, events(backlog))
    async with Receiver(keys={"dead": None, "alive": None}) as receiver:
        receiver.script_forever("dead", Reply(status=503))
        hooks = [
            {"id": "dead", "events": ["*"], "url": receiver.url("dead")},
            {"id": "alive", "events": ["*"], "url": receiver.url("alive"), "max_concurrency": 16},
        ]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks,
                            delivery={"retry_schedule_s": [300, 600]})  # fmt: skip
        with_admin_port(path)
        daemon = await start_daemon_process(path, tmp_path / "daemon.log")
        samples: list[tuple[int, int]] = []  # (alive deliveries so far, RSS kB)
        try:
            while len(receiver.for_hook("alive")) < backlog:
                samples.append((len(receiver.for_hook("alive")), rss_kb(daemon.pid)))
                assert daemon.returncode is None
                await asyncio.sleep(0.5)
                assert len(samples) < 400, "the backlog took over 200 s"
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.wait(), 30) == 0
    warm = [rss for done, rss in samples if done >= backlog // 4]
    assert warm, samples
    growth_mb = (max(warm) - warm[0]) / 1024
    assert growth_mb < 25, f"RSS grew {growth_mb:.1f} MB after warm-up: {samples[::10]}"
    assert max(rss for _, rss in samples) / 1024 < 200


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def test_a_slow_endpoint_never_pushes_the_consumer_out_of_its_group(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with Receiver(keys={"slow": None, "fast": None}) as receiver:
        receiver.script_forever("slow", Reply(delay_s=8.0))  # each answer takes 8 s
        hooks = [
            {"id": "slow", "events": ["*"], "url": receiver.url("slow"), "max_concurrency": 1},
            {"id": "fast", "events": ["*"], "url": receiver.url("fast")},
        ]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        # Far shorter than one slow answer: a consumer that stopped polling would be evicted
        # (aiokafka checks the poll interval at its deadline, so the scale is free: 2 s).
        edit_config(path, "kafka", max_poll_interval_s=2, session_timeout_s=6)
        settings = settings_for(path)
        async with running_daemon(settings) as daemon:
            await produce(kafka_bootstrap, topic, events(5))
            await receiver.wait_for(5, hook_id="fast", timeout_s=20)
            await asyncio.sleep(5)  # two and a half poll intervals with the slow one busy
            await produce(kafka_bootstrap, topic, events(5, start=5))
            await receiver.wait_for(10, hook_id="fast", timeout_s=20)
            assert daemon.metrics.rebalances._value.get() == 0  # never evicted, never revoked
            assert daemon.source.consumer.assignment()


async def test_sigterm_under_steady_traffic_drains_and_exits_0(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Three SIGTERMs under steady traffic: each exits 0; nothing is lost; a delivery in
    flight at the signal (hook "c" answers after 0.5 s) completes after it and is committed,
    so it is never sent again."""
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with Receiver(keys={"a": None, "b": None, "c": None}) as receiver:
        receiver.script_forever("c", Reply(delay_s=0.5))
        hooks = [
            {"id": "a", "events": ["*"], "url": receiver.url("a")},
            {"id": "b", "events": ["*"], "url": receiver.url("b")},
            {"id": "c", "events": ["*"], "url": receiver.url("c"), "max_concurrency": 32},
        ]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        with_admin_port(path)
        stop_producing = asyncio.Event()
        produced = 0

        async def steady_traffic() -> None:
            nonlocal produced
            while not stop_producing.is_set():
                await produce(kafka_bootstrap, topic, events(20, start=produced))
                produced += 20
                await asyncio.sleep(0.5)

        producer = asyncio.create_task(steady_traffic(), name="steady-traffic")
        signalled: list[float] = []
        try:
            for cycle in range(3):
                sent_to_c = len(receiver.for_hook("c"))
                daemon = await start_daemon_process(path, tmp_path / f"daemon-{cycle}.log")
                # Signal once this daemon delivers, while its latest request to "c" (answered
                # after 0.5 s) is surely in flight; not after a fixed wait for start-up.
                await receiver.wait_for(sent_to_c + 1, "c", timeout_s=30)
                await asyncio.sleep(0.2)
                signalled.append(time.time())
                daemon.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(daemon.wait(), 30) == 0, f"cycle {cycle}"
        finally:
            stop_producing.set()
            await producer
        last = await start_daemon_process(path, tmp_path / "daemon-last.log")
        try:
            everything = {(h, f"u{i}") for h in "abc" for i in range(produced)}
            await wait_until(lambda: everything <= copies(receiver).keys(), 90, "every pair")
            await asyncio.sleep(1.5)
        finally:
            last.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(last.wait(), 30) == 0
    count = copies(receiver)
    in_flight = {
        ("c", r.json["data"]["id"]) for r in receiver.for_hook("c")
        if any(0.05 < t - r.arrived_wall < 0.45 for t in signalled)
    }  # fmt: skip
    assert in_flight, "no delivery was in flight at a SIGTERM"
    assert {pair: count[pair] for pair in in_flight} == dict.fromkeys(in_flight, 1)
    log = await asyncio.to_thread((tmp_path / "daemon-2.log").read_text)
    assert "daemon_stopped" in log
    assert "Traceback" not in log


def copies(receiver: Receiver) -> dict[tuple[str, str], int]:
    """Requests per (hook, event id)."""
    found: dict[tuple[str, str], int] = {}
    for request in receiver.requests:
        pair = (request.hook_id, request.json["data"]["id"])
        found[pair] = found.get(pair, 0) + 1
    return found
