"""hookrelay.ingest.endpoint on a real listener on 127.0.0.1, with a recording writer in place
of Kafka (the broker-backed process is tested in tests/integration): every refusal answers
its status and writes nothing; an accepted event is answered 204 only after its write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiokafka.errors import MessageSizeTooLargeError
from structlog.testing import capture_logs

from hookrelay.events.signing import logto_signature
from hookrelay.ingest.batch import BatchApi
from hookrelay.ingest.endpoint import IngestEndpoint, Source
from hookrelay.ingest.http import (
    Limits,
    RefusalLog,
    RefusedError,
    add_unmatched_route,
    counted,
)
from hookrelay.ops.listener import GuardedListener
from hookrelay.ops.metrics import IngestMetrics

ROOT = Path(__file__).resolve().parents[3]
EVENT = (ROOT / "deploy/demo/events.jsonl").read_bytes().splitlines()[0]
BODY = EVENT[:-1] + b',"hookId":"hk1"}'  # Logto's body: the event, then its hookId
KEY = "logto-webhook-signing-key-0123456789"
SOURCE = Source("prod", "/logto/prod", KEY, "identity.events")


class Recorder:
    def __init__(self) -> None:
        self.written: list[tuple[str, bytes | None, bytes]] = []
        self.fail: Exception | None = None
        self.delay_s = 0.0

    async def write(self, topic: str, key: bytes | None, value: bytes) -> None:
        await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        self.written.append((topic, key, value))


@asynccontextmanager
async def listening(
    endpoint: IngestEndpoint | BatchApi, metrics: IngestMetrics | None = None
) -> AsyncIterator[int]:
    """``endpoint`` served on a free port of 127.0.0.1 (counting into ``metrics``, default
    the endpoint's); yields the port."""
    counting = metrics or getattr(endpoint, "metrics", None) or IngestMetrics()
    app = web.Application()
    endpoint.add_routes(app)
    add_unmatched_route(app, counting)
    listener = GuardedListener(
        app, "127.0.0.1", 0, idle_timeout_s=5.0, max_connections=64, on_close=lambda _: None
    )
    await listener.start()
    try:
        yield listener.port
    finally:
        await listener.stop()


ENDPOINT_METRICS: list[IngestMetrics] = []


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    limits = Limits(64 * 1024, request_timeout_s=1.0, write_timeout_s=0.5)
    ENDPOINT_METRICS.append(IngestMetrics())
    endpoint = IngestEndpoint([SOURCE], recorder.write, limits, ENDPOINT_METRICS[-1])
    async with listening(endpoint) as port:
        yield f"http://127.0.0.1:{port}/logto/prod", recorder


async def post(
    url: str, body: bytes, *, signed_with: str | None = KEY, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    sent = {"Content-Type": "application/json", **headers}
    if signed_with is not None:
        sent["logto-signature-sha-256"] = logto_signature(signed_with, body)
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=sent) as r:
        return r.status, dict(r.headers), await r.read()


async def test_a_signed_logto_body_is_written_without_hook_id_then_answered_204(
    served: tuple[str, Recorder],
) -> None:
    url, recorder = served
    status, _, _ = await post(url, BODY)
    assert status == 204
    assert recorder.written == [("identity.events", orjson.loads(EVENT)["userId"].encode(), EVENT)]


async def test_every_answer_is_counted_by_source_and_status(
    served: tuple[str, Recorder],
) -> None:
    url, _ = served
    await post(url, BODY)
    await post(url, BODY, signed_with=None)
    await post(url.replace("/prod", "/nowhere"), BODY)
    text = ENDPOINT_METRICS[-1].render().decode()
    for line in (
        'hookrelay_ingest_requests_total{source="prod",status="204"} 1.0',
        'hookrelay_ingest_requests_total{source="prod",status="401"} 1.0',
        'hookrelay_ingest_requests_total{source="unmatched",status="404"} 1.0',
        'hookrelay_ingest_events_written_total{source="prod",topic="identity.events"} 1.0',
        'hookrelay_ingest_request_duration_seconds_count{source="prod"} 2.0',
    ):
        assert line in text


REFUSED = [
    # (body, extra headers, signing key or None, status, reason)
    (BODY, {}, None, 401, "unsigned"),
    (BODY, {}, "another-key", 401, "bad_signature"),
    (BODY, {"Content-Type": "text/plain"}, KEY, 415, "unsupported_media_type"),
    (b"x" * (64 * 1024 + 1), {}, KEY, 413, "too_large"),
    (b"not json", {}, KEY, 400, "not_json"),
    (b"[1,2]", {}, KEY, 400, "not_object"),
    (b'{"createdAt":"2026-01-01T00:00:00Z","hookId":"hk1"}', {}, KEY, 400, "missing_event"),
]


@pytest.mark.parametrize("case", REFUSED, ids=[case[4] + str(n) for n, case in enumerate(REFUSED)])
async def test_refusals_answer_their_status_and_write_nothing(
    served: tuple[str, Recorder], case: tuple[bytes, dict[str, str], str | None, int, str]
) -> None:
    url, recorder = served
    body, headers, signed_with, status, reason = case
    answer = await post(url, body, signed_with=signed_with, **headers)
    assert (answer[0], orjson.loads(answer[2])["reason"]) == (status, reason)
    assert recorder.written == []


async def test_a_hostile_signature_header_is_a_401_not_a_crash(
    served: tuple[str, Recorder],
) -> None:
    url, recorder = served
    status, _, _ = await post(url, BODY, signed_with=None, **{"logto-signature-sha-256": "é" * 64})
    assert status == 401 and recorder.written == []


async def test_a_chunked_body_past_the_limit_is_refused_without_being_held(
    served: tuple[str, Recorder],
) -> None:
    url, recorder = served

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(80):
            yield b"x" * 1024

    sent = {"Content-Type": "application/json", "logto-signature-sha-256": "00"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=chunks(), headers=sent) as answer,
    ):
        assert answer.status == 413
    assert recorder.written == []


