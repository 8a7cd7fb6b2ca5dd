"""Durable retries, dead letters, replay and isolation on the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest

from tests.integration.harness import (
    committed_offsets,
    edit_config,
    eventually,
    headers_of,
    hookrelay_cli,
    produce,
    read_topic,
    running_daemon,
    settings_for,
    unique,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration


def event(name: str, n: int) -> bytes:
    return orjson.dumps(
        {"event": name, "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": f"e{n}"}}
    )


async def test_replay_redrives_selected_dead_letters_with_their_webhook_id(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq])
    async with Receiver(keys={"fixme": "k-fixme"}) as receiver:
        receiver.script_forever("fixme", Reply(status=400))  # a receiver bug: permanent
        hooks = [{"id": "fixme", "events": ["*"], "url": receiver.url("fixme"),
                  "signing_key": "k-fixme"}]  # fmt: skip
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks, dead_letter_topic=dlq)
        settings = settings_for(path)
        values = [event("User.Created", 1), event("User.Created", 2), event("Role.Created", 3)]
        async with running_daemon(settings):
            await produce(kafka_bootstrap, topic, [*values, b"not json"])
            letters = await read_topic(kafka_bootstrap, dlq, 4)
            first_ids = {r.headers["webhook-id"] for r in receiver.requests}

            code, out, err = await hookrelay_cli(
                "replay", "-c", str(path), "--hook-id", "fixme", "--event", "User.Created",
                "--dry-run",
            )  # fmt: skip
            assert code == 0, out
            assert err == ""
            assert out.count("would replay: hook=fixme event=User.Created") == 2
            assert "would replay 2 of 4 dead letters" in out
            assert "not replayable: 1 invalid records" in out
            # A typo in a hook id selects nothing: said up front (a new user's trial).
            code, out, err = await hookrelay_cli(
                "replay", "-c", str(path), "--hook-id", "fixmee", "--dry-run"
            )
            assert code == 0 and "would replay 0 of 4" in out
            assert err.startswith("warning: --hook-id 'fixmee' names no configured hook (known: ")
            await asyncio.sleep(1.0)
            assert len(receiver.requests) == 3  # a dry run sends nothing

            receiver.script_forever("fixme", None)  # the receiver is fixed
            code, out, _ = await hookrelay_cli(
                "replay", "-c", str(path), "--hook-id", "fixme", "--event", "User.Created"
            )
            assert code == 0, out
            assert "replayed 2 of 4 dead letters" in out
            replayed = (await receiver.wait_for(5, timeout_s=20))[3:]
    reasons = sorted(headers_of(r)["hookrelay-reason"] for r in letters)
    assert reasons == ["not_json", "permanent_failure", "permanent_failure", "permanent_failure"]
    assert sorted(r.body for r in replayed) == sorted(
        v[:-1] + b',"hookId":"fixme"}' for v in values[:2]
    )
    assert {r.headers["webhook-id"] for r in replayed} <= first_ids  # same ids as before
    assert all(r.signature_valid for r in replayed)


async def test_a_dead_endpoint_opens_its_circuit_and_never_holds_back_the_others(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=2)
    async with Receiver(keys={"dead": None, "healthy": None}) as receiver:
        receiver.script_forever("dead", Reply(delay_s=3600))  # accepts, never answers
        hooks = [
            {"id": "dead", "events": ["*"], "url": receiver.url("dead"), "timeout_s": 0.3},
            {"id": "healthy", "events": ["*"], "url": receiver.url("healthy")},
        ]
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks,
            delivery={"retry_schedule_s": [30, 60], "circuit_window": 3,
                      "circuit_min_attempts": 3, "circuit_cooldown_s": 60,
                      "lane_max_pending": 50, "max_in_flight": 200},
        )  # fmt: skip
        settings = settings_for(path)
        async with running_daemon(settings) as daemon:
            started = time.monotonic()
            await produce(kafka_bootstrap, topic, [event("PostSignIn", i) for i in range(400)])
            await receiver.wait_for(400, hook_id="healthy", timeout_s=30)
            healthy_s = time.monotonic() - started
            # Every record is settled: delivered to the healthy hook, parked for the dead one.
            await eventually(
                lambda: _event_offsets_are(kafka_bootstrap, settings.kafka.group_id, topic, 400),
                what="all 400 event offsets committed",
            )
            lane = daemon.dispatcher.lane("dead")
            assert lane.circuit.name == "OPEN"
            parked = daemon.metrics.parked.labels("dead", "circuit_open")._value.get()
            in_flight = daemon.dispatcher.in_flight
    assert len(receiver.for_hook("dead")) <= 3 + 50  # at most a lane's worth was attempted
    assert parked >= 300
    assert in_flight == 0  # nothing held in memory for the dead endpoint
    assert healthy_s < 20


async def _event_offsets_are(bootstrap: str, group: str, topic: str, total: int) -> bool:
    offsets = await committed_offsets(bootstrap, group)
    return sum(o for tp, o in offsets.items() if tp.topic == topic) == total


async def test_a_record_too_large_for_any_topic_is_dead_lettered_truncated_and_nothing_stalls(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    from aiokafka import AIOKafkaProducer

    topic = unique("events")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq], partitions=1)
    # gzip lets a producer get a 1.5 MB value past the broker's 1 MiB limit.
    huge = (
        b'{"event":"User.Created","createdAt":"2026-01-01T00:00:00.000Z","pad":"'
        + (b"x" * 1_500_000)
        + b'"}'
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, compression_type="gzip", max_request_size=4_000_000
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, huge)
    finally:
        await producer.stop()
    async with Receiver(keys={"all": None}) as receiver:
        hooks = [{"id": "all", "events": ["*"], "url": receiver.url("all")}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks, dead_letter_topic=dlq)
        settings = settings_for(path)
        async with running_daemon(settings):
            await produce(kafka_bootstrap, topic, [event("PostSignIn", 1)])
            [request] = await receiver.wait_for(1, timeout_s=20)
            [letter] = await read_topic(kafka_bootstrap, dlq, 1)
            await eventually(
                lambda: _event_offsets_are(kafka_bootstrap, settings.kafka.group_id, topic, 2),
                what="both offsets committed",
            )
    headers = headers_of(letter)
    assert headers["hookrelay-reason"] == "oversized"
    assert headers["hookrelay-truncated"] == "true"
    assert headers["hookrelay-original-bytes"] == str(len(huge))
    assert letter.value == huge[: 64 * 1024]
    assert request.json["data"]["id"] == "e1"


async def test_an_endpoint_that_recovers_after_its_circuit_opened_gets_every_event(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with Receiver(keys={"flappy": None}) as receiver:
        receiver.script_forever("flappy", Reply(status=503))
        hooks = [{"id": "flappy", "events": ["*"], "url": receiver.url("flappy")}]
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks,
            delivery={"retry_schedule_s": [1, 2, 4], "circuit_window": 3,
                      "circuit_min_attempts": 3, "circuit_cooldown_s": 2},
        )  # fmt: skip
        async with running_daemon(settings_for(path)) as daemon:
            await produce(kafka_bootstrap, topic, [event("User.Created", i) for i in range(50)])
            await eventually(
                _async(lambda: daemon.dispatcher.lane("flappy").circuit.name != "CLOSED"),
                what="the circuit to open",
            )
            await asyncio.sleep(3.0)
            receiver.script_forever("flappy", None)  # the endpoint recovers
            await eventually(
                _async(lambda: {r.json["data"]["id"] for r in receiver.for_hook("flappy")
                                if r.json} >= {f"e{i}" for i in range(50)}),
                timeout_s=40, what="all 50 events delivered",
            )  # fmt: skip
            dead = daemon.metrics.dead_lettered.labels("retries_exhausted")._value.get()
    assert dead == 0  # the cool-down did not eat the schedule


async def test_a_long_retry_after_never_holds_up_another_hooks_retries(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=1)
    async with Receiver(keys={"throttled": None, "flaky": None}) as receiver:
        receiver.script("throttled", [Reply(status=429, headers={"Retry-After": "60"})])
        receiver.script("flaky", [Reply(status=500)] * 3)
        hooks = [
            {"id": "throttled", "events": ["*"], "url": receiver.url("throttled")},
            {"id": "flaky", "events": ["*"], "url": receiver.url("flaky"), "max_concurrency": 1},
        ]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks,
                            delivery={"retry_schedule_s": [0.5, 1, 2]})  # fmt: skip
        edit_config(path, "kafka", topic_partitions=1)
        async with running_daemon(settings_for(path)):
            started = time.monotonic()
            await produce(kafka_bootstrap, topic, [event("PostSignIn", 1)])
            await receiver.wait_for(4, hook_id="flaky", timeout_s=30)
            flaky_done = time.monotonic() - started
    assert flaky_done < 15  # 0.5 + 1 + 2 s of schedule, not the other hook's 60 s
    assert len(receiver.for_hook("throttled")) == 1  # still waiting out its Retry-After


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def wrapped() -> bool:
        return check()

    return wrapped


async def test_replay_remembers_what_it_re_drove_and_sends_it_again_only_when_asked(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with fixed_after_dead_letters(kafka_bootstrap, tmp_path, 12) as (receiver, path):
        replay = ("replay", "-c", str(path))

        code, out, _ = await hookrelay_cli(*replay, "--dry-run")
        assert code == 0 and "would replay 12 of 12" in out
        assert out.count("would replay: hook=fixme") == 10  # a sample
        assert "... and 2 more (--verbose lists them all)" in out

        code, out, _ = await hookrelay_cli(*replay)
        assert code == 0 and "replayed 12 of 12" in out
        await receiver.wait_for(24, timeout_s=20)

        code, out, _ = await hookrelay_cli(*replay)
        assert code == 0 and "replayed 0 of 12" in out and "already replayed: 12" in out
        code, out, _ = await hookrelay_cli(*replay, "--dry-run", "--again", "--limit", "3")
        assert code == 0 and "would replay 3 of 12" in out
        await asyncio.sleep(1.5)
        assert len(receiver.requests) == 24  # the second run and the dry run sent nothing

        code, out, _ = await hookrelay_cli(*replay, "--again", "--limit", "3")
        assert code == 0 and "replayed 3 of 12" in out
        again = (await receiver.wait_for(27, timeout_s=20))[24:]
        first = {q.headers["webhook-id"] for q in receiver.requests[:12]}
        assert {q.headers["webhook-id"] for q in again} <= first


async def test_two_replays_at_once_send_each_letter_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with fixed_after_dead_letters(kafka_bootstrap, tmp_path, 20) as (receiver, path):
        runs = await asyncio.gather(
            hookrelay_cli("replay", "-c", str(path)), hookrelay_cli("replay", "-c", str(path))
        )
        # One run replays; the other is refused (its claim came second) or, started
        # after the first ended, finds every letter replayed already.
        outputs = [out + err for _, out, err in runs]
        assert sum("replayed 20 of 20" in out for out in outputs) == 1, outputs
        assert any(
            "another replay of this deployment is running" in out or "replayed 0 of 20" in out
            for out in outputs
        ), outputs
        await receiver.wait_for(40, timeout_s=20)
        await asyncio.sleep(2.0)
        assert len(receiver.requests) == 40  # 20 failed first attempts, 20 replayed once


@asynccontextmanager
async def fixed_after_dead_letters(
    bootstrap: str, tmp_path: Path, count: int
) -> AsyncIterator[tuple[Receiver, Path]]:
    """A running daemon whose hook ``fixme`` answered 400 to ``count`` events, all now in the
    dead-letter topic, and answers 200 since: ready for replays."""
    topic = unique("replay")
    dlq = f"{topic}.dlq"
    await create_topics(bootstrap, [topic, dlq])
    async with Receiver() as receiver:
        receiver.script_forever("fixme", Reply(status=400))
        hooks = [{"id": "fixme", "events": ["*"], "url": receiver.url("fixme")}]
        path = write_config(tmp_path, bootstrap, topic, hooks, dead_letter_topic=dlq)
        async with running_daemon(settings_for(path)):
            await produce(bootstrap, topic, [event("User.Created", n) for n in range(count)])
            await read_topic(bootstrap, dlq, count)
            receiver.script_forever("fixme", None)
            yield receiver, path
