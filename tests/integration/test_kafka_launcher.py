"""deploy/kafka/kafkactl.py and the tests.kafka_broker fixtures, against the real broker.

The broker is started once per session (kafka_broker fixture); the error-path tests start
no broker of their own, so this file stays fast.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.kafka_broker import (
    KAFKACTL,
    KafkaBroker,
    TopicFactory,
    create_topics,
    free_port,
    run_kafkactl,
    unique_topic_name,
)

pytestmark = pytest.mark.integration

RECORDS = 10


async def consume(consumer: AIOKafkaConsumer, count: int, timeout_s: float) -> list[ConsumerRecord]:
    """Fetch until count records arrived (fails the test after timeout_s)."""
    received: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(received) < count:
        assert time.monotonic() < deadline, f"got {len(received)} of {count} records"
        batches = await consumer.getmany(timeout_ms=500)
        for records in batches.values():
            received.extend(records)
    return received


async def test_produce_consume_commit_roundtrip(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic(partitions=3)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for i in range(RECORDS):
            metadata = await producer.send_and_wait(
                topic, f"event-{i}".encode(), key=f"user-{i}".encode()
            )
            assert metadata.offset >= 0
    finally:
        await producer.stop()

    group = f"group-{topic}"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        received = await consume(consumer, RECORDS, timeout_s=60)
        assert sorted(r.value for r in received) == sorted(
            f"event-{i}".encode() for i in range(RECORDS)
        )
        # Explicit commit of "next offset to read" per partition, as the ack tracker will do.
        offsets: dict[TopicPartition, int] = {}
        for record in received:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        await consumer.commit(offsets)
    finally:
        await consumer.stop()

    second = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await second.start()
    try:
        for tp, offset in offsets.items():
            assert await second.committed(tp) == offset
        assert sum(offsets.values()) == RECORDS
    finally:
        await second.stop()


async def test_admin_creates_three_partitions_and_auto_create_defaults(
    kafka_bootstrap: str,
) -> None:
    created = unique_topic_name("admin-created")
    await create_topics(kafka_bootstrap, [created], partitions=3)
    await create_topics(kafka_bootstrap, [created], partitions=3)  # already exists: fine

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([created])
    finally:
        await admin.close()
    assert described["error_code"] == 0
    assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2]
    assert all(p["leader"] == 1 and p["isr"] == [1] for p in described["partitions"])

    # auto.create.topics.enable=true with num.partitions=3 (the dev broker's defaults).
    auto = unique_topic_name("auto-created")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(auto, b"{}")
        assert producer.client.cluster.partitions_for_topic(auto) == {0, 1, 2}
    finally:
        await producer.stop()


def test_start_is_idempotent_and_status_reports_running(kafka_broker: KafkaBroker) -> None:
    if kafka_broker.data_dir is None:
        pytest.skip("external broker (HOOKRELAY_TEST_BOOTSTRAP): not started by kafkactl")
    data_dir = str(kafka_broker.data_dir)
    pid_before = (kafka_broker.data_dir / "kafka.pid").read_text()

    again = run_kafkactl("start", "--port", str(kafka_broker.port), "--data-dir", data_dir)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"bootstrap={kafka_broker.bootstrap}"
    assert (kafka_broker.data_dir / "kafka.pid").read_text() == pid_before  # no second JVM

    other_port = run_kafkactl("start", "--port", str(free_port()), "--data-dir", data_dir)
    assert other_port.returncode == 1
    assert "already running on port" in other_port.stderr

    status = run_kafkactl("status", "--data-dir", data_dir)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("running ")
    assert f"bootstrap={kafka_broker.bootstrap}" in status.stdout


def test_start_on_busy_port_fails_with_clear_message(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_kafkactl("start", "--port", str(port), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 5
    assert result.stderr.strip() == (
        f"hookrelay: port {port} is already in use by another process; "
        "choose another with --port (make: KAFKA_PORT=...)"
    )
    assert not (tmp_path / "d" / "kafka.pid").exists()


def test_stop_and_status_when_not_running(tmp_path: Path) -> None:
    never_started = tmp_path / "never-started"
    stop = run_kafkactl("stop", "--data-dir", str(never_started))
    assert stop.returncode == 0, stop.stderr

    never_started.mkdir()
    (never_started / "kafka.pid").write_text("999999\n")  # stale pid file from a crash
    stop = run_kafkactl("stop", "--data-dir", str(never_started))
    assert stop.returncode == 0, stop.stderr
    assert not (never_started / "kafka.pid").exists()

    status = run_kafkactl("status", "--port", "9", "--data-dir", str(never_started))
    assert status.returncode == 3
    assert status.stdout.strip() == "stopped bootstrap=127.0.0.1:9"


def _start_without_system_java(tmp_path: Path, bin_dir: Path) -> tuple[int, str]:
    """Run `kafkactl start` with PATH=bin_dir only and no JAVA_HOME; (exit code, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(bin_dir)
    data = str(tmp_path / "d")
    result = subprocess.run(
        # sys.executable is an absolute path: running the script itself needs no PATH.
        [sys.executable, str(KAFKACTL), "start", "--port", str(free_port()), "--data-dir", data],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stderr.strip()


def test_missing_java_is_reported(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    code, stderr = _start_without_system_java(tmp_path, empty)
    assert code == 4
    assert stderr == (
        "hookrelay: Kafka needs Java 17+; found no `java` on PATH and JAVA_HOME is not set"
    )


def test_old_java_is_reported(tmp_path: Path) -> None:
    fake_bin = tmp_path / "old-java-bin"
    fake_bin.mkdir()
    java = fake_bin / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n")
    java.chmod(0o755)
    code, stderr = _start_without_system_java(tmp_path, fake_bin)
    assert code == 4
    assert stderr == f"hookrelay: Kafka needs Java 17+; found Java 11.0.22 at {java}"
