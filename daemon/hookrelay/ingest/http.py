"""What the ingest routes share: reading a body within a size and time limit, refusing a
request with a short JSON reason, and counting every answer.

Every answer other than 2xx carries ``{"reason": ..., "detail": ...}`` and never quotes the
request (its body may hold personal data, its headers a key).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

from hookrelay.ops.logs import get_logger
from hookrelay.ops.metrics import IngestMetrics

log = get_logger("hookrelay.ingest")

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


class RefusalLog:
    """Logs refused requests as ``ingest_request_refused`` warnings (source, status, reason,
    the peer's address), at most one line per (source, reason) per ``window_s``: a line that
    comes after others were held back carries ``suppressed``, how many. A refusal is what an
    operator needs to see after a key rotation in Logto (401s) or during an outage (503s);
    the limit keeps a flood of bad requests from flooding the log. Never a body or a header.
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def note(self, source: str, refused: RefusedError, peer: str | None) -> None:
        key, now = (source, refused.reason), self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self._window_s:
            self._seen[key] = (last[0], last[1] + 1)
            return
        held = {"suppressed": last[1]} if last is not None and last[1] else {}
        self._seen[key] = (now, 0)
        log.warning("ingest_request_refused", source=source, status=refused.status,
                    reason=refused.reason, peer=peer, **held)  # fmt: skip


def answer(
    status: int, reason: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON refusal ``{"reason", "detail"}`` with ``status``."""
    body = orjson.dumps({"reason": reason, "detail": detail})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def not_written(detail: str) -> RefusedError:
    """The 503 of a write that failed, or was refused at once: not written."""
    return RefusedError(503, "not_written", detail, {"Retry-After": str(RETRY_AFTER_S)})


def too_large_for_kafka() -> RefusedError:
    """The 413 of a record the broker refuses for its size (``max.message.bytes``): sending it
    again would fail again."""
    detail = "the event is larger than the Kafka topic accepts (its max.message.bytes)"
    return RefusedError(413, "too_large_for_kafka", detail)


def not_confirmed() -> RefusedError:
    """The 503 of a write the broker did not acknowledge in time: the producer keeps it and
    may still write it (``writer``)."""
    detail = (
        "the broker did not acknowledge the event in time; it stays queued and may still be "
        "written, so sending it again may queue it twice"
    )
    return RefusedError(503, "not_confirmed", detail, {"Retry-After": str(RETRY_AFTER_S)})


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may take: ``max_body_bytes`` (bytes), ``request_timeout_s`` to send
    the body, ``write_timeout_s`` for the broker's acknowledgement."""

    max_body_bytes: int
    request_timeout_s: float = 15.0
    write_timeout_s: float = 5.0


CLIENT_CLOSED: Final = 499
"""Status counted for a client that hung up before its body arrived (nginx's convention);
never sent, as there is no one to send it to."""


def refuse_encoded(request: web.Request) -> None:
    """Refuse a compressed body (415): aiohttp would inflate it before the signature check,
    which must cover the bytes as sent (Logto sends none compressed)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RefusedError(415, "unsupported_encoding", "send the body uncompressed")


async def read_body_in_time(request: web.Request, limits: Limits) -> bytes:
    """``read_body`` bounded by ``limits``: 413 past ``max_body_bytes``, 408 when the body
    takes longer than ``request_timeout_s``, ``CLIENT_CLOSED`` when the client hung up. A
    body that has already arrived (every small one: it comes with the headers) is read
    without arming a timer."""
    try:
        if request.content.is_eof():
            return await read_body(request, limits.max_body_bytes)
        async with asyncio.timeout(limits.request_timeout_s):
            return await read_body(request, limits.max_body_bytes)
    except TimeoutError:
        raise slow_request(limits.request_timeout_s) from None
    except (ConnectionError, RuntimeError) as e:
        # aiohttp's stream raises RuntimeError("Connection closed.") for a lost connection.
        raise RefusedError(CLIENT_CLOSED, "client_closed", "the client hung up") from e


async def expect_continue(request: web.Request, limit: int) -> web.StreamResponse | None:
    """aiohttp's ``Expect: 100-continue`` handler, refusing first what the headers already
    show (a body over ``limit``: 413; a compressed one: 415), so no large body is invited."""
    length = request.content_length
    refused: RefusedError | None = None
    if length is not None and length > limit:
        refused = RefusedError(413, "too_large", f"the body may be {limit} bytes")
    else:
        try:
            refuse_encoded(request)
        except RefusedError as e:
            refused = e
    if refused is not None:
        return refused.response()
    # What aiohttp's own expect handler does from here on.
    expect = request.headers.get("Expect", "")
    if request.version == (1, 1):
        if expect.lower() != "100-continue":
            return answer(417, "expectation_failed", "only Expect: 100-continue is understood")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the 100 is not the answer's first byte
    return None


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


def counted(metrics: IngestMetrics, source: str, handler: Handler) -> Handler:
    """``handler``, counting each answer by ``source`` and status, and its duration. A
    wrapper rather than an aiohttp middleware: the middleware chain cost a few percent of
    the ingest process's CPU per request (bench, issue 14)."""
    by_status: dict[int, Any] = {}
    seconds = metrics.request_seconds.labels(source)

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except Exception:  # aiohttp answers 500: count it, so an alert on 5xx sees it
            count(500, started)
            raise
        count(response.status, started)
        return response

    def count(status: int, started: float) -> None:
        counter = by_status.get(status)
        if counter is None:
            counter = by_status[status] = metrics.requests.labels(source, str(status))
        counter.inc()
        seconds.observe(time.perf_counter() - started)

    return handle


def add_unmatched_route(app: web.Application, metrics: IngestMetrics) -> None:
    """After every other route: answer what none takes, counted as ``UNMATCHED``: 405 with
    ``Allow: POST`` on a served path (every ingest route is a POST), else 404."""
    served = {resource.canonical for resource in app.router.resources()}

    async def unmatched(request: web.Request) -> web.StreamResponse:
        if request.path in served:
            return answer(405, "method_not_allowed", "send POST", {"Allow": "POST"})
        return answer(404, "not_found", "no ingest route at this path")

    app.router.add_route("*", "/{path:.*}", counted(metrics, UNMATCHED, unmatched))
