"""``hookrelay deliveries``: what happened to past deliveries, and what waits now.

Three views, each read from the deployment's own topics with ``kafka.scan`` (no consumer
group joined, nothing committed: looking never changes what the daemon does):

- ``outcomes``: the outcome topic (``outcomes.enabled``), searched by hook, event, delivery
  id, status and time (``--since`` seeks with Kafka's time index, so a recent window of a
  long topic is read quickly).
- ``pending``: the retry topics, from the group's committed offsets on (records the daemon
  settled above them, which its commits name, are left out): one line per delivery waiting,
  with its hook, tier, due time, attempts and last error; and a count per hook and tier.
  Records the daemon settled since its last commit (every ``kafka.commit_interval_s``) still
  show: the view is as of that commit.
- ``dead-letters``: the dead-letter topic, invalid records included, with reason, error and
  attempts.

Only this deployment's records are shown: those its group wrote (``hookrelay-group``), or,
written before that header existed, those whose origin topic it consumes. Error texts pass
through ``ops.logs.public_text`` (URLs' user info and query masked). Bodies are never shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from rich import box
from rich.console import Console
from rich.table import Table

from hookrelay.commands.replay import DeadLetterView, view_of
from hookrelay.config import Settings
from hookrelay.events.outcome import OutcomeRecord, iso_ms, key_text
from hookrelay.kafka.backlog import scan_backlog
from hookrelay.kafka.control import read_control
from hookrelay.kafka.retries import RetryRecord
from hookrelay.kafka.scan import scan
from hookrelay.ops.logs import public_text


@dataclass(frozen=True, slots=True)
class Selection:
    """Filters shared by the views; empty tuples and ``None`` bounds match everything.
    ``since_ms``/``until_ms`` (epoch ms, ``until`` exclusive) bound when the record was
    written: the settlement for an outcome, the dead-lettering for a letter."""

    hook_ids: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    delivery_ids: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    keys: tuple[str, ...] = ()

    def takes(
        self, hook_id: str | None, event: str | None, delivery_id: str | None, written_ms: int,
        key: str | None = None,
    ) -> bool:  # fmt: skip
        """True when a record with these members is selected (``key``: the event record's
        key as text, ``events.outcome.key_text``)."""
        return (
            (not self.keys or key in self.keys)
            and (not self.hook_ids or hook_id in self.hook_ids)
            and (not self.events or event in self.events)
            and (not self.delivery_ids or delivery_id in self.delivery_ids)
            and (self.since_ms is None or written_ms >= self.since_ms)
            and (self.until_ms is None or written_ms < self.until_ms)
        )


@dataclass(slots=True)
class Found:
    """What a view found: ``rows`` (JSON-ready dicts, oldest first), how many records were
    read, and how many of them belong to other deployments (left out)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0
    other_deployments: int = 0
    unreadable: int = 0


async def outcomes(settings: Settings, selection: Selection, timeout_s: float = 60.0) -> Found:
    """Outcome records of this deployment selected by ``selection`` (its ``statuses``:
    ``events.outcome.STATUSES``). Raises aiokafka's ``KafkaError``, ``TimeoutError``."""
    found = Found()
    async for record in scan(settings.kafka, settings.outcomes.topic,
                             since_ms=selection.since_ms, timeout_s=timeout_s,
                             role="deliveries"):  # fmt: skip
        found.read += 1
        try:
            outcome = OutcomeRecord.from_json(record.value or b"")
        except ValueError:
            found.unreadable += 1
            continue
        if outcome.group != settings.group_id:
            found.other_deployments += 1
            continue
        if (selection.statuses and outcome.status not in selection.statuses) or not (
            selection.takes(outcome.hook_id, outcome.event, outcome.delivery_id,
                            outcome.settled_at_ms, outcome.key)
        ):  # fmt: skip
            continue
        found.rows.append(_outcome_row(outcome))
    found.rows.sort(key=lambda row: str(row["settled_at"]))
    return found