@pytest.mark.parametrize("trouble", ["fails", "hangs"])
async def test_a_failed_write_is_not_written_and_a_slow_one_not_confirmed_both_503(
    served: tuple[str, Recorder], trouble: str
) -> None:
    url, recorder = served
    if trouble == "fails":
        recorder.fail = ConnectionError("broker away")
    else:
        recorder.delay_s = 5.0
    status, headers, body = await post(url, BODY)
    assert (status, headers["Retry-After"]) == (503, "5")
    reason = "not_written" if trouble == "fails" else "not_confirmed"
    assert orjson.loads(body)["reason"] == reason
    assert recorder.written == []
    error = "ConnectionError" if trouble == "fails" else "timeout"
    assert f'producer_errors_total{{error="{error}",source="prod"}} 1.0' in (
        ENDPOINT_METRICS[-1].render().decode()
    )


async def test_a_body_slower_than_the_request_timeout_is_a_408_and_the_connection_closes(
    served: tuple[str, Recorder],
) -> None:
    url, recorder = served
    host, port = "127.0.0.1", int(url.split(":")[2].split("/")[0])
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /logto/prod HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n")
        rest = await reader.read()  # the server closes: read() returns at EOF
    writer.close()
    assert head.startswith(b"HTTP/1.1 408") and b"request_timeout" in rest
    assert recorder.written == []


async def test_only_post_is_served(served: tuple[str, Recorder]) -> None:
    url, _ = served
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        assert answer.status == 405 and answer.headers["Allow"] == "POST"


async def test_an_internal_error_is_counted_as_a_500() -> None:
    metrics = IngestMetrics()

    async def broken(_request: web.Request) -> web.StreamResponse:
        raise RuntimeError("a bug")

    app = web.Application()
    app.router.add_post("/logto/prod", counted(metrics, "prod", broken))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        status, _, _ = await post(f"http://127.0.0.1:{port}/logto/prod", BODY)
    finally:
        await runner.cleanup()
    assert status == 500
    assert 'requests_total{source="prod",status="500"} 1.0' in metrics.render().decode()


