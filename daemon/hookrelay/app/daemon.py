"""The daemon: builds the pipeline, runs its named tasks, handles signals and reloads.

Tasks (in one ``asyncio.TaskGroup``; if any dies unexpectedly, all stop and the daemon
exits non-zero, loudly):

- ``fetch``: the source's poll loop (decode → route → dispatch, or dead-letter);
- ``committer``: periodic offset commits and lag gauges;
- ``kafka-writer``: durable writes to the retry topics and the dead-letter topic;
- ``watchdog``: surfaces a crashed lane worker;
- ``reloader``: applies configuration reloads (SIGHUP, ``POST /v1/reload``);
- ``former-tiers``: every minute, subscribes to retry topics of an earlier schedule or
  prefix that hold this group's retries again (``tiers``; also checked before start);
- ``shutdown``: waits for the stop signal, then runs the shutdown sequence.

The shutdown order is in ``shutdown`` (SIGTERM and SIGINT only set a flag; a second signal,
or ``shutdown.hard_deadline_s`` after the first, exits at once: here). Under systemd the
reporting tasks of ``systemd`` live for the whole of ``run()``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, RequestTimedOutError

from hookrelay.app.admin_view import AdminView
from hookrelay.app.shutdown import (
    ShutdownOrder,
    arm_hard_deadline,
    cancel_until_done,
    note_stop_signal,
)
from hookrelay.app.systemd import SystemdReporting
from hookrelay.config import Settings, config_warnings, load_settings
from hookrelay.delivery.dispatcher import Dispatcher
from hookrelay.delivery.router import Router
from hookrelay.delivery.sender import HttpSender, Sender
from hookrelay.errors import ConfigError
from hookrelay.kafka.backlog import BacklogGauge
from hookrelay.kafka.clients import client_options, close_within, started
from hookrelay.kafka.control import ControlFollower, ControlState
from hookrelay.kafka.deadletter import REASONS as DEAD_LETTER_REASONS
from hookrelay.kafka.offsets import AckTracker
from hookrelay.kafka.outcomes import OutcomeLog
from hookrelay.kafka.source import PROBE_INTERVAL_S, Backpressure, Source
from hookrelay.kafka.tiers import find_former_tiers
from hookrelay.kafka.topics import ensure_topics
from hookrelay.kafka.writer import DurableWriter
from hookrelay.ops.admin import AdminServer
from hookrelay.ops.early_signals import handle_stop_and_reload
from hookrelay.ops.history import History
from hookrelay.ops.logs import (
    configure_logging,
    get_logger,
    register_secrets,
    url_secrets,
)
from hookrelay.ops.metrics import Metrics
from hookrelay.ops.reload import ReloadPlan, plan_reload, serve_reloads
from hookrelay.ops.sdnotify import Notifier
from hookrelay.ops.tracing import start_tracing
from hookrelay.pipeline import Pipeline

log = get_logger("hookrelay.app")

EXIT_ADMIN_LISTEN = 1

FORMER_TIERS_INTERVAL_S = 60.0
NAME_LOOK_EVERY = 10
"""Every how many looks for former tiers one is by name (it lists the cluster's topics)."""
YOUNG_COLLECTION_THRESHOLD = 10_000
"""Net allocations between two young-generation collections once running (see _run_tasks)."""
FIRST_NAME_LOOK_S = 5.0
"""Seconds after start-up before former tiers are also looked for by name (topics the
group has no offsets on, e.g. the shared names of before the upgrade): start-up does not
wait for reading them."""
"""Seconds between looks for retry tiers of an earlier configuration (``tiers``)."""


def _kafka_reason(error: KafkaError) -> str:
    """A readiness reason for a failed connection. aiokafka raises a bare
    ``KafkaConnectionError`` for a wrong address, refused SASL credentials and an untrusted
    TLS certificate alike, and only logs the cause."""
    if isinstance(error, KafkaConnectionError):
        return "KafkaConnectionError (wrong address, SASL credentials or TLS CA? see the log)"
    return type(error).__name__


def register_settings_secrets(settings: Settings) -> None:
    """Tell the log redactor every secret ``settings`` hold: signing keys (of hooks and ingest
    sources), credential header values, the SASL password, the admin and batch tokens, and
    what hook URLs hide (user info, query string), and the tracing exporter's header values
    (a collector's API key)."""
    values = [k.get_secret_value() for h in settings.hooks for k in h.active_signing_keys]
    values += [part for h in settings.hooks for part in url_secrets(h.url)]
    values += [credential for h in settings.hooks for credential in h.credentials]
    values += [value for _name, value in settings.tracing.headers]
    ingest = settings.ingest
    if ingest is not None:
        values += [source.signing_key.get_secret_value() for source in ingest.sources]
    batch_token = ingest.batch.token if ingest is not None and ingest.batch else None
    for secret in (settings.kafka.sasl_password, settings.admin.token, batch_token):
        if secret is not None:
            values.append(secret.get_secret_value())
    register_secrets(values)


class Daemon(AdminView, SystemdReporting, ShutdownOrder):
    """hookrelay's long-running process. ``await Daemon(settings).run()`` returns the exit
    status (0 after a clean shutdown). ``sender`` may be injected for tests, and ``notifier``
    (default: from this process's environment, a no-op outside systemd). A worker process
    (``app.worker``) passes ``load``, how a reload reads the files (default:
    ``load_settings``), and ``on_listening``, told the admin listener's port once bound."""

    def __init__(
        self,
        settings: Settings,
        *,
        sender: Sender | None = None,
        notifier: Notifier | None = None,
        load: Callable[[str], Settings] = load_settings,
        on_listening: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self._load = load
        self._on_listening = on_listening
        self.systemd = notifier or Notifier.from_environment()
        self.metrics = Metrics()
        self.stopping = asyncio.Event()
        self._http = HttpSender(settings.http, settings.delivery, metrics=self.metrics)
        self._sender: Sender = sender or self._http
        k = settings.kafka
        self.producer = self._new_producer()
        self.tracker = AckTracker()
        self.writer = DurableWriter(
            self.producer, self.metrics, dead_letter_topic=settings.dead_letter_topic,
            replace_producer=self._replace_producer,
        )  # fmt: skip
        self.history = History(settings.admin.recent_attempts, settings.admin.keep_response_bodies)
        self.tracer = start_tracing(settings.tracing, group=settings.group_id)
        outcomes = (
            OutcomeLog(self.writer, self.metrics, settings.outcomes, settings.group_id)
            if settings.outcomes.enabled
            else None
        )
        control = ControlState(settings.group_id)
        self.dispatcher = Dispatcher(
            self._sender, self.writer, self.metrics, settings.delivery,
            retry_topics=settings.retry_topics, dead_letter_topic=settings.dead_letter_topic,
            group=settings.group_id, batch_size=k.max_poll_records, history=self.history,
            timeout_s=settings.http.timeout_s, outcomes=outcomes, tracer=self.tracer,
            superseded=control.superseded, control_topic=settings.control_topic,
            blocked=control.blocked,
            events_waiting=lambda: self.source.events_waiting(),  # noqa: PLW0108 - built later
        )  # fmt: skip
        for reason in DEAD_LETTER_REASONS:
            self.metrics.dead_lettered.labels(reason)  # exported at 0 from the start
        self.dispatcher.set_hooks(settings.hooks)
        self.control = ControlFollower(
            settings, control, self.dispatcher.set_paused, self.dispatcher.retry_held_now
        )
        self._control_loaded = False
        self._control_created = False  # by this start: empty, nothing to read before consuming
        self.pipeline = Pipeline(
            settings, self.tracker, self.dispatcher, self.writer, self.metrics,
            outcomes=outcomes, control=self.control.state,
        )  # fmt: skip
        d = settings.delivery
        backpressure = Backpressure(self.dispatcher.load, d.resume_below / d.max_in_flight)
        self.source = Source(
            k, self.tracker, self.metrics, backpressure,
            retry_topics=settings.consumed_retry_topics, revoke_timeout_s=settings.shutdown.grace_s,
            due_horizon_s=d.due_horizon_s, release=self.dispatcher.release_revoked,
            caught_up=self.control.caught_up, held_partitions=self.dispatcher.held_partitions,
        )  # fmt: skip
        self.backlog = BacklogGauge(
            settings, self.metrics, self.source.retry_starts, self.control.state.superseded
        )
        self._topics_ready = False
        self._former_tiers_checked = False
        self._draining: set[str] = set()
        self._tiers_examined: dict[Any, int] = {}
        self.admin = AdminServer(
            settings.admin.host,
            settings.admin.port,
            self.metrics,
            self.not_ready_reasons,
            backend=self,
            token=settings.admin.token,
        )
        self._producer_started = False
        self._signals = 0
        self._hard_deadline: threading.Timer | None = None
        self._kafka_error = ""
        self._reload_requested = asyncio.Event()
        self._reload_lock = asyncio.Lock()

    def not_ready_reasons(self) -> list[str]:
        """Why the daemon is not ready (empty list: ready)."""
        reasons = []
        if self.stopping.is_set():
            reasons.append("shutting down")
        reasons.extend(self.source.membership_problems())
        if not self.source.started:
            reasons.append("consumer not started")
        elif not self.source.joined:
            reasons.append("waiting to join the consumer group")
        if not self._producer_started:
            reasons.append("producer not started")
        if self._kafka_error:
            reasons.append(f"kafka unreachable: {self._kafka_error}")
        elif self.source.started and self.source.probe_failing:
            reasons.append("kafka unreachable: metadata request failed")
        elif self.source.missing_topics:
            reasons.append("event topics missing: " + ", ".join(self.source.missing_topics))
        elif self.source.started and time.monotonic() - self.source.last_contact_ok > 15.0:
            reasons.append("no answer from the Kafka cluster in the last 15 s")
        return reasons

    def _new_producer(self) -> AIOKafkaProducer:
        k = self.settings.kafka
        return AIOKafkaProducer(
            **client_options(k, "producer"),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=int(k.request_timeout_s * 1000),
            # Room for the largest accepted event plus the retry/dead-letter headers.
            max_request_size=max(1_048_576, self.settings.delivery.max_event_bytes + 65_536),
        )

    async def _replace_producer(self) -> AIOKafkaProducer:
        """A started new producer in place of one that writes nothing more (the durable
        writer asks: ``kafka.writer``); the old one is closed, its unsent records failed.
        Raises the client's error when the cluster cannot be reached."""
        new = await started(self._new_producer())
        old, self.producer = self.producer, new
        await close_within(old, 5.0)
        return new

    def request_stop(self) -> None:
        """Begin a graceful shutdown and arm the hard deadline; idempotent."""
        if self.stopping.is_set():
            return
        log.info("shutdown_requested", grace_s=self.settings.shutdown.grace_s)
        self.systemd.stopping(
            f"stopping: draining deliveries for up to {self.settings.shutdown.grace_s:g} s"
        )
        self.stopping.set()
        self._hard_deadline = arm_hard_deadline(self.settings.shutdown.hard_deadline_s)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        note_stop_signal(signum, self._signals)
        self.request_stop()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT only set the stop flag (second one: immediate exit); SIGHUP
        asks for a reload (also one that arrived during start-up, see ``early_signals``)."""
        # The reload itself runs in the supervised "reloader" task.
        handle_stop_and_reload(self._on_signal, self._on_sighup)

    def _on_sighup(self) -> None:
        log.info("signal_received", signal="SIGHUP")
        self._reload_requested.set()

    # -- hot reload (see the reload module) -------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration files and apply what may change live; return
        ``ReloadPlan.summary()``. Raises ``ConfigError`` when the files are invalid: the
        running configuration stays, the error is logged with its file and line, and
        ``hookrelay_config_reloads_total{result="failure"}`` counts it."""
        async with self._reload_lock:
            with self.systemd.reloading():
                try:
                    new = self._load(self.settings.source_file)
                except ConfigError as e:
                    self.metrics.config_reloads.labels("failure").inc()
                    self.metrics.config_last_reload_successful.set(0)
                    log.error("config_reload_failed", errors=[str(i) for i in e.issues],
                              hint="the running configuration stays in force")  # fmt: skip
                    raise
                plan = plan_reload(self.settings, new)
                self._apply(plan)
        return plan.summary()

    def _apply(self, plan: ReloadPlan) -> None:
        """Swap in the new hooks (lanes and routes in one step: no await in between)."""
        settings = plan.settings
        register_settings_secrets(settings)
        if settings.logging != self.settings.logging:
            configure_logging(settings.logging.level, settings.logging.format)
        self.dispatcher.set_hooks(settings.hooks)
        self.backlog.set_hooks(frozenset(h.id for h in settings.hooks))
        self.pipeline.router = Router(settings.hooks)
        self.admin.set_token(settings.admin.token)
        self.settings = settings
        self.metrics.config_reloads.labels("success").inc()
        self.metrics.config_last_reload_successful.set(1)
        self.metrics.config_last_reload_success.set_to_current_time()
        log.info("config_reloaded", **plan.summary())
        if plan.restart_required:
            log.warning("config_reload_needs_restart", keys=list(plan.restart_required),
                        hint="these keys keep their running values until a restart")  # fmt: skip
        for warning in config_warnings(settings):
            log.warning("config_warning", detail=warning)

    async def _reloader(self) -> None:
        """Serve SIGHUP: one reload per burst of signals; a refused file is already logged."""
        await serve_reloads(self._reload_requested, self.stopping, self.reload)

    async def run(self) -> int:
        """Start everything, run until stopped, shut down in order; return the exit status.
        Raises ``RuntimeError`` (after the shutdown) when a systemd reporting task died."""
        reporting = None
        if self.systemd.enabled:
            reporting = asyncio.create_task(self._report_to_systemd(), name="systemd")
            reporting.add_done_callback(self._on_reporting_done)
        try:
            status = await self._serve()
        finally:
            if reporting is not None:
                reporting.cancel()
                await asyncio.wait({reporting})
            self.systemd.close()
        if reporting is not None and not reporting.cancelled() and reporting.exception():
            raise RuntimeError("systemd reporting failed") from reporting.exception()
        return status

    async def _serve(self) -> int:
        try:
            await self.admin.start()
        except OSError as e:
            log.error("admin_listen_failed", listen=self.settings.admin.listen, error=str(e))
            await self._close()
            return EXIT_ADMIN_LISTEN
        if self._on_listening is not None:
            self._on_listening(self.admin.port)
        try:
            if await self._start_clients():
                await self._run_tasks()
        finally:
            await self._close()
            if self._hard_deadline is not None:
                self._hard_deadline.cancel()
        log.info("daemon_stopped")
        return 0

    async def _run_tasks(self) -> None:
        log.info("daemon_started", hooks=len(self.settings.hooks))
        # Everything built so far (modules, settings, clients: ~60,000 objects) lives as long
        # as the process. Moving it out of the collector's reach keeps each full collection
        # to the objects of in-flight work: one took ~22 ms otherwise, a pause every
        # delivery queued at that moment waited out (the bench's p99 latency).
        gc.freeze()
        # Python's default, a young collection every 700 net allocations, cost 2.1 % of the
        # daemon's CPU in the bench's 1-hook run (520 collections for 60,000 deliveries);
        # every 10,000, 0.6 %. A delivery's garbage is acyclic, freed without the
        # collector; what is cyclic just waits a little longer (10,000 objects at most).
        _young, older, oldest = gc.get_threshold()
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
        async with asyncio.TaskGroup() as tg:
            fetch = tg.create_task(
                self.source.run(self.pipeline.handle, self.stopping), name="fetch"
            )
            committer = tg.create_task(self.source.run_committer(self.stopping), name="committer")
            probe = tg.create_task(self._probe(), name="cluster-probe")
            writer = tg.create_task(self.writer.run(), name="kafka-writer")
            watchdog = tg.create_task(self._watchdog(), name="watchdog")
            reloader = tg.create_task(self._reloader(), name="reloader")
            tiers = tg.create_task(self._watch_former_tiers(), name="former-tiers")
            control = tg.create_task(self.control.run(), name="control")
            backlog = tg.create_task(self.backlog.run(), name="retry-backlog")
            tasks = (fetch, committer, probe, writer, watchdog, reloader, tiers, control, backlog)
            try:
                await self.stopping.wait()
            except asyncio.CancelledError:
                # A task failed: the TaskGroup cancels the others once, and a library that
                # swallows that one cancellation (aiokafka's close: see kafka.clients.closed)
                # would hold the exit forever, the failure never reported.
                await cancel_until_done(tasks)
                raise
            # Step 1: no new records. The poll loop ends after its current fetch (≤ 0.2 s)
            # and hands nothing more to the lanes, so draining never races new deliveries.
            done, _ = await asyncio.wait({fetch}, timeout=5.0)
            if not done:
                fetch.cancel()
            await self._drain()
            # The final commit happens in _close(); a periodic one stuck on an absent
            # cluster must not hold the shutdown.
            await cancel_until_done(tasks)

    async def _start_clients(self) -> bool:
        """Open the HTTP session, then connect to Kafka, retrying with backoff while the
        cluster is unreachable (the daemon stays up and reports not ready meanwhile).
        Returns False when asked to stop before Kafka answered."""
        await self._http.start()
        backoff_s = 0.5
        while not self.stopping.is_set():
            try:
                if not self._topics_ready:
                    created = await ensure_topics(self.settings)
                    self._control_created = self.settings.control_topic in created
                    self._topics_ready = True
                if not self._former_tiers_checked:
                    await self._drain_former_tiers()
                    self._former_tiers_checked = True
                if not self._control_loaded:  # before any record: a paused hook stays paused
                    await self.control.load(created=self._control_created)
                    self._control_loaded = True
                if not self._producer_started:
                    await self.producer.start()
                    self._producer_started = True
                await self.source.start()
            except KafkaError as e:
                self._kafka_error = _kafka_reason(e)
                log.warning(
                    "kafka_unreachable",
                    bootstrap_servers=list(self.settings.kafka.bootstrap_servers),
                    error=f"{type(e).__name__}: {e}",
                    retry_in_s=backoff_s,
                )
                with suppress(TimeoutError):
                    async with asyncio.timeout(backoff_s):
                        await self.stopping.wait()
                backoff_s = min(backoff_s * 2, 10.0)
                continue
            self._kafka_error = ""
            return True
        return False

    async def _watch_former_tiers(self) -> None:
        """Look for former tiers again every ``FORMER_TIERS_INTERVAL_S``: during a rolling
        update that changes the schedule, old replicas keep writing to tiers the new ones
        did not subscribe to, and what they wrote must not wait for the next restart (the
        old replicas, members of the same group, commit those tiers, so a look at the
        group's offsets finds them). Every ``NAME_LOOK_EVERY``-th look, the first included,
        is also by name, which lists every topic of the cluster. A failed look is logged
        and retried at the next interval."""
        delay_s = FIRST_NAME_LOOK_S  # start-up looked only at topics with group offsets
        for look in itertools.count():
            await asyncio.sleep(delay_s)
            delay_s = FORMER_TIERS_INTERVAL_S
            try:
                await self._drain_former_tiers(by_name=look % NAME_LOOK_EVERY == 0)
            except (KafkaError, TimeoutError) as e:
                log.warning("former_retry_tiers_check_failed", error=f"{type(e).__name__}: {e}")

    async def _drain_former_tiers(self, *, by_name: bool = False) -> None:
        """Subscribe to retry topics of an earlier schedule or prefix that still hold this
        group's retries (``tiers``). Raises ``KafkaError`` while the cluster is unreachable;
        a refusal (no permission to describe the group) is logged and start-up goes on."""
        try:
            former = await find_former_tiers(self.settings, self._tiers_examined, by_name=by_name)
        except (KafkaConnectionError, RequestTimedOutError, TimeoutError):
            raise
        except KafkaError as e:
            log.warning("former_retry_tiers_unknown", error=f"{type(e).__name__}: {e}",
                        hint="allow this principal to describe its consumer group, or "
                        "drain old retry topics before changing retry settings")  # fmt: skip
            return
        drained = self._draining - {tier.topic for tier in former}
        if drained:
            # Every retry they held is settled (committed up to their end): unsubscribed, so
            # deleting one is safe. A rolling update's old replica that writes to one again
            # gets it found again by the next look.
            self._draining -= drained
            self.source.remove_retry_topics(drained)
            log.info("former_retry_tiers_drained", topics=sorted(drained))
        topics = [tier.topic for tier in former if tier.topic not in self._draining]
        if not topics:
            return
        self._draining.update(topics)
        log.warning(
            "former_retry_tiers_draining",
            pending={tier.topic: tier.pending for tier in former if tier.topic in topics},
            hint="retry topics of an earlier retry_schedule_s or retry_topic_prefix still "
            "hold retries; they are served as they fall due",
        )
        self.pipeline.add_retry_topics(topics)
        self.source.add_retry_topics(topics)

    async def _probe(self) -> None:
        """Every few seconds: ask the cluster for metadata, refresh lag and readiness."""
        while True:
            await self.source.probe()
            await self.source.update_lag()
            self.metrics.ready.set(0 if self.not_ready_reasons() else 1)
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.dispatcher.check_health()
            self.dispatcher.prune_retired()
