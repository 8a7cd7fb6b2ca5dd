"""The batch API on a real listener on 127.0.0.1 with a recording writer: a valid request is
written whole, in order, then answered; one invalid event refuses the request and writes
nothing; a failed write names the events to send again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import orjson
import pytest

from hookrelay.ingest.batch import BatchApi, BatchRules
from hookrelay.ingest.http import Limits
from hookrelay.ingest.writer import UnconfirmedWriteError
from hookrelay.ops.metrics import IngestMetrics
from tests.unit.ingest.test_endpoint import listening

ROOT = Path(__file__).resolve().parents[3]
EVENTS = (ROOT / "deploy/demo/events.jsonl").read_bytes().splitlines()[:5]
TOKEN = "batch-token-0123456789abcdef"
Record = tuple[str, bytes | None, bytes]


class Recorder:
    """``write_many`` writing every record before ``fail_from`` (an index); from there on,
    records are ``unconfirmed`` (a timeout) when ``slow``, else not written."""

    def __init__(self) -> None:
        self.written: list[Record] = []
        self.fail_from: int | None = None
        self.slow = False

    async def write_many(
        self, records: Sequence[Record], timeout_s: float
    ) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = []
        for index, record in enumerate(records):
            if self.fail_from is not None and index >= self.fail_from:
                failed = UnconfirmedWriteError() if self.slow else ConnectionError("broker away")
                outcomes.append(failed)
            else:
                self.written.append(record)
                outcomes.append(None)
        return outcomes


class _Api:
    def __init__(self, url: str, recorder: Recorder, metrics: IngestMetrics) -> None:
        self.url, self.recorder, self.metrics = url, recorder, metrics

    async def post(
        self, body: bytes, content_type: str = "application/x-ndjson", token: str = TOKEN
    ) -> tuple[int, dict[str, str], dict[str, object]]:
        headers = {"Content-Type": content_type, "Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url, data=body, headers=headers) as answer,
        ):
            return answer.status, dict(answer.headers), orjson.loads(await answer.read())


@pytest.fixture
async def api() -> AsyncIterator[_Api]:
    recorder, metrics = Recorder(), IngestMetrics()
    rules = BatchRules(TOKEN, "identity.events", max_events=10, max_event_bytes=64 * 1024)
    batch = BatchApi(rules, recorder.write_many, Limits(256 * 1024, 1.0, 1.0), metrics)
    async with listening(batch, metrics) as port:
        yield _Api(f"http://127.0.0.1:{port}/v1/events", recorder, metrics)


async def test_json_lines_are_written_byte_for_byte_in_order_then_answered(api: _Api) -> None:
    status, _, body = await api.post(b"\n".join(EVENTS) + b"\n\n")
    assert (status, body) == (200, {"written": len(EVENTS)})
    assert [value for _, _, value in api.recorder.written] == EVENTS
    first = orjson.loads(EVENTS[0])
    assert api.recorder.written[0][1] == first["userId"].encode()


async def test_a_json_array_is_written_as_compact_json_in_order(api: _Api) -> None:
    status, _, _ = await api.post(b"[" + b",\n ".join(EVENTS) + b"]", "application/json")
    assert status == 200
    written = [orjson.loads(value) for _, _, value in api.recorder.written]
    assert written == [orjson.loads(event) for event in EVENTS]


async def test_one_invalid_event_refuses_the_request_naming_each_invalid_line(api: _Api) -> None:
    lines = [EVENTS[0], b"not json", EVENTS[1], b'{"createdAt":"2026-01-01T00:00:00Z"}']
    status, _, body = await api.post(b"\n".join(lines))
    assert status == 400 and body["reason"] == "invalid_events"
    assert [(e["index"], e["line"], e["reason"]) for e in body["errors"]] == [  # type: ignore[attr-defined]
        (1, 2, "not_json"), (3, 4, "missing_event"),
    ]  # fmt: skip
    assert api.recorder.written == []
    assert 'batch_events_refused_total{reason="not_json"} 1.0' in api.metrics.render().decode()


@pytest.mark.parametrize("slow", [False, True], ids=["not_written", "unconfirmed"])
async def test_a_partly_failed_write_names_what_to_send_again_and_what_may_still_land(
    api: _Api, slow: bool
) -> None:
    api.recorder.fail_from, api.recorder.slow = 3, slow
    status, headers, body = await api.post(b"\n".join(EVENTS))
    assert (status, headers["Retry-After"]) == (503, "5")
    expected = {"written": 3, "not_written": [] if slow else [3, 4],
                "unconfirmed": [3, 4] if slow else []}  # fmt: skip
    assert {key: body[key] for key in expected} == expected
    assert body["reason"] == ("not_confirmed" if slow else "not_written")


REFUSED = [
    (EVENTS[0], "application/x-ndjson", "wrong-token-0123456789", 401, "unauthorized"),
    (EVENTS[0], "text/plain", TOKEN, 415, "unsupported_media_type"),
    (b"\n\n", "application/x-ndjson", TOKEN, 400, "empty"),
    (EVENTS[0], "application/json", TOKEN, 400, "not_array"),
    (b"\n".join(EVENTS * 3), "application/x-ndjson", TOKEN, 413, "too_many_events"),
    (b"x" * (256 * 1024 + 1), "application/x-ndjson", TOKEN, 413, "too_large"),
]
"""(body, content type, token, status, reason)"""


@pytest.mark.parametrize("case", REFUSED, ids=[case[4] for case in REFUSED])
async def test_refused_requests_write_nothing(
    api: _Api, case: tuple[bytes, str, str, int, str]
) -> None:
    body, content_type, token, status, reason = case
    answer = await api.post(body, content_type, token)
    assert (answer[0], answer[2]["reason"]) == (status, reason)
    assert api.recorder.written == []
