"""sd_notify client: real AF_UNIX datagram sockets bound by the test stand in for systemd's."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from hookrelay.app import Daemon
from hookrelay.config import Settings, load_settings
from hookrelay.ops.sdnotify import STATUS_MAX_CHARS, Notifier, socket_address, watchdog_timeout_s
from tests.integration.harness import write_config
from tests.kafka_broker import free_port


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket at a file-system path: (NOTIFY_SOCKET value, socket)."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2.0)
        yield str(path), sock


@pytest.fixture
def notified(listener: tuple[str, socket.socket]) -> Iterator[tuple[Notifier, socket.socket]]:
    """A notifier sending to ``listener``: (notifier, the receiving socket)."""
    address, sock = listener
    notifier = Notifier(address)
    yield notifier, sock
    notifier.close()


def fields(sock: socket.socket) -> list[str]:
    return sock.recv(65536).decode("utf-8").split("\n")


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert notifier.watchdog_timeout_s is None  # no socket: nobody to ping
    assert not notifier.ready("ready")
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.stopping("bye")
    with notifier.reloading():
        pass
    notifier.close()


def test_an_empty_notify_socket_is_unset() -> None:
    assert not Notifier.from_environment({"NOTIFY_SOCKET": ""}).enabled


def test_states_reach_a_socket_at_a_path(notified: tuple[Notifier, socket.socket]) -> None:
    notifier, sock = notified
    assert notifier.ready("ready: consuming identity.events, 3 hooks")
    assert fields(sock) == ["READY=1", "STATUS=ready: consuming identity.events, 3 hooks"]
    assert notifier.watchdog()
    assert fields(sock) == ["WATCHDOG=1"]
    assert notifier.stopping("stopping: draining")
    assert fields(sock) == ["STOPPING=1", "STATUS=stopping: draining"]


def test_an_abstract_namespace_address_is_used_as_libsystemd_reads_it() -> None:
    name = f"hookrelay-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)  # what systemd binds for NOTIFY_SOCKET=@name
        sock.settimeout(2.0)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": f"@{name}"})
        try:
            assert notifier.enabled
            assert notifier.status("not ready: waiting to join the consumer group")
            assert fields(sock) == ["STATUS=not ready: waiting to join the consumer group"]
        finally:
            notifier.close()
    assert socket_address(f"@{name}") == f"\0{name}"


def test_unsupported_addresses_turn_notifications_off_with_a_warning() -> None:
    with capture_logs() as logs:
        assert socket_address("relative/notify.sock") is None
        assert socket_address("vsock:2:1234") is None
        assert socket_address("@") is None
    assert [e["event"] for e in logs] == ["notify_socket_unsupported"] * 3
    assert not Notifier("vsock:2:1234").enabled


@pytest.mark.parametrize(
    ("environ", "expected_s"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": "4242"}, 2.5),  # for this pid
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "²"}, None),  # isdigit() says yes, int() says no
        ({"WATCHDOG_USEC": "١٢٣"}, None),
        ({}, None),
    ],
)
def test_watchdog_timeout_follows_sd_watchdog_enabled(
    environ: dict[str, str], expected_s: float | None
) -> None:
    assert watchdog_timeout_s(environ, pid=4242) == expected_s


def test_the_watchdog_timeout_is_read_for_this_process(
    listener: tuple[str, socket.socket],
) -> None:
    address, _ = listener
    mine = Notifier.from_environment(
        {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert mine.watchdog_timeout_s == 4.0


def test_status_is_one_bounded_line(notified: tuple[Notifier, socket.socket]) -> None:
    notifier, sock = notified
    notifier.status("not ready:\nkafka unreachable:\r\n  KafkaConnectionError")
    assert fields(sock) == ["STATUS=not ready: kafka unreachable: KafkaConnectionError"]
    notifier.status("x" * 10_000)
    [status] = fields(sock)
    assert status == "STATUS=" + "x" * STATUS_MAX_CHARS


def test_a_reload_before_the_first_ready_sends_nothing(
    notified: tuple[Notifier, socket.socket],
) -> None:
    """READY=1 there would end systemd's start-up wait while the daemon is not consuming
    (found by a re-check trial: a SIGHUP during start-up made `systemctl start` return)."""
    notifier, sock = notified
    with notifier.reloading():
        pass
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)
    notifier.ready("ready: consuming")
    assert fields(sock)[0] == "READY=1"


def test_reloading_sends_reloading_with_the_monotonic_clock_then_ready(
    notified: tuple[Notifier, socket.socket],
) -> None:
    notifier, sock = notified
    notifier.ready("ready: consuming identity.events, 2 hooks")
    fields(sock)
    before_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    with notifier.reloading():
        after_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        reloading, monotonic, status = fields(sock)
    assert reloading == "RELOADING=1"
    assert status == "STATUS=reloading configuration"
    key, _, usec = monotonic.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before_us <= int(usec) <= after_us
    # Done: READY=1 again, with the status from before the reload.
    assert fields(sock) == ["READY=1", "STATUS=ready: consuming identity.events, 2 hooks"]


def test_a_failed_reload_still_ends_with_ready(notified: tuple[Notifier, socket.socket]) -> None:
    notifier, sock = notified
    notifier.ready("ready")
    fields(sock)
    with pytest.raises(ValueError, match="bad hooks file"), notifier.reloading():
        raise ValueError("bad hooks file")
    assert fields(sock)[0] == "RELOADING=1"
    assert fields(sock)[0] == "READY=1"


def test_a_missing_socket_is_logged_once_never_raised_and_recovery_is_noted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "later.sock"
    notifier = Notifier(str(path))
    try:
        with capture_logs() as logs:
            assert not notifier.watchdog()
            assert not notifier.watchdog()
            assert not notifier.status("x")
        assert [(e["event"], e["log_level"]) for e in logs] == [
            ("systemd_notify_failed", "warning"),
            ("systemd_notify_failed", "debug"),
            ("systemd_notify_failed", "debug"),
        ]
        assert "FileNotFoundError" in logs[0]["error"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            sock.settimeout(2.0)
            with capture_logs() as logs:
                assert notifier.watchdog()
            assert [e["event"] for e in logs] == ["systemd_notify_recovered"]
            assert fields(sock) == ["WATCHDOG=1"]
    finally:
        notifier.close()


def test_a_full_socket_queue_drops_datagrams_instead_of_blocking(
    notified: tuple[Notifier, socket.socket],
) -> None:
    notifier, sock = notified
    started = time.monotonic()
    with capture_logs() as logs:
        results = [notifier.watchdog() for _ in range(5000)]  # nobody reads meanwhile
    elapsed = time.monotonic() - started
    assert results[0]
    assert not results[-1]  # the queue filled up and later pings were dropped
    assert elapsed < 2.0
    assert logs[0]["event"] == "systemd_notify_failed"
    assert "BlockingIOError" in logs[0]["error"]
    assert sum(e["log_level"] == "warning" for e in logs) == 1
    assert fields(sock) == ["WATCHDOG=1"]  # what was queued is intact


# -- the daemon's use of it (in-process; Kafka deliberately unreachable, so no broker) -----


def unreachable_kafka_settings(directory: Path) -> Settings:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    return load_settings(write_config(directory, bootstrap, "sdnotify.events", []))


async def datagrams(sock: socket.socket, seconds: float) -> list[tuple[float, list[str]]]:
    """What arrives on a non-blocking socket within ``seconds``: (monotonic time, fields)."""
    loop = asyncio.get_running_loop()
    received: list[tuple[float, list[str]]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), left)
        except TimeoutError:
            break
        received.append((time.monotonic(), data.decode("utf-8").split("\n")))
    return received


def queued(sock: socket.socket) -> list[list[str]]:
    found = []
    with contextlib.suppress(BlockingIOError):
        while True:
            found.append(sock.recv(65536).decode("utf-8").split("\n"))
    return found


def pings(received: list[tuple[float, list[str]]]) -> list[float]:
    return [at for at, message in received if message == ["WATCHDOG=1"]]


def test_outside_systemd_the_default_notifier_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    notifier = Notifier.from_environment()  # what Daemon uses unless given one
    assert not notifier.enabled
    assert notifier.watchdog_timeout_s is None


async def test_watchdog_pings_come_from_the_event_loop_and_stop_while_it_is_blocked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        notifier = Notifier(str(path), watchdog_timeout_s=0.4)  # a ping every 0.2 s
        daemon = Daemon(unreachable_kafka_settings(tmp_path), notifier=notifier)
        run = asyncio.create_task(daemon.run(), name="daemon-under-test")
        try:
            before = await datagrams(sock, 1.5)
            time.sleep(1.0)  # noqa: ASYNC251  (blocks the event loop on purpose, like a runaway call)
            during = queued(sock)
            after = await datagrams(sock, 0.6)
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(run, 30) == 0
        last = queued(sock)
    assert len(pings(before)) >= 5
    assert max(b - a for a, b in itertools.pairwise(pings(before))) < 0.4
    assert ["WATCHDOG=1"] not in during  # nothing pinged while the loop was stuck
    assert pings(after), "pings resume once the loop runs again"
    statuses = [m[0] for _, m in before if m[0].startswith("STATUS=")]
    assert statuses[-1].startswith("STATUS=not ready: "), statuses
    assert "kafka unreachable: KafkaConnectionError" in statuses[-1]
    assert all("READY=1" not in m for _, m in before + after)
    assert ["STOPPING=1", "STATUS=stopping: draining deliveries for up to 3 s"] in last
