"""The whole path on the real broker: Kafka record → decode → route → signed POST → offset."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from hookrelay.events.catalogue import HOOK_EVENTS
from tests.integration.harness import (
    committed_offsets,
    eventually,
    headers_of,
    produce,
    read_topic,
    running_daemon,
    settings_for,
    unique,
    wait_until,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration

KEYS = {"exact": "exact-key-0123", "orgs": "orgs-key-4567", "everything": "all-key-89ab"}


def event_bytes(name: str, n: int = 0) -> bytes:
    """A compact event, as a producer would send it, with values that test byte-fidelity."""
    return orjson.dumps(
        {
            "event": name,
            "createdAt": "2026-08-21T09:15:42.123Z",
            "userAgent": "Mozilla/5.0",
            "ip": "203.0.113.7",
            "data": {"id": f"u{n}", "name": "Zoë Müller", "score": 1.5, "big": 2**62},
        }
    )


def expected_body(value: bytes, hook_id: str) -> bytes:
    return value[:-1] + b',"hookId":"' + hook_id.encode() + b'"}'


DEMO_EVENTS = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "events.jsonl"


def demo_events() -> list[bytes]:
    """Realistic events of all three payload families, one or more per catalogue name."""
    return [line for line in DEMO_EVENTS.read_bytes().splitlines() if line.strip()]


def expected_hooks(name: str) -> set[str]:
    """Written by hand, not derived from the router, so the router is what is tested."""
    hooks = {"everything"}
    if name in ("User.Created", "PostSignIn"):
        hooks.add("exact")
    if name.startswith("Organization."):  # not OrganizationRole.* / OrganizationScope.*
        hooks.add("orgs")
    return hooks


async def test_every_catalogue_event_reaches_exactly_its_subscribers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    values = demo_events()
    names = {orjson.loads(v)["event"] for v in values}
    assert names == set(HOOK_EVENTS)  # the fixture covers the whole catalogue
    async with Receiver(keys={**KEYS, "disabled": None, "nomatch": None}) as receiver:
        hooks = [
            {"id": "exact", "events": ["User.Created", "PostSignIn"], "url": receiver.url("exact"),
             "signing_key": KEYS["exact"]},
            {"id": "orgs", "events": ["Organization.*"], "url": receiver.url("orgs"),
             "signing_key": KEYS["orgs"]},
            {"id": "everything", "events": ["*"], "url": receiver.url("everything"),
             "signing_key": KEYS["everything"]},
            {"id": "disabled", "events": ["*"], "url": receiver.url("disabled"), "enabled": False},
            {"id": "nomatch", "events": ["Role.Created.Never"], "url": receiver.url("nomatch")},
        ]  # fmt: skip
        settings = settings_for(write_config(tmp_path, kafka_bootstrap, topic, hooks))
        expected = sorted(
            expected_body(value, hook_id)
            for value in values
            for hook_id in expected_hooks(orjson.loads(value)["event"])
        )
        async with running_daemon(settings):
            await produce(kafka_bootstrap, topic, values)
            await receiver.wait_for(len(expected), timeout_s=30)
            await _settle_briefly()
    # Every (event, hook) pair exactly once, each body the producer's bytes + its own hookId.
    assert sorted(r.body for r in receiver.requests) == expected
    assert receiver.for_hook("disabled") == [] and receiver.for_hook("nomatch") == []
    for request in receiver.requests:
        assert request.signature_valid is True
        assert request.headers["content-type"] == "application/json"
        assert request.headers["webhook-id"].startswith("msg_")
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == len(expected)


async def _settle_briefly() -> None:
    """Give late, unexpected deliveries a moment to arrive before asserting 'exactly'."""
    import asyncio

    await asyncio.sleep(0.5)


async def test_invalid_records_go_to_the_dead_letter_topic_and_later_records_still_deliver(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq], partitions=1)
    invalid = {
        "not_json": b"this is not json",
        "not_object": b'[{"event":"User.Created","createdAt":"2026-01-01T00:00:00.000Z"}]',
        "missing_event": b'{"createdAt":"2026-01-01T00:00:00.000Z","data":{}}',
        "oversized": event_bytes("User.Created")[:-1] + b',"pad":"' + b"x" * 3000 + b'"}',
    }
    valid = event_bytes("User.Created", 99)
    async with Receiver(keys={"all": None}) as receiver:
        hooks = [{"id": "all", "events": ["*"], "url": receiver.url("all")}]
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks, dead_letter_topic=dlq,
            delivery={"max_event_bytes": 2048},
        )  # fmt: skip
        settings = settings_for(path)
        async with running_daemon(settings) as daemon:
            await produce(kafka_bootstrap, topic, [*invalid.values(), valid], partition=0)
            await receiver.wait_for(1, timeout_s=20)
            letters = await read_topic(kafka_bootstrap, dlq, len(invalid))
            await eventually(
                lambda: _committed_is(kafka_bootstrap, settings.kafka.group_id, 5),
                what="offset 5 committed",
            )
            assert daemon.metrics.events_invalid.labels("not_json")._value.get() == 1
    assert receiver.requests[0].body == expected_body(valid, "all")
    by_reason = {headers_of(r)["hookrelay-reason"]: r for r in letters}
    assert set(by_reason) == set(invalid)
    for reason, record in by_reason.items():
        assert record.value == invalid[reason]  # original bytes, untouched
        headers = headers_of(record)
        assert headers["hookrelay-origin-topic"] == topic
        assert headers["hookrelay-error"]


async def _committed_is(bootstrap: str, group: str, offset: int) -> bool:
    return offset in (await committed_offsets(bootstrap, group)).values()


async def test_rate_limited_hook_is_held_to_its_limit_while_an_unlimited_hook_gets_all_at_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with Receiver(keys={"slow": None, "fast": None}) as receiver:
        hooks = [
            {"id": "slow", "events": ["*"], "url": receiver.url("slow"),
             "rate_limit": {"per_second": 20, "burst": 20}},
            {"id": "fast", "events": ["*"], "url": receiver.url("fast"), "max_concurrency": 32},
        ]  # fmt: skip
        # The limited lane holds its 100 (no parking): this test is about the token bucket.
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks,
                            delivery={"lane_max_wait_s": 60})  # fmt: skip
        settings = settings_for(path)
        async with running_daemon(settings):
            await produce(
                kafka_bootstrap, topic, [event_bytes("PostSignIn", i) for i in range(100)]
            )
            await receiver.wait_for(100, hook_id="fast", timeout_s=20)
            fast_done = time.monotonic()
            await receiver.wait_for(100, hook_id="slow", timeout_s=30)
    slow = sorted(r.arrived_monotonic for r in receiver.for_hook("slow"))
    fast = sorted(r.arrived_monotonic for r in receiver.for_hook("fast"))
    # 20 burst tokens, then 80 more at 20/s: at least 4 s from first to last.
    assert slow[-1] - slow[0] >= 3.9
    # No 1-second window holds more than limit + burst.
    assert max(sum(1 for t in slow if start <= t < start + 1.0) for start in slow) <= 40
    assert fast[-1] - fast[0] < 3.0
    assert fast_done < slow[-1] - 1.0  # the unlimited hook never waited for the limited one


async def test_a_receiver_answering_500_twice_then_200_gets_the_event(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with Receiver(keys={"flaky": "k-flaky"}) as receiver:
        receiver.script("flaky", [Reply(status=500), Reply(status=503)])
        hooks = [
            {"id": "flaky", "events": ["*"], "url": receiver.url("flaky"), "signing_key": "k-flaky"}
        ]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks,
                            delivery={"retry_schedule_s": [0.2, 0.2, 0.2]})  # fmt: skip
        async with running_daemon(settings_for(path)) as daemon:
            value = event_bytes("User.Deleted")
            await produce(kafka_bootstrap, topic, [value])
            # Start-up, the group join and two trips through a retry topic: 15 s was short
            # on a loaded machine (a trial saw it time out at load average 4).
            await receiver.wait_for(3, timeout_s=40)

            def delivered() -> float | None:
                return daemon.metrics.registry.get_sample_value(
                    "hookrelay_deliveries_total", {"hook_id": "flaky", "outcome": "delivered"}
                )

            await wait_until(lambda: delivered() is not None, what="the delivery counted")
            await _settle_briefly()
            counted = delivered()
    attempts = receiver.for_hook("flaky")
    assert len(attempts) == 3
    assert {r.body for r in attempts} == {expected_body(value, "flaky")}
    assert len({r.headers["webhook-id"] for r in attempts}) == 1  # stable across retries
    assert all(r.signature_valid for r in attempts)
    assert counted == 1


async def test_a_redirect_is_not_followed_and_is_dead_lettered(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq])
    async with Receiver(keys={"moved": None, "target": None}) as receiver:
        receiver.script_forever(
            "moved", Reply(status=302, headers={"Location": receiver.url("target")})
        )
        hooks = [{"id": "moved", "events": ["*"], "url": receiver.url("moved")}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks, dead_letter_topic=dlq)
        async with running_daemon(settings_for(path)):
            await produce(kafka_bootstrap, topic, [event_bytes("Role.Created")])
            [letter] = await read_topic(kafka_bootstrap, dlq, 1)
    assert receiver.for_hook("target") == []
    assert len(receiver.for_hook("moved")) == 1  # permanent: no retry either
    headers = headers_of(letter)
    assert headers["hookrelay-reason"] == "permanent_failure"
    assert headers["hookrelay-last-status"] == "302"
    assert headers["hookrelay-hook-id"] == "moved"
    assert headers["hookrelay-attempts"] == "1"
    assert letter.value == event_bytes("Role.Created")


async def test_an_endpoint_that_never_answers_is_cut_off_by_the_timeout(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq])
    async with Receiver(keys={"hang": None}) as receiver:
        receiver.script_forever("hang", Reply(delay_s=3600))
        hooks = [{"id": "hang", "events": ["*"], "url": receiver.url("hang"), "timeout_s": 0.5}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks, dead_letter_topic=dlq,
                            delivery={"retry_schedule_s": [0.1]})  # fmt: skip
        async with running_daemon(settings_for(path)):
            started = time.monotonic()
            await produce(kafka_bootstrap, topic, [event_bytes("Identifier.Lockout")])
            [letter] = await read_topic(kafka_bootstrap, dlq, 1)
            elapsed = time.monotonic() - started
    headers = headers_of(letter)
    assert headers["hookrelay-reason"] == "retries_exhausted"
    assert headers["hookrelay-error"].startswith("timeout")
    assert headers["hookrelay-attempts"] == "2"
    assert len(receiver.for_hook("hang")) == 2
    assert elapsed < 10.0  # two 0.5 s timeouts, not an hour


async def test_a_failed_delivery_waits_in_its_retry_topic_and_no_offset_passes_it_unsettled(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    retry_topic = f"{topic}.retry.3s"
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=1)
    async with Receiver(keys={"picky": None}) as receiver:
        # The first request (record 0's first attempt) fails; every later one succeeds.
        receiver.script("picky", [Reply(status=500)])
        hooks = [{"id": "picky", "events": ["*"], "url": receiver.url("picky")}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks,
                            delivery={"retry_schedule_s": [3.0]})  # fmt: skip
        settings = settings_for(path)
        group = settings.kafka.group_id
        async with running_daemon(settings):
            await produce(kafka_bootstrap, topic, [event_bytes("PostRegister", 0)], partition=0)
            await receiver.wait_for(1, timeout_s=15)
            failed_at = time.monotonic()
            later = [event_bytes("PostRegister", i) for i in range(1, 5)]
            await produce(kafka_bootstrap, topic, later, partition=0)
            await receiver.wait_for(5, timeout_s=15)  # record 0 failed once; 1-4 delivered
            # Record 0 is durably parked, so the event topic's offset moves on ...
            await eventually(lambda: _committed_is(kafka_bootstrap, group, 5), what="offset 5")
            # ... while the retry topic's offset has not passed the parked retry record.
            assert await _retry_offsets(kafka_bootstrap, group, retry_topic) == 0
            await receiver.wait_for(6, timeout_s=20)  # record 0's retry succeeds
            retried_after = time.monotonic() - failed_at
            await eventually(
                lambda: _retry_offsets_are(kafka_bootstrap, group, retry_topic, 1),
                what="the retry record committed",
            )
    attempts = receiver.for_hook("picky")
    assert [r.json["data"]["id"] for r in attempts] == ["u0", "u1", "u2", "u3", "u4", "u0"]
    assert attempts[0].headers["webhook-id"] == attempts[-1].headers["webhook-id"]
    assert attempts[-1].body == expected_body(event_bytes("PostRegister", 0), "picky")
    assert retried_after >= 2.9  # not before the tier's delay


async def _retry_offsets(bootstrap: str, group: str, retry_topic: str) -> int:
    offsets = await committed_offsets(bootstrap, group)
    return sum(offset for tp, offset in offsets.items() if tp.topic == retry_topic)


async def _retry_offsets_are(bootstrap: str, group: str, retry_topic: str, total: int) -> bool:
    return await _retry_offsets(bootstrap, group, retry_topic) == total


async def test_admin_endpoints_expose_health_readiness_and_metrics(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    import aiohttp

    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with Receiver(keys={"m": None}) as receiver:
        hooks = [{"id": "m", "events": ["User.*"], "url": receiver.url("m")}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        async with running_daemon(settings_for(path)) as daemon:
            await produce(
                kafka_bootstrap, topic, [event_bytes("User.Created"), event_bytes("Role.Created")]
            )
            await receiver.wait_for(1)
            base = f"http://127.0.0.1:{daemon.admin.port}"
            async with aiohttp.ClientSession() as http:
                async with http.get(base + "/healthz") as r:
                    assert r.status == 200
                async with http.get(base + "/readyz") as r:
                    assert r.status == 200, await r.text()
                    assert (await r.json())["ready"] is True
                await _settle_briefly()
                async with http.get(base + "/metrics") as r:
                    text = await r.text()
    assert 'hookrelay_deliveries_total{hook_id="m",outcome="delivered"} 1.0' in text
    assert 'hookrelay_events_matched_total{event="Role.Created",matched="false"} 1.0' in text
    assert 'hookrelay_attempts_total{hook_id="m",status_class="2xx"} 1.0' in text
    assert "hookrelay_request_duration_seconds_bucket" in text
    assert "process_resident_memory_bytes" in text
