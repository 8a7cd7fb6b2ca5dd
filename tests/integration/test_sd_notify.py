"""The daemon as systemd sees it: a real ``hookrelay run`` process, and a real AF_UNIX datagram
socket in ``$NOTIFY_SOCKET`` that asks the kernel for each sender's credentials (SO_PASSCRED),
as systemd's own notification socket does, so ``NotifyAccess=main`` would accept them.

Kafka is first reached through a TCP forwarder that the test opens only when it chooses: until
then the daemon cannot bootstrap and is not ready, however fast the machine is."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import socket
import statistics
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.integration.harness import (
    start_daemon_process,
    unique,
    wait_until,
    with_admin_port,
    write_config,
)
from tests.kafka_broker import create_topics, free_port

pytestmark = pytest.mark.integration

WATCHDOG_USEC = 2_000_000  # as systemd passes WatchdogSec=2s: a ping is due every second
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Datagram:
    at: float  # time.monotonic() when the test read it (polled every 50 ms)
    pid: int  # the sender, from SCM_CREDENTIALS
    fields: tuple[str, ...]


class NotifySocket:
    """The test's stand-in for systemd's notification socket, bound at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.received: list[Datagram] = []

    def poll(self) -> list[Datagram]:
        """Read every queued datagram; return the new ones (also kept in ``received``)."""
        new = []
        with contextlib.suppress(BlockingIOError):
            while True:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
                pid = next(
                    _UCRED.unpack(payload)[0]
                    for level, kind, payload in ancillary
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
                )
                new.append(Datagram(time.monotonic(), pid, tuple(data.decode().split("\n"))))
        self.received.extend(new)
        return new

    async def watch(self, seconds: float) -> None:
        """Keep reading for ``seconds``, so each datagram's ``at`` is within 50 ms of arrival."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll()
            await asyncio.sleep(0.05)

    def seen(self, field: str) -> bool:
        """Read what is queued; True once any datagram so far carried ``field``."""
        self.poll()
        return bool(self.with_field(field))

    def with_field(self, field: str) -> list[Datagram]:
        return [d for d in self.received if field in d.fields]

    def close(self) -> None:
        self.sock.close()


@contextlib.asynccontextmanager
async def forwarder(port: int, target: str) -> AsyncIterator[None]:
    """Listen on 127.0.0.1:``port`` and forward every connection to ``target`` (host:port)."""
    host, _, target_port = target.rpartition(":")
    handlers: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        up_reader, up_writer = await asyncio.open_connection(host, int(target_port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


async def readyz(http: aiohttp.ClientSession, port: int) -> int | None:
    """/readyz's status, or None while nothing listens yet."""
    try:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
            return response.status
    except aiohttp.ClientConnectionError:
        return None


async def test_ready_watchdog_and_stopping_reach_a_real_notify_socket(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique("sd-notify")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    gate = free_port()  # the daemon's only bootstrap address; closed until the test opens it
    path = write_config(tmp_path, f"127.0.0.1:{gate}", topic, [])
    admin_port = with_admin_port(path)
    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    log = tmp_path / "daemon.log"
    daemon = await start_daemon_process(path, log)
    try:
        async with aiohttp.ClientSession() as http:
            # Phase 1: Kafka out of reach. Alive (pings), not ready (503, no READY=1).
            await wait_until(lambda: bool(notify.poll()), 30, "a first datagram")
            not_ready_until = time.monotonic() + 3.0
            while time.monotonic() < not_ready_until:
                assert await readyz(http, admin_port) in (None, 503)
                notify.poll()
                await asyncio.sleep(0.05)
            assert not notify.with_field("READY=1")
            statuses = [f for d in notify.received for f in d.fields if f.startswith("STATUS=")]
            assert any("kafka unreachable" in s for s in statuses), statuses

            # Phase 2: open the way to the broker. READY=1 follows /readyz turning 200.
            async with forwarder(gate, kafka_bootstrap):
                await wait_until(lambda: notify.seen("READY=1"), 60, "READY=1")
                [ready] = notify.with_field("READY=1")
                assert await readyz(http, admin_port) == 200
                assert ready.fields == ("READY=1", f"STATUS=ready: consuming {topic}, 0 hooks")

                # Phase 3: steady state, pings at half WATCHDOG_USEC, then SIGTERM.
                await notify.watch(4.0)
                daemon.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(daemon.wait(), 30) == 0
                notify.poll()
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
        notify.close()

    assert {d.pid for d in notify.received} == {daemon.pid}  # NotifyAccess=main accepts them
    pings = [d.at for d in notify.with_field("WATCHDOG=1")]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert len(pings) >= 8, pings
    # systemd kills after WATCHDOG_USEC without a ping; the daemon pings twice as often.
    assert max(gaps) < WATCHDOG_USEC / 1e6, gaps
    assert 0.8 < statistics.median(gaps) < 1.3, gaps
    [stopping] = notify.with_field("STOPPING=1")
    assert stopping.fields == ("STOPPING=1", "STATUS=stopping: draining deliveries for up to 3 s")
    assert stopping.at > ready.at
    assert notify.received.index(stopping) > notify.received.index(ready)
    assert "shutdown_requested" in log.read_text()
