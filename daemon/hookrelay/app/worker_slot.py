"""One worker slot of the supervisor: the process now serving worker ``index``, how to reach
its private admin listener, and what it reported (``app.worker`` is the other side).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import aiohttp
import orjson

from hookrelay.app.worker import REPORT_FD_ENV, SETTINGS_ENV, TOKEN_ENV, WORKER_ENV
from hookrelay.ops.logs import get_logger

log = get_logger("hookrelay.supervisor")

ASK_TIMEOUT_S: Final = 5.0
"""Longest wait for a worker's admin listener to answer the supervisor."""
SYSTEMD_VARIABLES: Final = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
"""Left out of a worker's environment: only the supervisor talks to systemd (NotifyAccess=main)."""


class WorkerGoneError(Exception):
    """The worker has no listener to ask (not started yet, restarting, or stopped)."""


class WorkerSlot:
    """Worker ``index`` of ``count``: :meth:`start` a process, :meth:`wait` for its end.

    ``ready`` and ``reasons`` are its last ``/readyz`` answer, ``answered_at`` when its loop
    last answered (monotonic), ``cause``/``hint`` what it reported on failing."""

    def __init__(self, index: int, count: int, token: str) -> None:
        self.index = index
        self.name = str(index)
        self._count = count
        self._token = token
        self.process: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self.ready = False
        self.became_ready = False
        self.reasons: list[str] = ["starting"]
        self.answered_at = 0.0
        self.started_at = 0.0
        self.cause = ""
        self.hint: str | None = None
        self._reports: asyncio.StreamReader | None = None
        self._report_transport: asyncio.BaseTransport | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(
        self, command: Sequence[str], environ: Mapping[str, str], snapshot: str
    ) -> None:
        """Start the worker process (the same executable, marked by the environment), with
        the supervisor's ``SettingsSnapshot`` path; its output goes where the supervisor's
        does."""
        env = {k: v for k, v in environ.items() if k not in SYSTEMD_VARIABLES}
        read_fd, write_fd = os.pipe()
        env |= {WORKER_ENV: f"{self.index}/{self._count}", TOKEN_ENV: self._token,
                REPORT_FD_ENV: str(write_fd), SETTINGS_ENV: snapshot}  # fmt: skip
        self.port, self.ready, self.became_ready = None, False, False
        self.reasons, self.cause, self.hint = ["starting"], "", None
        try:
            self.process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, env=env, pass_fds=(write_fd,)
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.started_at = time.monotonic()
        loop = asyncio.get_running_loop()
        self._reports = asyncio.StreamReader()
        self._report_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(self._reports),  # type: ignore[arg-type]
            os.fdopen(read_fd, "rb", buffering=0),
        )
        log.info("worker_started", worker=self.index, pid=self.process.pid)

    async def wait(self) -> int:
        """Read the worker's reports until it closes the pipe, then wait for its end;
        its exit status (negative: killed by that signal)."""
        assert self.process is not None and self._reports is not None, "started"
        try:
            while line := await self._reports.readline():
                self._take(line)
        finally:
            if self._report_transport is not None:
                self._report_transport.close()
        status = await self.process.wait()
        self.port, self.ready = None, False
        self.reasons = ["not running"]
        return status

    def _take(self, line: bytes) -> None:
        try:
            message: dict[str, Any] = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if isinstance(message.get("admin_port"), int):
            self.port = message["admin_port"]
        if isinstance(message.get("failed"), str):
            self.cause, self.hint = message["failed"], message.get("hint")

    def stop(self) -> None:
        """Ask the worker to drain and exit: close its standard input."""
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()

    def kill(self) -> None:
        """End the worker at once (SIGKILL)."""
        self.signal(signal.SIGKILL)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the worker process, if it runs."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)

    async def ask(
        self, session: aiohttp.ClientSession, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        """``method path`` on the worker's admin listener: (status, decoded JSON body, or
        the text for /metrics). Raises ``WorkerGoneError`` when it has no listener,
        ``aiohttp.ClientError`` or ``TimeoutError`` when it does not answer."""
        if self.port is None or not self.running:
            raise WorkerGoneError(self.name)
        url = f"http://127.0.0.1:{self.port}{path}"
        headers = {"Authorization": f"Bearer {self._token}"}
        timeout = aiohttp.ClientTimeout(total=ASK_TIMEOUT_S)
        async with session.request(
            method, url, json=body, headers=headers, timeout=timeout
        ) as answer:
            raw = await answer.read()
            self.answered_at = time.monotonic()
            if path == "/metrics":
                return answer.status, raw.decode("utf-8")
            return answer.status, orjson.loads(raw) if raw else None

    async def check(self, session: aiohttp.ClientSession) -> None:
        """Refresh ``ready`` and ``reasons`` from the worker's ``/readyz``."""
        if not self.running:
            self.ready = False
            return
        try:
            status, body = await self.ask(session, "GET", "/readyz")
        except WorkerGoneError:
            self.ready, self.reasons = False, ["starting"]
            return
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as e:
            self.ready, self.reasons = False, [f"not answering ({type(e).__name__})"]
            return
        self.ready = status == 200
        self.became_ready = self.became_ready or self.ready
        self.reasons = [] if self.ready else list(body.get("reasons", ["not ready"]))
