"""The daemon under test: a generated configuration and ``python -m hookrelay run``.

The daemon runs exactly as an operator runs it: its own process, its own event loop (uvloop
when installed), JSON logs on stdout (written to a file here), the admin endpoint on a fixed
free port so the bench can poll ``/readyz`` and scrape ``/metrics``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.bench.events import signing_key
from tests.bench.receiver import free_port

ROOT = Path(__file__).resolve().parents[2]
METRIC_FAMILIES = (
    "hookrelay_deliveries_total",
    "hookrelay_attempts_total",
    "hookrelay_parked_total",
    "hookrelay_retries_scheduled_total",
    "hookrelay_retries_consumed_total",
    "hookrelay_dead_lettered_total",
    "hookrelay_kafka_write_failures_total",
    "hookrelay_offset_commits_total",
    "hookrelay_events_consumed_total",
)
"""Counters summed over their labels into each scenario's result, for diagnosis."""


@dataclass(frozen=True)
class HookSpec:
    """One benchmark hook: ``hang`` hooks post to a path the receiver never answers."""

    id: str
    max_concurrency: int = 8
    per_second: float | None = None
    hang: bool = False
    adaptive: dict[str, Any] | None = None
    """``rate_limit.adaptive``; such a hook posts to a path with a hidden capacity."""
    ordering: str = "none"

    @property
    def path(self) -> str:
        """Receiver path of this hook's endpoint."""
        kind = "hang" if self.hang else "cap" if self.adaptive is not None else "h"
        return f"/{kind}/{self.id}"

    def config(self, receiver_url: str) -> dict[str, Any]:
        """The hook's entry in the daemon configuration."""
        hook: dict[str, Any] = {
            "id": self.id,
            "events": ["*"],
            "url": receiver_url + self.path,
            "signing_key": signing_key(self.id),
            "max_concurrency": self.max_concurrency,
            "ordering": self.ordering,
        }
        if self.per_second is not None:
            hook["rate_limit"] = {"per_second": self.per_second}
            if self.adaptive is not None:
                hook["rate_limit"]["adaptive"] = self.adaptive
        return hook


def write_config(
    path: Path,
    *,
    bootstrap: str,
    topic: str,
    hooks: list[HookSpec],
    receiver_url: str,
    log_level: str,
    delivery: dict[str, Any] | None = None,
    workers: int | str | None = None,
) -> int:
    """Write a daemon configuration (JSON is YAML 1.2) to ``path``; return its admin port.
    ``workers``: the ``workers`` key (default: ``$BENCH_WORKERS``, else none).

    Every run gets its own consumer group, retry topics and dead-letter topic, so nothing
    one scenario parked is delivered in another.
    """
    admin_port = free_port()
    run = path.stem
    config = {
        "kafka": {
            "bootstrap_servers": [bootstrap],
            "topics": [topic],
            "group_id": f"bench-{run}",
            "auto_offset_reset": "earliest",
        },
        "dead_letter_topic": f"bench-{run}.dlq",
        # the bench receiver is on 127.0.0.1, which the SSRF guard refuses unless allowed
        "http": {"allow_networks": ["127.0.0.0/8"]},
        "delivery": {"retry_topic_prefix": f"bench-{run}.retry.", **(delivery or {})},
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "logging": {"level": log_level, "format": "json"},
        "shutdown": {"grace_s": 2.0, "hard_deadline_s": 15.0},
        "hooks": [hook.config(receiver_url) for hook in hooks],
    }
    # BENCH_WORKERS=2 (or auto) runs every scenario with worker processes (README "Worker
    # processes"); the CPU and RSS figures then count the supervisor's process tree.
    workers = workers or bench_workers()
    if workers:
        config["workers"] = workers
    path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
    return admin_port


def bench_workers() -> int | str | None:
    """``$BENCH_WORKERS``: ``auto``, a count, or None (unset)."""
    workers = os.environ.get("BENCH_WORKERS")
    if not workers:
        return None
    return workers if workers == "auto" else int(workers)


async def http_get(port: int, target: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """GET ``http://127.0.0.1:<port><target>``: (status, body). Raises ``OSError``/timeout."""

    async def get() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                f"GET {target} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()
            )
            answer = await reader.read()
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    return await asyncio.wait_for(get(), timeout_s)


def sum_families(text: str, families: tuple[str, ...] = METRIC_FAMILIES) -> dict[str, float]:
    """Sum each metric family's samples over all their labels (Prometheus text format)."""
    totals = dict.fromkeys(families, 0.0)
    for line in text.splitlines():
        name = line.partition("{")[0].partition(" ")[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return {name.removeprefix("hookrelay_"): value for name, value in totals.items()}


class DaemonProcess:
    """``python -m hookrelay <command> -c <config>`` (``run``, or ``ingest`` whose
    ``admin_port`` is its ``metrics_listen``) with its output in ``log_path``.

    A peer (``tests/bench/peer.py``) subclasses it with its own ``argv``, readiness path
    and metric families."""

    ready_path = "/readyz"
    metric_families = METRIC_FAMILIES

    def __init__(self, config: Path, admin_port: int, log_path: Path, command: str = "run") -> None:
        self.command = command
        self.config = config
        self.admin_port = admin_port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        assert self.process is not None
        return self.process.pid

    def argv(self) -> list[str]:
        """The command line that starts the process."""
        return [sys.executable, "-m", "hookrelay", self.command, "-c", str(self.config)]

    def env(self) -> dict[str, str] | None:
        """The process's environment (None: the bench's own)."""
        return None

    def start(self) -> None:
        """Spawn the daemon; ``started_at`` is the wall-clock instant just before."""
        with self.log_path.open("ab") as log:
            self.started_at = time.time()
            self.process = subprocess.Popen(
                self.argv(), cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT
            )

    def check_alive(self) -> None:
        """Raise ``RuntimeError`` with the log's tail if the daemon has exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log_tail()}")

    async def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.01) -> float:
        """Poll ``ready_path`` until 200; return seconds from ``start()`` to that answer."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                status, _ = await http_get(self.admin_port, self.ready_path, timeout_s=1.0)
            except (OSError, TimeoutError, ValueError, IndexError):
                status = 0
            if status == 200:
                return time.time() - self.started_at
            await asyncio.sleep(poll_s)
        raise RuntimeError(f"daemon not ready after {timeout_s} s:\n{self.log_tail()}")

    async def metrics(self) -> dict[str, float]:
        """Selected counters from ``/metrics`` (empty when the scrape fails)."""
        try:
            _, body = await http_get(self.admin_port, "/metrics", timeout_s=5.0)
        except (OSError, TimeoutError, ValueError, IndexError):
            return {}
        return sum_families(body.decode(), self.metric_families)

    async def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s`` (then SIGKILL); return the exit status."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the daemon's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
