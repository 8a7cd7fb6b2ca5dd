"""The ``hookrelay ingest`` process: Logto's webhooks and the batch API into Kafka.

::

    Logto ──POST /logto/<id>──▶ ingest listener ──▶ IngestWriter ──acks=all──▶ event topics
    producer ──POST /v1/events──┘  (GuardedListener)                  ▲
    kubelet, Prometheus ──▶ metrics listener: /metrics /healthz /readyz │ probe every 3 s

Two listeners: ``ingest.listen`` faces the senders (TLS optional; idle and request timeouts;
a connection cap), ``ingest.metrics_listen`` serves the probes and metrics off that face.
Readiness (``/readyz``, ``hookrelay_ready``) is true while the cluster answers the writer's
metadata probe. The topics written are created once connected when ``kafka.create_topics``
allows; one still missing is named among the reasons (writes to it would fail).

Start-up does not wait for Kafka: the listeners come up first and answer 503 until the
writer reached the cluster, so Logto's "send test" says what is wrong. Shutdown (SIGTERM):
not ready at once, stop accepting, give requests in progress ``write_timeout_s`` to be
answered, then flush and close the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from aiohttp import web
from aiokafka.errors import KafkaError

from hookrelay.config import Settings
from hookrelay.config.fields import split_host_port
from hookrelay.config.ingest import IngestSettings
from hookrelay.ingest.batch import BatchApi, BatchRules
from hookrelay.ingest.endpoint import IngestEndpoint, Source
from hookrelay.ingest.http import Limits, add_unmatched_route
from hookrelay.ingest.writer import IngestWriter
from hookrelay.kafka.topics import create_event_topics
from hookrelay.net.tls import server_ssl_context
from hookrelay.ops.admin import AdminServer
from hookrelay.ops.listener import GuardedListener
from hookrelay.ops.logs import get_logger
from hookrelay.ops.metrics import IngestMetrics

log = get_logger("hookrelay.ingest")

PROBE_INTERVAL_S: Final = 3.0
"""Seconds between metadata probes of the cluster (readiness)."""
PROBE_TIMEOUT_S: Final = 5.0


class IngestService:
    """Both listeners and the writer of one ``hookrelay ingest`` process; ``run(stop)`` serves
    until ``stop`` is set. ``settings.ingest`` must be set (``IngestSettings``); ports 0 pick
    free ones, which ``ingest_port``/``metrics_port`` tell once started."""

    def __init__(self, settings: Settings) -> None:
        assert settings.ingest is not None, "the command refuses a file without it"
        ingest: IngestSettings = settings.ingest
        self.settings = settings
        self._ingest = ingest
        self.metrics = IngestMetrics()
        max_event_bytes = settings.delivery.max_event_bytes
        self.writer = IngestWriter(settings.kafka, max_event_bytes)
        self.sources = [
            Source(s.id, s.route, s.signing_key.get_secret_value(),
                   settings.event_topic(s.topic), s.key)
            for s in ingest.sources
        ]  # fmt: skip
        limits = Limits(max_event_bytes, ingest.request_timeout_s, ingest.write_timeout_s)
        app = web.Application()
        IngestEndpoint(self.sources, self.writer.write, limits, self.metrics).add_routes(app)
        self.topics = {source.topic for source in self.sources}
        if ingest.batch is not None:
            batch = ingest.batch
            rules = BatchRules(
                batch.token.get_secret_value(), settings.event_topic(batch.topic), batch.key,
                batch.max_events, max_event_bytes,
            )  # fmt: skip
            batch_limits = Limits(
                batch.max_request_bytes, ingest.request_timeout_s, ingest.write_timeout_s
            )
            BatchApi(rules, self.writer.write_many, batch_limits, self.metrics).add_routes(app)
            self.topics.add(rules.topic)
        add_unmatched_route(app, self.metrics)
        tls = ingest.tls
        self._listener = GuardedListener(
            app, *_host_port(ingest.listen), idle_timeout_s=ingest.idle_timeout_s,
            max_connections=ingest.max_connections,
            on_close=lambda reason: self.metrics.connections_closed.labels(reason).inc(),
            ssl_context=server_ssl_context(tls.cert_file, tls.key_file) if tls else None,
            shutdown_timeout_s=ingest.write_timeout_s + 1.0,
        )  # fmt: skip
        self._admin = AdminServer(*_host_port(ingest.metrics_listen), self.metrics, self.reasons)
        self._missing_topics: list[str] = []
        self._stopping = False
        # Read at every scrape: otherwise only a GET /readyz would set it, and nothing polls
        # that under systemd (a live-scrape test found hookrelay_ready stuck at 0).
        self.metrics.ready.set_function(lambda: 0.0 if self.reasons() else 1.0)

    @property
    def ingest_port(self) -> int:
        return self._listener.port

    @property
    def metrics_port(self) -> int:
        return self._admin.port

    def reasons(self) -> list[str]:
        """Why the process is not ready; empty when it is."""
        if self._stopping:
            return ["stopping"]
        reasons = []
        if self.writer.last_error is not None:
            reasons.append(f"kafka: {self.writer.last_error}")
        reasons.extend(f"kafka: topic {topic} does not exist" for topic in self._missing_topics)
        return reasons

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down in order. Raises ``OSError`` when a
        listen address cannot be bound."""
        await self._admin.start()
        try:
            await self._listener.start()
        except BaseException:
            await self._admin.stop()
            raise
        log.info("ingest_listening", listen=self._ingest.listen, port=self.ingest_port,
                 sources=[s.id for s in self.sources], batch=self._ingest.batch is not None,
                 tls=self._ingest.tls is not None)  # fmt: skip
        try:
            async with asyncio.TaskGroup() as tasks:
                connecting = tasks.create_task(self._connect_then_probe(), name="ingest-kafka")
                await stop.wait()
                self._stopping = True
                connecting.cancel()
        finally:
            await self._shutdown()

    async def _connect_then_probe(self) -> None:
        await self.writer.connect()
        try:
            await create_event_topics(self.settings.kafka, sorted(self.topics))
        except KafkaError as e:  # the probe below reports the cluster's state
            log.warning("ingest_topics_not_created", error=f"{type(e).__name__}: {e}")
        while True:
            failure = self.writer.failure
            if failure is not None:
                log.error("ingest_producer_failed", error=f"{type(failure).__name__}: {failure}",
                          detail="starting a new producer")  # fmt: skip
                await self.writer.replace(PROBE_TIMEOUT_S)
                log.info("ingest_producer_replaced")
            topics = await self.writer.probe(self.topics, PROBE_TIMEOUT_S)
            if topics is not None:
                missing = sorted(self.topics - topics)
                if missing != self._missing_topics and missing:
                    log.warning("ingest_topics_missing", topics=missing)
                self._missing_topics = missing
            # A failed producer is replaced at once, not at the next probe.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_INTERVAL_S):
                    await self.writer.failed.wait()

    async def _shutdown(self) -> None:
        """Stop taking requests, let those in progress be answered, then close the writer;
        the metrics listener goes last so the last scrape sees the end."""
        log.info("ingest_stopping")
        self._stopping = True
        await self._listener.stop()
        try:
            # Unconfirmed records (answered 503 not_confirmed) get this long to be written;
            # with the cluster away the producer would wait for it indefinitely.
            async with asyncio.timeout(self._ingest.write_timeout_s):
                await asyncio.shield(self.writer.stop())
        except (TimeoutError, KafkaError) as e:
            log.warning("ingest_writer_not_flushed", error=type(e).__name__,
                        detail="records not yet acknowledged were not written")  # fmt: skip
        await self._admin.stop()
        log.info("ingest_stopped")


def _host_port(address: str) -> tuple[str, int]:
    parsed = split_host_port(address)
    assert parsed is not None, "validated with the settings"
    return parsed
