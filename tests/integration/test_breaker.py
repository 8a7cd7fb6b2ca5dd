"""Throttling and the circuit breaker on the real broker, against real receivers.

Both scenarios are trial reproductions (issue 10, item 4), scaled down to run in about a
minute each; each docstring states its scale. They run with the default breaker settings.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from pathlib import Path

import orjson
import pytest

from hookrelay.app import Daemon
from tests.integration.harness import (
    committed_offsets,
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
from tests.receiver import ReceivedRequest, Receiver, Reply

pytestmark = pytest.mark.integration


def event(n: int) -> bytes:
    return orjson.dumps(
        {"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": f"e{n}"}}
    )


def event_id(request: ReceivedRequest) -> str:
    return str(request.json["data"]["id"])


def outcomes(daemon: Daemon, hook_id: str) -> tuple[int, int]:
    """(delivered, dead_lettered) deliveries of ``hook_id`` as the daemon counted them."""

    def count(outcome: str) -> int:
        labels = {"hook_id": hook_id, "outcome": outcome}
        value = daemon.metrics.registry.get_sample_value("hookrelay_deliveries_total", labels)
        return int(value or 0)

    return count("delivered"), count("dead_lettered")


async def produce_in_bursts(
    bootstrap: str, topic: str, total: int, burst: int, every_s: float
) -> None:
    """Publish events ``e0`` … ``e{total-1}``: ``burst`` of them at once, every ``every_s``."""
    started = time.monotonic()
    for first in range(0, total, burst):
        await asyncio.sleep(max(0.0, started + first // burst * every_s - time.monotonic()))
        await produce(bootstrap, topic, [event(n) for n in range(first, min(first + burst, total))])


async def wait_settled(daemon: Daemon, hooks: Iterable[str], total: int, timeout_s: float) -> None:
    """Until every delivery of ``total`` events to ``hooks`` is delivered or dead-lettered."""
    await wait_until(
        lambda: all(sum(outcomes(daemon, h)) >= total for h in hooks),
        timeout_s,
        f"every delivery to {sorted(hooks)} delivered or dead-lettered",
    )


async def event_offsets(bootstrap: str, group: str, topic: str) -> int:
    offsets = await committed_offsets(bootstrap, group)
    return sum(o for tp, o in offsets.items() if tp.topic == topic)


THROTTLED_S = 20.0
"""How long the throttled endpoint answers 429; 5 events arrive every 5 s meanwhile."""


@pytest.mark.timeout(150)
async def test_a_throttled_endpoint_loses_nothing_and_gets_every_event_once_it_recovers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The trial: 429 ``Retry-After: 10`` for 60 s while 60 events arrive, schedule
    [5, 10, 20] (35 s in all). Scaled to 20 s and 20 events, in bursts of 5 every 5 s (a
    burst meets the endpoint with concurrent requests), ``Retry-After: 5`` and a schedule of
    [2.5, 5, 10] (17.5 s): still longer than the whole schedule, so a delivery that counted
    429s or parks as failures would run out (before the fix, at twice this scale: 21 of the
    40 dead-lettered)."""
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    recovered_at = float("inf")
    delivered: set[str] = set()

    def answer(request: ReceivedRequest) -> Reply:
        if time.monotonic() < recovered_at:
            return Reply(status=429, headers={"Retry-After": "5"})
        delivered.add(event_id(request))
        return Reply()

    async with Receiver(keys={"throttled": None}) as receiver:
        receiver.script_forever("throttled", answer)
        hooks = [{"id": "throttled", "events": ["*"], "url": receiver.url("throttled")}]
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks,
            delivery={"retry_schedule_s": [2.5, 5, 10], "retry_jitter": 0.2},
        )  # fmt: skip
        settings = settings_for(path)
        total = int(THROTTLED_S)
        async with running_daemon(settings) as daemon:
            recovered_at = time.monotonic() + THROTTLED_S
            await produce_in_bursts(kafka_bootstrap, topic, total, burst=5, every_s=5.0)
            await wait_settled(daemon, ["throttled"], total, timeout_s=60)
            delivered_n, dead_n = outcomes(daemon, "throttled")
            throttled = sum(1 for r in receiver.requests if r.arrived_monotonic < recovered_at)
            offsets = await event_offsets(kafka_bootstrap, settings.kafka.group_id, topic)
    print(f"\nthrottled: {total} events, {throttled} requests answered 429, "
          f"{delivered_n} delivered, {dead_n} dead-lettered")  # fmt: skip
    assert dead_n == 0
    assert delivered == {f"e{n}" for n in range(total)}
    assert delivered_n == total
    assert offsets == total  # every record settled and committed


