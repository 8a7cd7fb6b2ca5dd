"""The HTTP endpoint a Logto webhook points at: one ``POST`` route per source, answering 2xx
only once the event is durably written (served by ``service.IngestService``).

A request is checked in this order, and refused at the first failure, before anything is
written (Logto retries nothing, so every refusal is final for that event; its "send test"
button shows the answer):

====  ==============================================================================
405   not ``POST`` (``http.add_unmatched_route`` answers it, with ``Allow: POST``)
415   ``Content-Type`` is not ``application/json`` (Logto sends ``application/json``)
413   the body is larger than ``max_body_bytes``
408   the body did not arrive within ``request_timeout_s`` (the connection is closed)
401   no ``logto-signature-sha-256`` header, or one that does not match the body (HMAC-SHA256
      hex of the raw body with the source's signing key, as Logto signs)
400   the body is no event hookrelay would deliver (the decoder's reasons: ``not_json``, ...)
503   ``not_written``: the cluster is away (refused at once, nothing queued) or the broker
      refused the record; ``not_confirmed``: no acknowledgement within ``write_timeout_s``,
      the record stays queued and may still be written (``writer``). ``Retry-After`` says
      when to try again. A record is all or nothing.
204   written and acknowledged
====  ==============================================================================

The signature is checked before the body is parsed: unauthenticated bytes are never decoded.
Answers name the reason in a short JSON body and never quote the request.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiokafka.errors import MessageSizeTooLargeError

from hookrelay.errors import InvalidEventError
from hookrelay.events.signing import LOGTO_SIGNATURE_HEADER, Signer, verify_logto_signature
from hookrelay.ingest.http import (
    Limits,
    RefusalLog,
    RefusedError,
    counted,
    expect_continue,
    not_confirmed,
    not_written,
    read_body_in_time,
    refuse_encoded,
    too_large_for_kafka,
)
from hookrelay.ingest.records import AUTO, event_record
from hookrelay.ops.metrics import IngestMetrics

Write = Callable[[str, bytes | None, bytes], Awaitable[None]]
"""Writes one record (topic, key, value) and returns once the broker acknowledged it; raises
when it could not."""


@dataclass(frozen=True, slots=True)
class Source:
    """One Logto tenant or instance: the path its webhook posts to, the signing key Logto
    shows for that webhook, the topic its events go to, and how their records are keyed
    (``records.record_key``)."""

    id: str
    path: str
    signing_key: str
    topic: str
    key_rule: str = AUTO


class IngestEndpoint:
    """The routes of every source, writing through ``write``; each route counts its answers
    in ``metrics`` under its source id."""

    def __init__(
        self, sources: list[Source], write: Write, limits: Limits, metrics: IngestMetrics
    ) -> None:
        self._sources = sources
        self._write = write
        self._limits = limits
        self.metrics = metrics

    def add_routes(self, app: web.Application) -> None:
        """One ``POST`` route per source path."""
        for source in self._sources:
            route = _Route(source, self._write, self._limits, self.metrics)
            expect = functools.partial(expect_continue, limit=self._limits.max_body_bytes)
            handler = counted(self.metrics, source.id, route.handle)
            app.router.add_post(source.path, handler, expect_handler=expect)


class _Route:
    """One source's route, with what each request needs made once: the signer and the
    source's metric series."""

    def __init__(
        self, source: Source, write: Write, limits: Limits, metrics: IngestMetrics
    ) -> None:
        self._source = source
        self._write = write
        self._limits = limits
        self._metrics = metrics
        self._signer = Signer(source.signing_key)
        self._refusals = RefusalLog()
        self._bytes = metrics.request_bytes.labels(source.id)
        self._written = metrics.events_written.labels(source.id, source.topic)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._ingest(request)
        except RefusedError as refused:
            self._refusals.note(self._source.id, refused, request.remote)
            return refused.response()

    async def _ingest(self, request: web.Request) -> web.Response:
        source = self._source
        body = await self._signed_body(request)
        try:
            _, value, key = event_record(body, self._limits.max_body_bytes, source.key_rule)
        except InvalidEventError as e:
            raise RefusedError(400, e.reason, e.detail) from e
        try:
            async with asyncio.timeout(self._limits.write_timeout_s):
                await self._write(source.topic, key, value)
        except TimeoutError as e:
            self._metrics.producer_errors.labels(source.id, "timeout").inc()
            raise not_confirmed() from e
        except Exception as e:  # refused at once (the cluster away), or by the broker
            self._metrics.producer_errors.labels(source.id, type(e).__name__).inc()
            if isinstance(e, MessageSizeTooLargeError):
                raise too_large_for_kafka() from e
            raise not_written("the event was not queued; try again") from e
        self._written.inc()
        return web.Response(status=204)

    async def _signed_body(self, request: web.Request) -> bytes:
        """The body, once its media type, size and signature passed; raises ``RefusedError``."""
        if request.content_type != "application/json":
            raise RefusedError(415, "unsupported_media_type", "send Content-Type: application/json")
        refuse_encoded(request)
        body = await read_body_in_time(request, self._limits)
        self._bytes.inc(len(body))
        signature = request.headers.get(LOGTO_SIGNATURE_HEADER)
        if signature is None:
            raise RefusedError(401, "unsigned", f"no {LOGTO_SIGNATURE_HEADER} header")
        if not verify_logto_signature(self._signer, body, signature):
            raise RefusedError(401, "bad_signature", "the signature does not match the body")
        return body
