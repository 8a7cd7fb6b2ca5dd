"""``hookrelay run`` with ``workers`` > 1: the one process that handles signals, keeps N
worker processes (``app.worker``) running, and speaks for the deployment.

Each worker is the ordinary daemon, a member of the consumer group: Kafka's group protocol
spreads the partitions over the workers as it does over machines. The supervisor:

- **signals**: SIGTERM/SIGINT ask every worker to drain (it closes their standard input)
  and wait for them; the exit status is 0 when every worker exited 0, else the first
  worker's failure (70: a worker's hard deadline). A second signal kills the workers and
  exits 130 at once; ``shutdown.hard_deadline_s`` + ``HARD_DEADLINE_MARGIN_S`` after the
  first, the supervisor exits 70 (its workers, seeing their pipe end, are already
  stopping). SIGHUP (and ``POST /v1/reload``) loads the files once: a configuration that
  fails to load is refused here, loudly, and no worker reloads; a valid one is reloaded by
  every worker.
- **restarts**: a worker that exits while not asked to (kill -9, a crash) is started again
  after ``FIRST_BACKOFF_S``, doubling for each further exit within ``STABLE_S`` of its
  start, up to ``MAX_BACKOFF_S``; each restart is logged (``worker_restarting``) and counted
  (``hookrelay_worker_restarts_total{worker}``). A worker that fails ``MAX_START_FAILURES``
  times in a row before it was ever ready, with an error status (a broker that refuses
  ``kafka.session_timeout_s``), is a configuration the workers cannot run: the supervisor
  stops the others and exits 1, logging the worker's cause and hint (``daemon_failed``),
  as the single process does.
- **one admin listener** on ``admin.listen``: ``/metrics`` merges the workers'
  (``ops.metrics_merge``), ``/readyz`` is ready when every worker is, ``/v1`` answers for
  the deployment (``deployment_view``). Workers listen on 127.0.0.1, at a port and with a
  token only the supervisor knows.
- **systemd**: READY=1 once every worker is ready, WATCHDOG=1 while every running worker's
  event loop answered within the watchdog timeout, STOPPING=1 at shutdown. Workers get no
  ``$NOTIFY_SOCKET`` (``NotifyAccess=main``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, Final

import aiohttp

from hookrelay.app.daemon import EXIT_ADMIN_LISTEN, register_settings_secrets
from hookrelay.app.deployment_view import DeploymentView
from hookrelay.app.shutdown import EXIT_SECOND_SIGNAL, arm_hard_deadline, cancel_until_done
from hookrelay.app.systemd import SystemdReporting
from hookrelay.app.worker import SettingsSnapshot
from hookrelay.app.worker_balance import (
    UNEVEN_HINT,
    BalanceWatch,
    Spread,
    partitions_by_worker,
)
from hookrelay.app.worker_slot import WorkerGoneError, WorkerSlot
from hookrelay.config import Settings, config_warnings, load_settings
from hookrelay.errors import ConfigError
from hookrelay.ops.admin import AdminServer
from hookrelay.ops.early_signals import handle_stop_and_reload
from hookrelay.ops.logs import configure_logging, get_logger, register_secrets
from hookrelay.ops.metrics import SupervisorMetrics
from hookrelay.ops.metrics_merge import MetricsMerger
from hookrelay.ops.reload import plan_reload, serve_reloads
from hookrelay.ops.sdnotify import Notifier

log = get_logger("hookrelay.supervisor")

EXIT_FAILED: Final = 1
FIRST_BACKOFF_S: Final = 0.5
MAX_BACKOFF_S: Final = 30.0
STABLE_S: Final = 60.0
"""A worker that ran this long before exiting is restarted after ``FIRST_BACKOFF_S`` again."""
MAX_START_FAILURES: Final = 3
HARD_DEADLINE_MARGIN_S: Final = 5.0
POLL_S: Final = 0.5
"""Seconds between two readiness checks of the workers."""
BALANCE_POLL_S: Final = 5.0
"""Seconds between two looks at the workers' metrics and at how the event partitions are
spread over them."""


class Supervisor(DeploymentView, SystemdReporting):
    """``await Supervisor(settings, workers).run()`` returns the exit status. ``command``
    starts one worker (default: this interpreter, ``-m hookrelay run -c <file>``)."""

    def __init__(
        self,
        settings: Settings,
        workers: int,
        *,
        command: Sequence[str] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.systemd = notifier or Notifier.from_environment()
        self.metrics = SupervisorMetrics(workers)
        self.merger = MetricsMerger()
        token = secrets.token_urlsafe(32)
        register_secrets([token])
        self.slots = [WorkerSlot(index, workers, token) for index in range(workers)]
        self.stopping = asyncio.Event()
        self._command = list(command or [sys.executable, "-m", "hookrelay", "run", "-c",
                                         settings.source_file])  # fmt: skip
        self.admin = AdminServer(
            settings.admin.host, settings.admin.port, self.metrics, self.readiness,
            backend=self, token=settings.admin.token, exposition=self.exposition,
        )  # fmt: skip
        self._session: aiohttp.ClientSession | None = None
        self._failure: tuple[str, str | None] | None = None
        self._statuses: dict[int, int] = {}
        self._signals = 0
        self._hard_deadline: threading.Timer | None = None
        self._reload_requested = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._snapshot: SettingsSnapshot  # made by run()

    def _client(self) -> aiohttp.ClientSession:
        assert self._session is not None, "open while running"
        return self._session

    # -- signals ------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the deployment (a second one: at once); SIGHUP reloads."""
        handle_stop_and_reload(self._on_signal, self._on_sighup)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1:
            log.error("second_signal_exiting_now", signal=name)
            for slot in self.slots:
                slot.kill()
            os._exit(EXIT_SECOND_SIGNAL)
        log.info("signal_received", signal=name)
        self.request_stop()

    def _on_sighup(self) -> None:
        log.info("signal_received", signal="SIGHUP")
        self._reload_requested.set()

    def request_stop(self) -> None:
        """Ask every worker to drain and exit; idempotent."""
        if self.stopping.is_set():
            return
        grace = self.settings.shutdown.grace_s
        log.info("shutdown_requested", grace_s=grace, workers=len(self.slots))
        self.systemd.stopping(f"stopping: workers draining deliveries for up to {grace:g} s")
        self.stopping.set()
        for slot in self.slots:
            slot.stop()
        deadline = self.settings.shutdown.hard_deadline_s + HARD_DEADLINE_MARGIN_S
        self._hard_deadline = arm_hard_deadline(deadline)

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> int:
        """Start the listener and the workers, keep them, stop in order; the exit status."""
        try:
            await self.admin.start()
        except OSError as e:
            log.error("admin_listen_failed", listen=self.settings.admin.listen, error=str(e))
            return EXIT_ADMIN_LISTEN
        self._session = aiohttp.ClientSession()
        self._snapshot = SettingsSnapshot()
        self._snapshot.write(self.settings)
        log.info("supervisor_started", workers=len(self.slots), hooks=len(self.settings.hooks))
        for warning in config_warnings(self.settings):
            log.warning("config_warning", detail=warning)
        try:
            async with asyncio.TaskGroup() as tg:
                keepers = [
                    tg.create_task(self._keep(slot), name=f"worker-{slot.index}")
                    for slot in self.slots
                ]
                others = [
                    tg.create_task(self._watch(), name="readiness"),
                    tg.create_task(self._watch_balance(), name="balance"),
                    tg.create_task(self._reloader(), name="reloader"),
                ]
                if self.systemd.enabled:
                    reporting = tg.create_task(self._report_to_systemd(), name="systemd")
                    reporting.add_done_callback(self._on_reporting_done)
                    others.append(reporting)
                await asyncio.wait(keepers)
                await cancel_until_done(others)
        finally:
            self._snapshot.remove()
            await self._session.close()
            await self.admin.stop()
            self.systemd.close()
            if self._hard_deadline is not None:
                self._hard_deadline.cancel()
        log.info("supervisor_stopped", statuses={str(i): s for i, s in self._statuses.items()})
        return self._exit_status()

    def _exit_status(self) -> int:
        if self._failure is not None:
            return EXIT_FAILED
        for index in sorted(self._statuses):
            status = self._statuses[index]
            if status != 0:
                return 128 - status if status < 0 else status
        return 0

    async def _keep(self, slot: WorkerSlot) -> None:
        """Run worker ``slot`` until the deployment stops, restarting it (see the module
        docstring); records its last exit status."""
        quick_exits = 0
        start_failures = 0
        while not self.stopping.is_set():
            await slot.start(self._command, os.environ, str(self._snapshot.path))
            if self.stopping.is_set():  # asked while it started
                slot.stop()
            status = await slot.wait()
            if self.stopping.is_set():
                # Only an exit on the way out is the deployment's status: a worker that died
                # before, whose restart the stop cancelled, is not (it made a clean SIGTERM
                # during the backoff exit 137).
                self._statuses[slot.index] = status
                log.info("worker_exited", worker=slot.index, pid=slot.pid, status=status)
                return
            self.merger.retire(slot.name)
            lived_s = time.monotonic() - slot.started_at
            quick_exits = 0 if lived_s >= STABLE_S else quick_exits + 1
            failed_at_start = not slot.became_ready and status > 0
            start_failures = start_failures + 1 if failed_at_start else 0
            log.error("worker_exited_unexpectedly", worker=slot.index, pid=slot.pid,
                      status=status, lived_s=round(lived_s, 1), ready_before=slot.became_ready,
                      cause=slot.cause or None)  # fmt: skip
            if start_failures >= MAX_START_FAILURES:
                self._statuses[slot.index] = status
                self._give_up(slot, status)
                return
            delay_s = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** max(0, quick_exits - 1))
            self.metrics.worker_restarts.labels(slot.name).inc()
            log.warning("worker_restarting", worker=slot.index, in_s=delay_s)
            with suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self.stopping.wait()

    def _give_up(self, slot: WorkerSlot, status: int) -> None:
        cause = slot.cause or f"worker {slot.index} exited with status {status} before it was ready"
        self._failure = (cause, slot.hint)
        details = {"hint": slot.hint} if slot.hint else {}
        log.error("daemon_failed", error=cause, worker=slot.index,
                  detail=f"{MAX_START_FAILURES} failed starts in a row; not restarting",
                  **details)  # fmt: skip
        self.request_stop()

    # -- readiness, metrics -------------------------------------------------------------------

    async def readiness(self) -> list[str]:
        """Why the deployment is not ready (empty: every worker is), asking them now."""
        await asyncio.gather(*(slot.check(self._client()) for slot in self.slots))
        return self._reasons()

    def not_ready_reasons(self) -> list[str]:
        """Why the deployment is not ready, from the last look at the workers."""
        return self._reasons()

    def _reasons(self) -> list[str]:
        reasons = ["shutting down"] if self.stopping.is_set() else []
        for slot in self.slots:
            if not slot.running:
                reasons.append(f"worker {slot.index}: not running")
            elif not slot.ready:
                reasons += [f"worker {slot.index}: {reason}" for reason in slot.reasons]
        self.metrics.workers_ready.set(sum(slot.ready for slot in self.slots))
        self.metrics.ready.set(0 if reasons else 1)
        return reasons

    async def _watch(self) -> None:
        while True:
            await self.readiness()
            await asyncio.sleep(POLL_S)

    async def _watch_balance(self) -> None:
        """Every ``BALANCE_POLL_S``: the workers' metrics scraped, each one's event
        partitions into ``hookrelay_worker_partitions`` (0 for a worker that does not
        answer), and, while every worker is ready, a warning when the spread is uneven
        (``worker_balance``)."""
        watch = BalanceWatch(len(self.slots))
        while True:
            await asyncio.sleep(BALANCE_POLL_S)
            # A worker that dies (kill -9) takes the increments since its last scrape with
            # it: scraped here too, what a deployment's totals can lose is BALANCE_POLL_S
            # worth, however rarely Prometheus scrapes.
            await self._scrape_workers()
            answers = await self._by_worker("/v1/partitions")
            counts = partitions_by_worker(answers, len(self.slots))
            for worker, count in counts.items():
                self.metrics.worker_partitions.labels(str(worker)).set(count)
            if not all(slot.ready for slot in self.slots):
                continue
            verdict = watch.observe({w: n for w, n in counts.items() if w in answers})
            if verdict == "uneven":
                log.warning("worker_partitions_uneven", partitions=Spread.of(counts).describe(),
                            hint=UNEVEN_HINT)  # fmt: skip
            elif verdict == "even":
                log.info("worker_partitions_even", partitions=Spread.of(counts).describe())

    async def exposition(self) -> bytes:
        """``/metrics``: every worker scraped now and merged (``ops.metrics_merge``); a
        worker that does not answer counts with what it answered last."""
        await self._scrape_workers()
        self._reasons()
        return self.merger.merged(self.metrics.render())

    async def _scrape_workers(self) -> None:
        """Keep every answering worker's exposition in the merger."""

        async def scrape(slot: WorkerSlot) -> None:
            try:
                status, text = await slot.ask(self._client(), "GET", "/metrics")
            except (WorkerGoneError, aiohttp.ClientError, TimeoutError):
                return
            if status == 200:
                self.merger.update(slot.name, text)

        await asyncio.gather(*(scrape(slot) for slot in self.slots))

    # -- systemd ------------------------------------------------------------------------------

    def _status_line(self, reasons: list[str]) -> str:
        if reasons:
            return "not ready: " + "; ".join(reasons)
        topics = ", ".join(self.settings.kafka.topics)
        return (
            f"ready: {len(self.slots)} workers consuming {topics}, {len(self.settings.hooks)} hooks"
        )

    async def _ping_watchdog(self, interval_s: float) -> None:
        """WATCHDOG=1 every ``interval_s`` (half the timeout) while every running worker
        answered within the timeout: a worker whose loop is stuck stops the pings, and
        systemd restarts the service, as it would restart one daemon whose loop is stuck."""
        timeout_s = interval_s * 2
        while True:
            now = time.monotonic()
            stuck = [
                slot.index
                for slot in self.slots
                if slot.running and now - max(slot.answered_at, slot.started_at) > timeout_s
            ]
            if stuck:
                log.warning("watchdog_withheld", workers_not_answering=stuck)
            else:
                self.systemd.watchdog()
            await asyncio.sleep(interval_s)

    # -- reload -------------------------------------------------------------------------------

    async def _reloader(self) -> None:
        await serve_reloads(self._reload_requested, self.stopping, self.reload)

    async def reload(self) -> dict[str, Any]:
        """Load the files once; if valid, have every worker reload them, and apply the
        supervisor's own part (logging, the admin token). Raises ``ConfigError`` (logged,
        counted) when invalid: then no worker reloads."""
        async with self._reload_lock:
            with self.systemd.reloading():
                try:
                    new = load_settings(self.settings.source_file)
                except ConfigError as e:
                    self.metrics.config_reloads.labels("failure").inc()
                    self.metrics.config_last_reload_successful.set(0)
                    log.error("config_reload_failed", errors=[str(i) for i in e.issues],
                              hint="the running configuration stays in force; no worker "
                              "reloaded")  # fmt: skip
                    raise
                plan = plan_reload(self.settings, new)
                self._snapshot.write(plan.settings)  # what every worker reloads, and restarts, with
                await asyncio.gather(*(self._reload_worker(slot) for slot in self.slots))
                self._apply(plan.settings)
        log.info("config_reloaded", **plan.summary())
        if plan.restart_required:
            log.warning("config_reload_needs_restart", keys=list(plan.restart_required),
                        hint="these keys keep their running values until a restart")  # fmt: skip
        return plan.summary()

    async def _reload_worker(self, slot: WorkerSlot) -> None:
        try:
            status, answer = await slot.ask(self._client(), "POST", "/v1/reload")
        except WorkerGoneError:
            if slot.running:  # starting: it may have read the files before they changed
                slot.signal(signal.SIGHUP)  # held until its reloader runs (early_signals)
                log.info("worker_reload_by_signal", worker=slot.index, detail="still starting")
            else:
                log.info("worker_reload_at_start", worker=slot.index,
                         detail="not running; it starts with the accepted one")  # fmt: skip
            return
        except (aiohttp.ClientError, TimeoutError) as e:
            log.error("worker_reload_failed", worker=slot.index, error=f"{type(e).__name__}: {e}")
            return
        if status != 200:
            detail = answer.get("detail") if isinstance(answer, dict) else None
            log.error("worker_reload_failed", worker=slot.index, status=status, detail=detail)

    def _apply(self, settings: Settings) -> None:
        register_settings_secrets(settings)
        if settings.logging != self.settings.logging:
            configure_logging(settings.logging.level, settings.logging.format)
        self.admin.set_token(settings.admin.token)
        self.settings = settings
        self.metrics.config_reloads.labels("success").inc()
        self.metrics.config_last_reload_successful.set(1)
        self.metrics.config_last_reload_success.set_to_current_time()