FLAKY_EVENTS = 3000


@pytest.mark.timeout(180)
async def test_a_flaky_endpoint_never_has_an_unattempted_delivery_dead_lettered(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The trial: 5,000 events to 3 hooks, one endpoint failing 30 % of requests at random,
    schedule [1, 2, 3, 5, 8, 13, 21]. Scaled to 3,000 events to 3 hooks, published at once,
    and the schedule halved (the suite's time: the longest retry chain sets it)
    (2,000 did not reproduce it; 3,000 did: 300 dead letters, 270 unattempted, before the
    fix). None may reach the dead-letter topic without an attempt, and none may be lost;
    with the default breaker, only a delivery whose eight attempts all failed (0.3⁸, about
    one in 15,000) should get there, but the count is printed rather than asserted."""
    topic = unique("events")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq])
    rng = random.Random(20260821)
    delivered: set[str] = set()

    def answer(request: ReceivedRequest) -> Reply:
        if rng.random() < 0.3:
            return Reply(status=500)
        delivered.add(event_id(request))
        return Reply()

    async with Receiver(keys={"flaky": None, "crm": None, "audit": None}) as receiver:
        receiver.script_forever("flaky", answer)
        hooks = [
            {"id": name, "events": ["*"], "url": receiver.url(name)}
            for name in ("flaky", "crm", "audit")
        ]
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks, dead_letter_topic=dlq,
            delivery={"retry_schedule_s": [0.5, 1, 1.5, 2.5, 4, 6.5, 10.5], "retry_jitter": 0.2},
        )  # fmt: skip
        settings = settings_for(path)
        async with running_daemon(settings) as daemon:
            started = time.monotonic()
            await produce(kafka_bootstrap, topic, [event(n) for n in range(FLAKY_EVENTS)])
            await wait_settled(daemon, ["flaky", "crm", "audit"], FLAKY_EVENTS, timeout_s=120)
            took_s = time.monotonic() - started
            flaky = outcomes(daemon, "flaky")
            healthy = [outcomes(daemon, h) for h in ("crm", "audit")]
            opened = daemon.metrics.registry.get_sample_value(
                "hookrelay_parked_total", {"hook_id": "flaky", "reason": "circuit_open"}
            )
            offsets = await event_offsets(kafka_bootstrap, settings.kafka.group_id, topic)
        requests = len(receiver.for_hook("flaky"))
    letters = await read_topic(kafka_bootstrap, dlq, flaky[1]) if flaky[1] else []
    unattempted = [r for r in letters if headers_of(r)["hookrelay-attempts"] == "0"]
    print(f"\nflaky: {FLAKY_EVENTS} events, {requests} requests, {flaky[0]} delivered, "
          f"{flaky[1]} dead-lettered ({len(unattempted)} with attempt 0), "
          f"{int(opened or 0)} parks behind an open circuit, "
          f"settled in {took_s:.0f} s")  # fmt: skip
    assert unattempted == []
    assert {headers_of(r)["hookrelay-reason"] for r in letters} <= {"retries_exhausted"}
    assert healthy == [(FLAKY_EVENTS, 0)] * 2
    lettered = {orjson.loads(r.value)["data"]["id"] for r in letters}
    assert delivered | lettered == {f"e{n}" for n in range(FLAKY_EVENTS)}  # none lost
    assert sum(flaky) == FLAKY_EVENTS
    assert offsets == FLAKY_EVENTS
