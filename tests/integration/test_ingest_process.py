"""``hookrelay ingest`` as a real process on a real broker: Logto's webhooks, signed as Logto
signs them, become events every hook receives byte-exact; a 2xx means the event is in Kafka,
through a broker outage and a kill -9; bad input and slow clients are refused while the
endpoint stays up and ready."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest
import trustme
from aiokafka import AIOKafkaConsumer, TopicPartition

from hookrelay.events.signing import logto_signature
from tests.integration.harness import (
    HOOKRELAY,
    ROOT,
    edit_config,
    eventually,
    running_daemon,
    settings_for,
    unique,
    write_config,
)
from tests.kafka_broker import create_topics, free_port, run_kafkactl
from tests.receiver import Receiver

pytestmark = pytest.mark.integration

KEY = "logto-webhook-signing-key-0123456789"
LOGTO_HOOK_ID = "hk5bz0sbz3ebvhsr2vcby"
DEMO_EVENTS = (ROOT / "deploy/demo/events.jsonl").read_bytes().splitlines()


SENDERS = 5
"""Concurrent senders in the outage tests."""


def logto_body(event: bytes) -> bytes:
    """The body Logto posts: the event with its webhook's hookId as the last member."""
    return event[:-1] + b',"hookId":"' + LOGTO_HOOK_ID.encode() + b'"}'


def numbered(n: int) -> bytes:
    """A distinct valid event: User.Created of user ``u<n>``."""
    return orjson.dumps({
        "event": "User.Created", "createdAt": "2026-12-03T10:00:00.000Z",
        "data": {"id": f"u{n}", "primaryEmail": f"user{n}@example.com"},
    })  # fmt: skip