async def test_each_source_takes_only_its_own_key_and_writes_to_its_own_topic() -> None:
    recorder = Recorder()
    other = Source("staging", "/hooks/staging", "staging-signing-key-0123456789", "staging.events",
                   key_rule="none")  # fmt: skip
    endpoint = IngestEndpoint([SOURCE, other], recorder.write, Limits(64 * 1024), IngestMetrics())
    async with listening(endpoint) as port:
        base = f"http://127.0.0.1:{port}"
        crossed = [
            await post(f"{base}/logto/prod", BODY, signed_with=other.signing_key),
            await post(f"{base}/hooks/staging", BODY, signed_with=KEY),
        ]
        accepted = [
            await post(f"{base}/logto/prod", BODY),
            await post(f"{base}/hooks/staging", BODY, signed_with=other.signing_key),
        ]
    assert [status for status, _, _ in crossed] == [401, 401]
    assert [status for status, _, _ in accepted] == [204, 204]
    user = orjson.loads(EVENT)["userId"].encode()
    assert recorder.written == [("identity.events", user, EVENT), ("staging.events", None, EVENT)]


def test_refusals_are_logged_once_per_source_and_reason_per_window() -> None:
    now = [0.0]
    refusals = RefusalLog(window_s=60.0, clock=lambda: now[0])
    unsigned = RefusedError(401, "unsigned", "no header")
    with capture_logs() as logged:
        for _ in range(5):
            refusals.note("prod", unsigned, "10.0.0.7")
        refusals.note("prod", RefusedError(503, "not_written", "x"), None)
        now[0] = 61.0
        refusals.note("prod", unsigned, "10.0.0.7")
    assert [(e["reason"], e.get("suppressed")) for e in logged] == [
        ("unsigned", None), ("not_written", None), ("unsigned", 4),
    ]  # fmt: skip
    assert {e["event"] for e in logged} == {"ingest_request_refused"}
    assert logged[0]["peer"] == "10.0.0.7" and logged[0]["status"] == 401


async def test_a_compressed_body_is_refused_before_anything_is_inflated(
    served: tuple[str, Recorder],
) -> None:
    url, recorder = served
    status, _, body = await post(url, BODY, **{"Content-Encoding": "gzip"})
    assert (status, orjson.loads(body)["reason"]) == (415, "unsupported_encoding")
    assert recorder.written == []


async def raw_exchange(url: str, request: bytes, *, close_after: bool = False) -> bytes:
    port = int(url.split(":")[2].split("/", maxsplit=1)[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    if close_after:
        writer.close()
        return b""
    async with asyncio.timeout(5):
        answer = await reader.read()  # the server closes once it answered (and lingered)
    writer.close()
    return answer


async def test_expect_100_continue_is_answered_413_for_a_body_over_the_limit(
    served: tuple[str, Recorder],
) -> None:
    # A breaker's trial: "100 Continue" came before any check, inviting a 50 MB upload.
    url, _ = served
    head = (b"POST /logto/prod HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\nExpect: 100-continue\r\n\r\n")  # fmt: skip
    answer = await raw_exchange(url, head)
    assert answer.startswith(b"HTTP/1.1 413") and b"100 Continue" not in answer


async def test_a_client_that_hangs_up_mid_body_is_counted_as_499_not_as_a_500(
    served: tuple[str, Recorder],
) -> None:
    # A breaker's trial: this counted as a 500, feeding the critical ingest-errors alert.
    url, recorder = served
    head = (b"POST /logto/prod HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"a"')  # fmt: skip
    await raw_exchange(url, head, close_after=True)
    metrics = ENDPOINT_METRICS[-1]
    async with asyncio.timeout(5):
        while 'status="499"} 1.0' not in metrics.render().decode():
            await asyncio.sleep(0.05)
    assert 'status="500"' not in metrics.render().decode()
    assert recorder.written == []


async def test_an_event_over_the_topics_size_limit_is_a_413_not_a_503(
    served: tuple[str, Recorder],
) -> None:
    url, recorder = served
    recorder.fail = MessageSizeTooLargeError()
    status, headers, body = await post(url, BODY)
    assert (status, orjson.loads(body)["reason"]) == (413, "too_large_for_kafka")
    assert "Retry-After" not in headers
