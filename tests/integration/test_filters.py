"""Payload filters on the real broker with a real receiver: a filtered-out event never
reaches its hook, the other hook gets everything, every pair settles (skipped ones with a
``skipped`` outcome record), offsets commit past them, and a restart re-sends nothing; a
reload with a bad filter is refused and the running filter stays."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from hookrelay.errors import ConfigError
from hookrelay.events.outcome import OutcomeRecord
from tests.integration.harness import (
    committed_offsets,
    eventually,
    produce,
    read_topic,
    running_daemon,
    settings_for,
    unique,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver

pytestmark = pytest.mark.integration

SCHEMA = json.loads((Path(__file__).parents[2] / "config" / "outcome.schema.json").read_text())
ONE_ORG = "not_null(organizationId, params.id, data.id) == 'org_1'"


def org_event(org: str, n: int) -> bytes:
    return orjson.dumps({
        "event": "Organization.Membership.Updated", "createdAt": "2026-08-21T08:58:54.144Z",
        "organizationId": org, "addedUserIds": [f"u{n}"],
    })  # fmt: skip


def hooks(receiver: Receiver, one_org_filter: str) -> list[dict[str, Any]]:
    return [
        {"id": "org-one", "events": ["Organization.*"], "url": receiver.url("org-one"),
         "filter": one_org_filter},
        {"id": "all", "events": ["Organization.*"], "url": receiver.url("all")},
    ]  # fmt: skip


def committed(bootstrap: str, group: str, topic: str, count: int) -> Callable[[], Awaitable[bool]]:
    """A check for ``eventually``: the group committed ``count`` records of ``topic``."""

    async def check() -> bool:
        offsets = await committed_offsets(bootstrap, group)
        return sum(o for tp, o in offsets.items() if tp.topic == topic) == count

    return check


async def test_a_filtered_hook_gets_only_its_events_skips_settle_and_a_restart_resends_none(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("filters")
    await create_topics(kafka_bootstrap, [topic], partitions=2)
    orgs = ["org_1", "org_2", "org_1", "org_3", "org_2", "org_1"]
    async with Receiver(keys={"org-one": None, "all": None}) as receiver:
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks(receiver, ONE_ORG),
            extra={"outcomes": {"enabled": True}},
        )  # fmt: skip
        settings = settings_for(path)
        async with running_daemon(settings) as daemon:
            await produce(kafka_bootstrap, topic, [org_event(o, n) for n, o in enumerate(orgs)])
            await receiver.wait_for(len(orgs), "all")
            outcomes = await read_topic(kafka_bootstrap, settings.outcomes.topic, 2 * len(orgs))

            await eventually(committed(kafka_bootstrap, settings.kafka.group_id, topic, 6))
            skipped = daemon.metrics.deliveries_skipped.labels("org-one", "filtered")
            assert skipped._value.get() == 3

        # Restarted, the group resumes after the skipped records: nothing is sent again.
        async with running_daemon(settings_for(path)):
            await produce(kafka_bootstrap, topic, [org_event("org_1", 99)])
            await receiver.wait_for(len(orgs) + 1, "all")
            await receiver.wait_for(4, "org-one")
            # Every record settled, the old ones included: a re-send would have come first.
            await eventually(committed(kafka_bootstrap, settings.kafka.group_id, topic, 7))

    sent = [orjson.loads(r.body)["organizationId"] for r in receiver.for_hook("org-one")]
    assert sent == ["org_1"] * 4
    assert len(receiver.for_hook("all")) == len(orgs) + 1
    records = [OutcomeRecord.from_json(r.value) for r in outcomes]
    for record in outcomes:
        jsonschema.validate(orjson.loads(record.value), SCHEMA)
    by_status = sorted((o.hook_id or "", o.status, o.reason or "") for o in records)
    assert by_status == sorted(
        [("all", "delivered", "")] * 6
        + [("org-one", "delivered", "")] * 3
        + [("org-one", "skipped", "filtered")] * 3
    )
    assert all(o.attempts == 0 for o in records if o.status == "skipped")


async def test_a_reload_with_a_bad_filter_is_refused_and_the_running_filter_stays(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("filters-reload")
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    async with Receiver(keys={"org-one": None, "all": None}) as receiver:
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks(receiver, ONE_ORG))
        async with running_daemon(settings_for(path)) as daemon:
            config = orjson.loads(path.read_bytes())
            config["hooks"] = hooks(receiver, "organizationId == ")
            path.write_bytes(orjson.dumps(config))
            with pytest.raises(ConfigError) as refused:
                await daemon.reload()
            await produce(kafka_bootstrap, topic, [org_event("org_2", 0), org_event("org_1", 1)])
            await receiver.wait_for(2, "all")
            await receiver.wait_for(1, "org-one")

    [issue] = refused.value.issues
    assert (issue.key_path, issue.message) == (
        "hooks[0].filter",
        "incomplete JMESPath expression: more was expected at its end",
    )
    assert [orjson.loads(r.body)["organizationId"] for r in receiver.for_hook("org-one")] == [
        "org_1"
    ]
