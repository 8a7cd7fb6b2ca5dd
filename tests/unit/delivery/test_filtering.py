"""Payload filters on the delivery path: skipped pairs settle without a request, a filter
error dead-letters its pair, and hooks without a filter pay nothing (fakes, no Kafka)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from hookrelay.delivery import filtering
from hookrelay.events.decode import decode
from hookrelay.events.model import Origin
from hookrelay.events.outcome import OutcomeRecord
from tests.unit.delivery.test_dispatcher import (
    OK,
    TP,
    FakeSender,
    Rig,
    delivered_count,
    fail,
    hook,
    until,
)
from tests.unit.delivery.test_outcomes import HeldOutcomes
from tests.unit.tracking import commit_offsets

ONE_ORG = "not_null(organizationId, params.id, data.id) == 'org_1'"


def membership(org: str, **more: Any) -> bytes:
    return orjson.dumps({
        "event": "Organization.Membership.Updated", "createdAt": "2026-08-21T08:58:54.144Z",
        "organizationId": org, "addedUserIds": ["u1"], **more,
    })  # fmt: skip


def publish(rig: Rig, value: bytes) -> None:
    """``Rig.publish`` with this record value, to every hook of the rig."""
    event = decode(value, None, Origin(TP.topic, 0, rig.offset, 0), 1 << 20)
    hooks = tuple(rig.hooks)
    rig.dispatcher.submit(event, hooks, rig.tracker.register(TP, rig.offset, len(hooks)))
    rig.offset += 1


def skipped(rig: Rig, hook_id: str) -> float | None:
    labels = {"hook_id": hook_id, "reason": "filtered"}
    return rig.metrics.registry.get_sample_value("hookrelay_deliveries_skipped_total", labels)


def sent_to(sender: FakeSender, hook_id: str) -> list[dict[str, Any]]:
    return [orjson.loads(body) for h, _, body in sender.attempts if h == hook_id]


async def test_a_filtered_out_event_never_reaches_its_hook_and_the_other_hook_gets_all() -> None:
    sender = FakeSender(lambda _h, _n: OK)
    async with Rig(sender, [hook("org-one", filter=ONE_ORG), hook("all")]) as rig:
        for org in ("org_1", "org_2", "org_1", "org_3"):
            publish(rig, membership(org))
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert commit_offsets(rig.tracker)[TP] == 4  # skipped pairs settle their records too

    assert [b["organizationId"] for b in sent_to(sender, "org-one")] == ["org_1", "org_1"]
    assert len(sent_to(sender, "all")) == 4
    assert skipped(rig, "org-one") == 2
    assert skipped(rig, "all") is None
    # A skipped pair is no delivery: deliveries_total counts only the ones made.
    assert delivered_count(rig.metrics, "org-one", "delivered") == 2
    assert delivered_count(rig.metrics, "org-one", "skipped") is None


async def test_the_event_is_parsed_once_for_all_its_filtered_hooks_and_never_without_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parses: list[bytes] = []
    loads = orjson.loads

    def counting_loads(raw: bytes) -> Any:
        parses.append(raw)
        return loads(raw)

    hooks = [hook("a", filter=ONE_ORG), hook("b", filter="addedUserIds"), hook("c")]
    filtered = decode(membership("org_1"), None, Origin(TP.topic, 0, 0, 0), 1 << 20)
    unfiltered = decode(membership("org_2"), None, Origin(TP.topic, 0, 1, 0), 1 << 20)
    monkeypatch.setattr(filtering.orjson, "loads", counting_loads)  # after the decoder's
    async with Rig(FakeSender(lambda _h, _n: OK), hooks) as rig:
        rig.dispatcher.submit(filtered, tuple(hooks), rig.tracker.register(TP, 0, 3))
        assert len(parses) == 1
        rig.dispatcher.submit(unfiltered, (hooks[2],), rig.tracker.register(TP, 1, 1))
        assert len(parses) == 1
        await until(lambda: rig.dispatcher.in_flight == 0)


async def test_a_skipped_pair_settles_only_once_its_skipped_outcome_is_acknowledged() -> None:
    producer = HeldOutcomes()
    async with Rig(FakeSender(lambda _h, _n: OK), [hook("org-one", filter=ONE_ORG)],
                   producer=producer, outcomes=True) as rig:  # fmt: skip
        publish(rig, membership("org_2"))
        await until(lambda: len(producer.to("outcomes")) == 1)
        assert commit_offsets(rig.tracker).get(TP, 0) == 0
        producer.release.set()
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert commit_offsets(rig.tracker)[TP] == 1

    outcome = OutcomeRecord.from_json(producer.to("outcomes")[0][1])
    assert (outcome.status, outcome.reason, outcome.hook_id, outcome.attempts) == (
        "skipped", "filtered", "org-one", 0,
    )  # fmt: skip
    assert (outcome.last_status, outcome.error, outcome.first_attempt_at_ms) == (None, None, None)
    assert rig.metrics.outcomes_written.labels("skipped")._value.get() == 1


async def test_a_filter_that_fails_on_one_payload_dead_letters_that_pair_with_the_reason() -> None:
    sender = FakeSender(lambda _h, _n: OK)
    hooks = [hook("named", filter="length(data.name) > `3`"), hook("all")]
    async with Rig(sender, hooks, outcomes=True) as rig:
        publish(rig, membership("org_1", data={"name": 5}))
        publish(rig, membership("org_1", data={"name": "long enough"}))
        await until(lambda: rig.dispatcher.in_flight == 0)
        assert commit_offsets(rig.tracker)[TP] == 2

    assert [b["data"]["name"] for b in sent_to(sender, "named")] == ["long enough"]
    assert len(sent_to(sender, "all")) == 2
    [(_, value, headers)] = rig.producer.to("dlq")
    assert value == membership("org_1", data={"name": 5})
    assert headers["hookrelay-reason"] == b"filter_error"
    assert headers["hookrelay-error"] == (
        b"filter: length() expected string or array or object, got number"
    )
    assert headers["hookrelay-attempts"] == b"0"
    assert rig.metrics.dead_lettered.labels("filter_error")._value.get() == 1
    assert delivered_count(rig.metrics, "named", "dead_lettered") == 1
    outcomes = [OutcomeRecord.from_json(v) for _, v, _ in rig.producer.to("outcomes")]
    assert [(o.hook_id, o.status, o.reason) for o in outcomes if o.status != "delivered"] == [
        ("named", "dead_lettered", "filter_error")
    ]


async def test_a_retry_is_sent_without_evaluating_the_filter_again() -> None:
    sender = FakeSender(lambda _h, n: OK if n == 2 else fail(503, retryable=True))
    async with Rig(sender, [hook("org-one", filter=ONE_ORG)]) as rig:
        publish(rig, membership("org_1"))
        await until(lambda: len(rig.producer.sent) == 1)
        # The operator narrows the filter while the retry waits in its tier.
        rig.dispatcher.set_hooks([hook("org-one", filter="organizationId == 'org_9'")])
        rig.feed_back(rig.producer.sent[0])
        await until(lambda: rig.dispatcher.in_flight == 0)

    assert len(sent_to(sender, "org-one")) == 2  # the first attempt, then its retry
    assert delivered_count(rig.metrics, "org-one", "delivered") == 1
    assert skipped(rig, "org-one") is None
