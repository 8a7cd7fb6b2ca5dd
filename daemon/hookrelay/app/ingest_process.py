"""The ``hookrelay ingest`` process around ``ingest.service.IngestService``: signals, systemd
reporting, and the exit status.

SIGTERM and SIGINT start the shutdown (a second one exits at once with 130; the shutdown is
also cut off ``shutdown.hard_deadline_s`` after the first); SIGHUP is logged and ignored (the
ingest process does not reload: restart it to apply a change; its senders retry a 503, and a
rolling restart of several replicas loses nothing). Under systemd (``Type=notify``) READY=1
goes out the first time ``/readyz`` would answer 200, and STOPPING=1 when the shutdown begins.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Final

from hookrelay.app.shutdown import arm_hard_deadline, note_stop_signal
from hookrelay.config import Settings, config_warnings
from hookrelay.ingest.service import IngestService
from hookrelay.ops.logs import get_logger
from hookrelay.ops.sdnotify import Notifier

log = get_logger("hookrelay.ingest")

READINESS_POLL_S: Final = 0.5


class IngestProcess:
    """``await IngestProcess(settings).run()`` serves until SIGTERM/SIGINT (or ``stop()``)
    and returns the exit status."""

    def __init__(self, settings: Settings, *, notifier: Notifier | None = None) -> None:
        self.service = IngestService(settings)
        self.settings = settings
        self.systemd = notifier or Notifier.from_environment()
        self._stop = asyncio.Event()
        self._signals = 0

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: log.info("sighup_ignored", detail="restart to apply changes")
        )

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        note_stop_signal(signum, self._signals)
        self.systemd.stopping("stopping: answering requests in progress")
        arm_hard_deadline(self.settings.shutdown.hard_deadline_s)
        self._stop.set()

    async def run(self) -> int:
        """Serve, then shut down; 0 after a clean shutdown. Raises ``OSError`` when a listen
        address cannot be bound."""
        for warning in config_warnings(self.settings, sections=("ingest", "kafka")):
            log.warning("config_warning", detail=warning)
        async with asyncio.TaskGroup() as tasks:
            reporting = tasks.create_task(self._report_readiness(), name="systemd-readiness")
            try:
                await self.service.run(self._stop)
            finally:
                reporting.cancel()
        return 0

    async def _report_readiness(self) -> None:
        if not self.systemd.enabled:
            return
        last = None
        while True:
            reasons = self.service.reasons()
            status = "ready: taking events" if not reasons else "not ready: " + "; ".join(reasons)
            if not reasons and not self.systemd.ready_sent:
                self.systemd.ready(status)
            elif status != last:
                self.systemd.status(status)
            last = status
            await asyncio.sleep(READINESS_POLL_S)