def _outcome_row(outcome: OutcomeRecord) -> dict[str, Any]:
    row: dict[str, Any] = {
        "settled_at": iso_ms(outcome.settled_at_ms), "status": outcome.status,
        "reason": outcome.reason, "hook_id": outcome.hook_id, "event": outcome.event,
        "key": outcome.key,
        "delivery_id": outcome.delivery_id, "attempts": outcome.attempts,
        "last_status": outcome.last_status,
        "error": None if outcome.error is None else public_text(outcome.error),
        "first_attempt_at": iso_ms(outcome.first_attempt_at_ms),
        "last_attempt_at": iso_ms(outcome.last_attempt_at_ms), "latency_ms": outcome.latency_ms,
        "origin": _origin(outcome.origin.topic, outcome.origin.partition, outcome.origin.offset),
    }  # fmt: skip
    return row


async def pending(settings: Settings, selection: Selection, timeout_s: float = 60.0) -> Found:
    """Retries of this deployment waiting in its retry topics (``kafka.backlog``), rows
    sorted by due time. Raises aiokafka's ``KafkaError``, ``TimeoutError``."""
    control = await read_control(settings)
    scanned = await scan_backlog(settings, control.superseded, timeout_s, role="deliveries")
    found = Found(read=scanned.read, other_deployments=scanned.other_deployments,
                  unreadable=scanned.unreadable)  # fmt: skip
    for waiting in scanned.waiting:
        retry, record = waiting.retry, waiting.record
        key = key_text(record.key)
        if selection.takes(retry.hook_id, retry.event, retry.delivery_id, record.timestamp, key):
            found.rows.append(_retry_row(retry, record))
    found.rows.sort(key=lambda row: str(row["due_at"]))
    return found


