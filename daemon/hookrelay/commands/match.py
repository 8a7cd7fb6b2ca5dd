"""``hookrelay match``: which hooks one event would reach, with which body and headers.

A dry run of the daemon's own path, with its own code at every step; it sends nothing and
opens no connection:

- the record value (an event file's bytes without surrounding whitespace, as ``produce``
  sends a JSON document) → ``events.decode`` (the daemon's rules and ``delivery.max_event_bytes``);
  an invalid event raises its ``InvalidEventError``, the reason and detail the daemon would
  dead-letter the record with;
- → ``delivery.router.Router`` over the enabled hooks, as the pipeline routes; a second
  ``Router`` over the disabled hooks (as if enabled) names those that would match once enabled;
- → per hook with a payload filter, its verdict from ``delivery.filtering`` (passed, or
  filtered out: skipped; or an evaluation error: dead-lettered ``filter_error``) and the
  value the expression returned;
- → per hook, the body from ``signing.splice_hook_id`` and the headers from
  ``HttpSender.headers`` (whose construction opens no session: ``start`` does that).

What is shown of the headers: signatures (``logto-signature-sha-256``, ``webhook-signature``)
as ``***`` unless asked for (a Logto signature carries no timestamp, so whoever reads it can
replay that body at any time); custom headers whose name says they hold a credential
(``config.fields.CREDENTIAL_HEADER_NAME``: ``Authorization``, ``X-API-Key``, ...) always as
``***``, since their value is in the configuration already and output like this ends up in
tickets and CI logs. URLs are shown as everywhere else (``ops.logs.redacted_url``).
``webhook-id`` is derived from the origin coordinates given (``signing.delivery_id``);
``webhook-timestamp`` is the time of this run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from hookrelay.config import Hook, Settings
from hookrelay.config.fields import CREDENTIAL_HEADER_NAME
from hookrelay.delivery.filtering import EventScreen
from hookrelay.delivery.router import Router
from hookrelay.delivery.sender import HttpSender
from hookrelay.errors import InvalidEventError
from hookrelay.events.decode import decode
from hookrelay.events.filter import FilterVerdict
from hookrelay.events.model import Event, Origin
from hookrelay.events.signing import (
    LOGTO_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    delivery_id,
    hook_id_member,
    splice_hook_id,
)
from hookrelay.events.tracecontext import trace_context
from hookrelay.ops.logs import redacted_url

MASK: Final = "***"
_SIGNATURE_HEADERS: Final = frozenset({LOGTO_SIGNATURE_HEADER, SIGNATURE_HEADER})
_WHITESPACE: Final = b" \t\r\n"  # JSON's, which the decoder strips too


@dataclass(frozen=True, slots=True)
class HookRequest:
    """The request one hook would get: ``webhook_id``, the exact ``body`` bytes, and the
    ``headers`` as ``(name, value)`` pairs in the order they are sent, masked as the module
    docstring says; ``verdict``, its payload filter's (None: the hook has no filter), says
    whether it would be sent at all."""

    hook: Hook
    webhook_id: str
    body: bytes
    headers: tuple[tuple[str, str], ...]
    verdict: FilterVerdict | None = None

    @property
    def sent(self) -> bool:
        """True when the daemon would POST it: the hook is enabled and no filter keeps it out."""
        return self.hook.enabled and (self.verdict is None or self.verdict.passed)


@dataclass(frozen=True, slots=True)
class MatchReport:
    """What ``match_event`` found: the decoded ``event``, one ``HookRequest`` per matching
    hook in configuration order (enabled or not: ``request.hook.enabled``), and how many
    configured hooks do not match (``not_matched``)."""

    event: Event
    requests: tuple[HookRequest, ...]
    not_matched: int
    signatures_shown: bool


def read_value(source: str) -> bytes:
    """The record value in file ``source`` (``-``: standard input), without surrounding JSON
    whitespace (a final newline is no part of the record ``produce`` would send). Raises
    ``OSError``."""
    raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    return raw.strip(_WHITESPACE)


def origin_of(topic: str, partition: int, offset: int) -> Origin:
    """The Kafka coordinates a record is taken to come from; its timestamp is now (epoch ms)."""
    return Origin(topic, partition, offset, int(time.time() * 1000))


def match_event(
    settings: Settings,
    value: bytes,
    key: bytes | None,
    origin: Origin,
    *,
    show_signatures: bool = False,
    headers: Sequence[tuple[str, bytes]] = (),
) -> MatchReport:
    """Decode ``value`` (the record value) with ``key`` and record ``headers`` from
    ``origin`` as the daemon does, route it, and build each matching hook's request (with
    the record's W3C trace context, as the daemon sends it). Raises ``InvalidEventError``
    (reason and detail as the daemon dead-letters with) for an invalid event."""
    trace = trace_context(list(headers))
    event = decode(value, key, origin, settings.delivery.max_event_bytes, trace)
    hooks = matching_hooks(settings.hooks, event.name)
    sender = HttpSender(settings.http, settings.delivery)
    screen = EventScreen(event.raw)
    requests = tuple(_request(sender, hook, event, show_signatures, screen) for hook in hooks)
    return MatchReport(event, requests, len(settings.hooks) - len(hooks), show_signatures)


def matching_hooks(hooks: tuple[Hook, ...], event_name: str) -> list[Hook]:
    """The hooks subscribed to ``event_name`` in configuration order: the enabled ones the
    daemon's router returns, and the disabled ones it would return were they enabled."""
    delivered = Router(hooks).match(event_name)
    # The router indexes enabled hooks only, as the daemon's must; copies marked enabled let
    # the same matching rules (exact, prefix wildcard, "*") speak for the disabled ones.
    disabled = [hook.model_copy(update={"enabled": True}) for hook in hooks if not hook.enabled]
    would_be = {hook.id for hook in Router(disabled).match(event_name)}
    found = {hook.id for hook in delivered} | would_be
    return [hook for hook in hooks if hook.id in found]