class Ingest:
    """A running ``hookrelay ingest`` process and how to reach it."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, metrics_port: int) -> None:
        self.process, self.port, self.metrics_port = process, port, metrics_port
        self.url = f"http://127.0.0.1:{port}/logto/prod"

    async def readyz(self) -> tuple[int, dict[str, object]]:
        url = f"http://127.0.0.1:{self.metrics_port}/readyz"
        async with aiohttp.ClientSession() as http, http.get(url) as answer:
            return answer.status, await answer.json()

    async def ready(self) -> bool:
        with contextlib.suppress(aiohttp.ClientError):
            return (await self.readyz())[0] == 200
        return False


def ingest_config(tmp_path: Path, bootstrap: str, topic: str, **ingest: object) -> Path:
    section = {
        "listen": f"127.0.0.1:{free_port()}", "metrics_listen": f"127.0.0.1:{free_port()}",
        "sources": [{"id": "prod", "signing_key": KEY}], "write_timeout_s": 3,
        **ingest,
    }  # fmt: skip
    return write_config(tmp_path, bootstrap, topic, [], extra={"ingest": section})


@asynccontextmanager
async def ingest_process(path: Path, log: Path) -> AsyncIterator[Ingest]:
    """``hookrelay ingest -c path`` until the block ends (SIGTERM, then kill)."""
    section = orjson.loads(await asyncio.to_thread(path.read_bytes))["ingest"]
    process = await asyncio.create_subprocess_exec(
        *HOOKRELAY, "ingest", "-c", str(path), cwd=ROOT,
        stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    port = int(section["listen"].rpartition(":")[2])
    ingest = Ingest(process, port, int(section["metrics_listen"].rpartition(":")[2]))
    try:
        yield ingest
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def post_logto(
    session: aiohttp.ClientSession, url: str, body: bytes, key: str | None = KEY
) -> int:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["logto-signature-sha-256"] = logto_signature(key, body)
    try:
        async with session.post(url, data=body, headers=headers) as answer:
            await answer.read()
            return answer.status
    except aiohttp.ClientError:
        return 0  # no answer (connection refused or cut)


async def test_every_catalogue_event_posted_as_logto_posts_it_reaches_every_hook_byte_exact(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("ingest-e2e")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    keys = {"crm": "crm-signing-key-0123456789", "audit": "audit-signing-key-0123456789"}
    events = [line for line in DEMO_EVENTS if line.strip()]
    # Logto's "send test" payload: its hookId second, not last.
    test_payload = (b'{"event":"PostRegister","hookId":"' + LOGTO_HOOK_ID.encode()
                    + b'","createdAt":"2026-12-03T10:00:00.000Z","sessionId":"s1"}')  # fmt: skip
    expected_records = [*events, b'{"event":"PostRegister","createdAt":"2026-12-03T10:00:00.000Z"'
                        b',"sessionId":"s1"}']  # fmt: skip
    async with Receiver(keys=keys) as receiver:
        hooks = [{"id": hook, "events": ["*"], "url": receiver.url(hook), "signing_key": key}
                 for hook, key in keys.items()]  # fmt: skip
        daemon_config = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        path = ingest_config(tmp_path, kafka_bootstrap, topic)
        async with (
            running_daemon(settings_for(daemon_config)),
            ingest_process(path, tmp_path / "ingest.log") as ingest,
            aiohttp.ClientSession() as session,
        ):
            await eventually(ingest.ready, 30, "the ingest process to be ready")
            statuses = [await post_logto(session, ingest.url, logto_body(e)) for e in events]
            statuses.append(await post_logto(session, ingest.url, test_payload))
            assert set(statuses) == {204}
            received = await receiver.wait_for(2 * len(expected_records), timeout_s=60)
    for hook in keys:
        bodies = sorted(r.body for r in received if r.hook_id == hook)
        assert bodies == sorted(e[:-1] + f',"hookId":"{hook}"}}'.encode()
                                for e in expected_records)  # fmt: skip
    assert all(r.signature_valid for r in received)


@pytest.mark.parametrize(
    "producer_timeout_s", [None, 3.0], ids=["outage-within-request-timeout", "longer-outage"]
)
async def test_a_broker_outage_answers_503_and_loses_no_acknowledged_event(
    tmp_path: Path, producer_timeout_s: float | None
) -> None:
    # "longer-outage": the broker stays away past the producer's request timeout, under
    # concurrent load. aiokafka's idempotent producer then gives up on a batch, its sequence
    # numbers have a gap, and its sender task dies on OutOfOrderSequenceNumber: a breaker's
    # trial saw every later request answered 503 while /readyz said ready, until a restart.
    port = free_port()
    bootstrap, data_dir = f"127.0.0.1:{port}", tmp_path / "outage-broker"
    started = await asyncio.to_thread(
        run_kafkactl, "start", "--port", str(port), "--data-dir", str(data_dir)
    )
    assert started.returncode == 0, started.stderr
    topic = "outage.events"
    try:
        await create_topics(bootstrap, [topic, f"{topic}.dlq"], partitions=1)
        path = ingest_config(tmp_path, bootstrap, topic)
        if producer_timeout_s is not None:
            edit_config(path, "kafka", request_timeout_s=producer_timeout_s)
        answered: dict[int, int] = {}
        async with (
            ingest_process(path, tmp_path / "ingest.log") as ingest,
            aiohttp.ClientSession() as session,
        ):
            await eventually(ingest.ready, 30, "the ingest process to be ready")
            numbers = itertools.count()

            async def send_for(seconds: float) -> None:
                end = asyncio.get_running_loop().time() + seconds

                async def sender() -> None:
                    while asyncio.get_running_loop().time() < end:
                        n = next(numbers)
                        answered[n] = await post_logto(session, ingest.url, logto_body(numbered(n)))

                await asyncio.gather(*(sender() for _ in range(SENDERS)))

            await send_for(2.0)
            stopping = asyncio.create_task(asyncio.to_thread(
                run_kafkactl, "stop", "--data-dir", str(data_dir)
            ))  # fmt: skip
            while not stopping.done():
                await send_for(0.2)
            # The broker is away: every answer now is a 503. With the restart below it stays
            # away about 10 s, past the 3 s request timeout of "longer-outage".
            await send_for(4.0)
            assert not await ingest.ready()
            restarted = await asyncio.to_thread(
                run_kafkactl, "start", "--port", str(port), "--data-dir", str(data_dir)
            )
            assert restarted.returncode == 0, restarted.stderr
            await eventually(ingest.ready, 60, "readiness once the broker is back")
            # The first writes may find the producer failed (longer-outage): it is replaced
            # at once, and the process takes writes again within a second or two. Sent until
            # a whole second of writes was taken (5 rounds answered only 204), at most 10 s.
            taking, give_up = 0, asyncio.get_running_loop().time() + 10.0
            while taking < 5 and asyncio.get_running_loop().time() < give_up:
                mark = max(answered)
                await send_for(0.2)
                round_ = {status for n, status in answered.items() if n > mark}
                taking = taking + 1 if round_ == {204} else 0
        statuses = set(answered.values())
        assert statuses <= {204, 503}, statuses
        acknowledged = [i for i, status in answered.items() if status == 204]
        refused = [i for i, status in answered.items() if status == 503]
        assert refused, "the outage was never seen"
        assert max(acknowledged) > max(refused), "nothing acknowledged after the broker came back"
        records = await read_all(bootstrap, topic)
        # Every record is a whole event (nothing half-written) and every 204 is among them.
        in_kafka = {orjson.loads(value)["data"]["id"] for value in records}
        assert all(value == numbered(int(orjson.loads(value)["data"]["id"][1:]))
                   for value in records)  # fmt: skip
        assert {f"u{i}" for i in acknowledged} <= in_kafka
        assert len(records) == len(in_kafka), "an event was written twice"
    finally:
        await asyncio.to_thread(run_kafkactl, "stop", "--data-dir", str(data_dir))


async def read_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every record value of ``topic`` (one partition) up to its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        values: list[bytes] = []
        while await consumer.position(partition) < end:
            batch = await consumer.getmany(partition, timeout_ms=1000)
            values.extend(r.value for r in batch.get(partition, []) if r.value is not None)
        return values
    finally:
        await consumer.stop()


async def test_kill_9_under_load_loses_no_event_answered_2xx(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("ingest-kill")
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    path = ingest_config(tmp_path, kafka_bootstrap, topic)
    acknowledged: list[int] = []
    async with (
        ingest_process(path, tmp_path / "ingest.log") as ingest,
        aiohttp.ClientSession() as session,
    ):
        await eventually(ingest.ready, 30, "the ingest process to be ready")
        counter = iter(range(1_000_000))

        async def sender() -> None:
            while ingest.process.returncode is None:
                n = next(counter)
                if await post_logto(session, ingest.url, logto_body(numbered(n))) == 204:
                    acknowledged.append(n)

        senders = [asyncio.create_task(sender()) for _ in range(16)]
        await eventually(lambda: _at_least(acknowledged, 300), 30, "300 acknowledged events")
        os.kill(ingest.process.pid, signal.SIGKILL)
        await ingest.process.wait()
        await asyncio.gather(*senders)
    records = await read_all(kafka_bootstrap, topic)
    in_kafka = {orjson.loads(value)["data"]["id"] for value in records}
    missing = {f"u{n}" for n in acknowledged} - in_kafka
    assert not missing, f"{len(missing)} events answered 204 are not in Kafka"


async def _at_least(items: list[int], count: int) -> bool:
    return len(items) >= count


async def test_bad_input_and_slow_clients_are_refused_while_the_endpoint_stays_ready(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("ingest-bad")
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    path = ingest_config(tmp_path, kafka_bootstrap, topic, idle_timeout_s=2,
                         request_timeout_s=2, max_connections=64)  # fmt: skip
    good = logto_body(numbered(1))
    async with (
        ingest_process(path, tmp_path / "ingest.log") as ingest,
        aiohttp.ClientSession() as session,
    ):
        await eventually(ingest.ready, 30, "the ingest process to be ready")
        # Slow clients first, holding connections while the rest of the test runs.
        slow_headers = [await _slow_headers(ingest.port) for _ in range(100)]
        slow_body = await _slow_body(ingest.port)
        cases = [
            (good, "wrong-key-0123456789", 401),
            (good, None, 401),
            (b"{" + b" " * (10 * 1024 * 1024) + b"}", KEY, 413),
            (b"not json at all", KEY, 400),
            (b"[1,2,3]", KEY, 400),
            (b'{"createdAt":"2026-12-03T10:00:00.000Z","hookId":"x"}', KEY, 400),
        ]
        for body, key, status in cases:
            assert await post_logto(session, ingest.url, body, key) == status
        assert await post_logto(session, ingest.url, good) == 204
        assert (await ingest.readyz())[0] == 200
        # The slow clients were cut off: idle headers after idle_timeout_s, the body with 408.
        async with asyncio.timeout(10):
            head = await slow_body[0].read()
        assert head.startswith(b"HTTP/1.1 408")
        for reader, _ in slow_headers:
            async with asyncio.timeout(10):
                assert await reader.read() == b""  # closed without an answer
        for _, writer in [*slow_headers, slow_body]:
            writer.close()
        assert ingest.process.returncode is None
        metrics_url = f"http://127.0.0.1:{ingest.metrics_port}/metrics"
        async with session.get(metrics_url) as answer:
            text = await answer.text()
    assert 'hookrelay_ingest_connections_closed_total{reason="evicted_idle"} ' in text
    assert 'hookrelay_ingest_connections_closed_total{reason="evicted_idle"} 0.0' not in text
    records = await read_all(kafka_bootstrap, topic)
    assert records == [numbered(1)]
    # Neither the signing key nor a body reached the logs.
    logged = (tmp_path / "ingest.log").read_text()
    assert KEY not in logged and "wrong-key" not in logged
    assert "user1@example.com" not in logged and "not json at all" not in logged


async def test_tls_serves_https_with_the_configured_certificate(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    certificate.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "ingest.pem"))
    topic = unique("ingest-tls")
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    path = ingest_config(tmp_path, kafka_bootstrap, topic, tls={"cert_file": "ingest.pem"},
                         max_connections=20, idle_timeout_s=2)  # fmt: skip
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    async with (
        ingest_process(path, tmp_path / "ingest.log") as ingest,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting)) as session,
    ):
        await eventually(ingest.ready, 30, "the ingest process to be ready")
        https = ingest.url.replace("http://", "https://")
        assert await post_logto(session, https, logto_body(numbered(7))) == 204
        assert await post_logto(session, ingest.url, logto_body(numbered(8))) == 0  # no plain HTTP
        # A breaker's trial: connections that never began their TLS handshake were held for
        # asyncio's 60 s, outside the connection cap, until file descriptors ran out.
        silent = [await asyncio.open_connection("127.0.0.1", ingest.port) for _ in range(40)]
        async with asyncio.timeout(10):
            for reader, _ in silent:
                assert await reader.read() == b""  # closed by the server, unanswered
        for _, writer in silent:
            writer.close()
        await asyncio.sleep(1.0)  # their slots are forgotten half a second after the timeout
        assert await post_logto(session, https, logto_body(numbered(9))) == 204
    assert await read_all(kafka_bootstrap, topic) == [numbered(7), numbered(9)]


async def _slow_headers(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /logto/prod HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    return reader, writer


async def _slow_body(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /logto/prod HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{")  # fmt: skip
    await writer.drain()
    return reader, writer
