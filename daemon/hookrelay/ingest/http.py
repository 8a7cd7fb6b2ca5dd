"""What the ingest routes share: reading a body within a size and time limit, refusing a
request with a short JSON reason, and counting every answer.

Every answer other than 2xx carries ``{"reason": ..., "detail": ...}`` and never quotes the
request (its body may hold personal data, its headers a key).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from hookrelay.ops.metrics import IngestMetrics

RETRY_AFTER_S: Final = 5
"""Seconds a sender is asked to wait after a 503."""
UNMATCHED: Final = "unmatched"
"""The ``source`` label of a request no route took (404, 405)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RefusedError(Exception):
    """A request refused with ``status`` before anything is written; ``reason`` is a short
    machine-readable word, ``detail`` a sentence for people."""

    def __init__(
        self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail, self.headers = status, reason, detail, headers

    def response(self) -> web.Response:
        """The answer; after a 408 or 413 the connection is closed (the rest of the body
        may still be on its way)."""
        response = answer(self.status, self.reason, self.detail, self.headers)
        if self.status in (408, 413):
            response.force_close()
        return response


def answer(
    status: int, reason: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON refusal ``{"reason", "detail"}`` with ``status``."""
    body = orjson.dumps({"reason": reason, "detail": detail})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def not_written(detail: str) -> RefusedError:
    """The 503 of a write that failed or timed out, with ``Retry-After``."""
    return RefusedError(503, "not_written", detail, {"Retry-After": str(RETRY_AFTER_S)})


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it exceeds ``limit`` bytes (never more is
    held) whether ``Content-Length`` says so or a chunked body runs over. The caller bounds
    the time (``asyncio.timeout``)."""
    too_large = RefusedError(413, "too_large", f"the body may be {limit} bytes")
    length = request.content_length
    if length is not None and length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def slow_request(timeout_s: float) -> RefusedError:
    """The 408 of a body not sent within ``timeout_s``; its connection is closed."""
    return RefusedError(408, "request_timeout", f"the request took over {timeout_s:g} s to send")


def counting_middleware(metrics: IngestMetrics) -> Middleware:
    """An aiohttp middleware counting each answer by route name (the source id, ``batch``)
    and status, and its duration."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        source = request.match_info.route.name or UNMATCHED
        try:
            response = await handler(request)
        except web.HTTPException as e:  # aiohttp's own 404 and 405
            _observe(metrics, source, e.status, started)
            raise
        _observe(metrics, source, response.status, started)
        return response

    return count


def _observe(metrics: IngestMetrics, source: str, status: int, started: float) -> None:
    metrics.requests.labels(source, str(status)).inc()
    metrics.request_seconds.labels(source).observe(time.perf_counter() - started)
