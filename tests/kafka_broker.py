"""Pytest plugin: one real Apache Kafka broker per test session, plus topic helpers.

Load it from tests/conftest.py with ``pytest_plugins = ["tests.kafka_broker"]``.

Fixtures:
- ``kafka_broker`` (session) -> KafkaBroker: a broker started once by deploy/kafka/kafkactl.py
  on a free port with a temporary data dir, stopped at session end; or, when the environment
  variable HOOKRELAY_TEST_BOOTSTRAP is set, that external broker (nothing started or stopped).
- ``kafka_bootstrap`` (session) -> str: the bootstrap address, e.g. "127.0.0.1:40123".
- ``kafka_topic`` (function) -> TopicFactory: ``name = await kafka_topic(partitions=3)`` creates
  a uniquely named topic and returns its name once every partition has a leader.

Helper: ``await create_topics(bootstrap, names, partitions=3)``.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

if TYPE_CHECKING:
    from aiokafka.admin import AIOKafkaAdminClient

KAFKACTL = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "kafkactl.py"
BOOTSTRAP_ENV = "HOOKRELAY_TEST_BOOTSTRAP"
START_TIMEOUT_S = 90.0  # broker start; a cold jar download comes on top
EXIT_PORT_IN_USE = 5  # kafkactl's exit code when the port was taken
TOPIC_ERROR_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class KafkaBroker:
    """The session's broker. data_dir and port are None for an external broker."""

    bootstrap: str
    data_dir: Path | None = None
    port: int | None = None


class TopicFactory(Protocol):
    """Type of the ``kafka_topic`` fixture."""

    async def __call__(self, partitions: int = 3, prefix: str | None = None) -> str:
        """Create a uniquely named topic (name starts with prefix or the test name)."""
        ...


def run_kafkactl(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run deploy/kafka/kafkactl.py with args; returns the finished process (never raises)."""
    return subprocess.run(
        [sys.executable, str(KAFKACTL), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_broker(data_dir: Path, attempts: int = 3) -> KafkaBroker:
    """Start a broker on a free port in data_dir; retry with a new port if one got taken."""
    for _ in range(attempts):
        port = free_port()
        result = run_kafkactl(
            "start",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--timeout",
            str(START_TIMEOUT_S),
            timeout_s=START_TIMEOUT_S + 120,  # + the first-run jar download
        )
        if result.returncode == 0:
            bootstrap = result.stdout.strip().rpartition("bootstrap=")[2]
            return KafkaBroker(bootstrap=bootstrap, data_dir=data_dir, port=port)
        if result.returncode != EXIT_PORT_IN_USE:  # someone grabbed the port between checks
            break
    pytest.fail(
        f"could not start Kafka (kafkactl exit {result.returncode}):\n{result.stderr}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's Kafka broker: HOOKRELAY_TEST_BOOTSTRAP, or one started here."""
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield KafkaBroker(bootstrap=external)
        return
    data_dir = tmp_path_factory.mktemp("kafka")
    try:
        yield start_broker(data_dir)
    finally:
        # Also after a failed or interrupted start: never leak a JVM holding a port.
        run_kafkactl("stop", "--data-dir", str(data_dir), "--timeout", "20", timeout_s=60)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """Bootstrap address of the session's broker, e.g. "127.0.0.1:40123"."""
    return kafka_broker.bootstrap


def unique_topic_name(hint: str) -> str:
    """A legal, unique topic name derived from hint (e.g. the test name)."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", hint).strip("-")[:100] or "topic"
    return f"{base}-{uuid.uuid4().hex[:8]}"


async def create_topics(bootstrap: str, names: list[str], partitions: int = 3) -> None:
    """Create topics (replication factor 1) and wait until every partition has a leader.

    A topic that already exists counts as created. Raises RuntimeError on any other error.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import for_code

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
        )
        for topic, code, message in response.topic_errors:
            if code not in (0, TOPIC_ERROR_ALREADY_EXISTS):
                raise RuntimeError(f"creating topic {topic}: {for_code(code).__name__} {message}")
        await _wait_for_leaders(admin, names, timeout_s=30.0)
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> None:
    """Poll describe_topics until each topic exists and all its partitions have a leader.

    CreateTopics returns before leaders are elected; producing or joining a group right then
    sees transient UNKNOWN_TOPIC/LEADER_NOT_AVAILABLE errors.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        ready = all(
            topic["error_code"] == 0
            and topic["partitions"]
            and all(partition["leader"] >= 0 for partition in topic["partitions"])
            for topic in described
        )
        if ready:
            return
        if loop.time() > deadline:
            raise RuntimeError(f"topics {names} have no leaders after {timeout_s} s: {described}")
        await asyncio.sleep(0.1)


@pytest.fixture
def kafka_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> TopicFactory:
    """Factory: ``await kafka_topic(partitions=3, prefix=None)`` -> name of a fresh topic."""

    async def make(partitions: int = 3, prefix: str | None = None) -> str:
        name = unique_topic_name(prefix or request.node.name)
        await create_topics(kafka_bootstrap, [name], partitions)
        return name

    return make
