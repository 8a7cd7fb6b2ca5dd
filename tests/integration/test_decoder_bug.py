"""A bug in the decoder costs one record (dead-lettered), never the daemon: a crash there
would repeat on every restart at the same offset (found by a security trial)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

import hookrelay.pipeline
from hookrelay.events.decode import decode
from tests.integration.harness import (
    headers_of,
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


async def test_a_record_that_trips_a_decoder_bug_is_dead_lettered_and_the_rest_flow(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def buggy_decode(value: bytes | None, *args: object) -> object:
        if value is not None and b"poison" in value:
            raise AssertionError("a decoder bug")
        return decode(value, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(hookrelay.pipeline, "decode", buggy_decode)
    topic = unique("decoder")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])

    def event(n: int) -> bytes:
        note = "poison" if n == 1 else "fine"
        return orjson.dumps({"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z",
                             "n": n, "note": note})  # fmt: skip

    values = [event(n) for n in range(3)]
    async with Receiver(keys={"a": None}) as receiver:
        hooks = [{"id": "a", "events": ["*"], "url": receiver.url("a")}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        async with running_daemon(settings_for(path)) as daemon:
            await produce(kafka_bootstrap, topic, values)
            await receiver.wait_for(2, "a", timeout_s=20)
            [letter] = await read_topic(kafka_bootstrap, f"{topic}.dlq", 1)
            assert not daemon.not_ready_reasons()
    assert sorted(orjson.loads(r.body)["n"] for r in receiver.for_hook("a")) == [0, 2]
    assert letter.value == values[1]  # the original bytes, for a replay once fixed
    headers = headers_of(letter)
    assert headers["hookrelay-reason"] == "decode_error"
    assert "AssertionError" in headers["hookrelay-error"]
