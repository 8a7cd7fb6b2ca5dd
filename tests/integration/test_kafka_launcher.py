"""deploy/kafka/kafkactl.py and the tests.kafka_broker fixtures, against the real broker.

The broker is started once per session (kafka_broker fixture); the error-path tests start
no broker of their own, so this file stays fast. The class-data sharing tests check the
archive logic in-process and start one throw-away broker twice (record, then use: ~7 s).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

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


# ---------------------------------------------------------------------------------------------
# Class-data sharing (AppCDS archive)
# ---------------------------------------------------------------------------------------------

JAVA_17 = 'openjdk version "17.0.15" 2025-04-15\nOpenJDK 64-Bit Server VM (build 17.0.15+6)\n'


@pytest.fixture(scope="module")
def kafkactl() -> Iterator[ModuleType]:
    """deploy/kafka/kafkactl.py imported as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("kafkactl", KAFKACTL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafkactl"] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["kafkactl"]


def fake_libs(root: Path) -> Path:
    """<root>/4.1.1/libs with two small jars."""
    libs = root / "4.1.1" / "libs"
    libs.mkdir(parents=True)
    for name in ("kafka_2.13-4.1.1.jar", "kafka-clients-4.1.1.jar"):
        (libs / name).write_bytes(b"PK" + name.encode())
    return libs


def finished_archive(path: Path) -> Path:
    """A file that starts like a dynamic archive the JVM finished writing."""
    path.write_bytes(struct.pack("=I", 0xF00BABA8) + b"\0" * 60)
    return path


def test_cds_archive_path_sits_beside_the_libs_and_names_the_java(
    kafkactl: ModuleType, tmp_path: Path
) -> None:
    libs = fake_libs(tmp_path)
    archive = kafkactl.cds_archive_path(libs, "/usr/bin/java", JAVA_17, b"lock")
    assert archive.parent == libs.parent
    assert archive.name.startswith("kafka-jdk17.0.15-")
    assert archive.suffix == ".jsa"
    assert kafkactl.cds_archive_path(libs, "/usr/bin/java", JAVA_17, b"lock") == archive


def test_cds_archive_key_changes_with_java_and_jars(kafkactl: ModuleType, tmp_path: Path) -> None:
    libs = fake_libs(tmp_path)

    def key(java: str = "/usr/bin/java", version: str = JAVA_17, lock: bytes = b"lock") -> Path:
        return kafkactl.cds_archive_path(libs, java, version, lock)  # type: ignore[no-any-return]

    before = key()
    java_21 = JAVA_17.replace("17.0.15", "21.0.4")
    assert key(version=java_21).name.startswith("kafka-jdk21.0.4-")
    # The same version string from another build (a rebuilt package, another vendor's JDK).
    assert key(version=JAVA_17.replace("+6", "+7")) != before
    assert key(java="/opt/jdk-17/bin/java") != before
    assert key(lock=b"other lock") != before
    # HotSpot rejects an archive once a classpath jar's mtime or size changes.
    jar = libs / "kafka-clients-4.1.1.jar"
    os.utime(jar, ns=(jar.stat().st_atime_ns, jar.stat().st_mtime_ns + 1_000_000_000))
    touched = key()
    assert touched != before
    (libs / "extra-1.0.jar").write_bytes(b"PK")
    assert key() not in (before, touched)


@pytest.mark.parametrize("value", ["0", "false", "no", "off", " OFF "])
def test_cds_opt_out_makes_and_uses_no_archive(
    kafkactl: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("HOOKRELAY_KAFKA_CDS", value)
    libs = fake_libs(tmp_path)
    # Never asked: java is not even run when the archive is off.
    monkeypatch.setattr(kafkactl, "java_version_output", lambda java: pytest.fail("ran java"))
    assert not kafkactl.cds_enabled()
    assert kafkactl.cds_plan("/usr/bin/java", libs) == kafkactl.CdsPlan()
    assert not (libs.parent / ".kafka-cds.lock").exists()


@pytest.mark.parametrize("value", [None, "1", "yes"])
def test_cds_is_on_unless_turned_off(
    kafkactl: ModuleType, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("HOOKRELAY_KAFKA_CDS", raising=False)
    else:
        monkeypatch.setenv("HOOKRELAY_KAFKA_CDS", value)
    assert kafkactl.cds_enabled()


@pytest.fixture
def cds_libs(
    kafkactl: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Fake libs, with CDS on and `java -version` answering JAVA_17 without running java."""
    monkeypatch.delenv("HOOKRELAY_KAFKA_CDS", raising=False)
    monkeypatch.setattr(kafkactl, "java_version_output", lambda java: JAVA_17)
    yield fake_libs(tmp_path)


def test_cds_plan_records_once_and_a_parallel_start_goes_without(
    kafkactl: ModuleType, cds_libs: Path
) -> None:
    first = kafkactl.cds_plan("/usr/bin/java", cds_libs)
    try:
        assert "-XX:+RecordDynamicDumpInfo" in first.options
        assert first.lock_fd is not None
        assert first.recording.parent == first.archive.parent == cds_libs.parent
        assert first.recording.name.startswith(f".{first.archive.name}.")
        # A second first start while the first records: no options, no lock, no waiting.
        assert kafkactl.cds_plan("/usr/bin/java", cds_libs) == kafkactl.CdsPlan()
    finally:
        os.close(first.lock_fd)
    finished_archive(first.archive)
    later = kafkactl.cds_plan("/usr/bin/java", cds_libs)
    assert later.options == (f"-XX:SharedArchiveFile={first.archive}", "-Xshare:auto")
    assert later.lock_fd is None


def test_a_read_only_cache_starts_without_recording(
    kafkactl: ModuleType, cds_libs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A breaker's trial (a user who may not write the cache): the recorder lock could not
    be made and the start failed with a traceback. It starts without an archive instead."""

    def refused(*_args: object, **_kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(kafkactl.os, "open", refused)
    assert kafkactl.cds_plan("/usr/bin/java", cds_libs) == kafkactl.CdsPlan()


def test_only_a_finished_recording_is_installed(kafkactl: ModuleType, cds_libs: Path) -> None:
    folder = cds_libs.parent
    archive = kafkactl.cds_archive_path(cds_libs, "/usr/bin/java", JAVA_17, b"lock")
    stale = finished_archive(folder / "kafka-jdk11.0.2-0123456789abcdef.jsa")
    cut_short = folder / f".{archive.name}.aaaa.tmp"
    cut_short.write_bytes(b"\0" * 64)  # a JVM killed while dumping: header never written
    assert not kafkactl.install_archive(cut_short, archive)
    assert not cut_short.exists() and not archive.exists() and stale.exists()

    recording = finished_archive(folder / f".{archive.name}.bbbb.tmp")
    assert kafkactl.install_archive(recording, archive)
    assert kafkactl.is_finished_archive(archive)
    assert not recording.exists()
    assert not stale.exists()  # another Java's archive: no longer in use


def test_a_dead_starts_leftovers_are_installed_or_dropped(
    kafkactl: ModuleType, cds_libs: Path
) -> None:
    folder = cds_libs.parent
    archive = kafkactl.cds_archive_path(cds_libs, "/usr/bin/java", JAVA_17, b"lock")
    (folder / f".{archive.name}.dead.tmp").write_bytes(b"\0" * 64)
    finished_archive(folder / f".{archive.name}.done.tmp")
    kafkactl.finish_recordings(folder)
    assert kafkactl.is_finished_archive(archive)
    assert sorted(path.name for path in folder.iterdir()) == sorted(["libs", archive.name])


def test_java_accepts_a_broken_archive_with_xshare_auto(
    kafkactl: ModuleType, tmp_path: Path
) -> None:
    java, _ = kafkactl.find_java()
    if java is None:
        pytest.skip("no Java")
    broken = tmp_path / "broken.jsa"
    broken.write_bytes(os.urandom(4096))
    result = subprocess.run(
        [java, *kafkactl.cds_use_options(broken), "-version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _link_jars(source: Path, target: Path) -> None:
    """target gets source's jars without copying 40 MB (hard links; symlinks across devices)."""
    target.mkdir(parents=True)
    for jar in source.glob("*.jar"):
        try:
            os.link(jar, target / jar.name)
        except OSError:
            (target / jar.name).symlink_to(jar)


def test_first_start_records_the_archive_and_the_next_start_maps_it(
    kafkactl: ModuleType, tmp_path: Path
) -> None:
    fetched = run_kafkactl("fetch", "--quiet", timeout_s=300)
    assert fetched.returncode == 0, fetched.stderr
    # A cache of its own: the test sees a cold archive, and leaves the real cache alone.
    cache = tmp_path / "cache"
    _link_jars(kafkactl.libs_dir(), cache / kafkactl.KAFKA_VERSION / "libs")
    env = {k: v for k, v in os.environ.items() if k != "HOOKRELAY_KAFKA_CDS"}
    env["HOOKRELAY_KAFKA_CACHE"] = str(cache)
    data = tmp_path / "data"
    port = free_port()

    def kafkactl_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(KAFKACTL), *args, "--data-dir", str(data)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def start() -> tuple[int, str]:
        """Start the broker; (pid, its command line)."""
        started = kafkactl_run("start", "--port", str(port))
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"bootstrap=127.0.0.1:{port}"
        pid = int((data / "kafka.pid").read_text())
        return pid, kafkactl._process_field(pid, "cmdline", "command") or ""

    try:
        pid, command = start()
        assert "-XX:+RecordDynamicDumpInfo" in command
        (archive,) = (cache / kafkactl.KAFKA_VERSION).glob("kafka-jdk*.jsa")
        assert kafkactl.is_finished_archive(archive)
        assert not list(archive.parent.glob(".kafka-*.tmp"))
        stopped = kafkactl_run("stop")
        assert stopped.returncode == 0, stopped.stderr

        pid, command = start()  # same data dir: no storage format this time
        assert f"-XX:SharedArchiveFile={archive} -Xshare:auto" in command
        maps = Path(f"/proc/{pid}/maps")
        if maps.exists():  # Linux: the JVM really mapped it, not just was told about it
            assert str(archive) in maps.read_text()
        assert kafkactl_run("status", "--port", str(port)).returncode == 0
        assert kafkactl_run("stop").returncode == 0

        # A breaker's trial: an archive corrupted on disk crashed every later start (SIGBUS;
        # -Xshare:auto skips only an archive it can tell is wrong). It is dropped instead.
        with archive.open("r+b") as file:
            file.truncate(archive.stat().st_size // 2)
        started = kafkactl_run("start", "--port", str(port))
        assert started.returncode == 0, started.stderr
        assert "removing the archive and starting without it" in started.stderr
        assert not archive.exists()
        assert kafkactl_run("status", "--port", str(port)).returncode == 0
    finally:
        kafkactl_run("stop", "--timeout", "20")
    shutil.rmtree(cache)  # the archive is 40 MB; pytest keeps the last runs' tmp dirs