def _retry_row(retry: RetryRecord, record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    return {
        "due_at": iso_ms(retry.due_at_ms), "hook_id": retry.hook_id, "tier": record.topic,
        "event": retry.event, "key": key_text(record.key), "delivery_id": retry.delivery_id,
        "attempts": retry.attempts,
        "parks": retry.parks, "last_status": retry.last_status,
        "error": public_text(retry.error) if retry.error else None,
        "parked_at": iso_ms(record.timestamp),
        "origin": _origin(retry.origin_topic, retry.origin_partition, retry.origin_offset),
        "at": _origin(record.topic, record.partition, record.offset),
    }  # fmt: skip


def backlog(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``pending`` rows counted per (hook, tier), with the earliest and latest due times."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["hook_id"], row["tier"])
        entry = groups.setdefault(key, {"hook_id": key[0], "tier": key[1], "pending": 0,
                                        "next_due_at": row["due_at"],
                                        "last_due_at": row["due_at"]})  # fmt: skip
        entry["pending"] += 1
        entry["next_due_at"] = min(entry["next_due_at"], row["due_at"])
        entry["last_due_at"] = max(entry["last_due_at"], row["due_at"])
    return sorted(groups.values(), key=lambda e: (e["hook_id"], e["next_due_at"]))


async def dead_letters(
    settings: Settings, selection: Selection, reasons: Sequence[str] = (),
    timeout_s: float = 60.0,
) -> Found:  # fmt: skip
    """Dead letters of this deployment (invalid records included) selected by ``selection``
    and ``reasons``, each saying whether a replay re-drove it already (``replayed``). Raises
    aiokafka's ``KafkaError``, ``TimeoutError``."""
    found = Found()
    consumed = frozenset(settings.kafka.topics)
    control = await read_control(settings, replays=True)
    async for record in scan(settings.kafka, settings.dead_letter_topic,
                             since_ms=selection.since_ms, timeout_s=timeout_s,
                             role="deliveries"):  # fmt: skip
        found.read += 1
        letter = view_of(record)
        mine = (
            letter.group == settings.group_id if letter.group else letter.origin_topic in consumed
        )
        if not mine:
            found.other_deployments += 1
            continue
        delivery_id = letter.headers.get("delivery-id")
        if (reasons and letter.reason not in reasons) or not selection.takes(
            letter.hook_id or None,
            letter.event or None,
            delivery_id,
            letter.timestamp_ms,
            key_text(letter.key),
        ):
            continue
        row = _letter_row(letter)
        row["replayed"] = control.was_replayed(letter.topic, letter.partition, letter.offset)
        found.rows.append(row)
    found.rows.sort(key=lambda row: str(row["dead_lettered_at"]))
    return found


def _letter_row(letter: DeadLetterView) -> dict[str, Any]:
    h = letter.headers
    attempts = h.get("attempts")
    status = h.get("last-status")
    return {
        "dead_lettered_at": iso_ms(letter.timestamp_ms), "reason": letter.reason,
        "hook_id": letter.hook_id or None, "event": letter.event or None,
        "key": key_text(letter.key),
        "delivery_id": h.get("delivery-id") or None,
        "attempts": int(attempts) if attempts and attempts.isdigit() else None,
        "last_status": int(status) if status and status.isdigit() else None,
        "error": public_text(h["error"]) if h.get("error") else None,
        "value_bytes": int(h.get("original-bytes") or len(letter.value)),
        "truncated": h.get("truncated") == "true",
        "origin": _origin(h.get("origin-topic", ""), h.get("origin-partition", ""),
                          h.get("origin-offset", "")),
        "at": _origin(letter.topic, letter.partition, letter.offset),
    }  # fmt: skip


def _origin(topic: str, partition: int | str, offset: int | str) -> dict[str, Any]:
    """Kafka coordinates as JSON (tables show them as ``topic[partition]@offset``); a
    number a dead letter's header does not hold is null."""
    return {"topic": topic, "partition": _number(partition), "offset": _number(offset)}


def _number(value: int | str) -> int | None:
    if isinstance(value, int):
        return value
    return int(value) if value.isascii() and value.isdigit() else None


COLUMNS: dict[str, tuple[str, ...]] = {
    "outcomes": ("settled_at", "status", "hook_id", "event", "key", "attempts", "last_status",
                 "latency_ms", "delivery_id", "origin", "reason", "error"),
    "pending": ("due_at", "hook_id", "tier", "event", "key", "attempts", "last_status",
                "delivery_id", "origin", "error"),
    "backlog": ("hook_id", "tier", "pending", "next_due_at", "last_due_at"),
    "dead-letters": ("dead_lettered_at", "reason", "hook_id", "event", "key", "attempts",
                     "last_status", "delivery_id", "origin", "value_bytes", "replayed",
                     "error"),
}  # fmt: skip
"""The columns a table shows per view (``--json`` gives every member)."""


def render_json(view: str, found: Found, limit: int | None) -> bytes:
    """One JSON document: ``{"view", "rows", "shown", "matched", "read",
    "other_deployments", "unreadable"}`` (plus ``"backlog"`` for ``pending``)."""
    rows = found.rows[-limit:] if limit else found.rows
    doc: dict[str, Any] = {
        "view": view, "rows": rows, "shown": len(rows), "matched": len(found.rows),
        "read": found.read, "other_deployments": found.other_deployments,
        "unreadable": found.unreadable,
    }  # fmt: skip
    if view == "pending":
        doc["backlog"] = backlog(found.rows)
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def render_tables(view: str, found: Found, limit: int | None, console: Console) -> None:
    """Tables for people: the matching rows (the newest ``limit`` of them), a count per hook
    and tier for ``pending``, and a last line saying what was read and left out."""
    rows = found.rows[-limit:] if limit else found.rows
    if view == "pending" and found.rows:
        console.print(_table("waiting per hook and tier", COLUMNS["backlog"], backlog(found.rows)))
    if rows:
        console.print(_table(view, COLUMNS[view], rows))
    shown = (
        f"{len(rows)} of {len(found.rows)} shown (--limit)"
        if len(rows) < len(found.rows)
        else (f"{len(rows)} matched")
    )
    others = f"; {found.other_deployments} of other deployments left out" * bool(
        found.other_deployments
    )
    unreadable = f"; {found.unreadable} unreadable" * bool(found.unreadable)
    console.print(f"{view}: {shown}, {found.read} records read{others}{unreadable}")


def _table(title: str, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> Table:
    table = Table(title=f"{title} (times in UTC)", title_justify="left", box=box.SIMPLE_HEAD,
                  highlight=False)  # fmt: skip
    for column in columns:
        if column == "error":  # free text: the one column that may be cut short
            table.add_column(column, overflow="ellipsis", no_wrap=True, max_width=48)
        else:
            table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and "offset" in value:  # an _origin
        return f"{value['topic']}[{value['partition']}]@{value['offset']}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    if len(text) == 29 and text.endswith("+00:00") and text[10] == "T":  # an _iso time
        return f"{text[:10]} {text[11:23]}"
    return text


def console() -> Console:
    """A console for the tables: on a terminal as wide as it is; piped, wide enough that no
    row wraps (one line per row, for grep)."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=400)
