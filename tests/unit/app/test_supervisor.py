"""The supervisor's keeping of worker processes, with stand-in workers (tiny Python
programs) instead of the daemon: restarts, giving up with the cause, the exit status, and
the admin API's merge of the workers' hook views."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from hookrelay.app import Supervisor
from hookrelay.app.deployment_view import merge_hooks
from hookrelay.config import AdminSettings, Settings
from hookrelay.ops.sdnotify import Notifier

REPORT = "import os; os.write(int(os.environ['HOOKRELAY_WORKER_REPORT_FD']), {line!r})"
FAILS_AT_START = REPORT.format(line=b'{"failed": "Boom: refused", "hint": "change x"}\n') + (
    "; raise SystemExit(1)"
)
DRAINS = "import sys; sys.stdin.read(); raise SystemExit({status})"


SERVES = """
import asyncio, os
from aiohttp import web

async def main():
    app = web.Application()
    app.router.add_get("/readyz", lambda r: web.json_response({"ready": True, "reasons": []}))
    pending = "hookrelay_lane_pending{hook_id=\\"a\\"} 2\\n"
    app.router.add_get("/metrics", lambda r: web.Response(text=pending))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    os.write(int(os.environ["HOOKRELAY_WORKER_REPORT_FD"]), b'{"admin_port": %d}\\n' % port)
    await asyncio.get_running_loop().run_in_executor(None, os.read, 0, 1)
    await runner.cleanup()

asyncio.run(main())
"""
"""A stand-in worker with an admin listener: always ready; exits when stdin ends."""


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__("/nonexistent/notify", watchdog_timeout_s=0.4)
        self.sent: list[tuple[str, ...]] = []

    def send(self, *assignments: str) -> bool:
        self.sent.append(assignments)
        return True


def settings() -> Settings:
    return Settings(admin=AdminSettings(listen="127.0.0.1:0"))


def worker(program: str) -> list[str]:
    return [sys.executable, "-c", program]


async def test_workers_failing_at_start_are_given_up_after_three_tries_with_their_cause() -> None:
    supervisor = Supervisor(settings(), 2, command=worker(FAILS_AT_START))
    with capture_logs() as logs:
        status = await asyncio.wait_for(supervisor.run(), 20)
    assert status == 1
    failed = [e for e in logs if e["event"] == "daemon_failed"]
    assert [(e["error"], e["hint"]) for e in failed] == [("Boom: refused", "change x")]
    restarts = [e["worker"] for e in logs if e["event"] == "worker_restarting"]
    assert 2 <= len(restarts) <= 4  # two of the first worker to give up, no tight loop


async def test_a_worker_that_dies_is_restarted_and_counted(tmp_path: Path) -> None:
    marker = tmp_path / "died-once"
    dies_once = (
        f"import os, signal, sys\nif not os.path.exists({str(marker)!r}):\n"
        f"    open({str(marker)!r}, 'w').close(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "sys.stdin.read()"
    )
    supervisor = Supervisor(settings(), 1, command=worker(dies_once))
    with capture_logs() as logs:
        run = asyncio.create_task(supervisor.run())
        for _ in range(100):
            await asyncio.sleep(0.05)
            if supervisor.metrics.worker_restarts.labels("0")._value.get() == 1:
                break
        while not supervisor.slots[0].running:
            await asyncio.sleep(0.05)
        supervisor.request_stop()
        status = await asyncio.wait_for(run, 10)
    assert status == 0
    died = [e for e in logs if e["event"] == "worker_exited_unexpectedly"]
    assert [(e["worker"], e["status"]) for e in died] == [(0, -9)]
    assert [e["in_s"] for e in logs if e["event"] == "worker_restarting"] == [0.5]


async def test_the_exit_status_is_the_first_worker_failure_at_shutdown() -> None:
    programs = iter([DRAINS.format(status=0), DRAINS.format(status=70)])
    supervisor = Supervisor(settings(), 2, command=worker(DRAINS.format(status=0)))
    for slot in supervisor.slots:  # worker 1 hits its hard deadline while draining
        program = next(programs)
        original = slot.start

        async def start(
            command: list[str],
            environ: Any,
            snapshot: str | None = None,
            *,
            _p: str = program,
            _o: Any = original,
        ) -> None:
            await _o(worker(_p), environ, snapshot)

        slot.start = start  # type: ignore[method-assign]
    run = asyncio.create_task(supervisor.run())
    while not all(slot.running for slot in supervisor.slots):
        await asyncio.sleep(0.05)
    supervisor.request_stop()
    assert await asyncio.wait_for(run, 10) == 70


async def test_the_supervisor_tells_systemd_ready_once_every_worker_is_and_stopping() -> None:
    notifier = RecordingNotifier()
    supervisor = Supervisor(settings(), 2, command=worker(SERVES), notifier=notifier)
    run = asyncio.create_task(supervisor.run())
    for _ in range(200):
        await asyncio.sleep(0.05)
        if any(fields[0] == "READY=1" for fields in notifier.sent):
            break
    await asyncio.sleep(0.5)
    assert all(slot.ready for slot in supervisor.slots)
    text = (await supervisor.exposition()).decode()
    assert 'hookrelay_lane_pending{hook_id="a"} 4.0' in text  # both workers' gauges summed
    supervisor.request_stop()
    assert await asyncio.wait_for(run, 10) == 0
    kinds = [fields[0] for fields in notifier.sent]
    assert kinds.count("READY=1") == 1
    assert "WATCHDOG=1" in kinds[: kinds.index("STOPPING=1")]
    assert notifier.sent[kinds.index("READY=1")][1] == (
        "STATUS=ready: 2 workers consuming identity.events, 0 hooks"
    )


def hook_state(**changes: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "id": "crm", "name": "", "url": "https://crm.example/h", "events": ["*"],
        "enabled": True, "filter": None, "paused": False, "paused_by": None,
        "circuit": "closed", "pending": 1, "in_flight": 2, "pause_reason": None,
        "rate_limit": {"per_second": 5.0, "burst": 3, "current_per_second": 4.5,
                       "adaptive": None},
        "ordering": None, "retry_backlog": {"30s": 1}, "retry_backlog_unscanned": 0,
        "last_24h": {"requests": 10, "succeeded": 9, "success_rate": 0.9},
    }  # fmt: skip
    return state | changes


def test_a_hook_seen_by_two_workers_is_one_hook_of_the_deployment() -> None:
    merged = merge_hooks([
        [hook_state()],
        [hook_state(circuit="open", retry_backlog={"30s": 2, "2m": 1}, retry_backlog_unscanned=7,
                    last_24h={"requests": 10, "succeeded": 1, "success_rate": 0.1})],
    ])  # fmt: skip
    assert len(merged) == 1
    hook = merged[0]
    assert (hook["circuit"], hook["pending"], hook["in_flight"]) == ("open", 2, 4)
    assert hook["retry_backlog"] == {"30s": 3, "2m": 1}
    assert hook["retry_backlog_unscanned"] == 7
    assert hook["last_24h"] == {"requests": 20, "succeeded": 10, "success_rate": 0.5}
    assert hook["rate_limit"] == {"per_second": 10.0, "burst": 6, "current_per_second": 9.0,
                                  "adaptive": None}  # fmt: skip
