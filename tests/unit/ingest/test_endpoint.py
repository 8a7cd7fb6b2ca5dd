"""hookrelay.ingest.endpoint on a real listener on 127.0.0.1, with a recording writer in place
of Kafka (the broker-backed process comes with the rest of issue 14): every refusal answers
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

from hookrelay.events.signing import logto_signature
from hookrelay.ingest.endpoint import IngestEndpoint, Source

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
async def listening(endpoint: IngestEndpoint) -> AsyncIterator[int]:
    """``endpoint`` served on a free port of 127.0.0.1; yields the port."""
    app = web.Application()
    endpoint.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr, no-any-return]
    finally:
        await runner.cleanup()


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    endpoint = IngestEndpoint([SOURCE], recorder.write, max_body_bytes=64 * 1024,
                              write_timeout_s=0.5)  # fmt: skip
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
async def test_a_write_that_fails_or_hangs_is_a_503_with_retry_after(
    served: tuple[str, Recorder], trouble: str
) -> None:
    url, recorder = served
    if trouble == "fails":
        recorder.fail = ConnectionError("broker away")
    else:
        recorder.delay_s = 5.0
    status, headers, body = await post(url, BODY)
    assert (status, headers["Retry-After"]) == (503, "5")
    assert orjson.loads(body)["reason"] == "not_written"
    assert recorder.written == []


async def test_only_post_is_served(served: tuple[str, Recorder]) -> None:
    url, _ = served
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        assert answer.status == 405 and answer.headers["Allow"] == "POST"
