"""The outcome topic on a real broker, written by a real ``hookrelay run`` process: one
record per delivery that ended (delivered at once, delivered after retries, dead-lettered)
and per invalid record, matching what the receivers saw."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from hookrelay.events.outcome import OutcomeRecord
from hookrelay.events.signing import delivery_id
from tests.integration.harness import (
    daemon_process,
    edit_config,
    headers_of,
    produce,
    read_topic,
    topic_size,
    unique,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import ReceivedRequest, Receiver, Reply

pytestmark = pytest.mark.integration

SCHEMA = json.loads((Path(__file__).parents[2] / "config" / "outcome.schema.json").read_text())
KEYS = {"ok": "key-ok-0123456789", "flaky": "key-flaky-012345", "broken": "key-broken-01234"}
EVENTS = 5
INVALID = [b"not json", b'{"event":"User.Created"}']


def event(n: int) -> bytes:
    return orjson.dumps(
        {"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": f"u{n}"}}
    )


def fails_first_time() -> object:
    """A receiver that answers 500 to the first POST of each webhook-id, then 200."""
    seen: set[str] = set()

    def reply(request: ReceivedRequest) -> Reply:
        webhook_id = request.headers["webhook-id"]
        if webhook_id in seen:
            return Reply()
        seen.add(webhook_id)
        return Reply(status=500)

    return reply


async def test_every_ended_delivery_and_invalid_record_has_one_outcome_matching_the_receivers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("outcomes")
    await create_topics(kafka_bootstrap, [topic], partitions=2)
    async with Receiver(keys=KEYS) as receiver:
        receiver.script_forever("flaky", fails_first_time())  # type: ignore[arg-type]
        receiver.script_forever("broken", Reply(status=422))
        hooks = [
            {"id": hook_id, "events": ["User.*"], "url": receiver.url(hook_id), "signing_key": key}
            for hook_id, key in KEYS.items()
        ]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        edit_config(path, "outcomes", enabled=True)  # its topic: <group>.outcomes, created
        group = orjson.loads(path.read_bytes())["kafka"]["group_id"]
        async with daemon_process(path, tmp_path / "daemon.log"):
            await produce(kafka_bootstrap, topic, [event(n) for n in range(EVENTS)] + INVALID)
            expected = EVENTS * len(KEYS) + len(INVALID)
            records = await read_topic(kafka_bootstrap, f"{group}.outcomes", expected, 60)
        assert await topic_size(kafka_bootstrap, f"{group}.outcomes") == expected  # no more

    outcomes = [OutcomeRecord.from_json(r.value) for r in records]
    for record in records:
        jsonschema.validate(orjson.loads(record.value), SCHEMA)
        assert headers_of(record) == {"hookrelay-outcome-version": "1", "hookrelay-group": group}
        for key in KEYS.values():
            assert key.encode() not in record.value
    answered = {(q.hook_id, q.headers["webhook-id"]): q for q in receiver.requests}
    by_hook: dict[str | None, list[OutcomeRecord]] = {}
    for outcome in outcomes:
        by_hook.setdefault(outcome.hook_id, []).append(outcome)
        assert outcome.group == group
    # One outcome per (event, hook): every delivery id of the receivers, once.
    for hook_id in KEYS:
        ids = sorted(o.delivery_id or "" for o in by_hook[hook_id])
        assert ids == sorted({i for h, i in answered if h == hook_id})
        assert len(ids) == EVENTS
    for o in by_hook["ok"]:
        assert (o.status, o.attempts, o.last_status, o.error) == ("delivered", 1, 200, None)
    for o in by_hook["flaky"]:
        assert (o.status, o.attempts, o.last_status) == ("delivered", 2, 200)
        assert o.first_attempt_at_ms is not None and o.last_attempt_at_ms is not None
        assert o.first_attempt_at_ms < o.last_attempt_at_ms
    for o in by_hook["broken"]:
        assert (o.status, o.reason, o.attempts, o.last_status) == (
            "dead_lettered", "permanent_failure", 1, 422,
        )  # fmt: skip
    for o in [*by_hook["ok"], *by_hook["flaky"], *by_hook["broken"]]:
        origin = o.origin
        assert o.delivery_id == delivery_id(
            origin.topic, origin.partition, origin.offset, o.hook_id or ""
        )
        assert answered[(o.hook_id, o.delivery_id)].event == o.event == "User.Created"
    invalid = sorted(by_hook[None], key=lambda o: o.reason or "")
    assert [(o.status, o.reason, o.delivery_id) for o in invalid] == [
        ("dead_lettered", "bad_created_at", None), ("dead_lettered", "not_json", None),
    ]  # fmt: skip
    assert {r.key for r in records if r.value and b'"hook_id":null' in r.value} == {None}