def _request(
    sender: HttpSender, hook: Hook, event: Event, show_signatures: bool, screen: EventScreen
) -> HookRequest:
    origin = event.origin
    did = delivery_id(origin.topic, origin.partition, origin.offset, hook.id)
    body = splice_hook_id(event.body_head, event.empty, hook_id_member(hook.id))
    sent = sender.headers(hook, did, body, event.trace)
    credentials = {name.lower() for name, _ in hook.headers if CREDENTIAL_HEADER_NAME.search(name)}
    hidden = credentials if show_signatures else credentials | _SIGNATURE_HEADERS
    # str(): multidict's names are ``istr``, a str subclass orjson refuses as a key.
    headers = tuple(
        (str(name), MASK if name.lower() in hidden else value) for name, value in sent.items()
    )
    verdict = None if hook.filter is None else screen.verdict(hook.filter)
    return HookRequest(hook, did, body, headers, verdict)


# ── Output ───────────────────────────────────────────────────────────────────────────────────


def report_json(report: MatchReport) -> bytes:
    """The report as one JSON document (README "See which hooks an event reaches")::

    {"valid": true,
     "event": {"name": str, "created_at": str, "bytes": int, "key": str | null},
     "origin": {"topic": str, "partition": int, "offset": int},
     "signatures_shown": bool,
     "hooks": [{"id": str, "name": str, "url": str (query string as "***"),
                "enabled": bool, "sent": bool (enabled, and not kept out by its filter),
                "filter": null | {"expression": str, "passed": bool,
                                  "value": the expression's JSON value,
                                  "error": str | null (dead-lettered filter_error)},
                "webhook_id": str,
                "body": str (the exact body bytes, as UTF-8 text),
                "headers": {name: value}}],
     "not_matched": int}
    """
    event, origin = report.event, report.event.origin
    document = {
        "valid": True,
        "event": {
            "name": event.name,
            "created_at": event.created_at,
            "bytes": len(event.raw),
            "key": _key_text(event.key),
        },
        "origin": {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset},
        "signatures_shown": report.signatures_shown,
        "hooks": [_hook_json(request) for request in report.requests],
        "not_matched": report.not_matched,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def _hook_json(request: HookRequest) -> dict[str, Any]:
    hook = request.hook
    return {
        "id": hook.id, "name": hook.name, "url": redacted_url(hook.url), "enabled": hook.enabled,
        "sent": request.sent, "filter": _verdict_json(request),
        "webhook_id": request.webhook_id,
        # Valid UTF-8: the decoder accepted the record, and the splice adds ASCII.
        "body": request.body.decode("utf-8"),
        "headers": dict(request.headers),
    }  # fmt: skip


def _verdict_json(request: HookRequest) -> dict[str, Any] | None:
    verdict, expression = request.verdict, request.hook.filter
    if verdict is None or expression is None:
        return None
    return {"expression": expression.text, "passed": verdict.passed, "value": verdict.value,
            "error": verdict.error}  # fmt: skip


def invalid_json(error: InvalidEventError) -> bytes:
    """``{"valid": false, "reason": str, "detail": str}``: the dead-letter reason code and
    its detail, for ``--json``."""
    document = {"valid": False, "reason": error.reason, "detail": error.detail}
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def invalid_text(error: InvalidEventError) -> str:
    """One line for people: the dead-letter reason code and its detail."""
    return (
        f"invalid event: the daemon would dead-letter it with reason {error.reason}: {error.detail}"
    )


def render_text(report: MatchReport) -> str:
    """The report for people: a summary line, one block per matching hook (its body printed
    exactly as sent, on lines of its own), and what the webhook-id and the timestamp depend on."""
    lines = [_summary(report)]
    for request in report.requests:
        lines += ["", *_hook_block(request, report.event.key)]
    if report.requests:
        lines += ["", *_notes(report)]
    return "\n".join(lines) + "\n"


def _summary(report: MatchReport) -> str:
    event = report.event
    key = "" if event.key is None else f", key {_key_text(event.key)!r}"
    head = f"event {event.name} ({len(event.raw)} bytes{key}): valid"
    total = len(report.requests) + report.not_matched
    enabled = sum(1 for request in report.requests if request.hook.enabled)
    sent = sum(1 for request in report.requests if request.sent)
    disabled = len(report.requests) - enabled
    also = f"; {disabled} disabled hook(s) match too (not delivered)" if disabled else ""
    errors = sum(
        1 for r in report.requests
        if r.hook.enabled and r.verdict is not None and r.verdict.error is not None
    )  # fmt: skip
    if enabled - sent - errors:
        also += f"; {enabled - sent - errors} kept out by their filter"
    if errors:
        also += f"; {errors} whose filter fails on it (dead-lettered filter_error)"
    if enabled == 0:
        return f"{head}; no enabled hook of {total} matches it, nothing would be sent{also}"
    if sent == 0:
        return f"{head}; no hook of {total} would receive it, nothing would be sent{also}"
    return f"{head}; {sent} of {total} hooks would receive it{also}"


def _hook_block(request: HookRequest, key: bytes | None) -> list[str]:
    hook = request.hook
    state = "enabled" if hook.enabled else "DISABLED: not delivered (enabled: false)"
    return [
        f"hook {hook.id}  POST {redacted_url(hook.url)}  [{state}]",
        *_filter_lines(request),
        *_ordering_lines(request, key),
        f"  body ({len(request.body)} bytes, exactly as sent, between the lines):",
        "-----",
        request.body.decode("utf-8"),
        "-----",
        "  headers:",
        *(f"    {name}: {value}" for name, value in request.headers),
    ]


def _ordering_lines(request: HookRequest, key: bytes | None) -> list[str]:
    if request.hook.ordering != "key":
        return []
    if key is None:
        return ["  ordering: key, but the event has no record key: delivered unordered"]
    return [f"  ordering: key: sent after every earlier event of key {_key_text(key)!r} in "
            "its partition was delivered (README: Ordered delivery)"]  # fmt: skip


VALUE_CHARS: Final = 200
"""Most characters of a filter's value shown in the text report (--json shows it whole)."""


def _filter_lines(request: HookRequest) -> list[str]:
    verdict, expression = request.verdict, request.hook.filter
    if verdict is None or expression is None:
        return []
    if verdict.error is not None:
        outcome = f"ERROR: {verdict.error}; the daemon would dead-letter it (filter_error)"
    else:
        value = orjson.dumps(verdict.value).decode()
        if len(value) > VALUE_CHARS:
            value = value[:VALUE_CHARS] + "..."
        outcome = f"{'passed' if verdict.passed else 'FILTERED OUT: skipped, not sent'}"
        outcome += f" (value: {value})"
    return [f"  filter: {expression}", f"    → {outcome}"]


def _notes(report: MatchReport) -> list[str]:
    origin = report.event.origin
    notes = [
        f"webhook-id depends on the record's origin: topic {origin.topic}, partition "
        f"{origin.partition}, offset {origin.offset} (--topic, --partition, --offset).",
        "webhook-timestamp (Standard Webhooks hooks) is the time of this run.",
        "Credential headers are shown as ***.",
    ]
    if not report.signatures_shown:
        notes.append("Signatures are shown as *** (--show-signatures shows them).")
    return notes


def _key_text(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", "replace")
