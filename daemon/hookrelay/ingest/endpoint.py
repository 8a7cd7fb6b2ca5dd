"""The HTTP endpoint a Logto webhook points at: one ``POST`` route per source, answering 2xx
only once the event is durably written (issue 14, in progress: the ``hookrelay ingest``
process that serves it, its Kafka writer, metrics and hardening come next).

A request is checked in this order, and refused at the first failure, before anything is
written (Logto retries nothing, so every refusal is final for that event; its "send test"
button shows the answer):

====  ==============================================================================
405   not ``POST`` (aiohttp answers it, with ``Allow: POST``)
415   ``Content-Type`` is not ``application/json`` (Logto sends ``application/json``)
413   the body is larger than ``max_body_bytes``
401   no ``logto-signature-sha-256`` header, or one that does not match the body (HMAC-SHA256
      hex of the raw body with the source's signing key, as Logto signs)
400   the body is no event hookrelay would deliver (the decoder's reasons: ``not_json``, ...)
503   the write did not finish within ``write_timeout_s`` or failed; ``Retry-After`` says when
      to try again. A write is all or nothing (one record), so nothing partial is left.
204   written and acknowledged
====  ==============================================================================

The signature is checked before the body is parsed: unauthenticated bytes are never decoded.
Answers name the reason in a short JSON body and never quote the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import orjson
from aiohttp import web

from hookrelay.errors import InvalidEventError
from hookrelay.events.signing import LOGTO_SIGNATURE_HEADER, verify_logto_signature
from hookrelay.ingest.records import AUTO, event_record, record_key

Write = Callable[[str, bytes | None, bytes], Awaitable[None]]
"""Writes one record (topic, key, value) and returns once the broker acknowledged it; raises
when it could not."""

RETRY_AFTER_S: Final = 5
"""Seconds a sender is asked to wait after a 503."""


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
    """The routes of every source, writing through ``write``."""

    def __init__(
        self,
        sources: list[Source],
        write: Write,
        *,
        max_body_bytes: int,
        write_timeout_s: float = 10.0,
    ) -> None:
        self._sources = sources
        self._write = write
        self._max_body_bytes = max_body_bytes
        self._write_timeout_s = write_timeout_s

    def add_routes(self, app: web.Application) -> None:
        """One ``POST`` route per source path."""
        for source in self._sources:
            app.router.add_post(source.path, self._handler(source))

    def _handler(self, source: Source) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return await self._ingest(request, source)

        return handle

    async def _ingest(self, request: web.Request, source: Source) -> web.Response:
        try:
            body = await self._signed_body(request, source)
            event, value = event_record(body, self._max_body_bytes)
        except _RefusedError as refused:
            return _answer(refused.status, refused.reason, refused.detail)
        except InvalidEventError as e:
            return _answer(400, e.reason, e.detail)
        key = record_key(value, event.name, source.key_rule)
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await self._write(source.topic, key, value)
        except Exception:  # the broker away, refusing, or slow: the sender tries again
            return _answer(
                503, "not_written", "the event could not be queued; try again",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )  # fmt: skip
        return web.Response(status=204)

    async def _signed_body(self, request: web.Request, source: Source) -> bytes:
        """The body, once its media type, size and signature passed; raises ``_RefusedError``."""
        if request.content_type != "application/json":
            raise _RefusedError(
                415, "unsupported_media_type", "send Content-Type: application/json"
            )
        too_large = _RefusedError(413, "too_large", f"the body may be {self._max_body_bytes} bytes")
        length = request.content_length
        if length is not None and length > self._max_body_bytes:
            raise too_large
        body = await _read_at_most(request, self._max_body_bytes)
        if body is None:  # chunked, or a Content-Length that understated it
            raise too_large
        signature = request.headers.get(LOGTO_SIGNATURE_HEADER)
        if signature is None:
            raise _RefusedError(401, "unsigned", f"no {LOGTO_SIGNATURE_HEADER} header")
        if not verify_logto_signature(source.signing_key, body, signature):
            raise _RefusedError(401, "bad_signature", "the signature does not match the body")
        return body


class _RefusedError(Exception):
    """A request refused before anything is decoded or written."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


async def _read_at_most(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds ``limit`` bytes (never more is held)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(
    status: int, reason: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = orjson.dumps({"reason": reason, "detail": detail})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)
