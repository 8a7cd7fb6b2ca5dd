"""Reporting to systemd (``$NOTIFY_SOCKET`` set, see ``ops.sdnotify``): for the whole of
``Daemon.run()``, ``systemd-readiness`` sends READY=1 the first time the daemon is ready (what
makes ``/readyz`` answer 200) and STATUS= on every change; ``systemd-watchdog`` sends
WATCHDOG=1 at half the unit's ``WatchdogSec=``, from the event loop, so a blocked loop stops
the pings and systemd restarts the daemon. STOPPING=1 goes out when the shutdown begins.
"""

from __future__ import annotations

import asyncio

from hookrelay.config import Settings
from hookrelay.ops.logs import get_logger
from hookrelay.ops.sdnotify import Notifier

log = get_logger("hookrelay.app")

READINESS_POLL_S = 0.5
"""Seconds between readiness checks reported to systemd (READY=1 comes at most this late)."""


class SystemdReporting:
    """The systemd tasks, mixed into ``Daemon`` (which provides the parts named below)."""

    settings: Settings
    stopping: asyncio.Event
    systemd: Notifier

    def not_ready_reasons(self) -> list[str]:
        raise NotImplementedError

    def request_stop(self) -> None:
        raise NotImplementedError

    async def _report_to_systemd(self) -> None:
        timeout_s = self.systemd.watchdog_timeout_s
        log.info("systemd_notify", notify_socket=self.systemd.address, watchdog_s=timeout_s)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._report_readiness(), name="systemd-readiness")
            if timeout_s is not None:
                # Half the timeout, as sd_watchdog_enabled(3) advises: one late ping is no kill.
                tg.create_task(self._ping_watchdog(timeout_s / 2), name="systemd-watchdog")

    async def _report_readiness(self) -> None:
        """READY=1 the first time ``not_ready_reasons()`` is empty, STATUS= on every change,
        until the shutdown begins (then STOPPING=1 has the last word)."""
        ready_sent = False
        shown = ""
        while not self.stopping.is_set():
            reasons = self.not_ready_reasons()
            status = self._status_line(reasons)
            if not reasons and not ready_sent:
                self.systemd.ready(status)
                ready_sent = True
                log.info("systemd_ready")
            elif status != shown:
                self.systemd.status(status)
            shown = status
            await asyncio.sleep(READINESS_POLL_S)

    def _status_line(self, reasons: list[str]) -> str:
        if reasons:
            return "not ready: " + "; ".join(reasons)
        topics = ", ".join(self.settings.kafka.topics)
        return f"ready: consuming {topics}, {len(self.settings.hooks)} hooks"

    async def _ping_watchdog(self, interval_s: float) -> None:
        while True:
            self.systemd.watchdog()
            await asyncio.sleep(interval_s)

    def _on_reporting_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # Without its pings systemd would kill the daemon mid-delivery: stop in order instead.
        log.error("systemd_reporting_failed", error=repr(task.exception()))
        self.request_stop()
