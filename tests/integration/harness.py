"""Helpers for integration tests: real config files, a real daemon, real Kafka reads."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from hookrelay.app import Daemon
from hookrelay.config import Settings, load_settings


def unique(prefix: str) -> str:
    """A name no other test uses (topics, groups)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def write_config(
    directory: Path,
    bootstrap: str,
    topic: str,
    hooks: list[dict[str, Any]],
    *,
    group_id: str | None = None,
    dead_letter_topic: str | None = None,
    delivery: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a ``hookrelay.yaml`` with inline hooks (JSON is valid YAML 1.2) and return it."""
    config: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": [bootstrap],
            "topics": [topic],
            "group_id": group_id or unique("group"),
            "auto_offset_reset": "earliest",
            "commit_interval_s": 0.2,
            "session_timeout_s": 10,
        },
        "dead_letter_topic": dead_letter_topic or f"{topic}.dlq",
        # every receiver is on 127.0.0.1, which the SSRF guard refuses unless allowed
        "http": {"timeout_s": 5, "allow_networks": ["127.0.0.0/8"]},
        "delivery": {
            "retry_schedule_s": [0.2, 0.4],
            "retry_jitter": 0.0,
            "retry_topic_prefix": f"{topic}.retry.",
            **(delivery or {}),
        },
        "admin": {"listen": "127.0.0.1:0"},
        "logging": {"level": "info", "format": "json"},
        "shutdown": {"grace_s": 3, "hard_deadline_s": 20},
        "hooks": hooks,
        **(extra or {}),
    }
    path = directory / f"hookrelay-{uuid.uuid4().hex[:6]}.yaml"
    path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
    return path


async def wait_until(
    predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` every 20 ms; raise ``TimeoutError`` naming ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running_daemon(settings: Settings) -> AsyncIterator[Daemon]:
    """Run a real ``Daemon`` in this event loop until the block exits, then stop it cleanly."""
    daemon = Daemon(settings)
    task = asyncio.create_task(daemon.run(), name="daemon-under-test")
    try:
        await wait_until(
            lambda: task.done() or bool(daemon.source.started and daemon.tracker.partitions),
            30.0,
            "the daemon to join its consumer group",
        )
        if task.done():
            task.result()  # surface a start-up failure
        yield daemon
    finally:
        daemon.request_stop()
        exit_code = await asyncio.wait_for(task, 30.0)
        assert exit_code == 0


async def positioned(daemon: Daemon, timeout_s: float = 20.0) -> None:
    """Wait until the daemon has decided where it starts in every partition it is assigned
    (its start check committed a start for each, none is still ``starting``). Under
    ``auto_offset_reset: latest`` the start of a partition without a committed offset is
    resolved after the assignment: a record produced before that would be skipped, as latest
    says, and a test must not race it. The consumer's own position is not enough: the
    daemon's start check asks for the end offsets again after it."""

    def decided() -> bool:
        rows = daemon.source.partitions() if daemon.source.started else []
        return bool(rows) and all(
            row["paused"] != "starting" and row["committed_offset"] is not None for row in rows
        )

    async with asyncio.timeout(timeout_s):
        while not decided():
            await asyncio.sleep(0.05)


def settings_for(path: Path) -> Settings:
    return load_settings(path)


async def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes],
    *,
    partition: int | None = None,
    keys: Iterable[bytes | None] | None = None,
) -> None:
    """Publish ``values`` in order (acks=all), with ``keys`` when given (one per value), and
    wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        pairs = zip(values, keys, strict=True) if keys is not None else ((v, None) for v in values)
        futures = [await producer.send(topic, v, key=k, partition=partition) for v, k in pairs]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str, topic: str, count: int, timeout_s: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read the first ``count`` records of ``topic`` (all partitions, from the beginning)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    if len(records) < count:
        raise TimeoutError(f"{topic}: {len(records)} of {count} records after {timeout_s}s")
    return records


async def topic_size(bootstrap: str, topic: str) -> int:
    """Records in ``topic`` so far: the sum of its partitions' end offsets (a topic that is
    neither compacted nor past its retention)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group_id: str) -> dict[TopicPartition, int]:
    """The group's committed offsets as the broker reports them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0, what: str = "condition"
) -> None:
    """Like ``wait_until`` for an async check, polled every 100 ms."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    """A record's headers decoded as UTF-8 text."""
    return {k: (v or b"").decode("utf-8") for k, v in record.headers}


ROOT = Path(__file__).resolve().parents[2]
HOOKRELAY = [sys.executable, "-m", "hookrelay"]


async def hookrelay_cli(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run the ``hookrelay`` command line to completion: (exit status, stdout, stderr).

    ``env`` adds variables to this process's environment for the command."""
    process = await asyncio.create_subprocess_exec(
        *HOOKRELAY, *args, cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def start_daemon_process(path: Path, log: Path) -> asyncio.subprocess.Process:
    """``hookrelay run -c path`` as a real process, its output appended to ``log``."""
    return await asyncio.create_subprocess_exec(
        *HOOKRELAY, "run", "-c", str(path), cwd=ROOT,
        stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


def edit_config(path: Path, section: str, **values: Any) -> None:
    """Change keys of one section of a config written by ``write_config``."""
    config = orjson.loads(path.read_bytes())
    config.setdefault(section, {}).update(values)
    path.write_bytes(orjson.dumps(config))


def with_admin_port(path: Path) -> int:
    """Give a config a fixed free admin port (a subprocess cannot report port 0 back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    edit_config(path, "admin", listen=f"127.0.0.1:{port}")
    return port


async def status_of(url: str) -> int:
    """The HTTP status a GET of ``url`` answers."""
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        return answer.status


async def answers_with(url: str, status: int) -> bool:
    """True when a GET of ``url`` answers ``status`` (False when nothing listens)."""
    try:
        return await status_of(url) == status
    except aiohttp.ClientError:
        return False


@asynccontextmanager
async def daemon_process(path: Path, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``hookrelay run -c path`` as a real process with a fixed admin port, ready (its
    /readyz answers 200) when the block starts; SIGTERM when it exits, which must end the
    process with status 0 within 30 s."""
    port = with_admin_port(path)
    daemon = await start_daemon_process(path, log)
    try:
        ready = f"http://127.0.0.1:{port}/readyz"
        await eventually(lambda: answers_with(ready, 200), 60, "the daemon to become ready")
        yield daemon
    finally:
        if daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(daemon.wait(), 30)
    assert exit_code == 0, f"exit status {exit_code}; its log: {log}"


def admin_address(path: Path) -> str:
    """host:port of the admin listener of a config written by ``write_config``."""
    return str(orjson.loads(path.read_bytes())["admin"]["listen"])


async def daemon_metric(path: Path, prefix: str) -> float:
    """The sum of the samples on the daemon's /metrics whose line starts with ``prefix``
    (a metric name, or a name with the start of its labels)."""
    url = f"http://{admin_address(path)}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        text = await answer.text()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )
