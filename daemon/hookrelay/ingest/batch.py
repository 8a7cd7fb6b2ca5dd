"""The batch API, ``POST /v1/events``: events from producers that cannot run a Kafka client.

A request carries ``Authorization: Bearer <ingest.batch.token>`` and either a JSON array of
events (``Content-Type: application/json``) or JSON lines, one event per line
(``application/x-ndjson`` or ``application/jsonl``; blank lines are skipped). Each event is
what ``config/event.schema.json`` describes (a ``hookId`` member, if any, is cut out as on the
Logto routes). Every event is written byte for byte as sent (an array's elements are cut
out of the body, ``array_elements``).

**Validation is all or nothing per request**: every event is checked with the daemon's own
decoder first, and if any is invalid nothing is written and the answer lists each invalid one
(``400``, ``{"reason": "invalid_events", "errors": [{"index", "line", "reason", "detail"}]}``;
``line`` only for JSON lines). A producer fixes or drops those and sends the request again.

**Writing is per event**: the events of a valid request are written in order, and the answer
comes once the broker acknowledged each: ``200 {"written": n}``; or, when some were not,
``503`` with ``Retry-After`` and ``{"reason", "written": k, "not_written": [index, ...],
"unconfirmed": [index, ...]}``. ``not_written`` events were not queued (the cluster away, or
refused by the broker): send them again. ``unconfirmed`` ones were queued but not
acknowledged within ``write_timeout_s``: the producer keeps them and may still write them
(``writer``), so sending them again may queue them twice.

Other answers: ``401`` without the right token, ``415`` another media type, ``413`` a body
over ``max_request_bytes`` or more than ``max_events`` events, ``408`` a body slower than
``request_timeout_s``, ``400`` a body that is no JSON array (``not_array``) or has no events
(``empty``).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web
from aiokafka.errors import MessageSizeTooLargeError

from hookrelay.config.ingest import BATCH_PATH
from hookrelay.errors import InvalidEventError
from hookrelay.ingest.http import (
    RETRY_AFTER_S,
    Limits,
    RefusalLog,
    RefusedError,
    counted,
    expect_continue,
    read_body_in_time,
    refuse_encoded,
)
from hookrelay.ingest.records import AUTO, event_record
from hookrelay.ops.metrics import IngestMetrics

WriteMany = Callable[
    [Sequence[tuple[str, bytes | None, bytes]], float], Awaitable[list[BaseException | None]]
]
"""Writes records (topic, key, value) in order within a timeout (seconds); per record None
once acknowledged, a ``TimeoutError`` when not acknowledged in time (it may still be
written), or the error that kept it from being written (``writer.IngestWriter.write_many``)."""

THREAD_ABOVE_BYTES: Final = 262_144
"""A JSON array this large or larger is split on a worker thread."""
LINES_TYPES: Final = frozenset({"application/x-ndjson", "application/jsonl"})
SOURCE_LABEL: Final = "batch"


@dataclass(frozen=True, slots=True)
class BatchRules:
    """``token`` the requests must carry; where events go (``topic``, ``key_rule``); how many
    one request may carry (``max_events``) and how large each may be (``max_event_bytes``)."""

    token: str
    topic: str
    key_rule: str = AUTO
    max_events: int = 1000
    max_event_bytes: int = 1_000_000


@dataclass(frozen=True, slots=True)
class _Item:
    raw: bytes
    line: int | None  # 1-based line of a JSON-lines body


class BatchApi:
    """The ``POST /v1/events`` route, writing through ``write_many``."""

    def __init__(
        self, rules: BatchRules, write_many: WriteMany, limits: Limits, metrics: IngestMetrics
    ) -> None:
        self._rules = rules
        self._expected = f"Bearer {rules.token}".encode()
        self._write_many = write_many
        self._limits = limits
        self._metrics = metrics
        self._refusals = RefusalLog()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(
            BATCH_PATH, counted(self._metrics, SOURCE_LABEL, self._handle),
            expect_handler=functools.partial(expect_continue, limit=self._limits.max_body_bytes),
        )  # fmt: skip

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            items = await self._items(request)
            records = self._records(items)
            return await self._write(records)
        except RefusedError as refused:
            self._refusals.note(SOURCE_LABEL, refused, request.remote)
            return refused.response()

    async def _items(self, request: web.Request) -> list[_Item]:
        """The events of an authorised request, each as bytes; raises ``RefusedError``."""
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, self._expected):
            raise RefusedError(
                401, "unauthorized", "send Authorization: Bearer <ingest.batch.token>",
                {"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        lines = request.content_type in LINES_TYPES
        if not lines and request.content_type != "application/json":
            raise RefusedError(
                415, "unsupported_media_type",
                "send application/json (an array) or application/x-ndjson (JSON lines)",
            )  # fmt: skip
        refuse_encoded(request)
        body = await read_body_in_time(request, self._limits)
        self._metrics.request_bytes.labels(SOURCE_LABEL).inc(len(body))
        rules = self._rules
        if lines:
            items = _json_lines(body)
        else:
            # Large bodies are split on a thread, so the event loop keeps answering meanwhile.
            split = functools.partial(_array_items, body, rules.max_events, rules.max_event_bytes)
            items = split() if len(body) < THREAD_ABOVE_BYTES else await asyncio.to_thread(split)
        if not items:
            raise RefusedError(400, "empty", "the request holds no events")
        if len(items) > rules.max_events:
            raise _too_many(rules.max_events)
        return items

    def _records(self, items: list[_Item]) -> list[tuple[str, bytes | None, bytes]]:
        """Every item as its record, or ``RefusedError`` (400) listing each invalid one."""
        records: list[tuple[str, bytes | None, bytes]] = []
        errors: list[dict[str, Any]] = []
        rules = self._rules
        for index, item in enumerate(items):
            try:
                _, value, key = event_record(item.raw, rules.max_event_bytes, rules.key_rule)
            except InvalidEventError as e:
                self._metrics.batch_events_refused.labels(e.reason).inc()
                where = (
                    {"index": index} if item.line is None else {"index": index, "line": item.line}
                )
                errors.append({**where, "reason": e.reason, "detail": e.detail})
                continue
            records.append((rules.topic, key, value))
        if errors:
            raise _InvalidEventsError(errors)
        return records

    async def _write(self, records: list[tuple[str, bytes | None, bytes]]) -> web.Response:
        try:
            outcomes = await self._write_many(records, self._limits.write_timeout_s)
        except Exception as e:  # the cluster known to be away: nothing was queued
            outcomes = [e] * len(records)
        unconfirmed = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, TimeoutError)]
        too_large = [
            i for i, outcome in enumerate(outcomes) if isinstance(outcome, MessageSizeTooLargeError)
        ]  # fmt: skip
        not_written = [
            i for i, outcome in enumerate(outcomes)
            if outcome is not None and i not in unconfirmed and i not in too_large
        ]  # fmt: skip
        written = len(records) - len(unconfirmed) - len(not_written) - len(too_large)
        if written:
            self._metrics.events_written.labels(SOURCE_LABEL, self._rules.topic).inc(written)
        if not unconfirmed and not not_written and not too_large:
            return web.json_response({"written": written}, dumps=_dumps)
        first = outcomes[(not_written or unconfirmed or too_large)[0]]
        error = "timeout" if isinstance(first, TimeoutError) else type(first).__name__
        self._metrics.producer_errors.labels(SOURCE_LABEL, error).inc()
        retry = bool(not_written or unconfirmed)  # else only too_large: sending again fails
        status = 503 if retry else 413
        reason = "not_written" if not_written else "not_confirmed" if unconfirmed else "too_large"
        self._refusals.note(SOURCE_LABEL, RefusedError(status, reason, error), None)
        body = {
            "reason": reason,
            "detail": "some events were not written: send those in not_written again; those "
            "in unconfirmed may still be written (sending them again may queue them twice); "
            "those in too_large exceed the topic's max.message.bytes",
            "written": written,
            "not_written": not_written,
            "unconfirmed": unconfirmed,
            "too_large": too_large,
        }
        headers = {"Retry-After": str(RETRY_AFTER_S)} if retry else None
        return web.json_response(body, status=status, headers=headers, dumps=_dumps)


class _InvalidEventsError(RefusedError):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(400, "invalid_events", f"{len(errors)} invalid event(s); nothing written")
        self.errors = errors

    def response(self) -> web.Response:
        body = {"reason": self.reason, "detail": self.detail, "errors": self.errors}
        return web.json_response(body, status=400, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_lines(body: bytes) -> list[_Item]:
    items = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        stripped = line.strip()
        if stripped:
            items.append(_Item(stripped, number))
    return items


def _array_items(body: bytes, limit: int, max_event_bytes: int) -> list[_Item]:
    return [_Item(raw, None) for raw in array_elements(body, limit, max_event_bytes)]


_WHITESPACE: Final = b" \t\r\n"
_STRUCTURAL: Final = re.compile(rb'["{}\[\],]')
_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def array_elements(body: bytes, limit: int, max_element_bytes: int) -> list[bytes]:
    """The bytes of each element of the JSON array ``body``, in order, without surrounding
    whitespace: each is then decoded on its own, so its bytes are written as sent (numbers,
    escapes, member order) and every rule of the decoder applies to it, as to a JSON line.

    Only the array's own structure is read (strings skipped, brackets counted); the work
    stops at the ``limit + 1``-th element and at an element over ``max_element_bytes``, so a
    body of a million tiny elements costs no more than ``limit`` of them. Raises
    ``RefusedError``: 400 ``not_array`` (no ``[`` first), 400 ``not_json`` (unbalanced, an
    unterminated string, an empty element), 413 ``too_many_events``, 413 ``too_large``.
    """
    text = body.strip(_WHITESPACE)
    if not text.startswith(b"["):
        raise RefusedError(400, "not_array", "expected a JSON array of events (or send JSON lines)")
    if not text.endswith(b"]"):
        raise _malformed()
    if not text[1:-1].strip(_WHITESPACE):
        return []
    return _ArrayScanner(text, limit, max_element_bytes).elements()


def _malformed() -> RefusedError:
    return RefusedError(400, "not_json", "the body is not a well-formed JSON array")


class _ArrayScanner:
    """One pass over an array's structural characters (``array_elements``)."""

    def __init__(self, text: bytes, limit: int, max_element_bytes: int) -> None:
        self._text, self._limit, self._max = text, limit, max_element_bytes
        self._end = len(text) - 1  # the closing bracket
        self._start = self._pos = 1
        self._depth = 0
        self._found: list[bytes] = []

    def elements(self) -> list[bytes]:
        while (mark := _STRUCTURAL.search(self._text, self._pos, self._end)) is not None:
            if mark.start() - self._start > self._max:
                raise RefusedError(413, "too_large", f"an event may be {self._max} bytes")
            self._step(mark.group(), mark.start(), mark.end())
        self._close(self._end)
        if self._depth != 0 or not all(self._found):
            raise _malformed()
        return self._found

    def _step(self, char: bytes, at: int, after: int) -> None:
        if char == b'"':
            string = _STRING.match(self._text, at, self._end)
            if string is None:
                raise _malformed()
            self._pos = string.end()
            return
        self._pos = after
        if char in b"[{":
            self._depth += 1
        elif char in b"]}":
            self._depth -= 1
            if self._depth < 0:
                raise _malformed()
        elif self._depth == 0:  # the comma between two elements
            self._close(at)
            self._start = after

    def _close(self, at: int) -> None:
        self._found.append(self._text[self._start : at].strip(_WHITESPACE))
        if len(self._found) > self._limit:
            raise _too_many(self._limit)


def _too_many(limit: int) -> RefusedError:
    return RefusedError(413, "too_many_events", f"a request may hold {limit} events")
