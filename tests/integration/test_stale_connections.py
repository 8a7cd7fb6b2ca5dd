"""Issue 10, item 7: an endpoint that closes each kept-alive connection moments after
answering (the keep-alive race) gets every delivery on the first attempt: a POST written
into a pooled connection the endpoint had already closed goes out again on a fresh one."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from hookrelay.ops.metrics import Metrics
from tests.integration.harness import (
    produce,
    running_daemon,
    settings_for,
    unique,
    wait_until,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import logto_signature
from tests.stale_server import StaleServer

pytestmark = pytest.mark.integration

DELIVERIES = 2_000
KEY = "k-racer"


def event(n: int) -> bytes:
    return orjson.dumps(
        {"event": "PostSignIn", "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": f"e{n}"}}
    )


def total(metrics: Metrics, name: str) -> float:
    """The sum of every sample of ``name`` (all label values)."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    )


async def test_an_endpoint_closing_each_connection_5_ms_after_answering_loses_no_attempt(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with StaleServer(close_after_s=0.005) as server:
        hooks = [{"id": "racer", "events": ["*"], "url": server.url("/hooks/racer"),
                  "signing_key": KEY}]  # fmt: skip
        settings = settings_for(write_config(tmp_path, kafka_bootstrap, topic, hooks))
        async with running_daemon(settings) as daemon:
            await produce(kafka_bootstrap, topic, [event(n) for n in range(DELIVERIES)])

            def settled() -> bool:  # delivered, or dead-lettered (what the race did before)
                delivered = {r.body for r in server.requests}
                dead = total(daemon.metrics, "hookrelay_dead_lettered_total")
                return len(delivered) + dead >= DELIVERIES

            await wait_until(settled, 40.0, "every delivery settled")
            attempts = dict(daemon.metrics.hook_stats("racer").attempts)
            trouble = {
                "failed attempts": sum(n for status, n in attempts.items() if status != "2xx"),
                "retries scheduled": total(daemon.metrics, "hookrelay_retries_scheduled_total"),
                "dead-lettered": total(daemon.metrics, "hookrelay_dead_lettered_total"),
                "parked": total(daemon.metrics, "hookrelay_parked_total"),
            }
            resent = total(daemon.metrics, "hookrelay_stale_connection_retries_total")
    assert trouble == dict.fromkeys(trouble, 0)
    assert attempts == {"2xx": DELIVERIES}
    # The race did happen: requests were written into connections being closed; each one
    # that reached the server was sent again (others never got past the client's socket).
    assert 0 < server.dropped <= resent
    assert len(server.requests) == DELIVERIES  # each event arrived once: a dropped one was unread
    assert all(r.headers["logto-signature-sha-256"] == logto_signature(KEY, r.body)
               for r in server.requests)  # fmt: skip
    assert {r.body for r in server.requests} == {
        event(n)[:-1] + b',"hookId":"racer"}' for n in range(DELIVERIES)
    }
