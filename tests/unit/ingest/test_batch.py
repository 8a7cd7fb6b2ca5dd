"""The batch API on a real listener on 127.0.0.1 with a recording writer: a valid request is
written whole, in order, then answered; one invalid event refuses the request and writes
nothing; a failed write names the events to send again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import orjson
import pytest

from hookrelay.ingest.batch import BatchApi, BatchRules, array_elements
from hookrelay.ingest.http import Limits, RefusedError
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


async def test_a_json_array_is_written_byte_for_byte_in_order(api: _Api) -> None:
    status, _, _ = await api.post(b"[" + b",\n ".join(EVENTS) + b"]", "application/json")
    assert status == 200
    assert [value for _, _, value in api.recorder.written] == EVENTS


def test_array_elements_are_cut_out_as_sent() -> None:
    tricky = [
        b'{"event":"A","createdAt":"2026-01-01T00:00:00Z","n":1.50,"big":18446744073709551616}',
        b'{"event":"B","s":"a,b]}{[\\"","neg":-0,"e":1e2}',
        b'{"event":"C","nested":[[1,2],{"x":[3,{"y":",]"}]}]}',
        b"[1,2]",
        b'"text"',
        b"7",
    ]
    body = b"\n [ " + b" ,\n\t".join(tricky) + b" ]\r\n"
    assert array_elements(body, 10, 1000) == tricky
    assert array_elements(b"[ ]", 10, 1000) == []


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b'{"event":"A"}', 400, "not_array"),
        (b"[1,2", 400, "not_json"),
        (b"[1,,2]", 400, "not_json"),
        (b"[1,2,]", 400, "not_json"),
        (b"[1]]", 400, "not_json"),
        (b'["unterminated]', 400, "not_json"),
        (b"[" + b"{}," * 70_000 + b"{}]", 413, "too_many_events"),
        (b'[{"a":"' + b"x" * 2000 + b'"}]', 413, "too_large"),
    ],
)
def test_array_elements_refuse_what_is_no_bounded_array(
    body: bytes, status: int, reason: str
) -> None:
    with pytest.raises(RefusedError) as refused:
        array_elements(body, 1000, 1000)
    assert (refused.value.status, refused.value.reason) == (status, reason)


async def test_array_events_meet_every_rule_of_the_decoder_as_json_lines_do(api: _Api) -> None:
    # A breaker's trial: the array route re-serialised its elements, so orjson kept the
    # last "event" (200) where the same event as a JSON line got 400 duplicate_event, and an
    # element nested past 255 levels crashed orjson.dumps (500).
    twice = b'{"event":"User.Created","createdAt":"2026-01-01T00:00:00Z","event":"User.Deleted"}'
    deep = b'{"event":"A","createdAt":"2026-01-01T00:00:00Z","d":' + b"[" * 300 + b"]" * 300 + b"}"
    status, _, body = await api.post(b"[" + twice + b"," + deep + b"]", "application/json")
    assert (status, [(e["index"], e["reason"]) for e in body["errors"]]) == (  # type: ignore[union-attr]
        400, [(0, "duplicate_event")],
    )  # fmt: skip
    assert api.recorder.written == []
    status, _, _ = await api.post(b"[" + deep + b"]", "application/json")
    assert status == 200
    assert [value for _, _, value in api.recorder.written] == [deep]


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
