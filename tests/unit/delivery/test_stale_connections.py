"""Which failures are a stale pooled connection, and the one fresh resend they get (issue 10,
item 7): real aiohttp requests against a scripted raw server on 127.0.0.1 (no broker)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import http_parser
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.http_parser import RawResponseMessage
from multidict import CIMultiDict, CIMultiDictProxy
from structlog.testing import capture_logs
from yarl import URL

from hookrelay.config import DeliverySettings, Hook, HttpSettings
from hookrelay.delivery.sender import HttpSender, closed_before_answer
from hookrelay.events.model import AttemptResult
from hookrelay.ops.metrics import Metrics
from tests.receiver import logto_signature
from tests.stale_server import StaleServer, Step

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
KEY = "k-crm"


@asynccontextmanager
async def sender_for(
    scripts: Sequence[Sequence[Step]], **hook_fields: object
) -> AsyncIterator[tuple[StaleServer, HttpSender, Hook, Metrics]]:
    async with StaleServer(scripts=scripts) as server:
        hook = Hook.model_validate(
            {"id": "crm", "events": ["*"], "url": server.url(), "signing_key": KEY, **hook_fields}
        )
        metrics = Metrics()
        sender = HttpSender(HttpSettings(allow_networks=LOOPBACK), DeliverySettings(),
                            metrics=metrics)  # fmt: skip
        await sender.start()
        try:
            yield server, sender, hook, metrics
        finally:
            await sender.close()


def resends(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value(
        "hookrelay_stale_connection_retries_total", {"hook_id": "crm"}
    )


async def second_attempt(sender: HttpSender, hook: Hook) -> AttemptResult:
    """Send one request (answered, its connection pooled), then the one under test."""
    first = await sender.attempt(hook, "msg_1", b'{"n":1}')
    assert first.status == 200
    return await sender.attempt(hook, "msg_2", b'{"n":2}')


# ── On a reused connection ──────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("hang_up", [Step.CLOSE, Step.RESET])
async def test_a_reused_connection_closed_before_any_answer_is_resent_once_on_a_fresh_one(
    hang_up: Step,
) -> None:
    async with sender_for([(Step.ANSWER, hang_up)]) as (server, sender, hook, metrics):
        with capture_logs() as logs:
            result = await second_attempt(sender, hook)

    assert (result.status, result.error, result.ok) == (200, None, True)
    assert server.dropped == 1  # the stale connection's request was never read
    assert [r.connection for r in server.requests] == [0, 1]
    resent = server.requests[1]
    assert resent.body == b'{"n":2}'
    assert resent.headers["webhook-id"] == "msg_2"
    assert resent.headers["logto-signature-sha-256"] == logto_signature(KEY, resent.body)
    assert resent.headers["connection"] == "close"  # a fresh connection, used once
    assert resends(metrics) == 1
    [event] = [e for e in logs if e["event"] == "stale_connection_retry"]
    assert event["log_level"] == "debug"
    assert (event["hook_id"], event["delivery_id"]) == ("crm", "msg_2")
    expected = "ServerDisconnectedError" if hang_up is Step.CLOSE else "ClientOSError"
    assert event["error"].startswith(expected)


async def test_a_resend_that_fails_too_is_the_attempts_result_and_is_not_resent_again() -> None:
    async with sender_for([(Step.ANSWER, Step.CLOSE), (Step.CLOSE,)]) as (server, sender, hook,
                                                                        metrics):  # fmt: skip
        result = await second_attempt(sender, hook)
        later = await sender.attempt(hook, "msg_3", b'{"n":3}')

    assert result.status is None
    assert result.error == "connection error: ServerDisconnectedError: Server disconnected"
    assert result.retryable
    assert (server.connections, server.dropped) == (3, 2)  # one resend, no third try
    assert resends(metrics) == 1
    assert later.ok  # the pools are usable afterwards


@pytest.mark.skipif(
    http_parser.HttpResponseParser is http_parser.HttpResponseParserPy,
    reason="aiohttp's pure-Python parser drops a partial status line (closed_before_answer)",
)
async def test_part_of_an_answer_before_the_hang_up_is_reported_not_resent() -> None:
    async with sender_for([(Step.ANSWER, Step.PARTIAL)]) as (server, sender, hook, metrics):
        result = await second_attempt(sender, hook)

    assert result.status is None
    assert result.error == (
        "connection error: ServerDisconnectedError: Server disconnected in the middle of an answer"
    )
    assert result.retryable
    assert server.connections == 1  # the endpoint read the request: never sent twice
    assert resends(metrics) is None


async def test_a_timeout_on_a_reused_connection_is_reported_not_resent() -> None:
    async with sender_for([(Step.ANSWER, Step.HOLD)], timeout_s=0.3) as (server, sender, hook,
                                                                        metrics):  # fmt: skip
        result = await second_attempt(sender, hook)

    assert (result.status, result.error, result.retryable) == (None, "timeout after 0.3s", True)
    assert server.connections == 1
    assert resends(metrics) is None


# ── On a fresh connection ───────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("hang_up", [Step.CLOSE, Step.RESET])
async def test_a_fresh_connection_closed_before_any_answer_is_reported_not_resent(
    hang_up: Step,
) -> None:
    async with sender_for([(hang_up,)]) as (server, sender, hook, metrics):
        result = await sender.attempt(hook, "msg_1", b'{"n":1}')

    assert result.status is None
    assert result.error is not None
    assert result.error.startswith("connection error: ")
    assert result.retryable
    assert (server.connections, server.dropped) == (1, 1)
    assert resends(metrics) is None


# ── The classification on its own ───────────────────────────────────────────────────────────


def partial_answer() -> RawResponseMessage:
    """What aiohttp's C parser hands over when an answer's head was cut short."""
    headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
    return RawResponseMessage(
        aiohttp.HttpVersion11, 200, "", headers, (), False, None, False, False
    )


CONNECTION_KEY = ConnectionKey("example.com", 443, True, True, None, None, None)
REQUEST_INFO = aiohttp.RequestInfo(URL("http://x/"), "POST", CIMultiDictProxy(CIMultiDict()))


@pytest.mark.parametrize(
    ("error", "unanswered"),
    [
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientOSError(32, "Can not write request body for http://x/"), True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), True),
        (aiohttp.ClientConnectionResetError("Cannot write to closing transport"), True),
        (aiohttp.ServerDisconnectedError(partial_answer()), False),
        (
            aiohttp.ClientConnectorError(CONNECTION_KEY, ConnectionRefusedError(111, "refused")),
            False,
        ),
        (aiohttp.SocketTimeoutError("Timeout on reading data from socket"), False),
        (TimeoutError(), False),
        (aiohttp.ClientPayloadError("Response payload is not completed"), False),
        (aiohttp.ClientResponseError(REQUEST_INFO, ()), False),
        (aiohttp.ClientConnectionError("Connector is closed."), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_which_failures_mean_the_endpoint_hung_up_before_answering(
    error: BaseException, unanswered: bool
) -> None:
    assert closed_before_answer(error) is unanswered
