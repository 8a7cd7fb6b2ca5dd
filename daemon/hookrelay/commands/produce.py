"""``hookrelay produce``: events from a file or stdin, checked with the daemon's own decoder,
published to an event topic (``acks=all``), each acknowledged before the command succeeds.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from hookrelay.config import KafkaSettings
from hookrelay.errors import InvalidEventError
from hookrelay.events.contract import event_schema
from hookrelay.events.decode import decode
from hookrelay.events.model import Origin
from hookrelay.kafka.clients import client_options, closed


def read_events(source: str) -> list[tuple[str, bytes]]:
    """Event values from a file or stdin, in order, each with where it was read (``line 3``,
    ``element 2``, ``the document``) for error messages.

    The whole input is tried as one JSON document first: an object is one event (its bytes
    sent as written, pretty-printed or not), an array is one event per element. Otherwise
    each non-blank line that does not start with ``#`` is one record, sent byte for byte
    (JSON lines).
    """
    raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    whole = raw.strip()
    try:
        document = orjson.loads(whole)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        return [("the document", whole)]
    if isinstance(document, list):
        return [(f"element {n}", orjson.dumps(item)) for n, item in enumerate(document, 1)]
    lines = ((n, line.strip()) for n, line in enumerate(raw.splitlines(), 1))
    return [(f"line {n}", line) for n, line in lines if line and not line.startswith(b"#")]


def invalid_events(events: list[tuple[str, bytes]], max_bytes: int) -> list[str]:
    """``where: reason: detail`` for each event the daemon would dead-letter instead of
    delivering (its own decoder's rules)."""
    problems = []
    for where, value in events:
        try:
            decode(value, None, Origin("produce", 0, 0, 0), max_bytes)
        except InvalidEventError as e:
            problems.append(f"{where}: {e.reason}: {e.detail}")
    return problems


def contract_problems(events: list[tuple[str, bytes]]) -> list[str]:
    """``where: member path: message`` for each way an event breaks the published contract
    (``events.contract``), checked with the jsonschema library. Raises ``ModuleNotFoundError``
    when it is not installed (the ``validate`` extra)."""
    import jsonschema  # noqa: PLC0415  (an optional extra, imported only when asked for)

    validator = jsonschema.Draft202012Validator(event_schema())
    problems = []
    for where, value in events:
        for error in validator.iter_errors(orjson.loads(value)):
            path = ".".join(str(part) for part in error.absolute_path) or "the event"
            problems.append(f"{where}: {path}: {error.message}")
    return problems


def _record_key(value: bytes, key_field: str | None) -> bytes | None:
    if key_field is None:
        return None
    try:
        member = orjson.loads(value).get(key_field)
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return None if member is None else str(member).encode("utf-8")


async def publish(
    kafka: KafkaSettings,
    topic: str,
    values: Sequence[bytes],
    key_field: str | None,
    headers: Sequence[tuple[str, bytes]] = (),
) -> None:
    """Send ``values`` to ``topic`` in order, keyed by their ``key_field`` member when given,
    each with ``headers``, and return once the broker acknowledged every one. Raises the
    producer's error."""
    producer = AIOKafkaProducer(**client_options(kafka, "produce"), acks="all", linger_ms=10)
    try:  # start inside: a client whose start failed is closed too
        await producer.start()
        futures = [
            await producer.send(topic, v, key=_record_key(v, key_field), headers=list(headers))
            for v in values
        ]
        await asyncio.gather(*futures)
    finally:
        await closed(producer.stop())
