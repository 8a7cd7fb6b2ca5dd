"""Hostile records against a real ``hookrelay run`` process, a real broker and a receiver:
every record ends delivered or dead-lettered, the daemon stays up and ready, its offsets are
committed to the end, and its resident memory stays bounded."""

from __future__ import annotations

import asyncio
import gc
import signal
import tracemalloc
from pathlib import Path

import orjson
import pytest

import hookrelay
from hookrelay.delivery import dispatcher
from hookrelay.events.signing import delivery_id
from tests.hostile import adversarial_corpus
from tests.integration.harness import (
    answers_with,
    committed_offsets,
    edit_config,
    eventually,
    headers_of,
    produce,
    read_topic,
    running_daemon,
    settings_for,
    start_daemon_process,
    status_of,
    unique,
    with_admin_port,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver

pytestmark = pytest.mark.integration

KEY = "hostile-input-key-0123"
MAX_EVENT_BYTES = 64 * 1024
RSS_GROWTH_BOUND_KIB = 150 * 1024
"""Generous: the corpus is about 1.5 MB in all; a leak per record would show far above it."""


def valid_event(n: int) -> bytes:
    return orjson.dumps(
        {"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": f"u{n}"}}
    )


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` (``VmRSS`` of /proc/PID/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


async def test_every_hostile_record_is_delivered_or_dead_lettered_and_the_daemon_stays_up(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("hostile")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq], partitions=1)
    hostile = adversarial_corpus()
    valid = [valid_event(n) for n in range(60)]
    values = [v for pair in zip(hostile, valid * 5, strict=False) for v in pair] + hostile[300:]
    assert len(values) >= 350
    async with Receiver(keys={"all": KEY}) as receiver:
        hooks = [{"id": "all", "events": ["*"], "url": receiver.url("all"), "signing_key": KEY}]
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks, dead_letter_topic=dlq,
            delivery={"max_event_bytes": MAX_EVENT_BYTES},
        )  # fmt: skip
        group = orjson.loads(path.read_bytes())["kafka"]["group_id"]
        port = with_admin_port(path)
        daemon = await start_daemon_process(path, tmp_path / "daemon.log")
        try:
            ready = f"http://127.0.0.1:{port}/readyz"
            await eventually(lambda: answers_with(ready, 200), 60, "the daemon to become ready")
            before = rss_kib(daemon.pid)
            await produce(kafka_bootstrap, topic, values, partition=0)
            await eventually(
                lambda: committed_through(kafka_bootstrap, group, topic, len(values)), 60,
                f"offset {len(values)} committed",
            )  # fmt: skip
            after = rss_kib(daemon.pid)
            assert daemon.returncode is None and await status_of(ready) == 200
        finally:
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
            exit_code = await asyncio.wait_for(daemon.wait(), 30)
        assert exit_code == 0
    assert after - before < RSS_GROWTH_BOUND_KIB, f"RSS grew from {before} KiB to {after} KiB"
    ids = {delivery_id(topic, 0, offset, "all"): offset for offset in range(len(values))}
    delivered = [ids[request.headers["webhook-id"]] for request in receiver.requests]
    assert len(delivered) == len(set(delivered))  # each record at most once
    assert all(request.signature_valid for request in receiver.requests)
    letters = await read_topic(kafka_bootstrap, dlq, len(values) - len(delivered))
    dead = [int(headers_of(letter)["hookrelay-origin-offset"]) for letter in letters]
    # consumed = delivered events + dead-lettered, and no record is both
    assert sorted(delivered + dead) == list(range(len(values)))
    valid_offsets = {i for i, value in enumerate(values) if value in valid}
    assert valid_offsets <= set(delivered)
    reasons = {headers_of(letter)["hookrelay-reason"] for letter in letters}
    assert {"not_json", "not_object", "missing_event", "bad_created_at", "empty"} <= reasons
    assert "oversized" in reasons


async def committed_through(bootstrap: str, group: str, topic: str, offset: int) -> bool:
    """Every committed partition of ``topic`` is at ``offset`` or beyond (retry partitions
    are committed too, from their assignment on)."""
    offsets = [
        o for tp, o in (await committed_offsets(bootstrap, group)).items() if tp.topic == topic
    ]
    return bool(offsets) and min(offsets) >= offset


LEAK_PER_RECORD_BYTES = 64
"""What hookrelay's own code may keep per record handled, on average, once warmed up: far
below any record of the corpus (about 1.5 KB each), so keeping anything of a record — its
value, its event, a ticket, a log entry — shows."""
NOISE_BYTES = 128 * 1024
"""Bounded caches that fill in steps (orjson's key cache holds what decode parsed: up to
80 KiB appeared in one round, then nothing)."""


async def test_hostile_records_leave_nothing_behind_per_record(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same corpus, round after round, through a daemon in this process: memory that
    hookrelay's own modules hold (tracemalloc, by allocating file) must not grow with the
    number of records handled. The bounded structures (attempt log, metrics series, the
    recently delivered ids) are made small enough to fill during the warm-up rounds."""
    # 20,000 ids (about 3 MB) would still be filling here, at 100 deliveries a round: their
    # growth (about 150 B per delivery) once took the bound without any leak.
    monkeypatch.setattr(dispatcher, "RECENTLY_DELIVERED", 50)
    topic = unique("leak")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=1)
    values = adversarial_corpus() + [valid_event(n) for n in range(100)]
    async with Receiver(keys={"all": KEY}) as receiver:
        hooks = [{"id": "all", "events": ["*"], "url": receiver.url("all"), "signing_key": KEY}]
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks,
            delivery={"max_event_bytes": MAX_EVENT_BYTES},
        )  # fmt: skip
        edit_config(path, "admin", recent_attempts=10)  # the bounded log fills at once
        group = orjson.loads(path.read_bytes())["kafka"]["group_id"]
        tracemalloc.start()
        try:
            async with running_daemon(settings_for(path)):
                held = []
                for round_ in range(1, 10):
                    await produce(kafka_bootstrap, topic, values, partition=0)
                    await eventually(
                        lambda r=round_: committed_through(
                            kafka_bootstrap, group, topic, r * len(values)
                        ),
                        60, f"round {round_} committed",
                    )  # fmt: skip
                    gc.collect()
                    held.append(_hookrelay_bytes(tracemalloc.take_snapshot()))
        finally:
            tracemalloc.stop()
    growth = held[-1] - held[2]  # rounds 4-9, after three warm-up rounds
    records = 6 * len(values)
    assert growth < NOISE_BYTES + LEAK_PER_RECORD_BYTES * records, (
        f"hookrelay's modules hold {growth} more bytes after {records} more records "
        f"(per round: {held})"
    )


def _hookrelay_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes still allocated by code in the hookrelay package (what it keeps of a record:
    its event, body, deliveries, tickets, dead letters, log entries). Objects another
    library allocated and hookrelay kept are not counted: the whole process's figure grows
    by about 500 bytes per record without any leak (aiokafka, asyncio), too noisy to bound."""
    package = str(Path(hookrelay.__file__).parent)
    mine = snapshot.filter_traces([tracemalloc.Filter(True, f"{package}/*")])
    return sum(stat.size for stat in mine.statistics("filename"))
