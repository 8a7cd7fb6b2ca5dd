"""The test receiver: recording, scripted replies, signature checks, waiting and closing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.receiver import SIGNATURE_HEADER, Receiver, Reply, logto_signature

# Logto's own test vector (DESIGN §1.4).
VECTOR_KEY = "foo"
VECTOR_BODY = b'{"bar":"bar","foo":"foo"}'
VECTOR_SIGNATURE = "436958f1dbfefab37712fb3927760490fbf7757da8c0b2306ee7b485f0360eee"


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes = b"{}",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(url, data=body, headers=headers or {}) as response:
        return response.status, dict(response.headers), await response.read()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


# --- recording ---------------------------------------------------------------------------


async def test_records_hook_id_method_headers_and_raw_body(session: aiohttp.ClientSession) -> None:
    body = '{"event":"PostSignIn","name":"Zoë","n":1.50}'.encode()
    async with Receiver() as r:
        before = time.monotonic()
        status, _, _ = await post(
            session, r.url("crm-sync"), body, {"Webhook-Id": "d-1", "X-Source": "identity"}
        )

    assert status == 200
    [request] = r.requests
    assert request.hook_id == "crm-sync"
    assert request.method == "POST"
    assert request.path == "/hooks/crm-sync"
    assert request.body == body
    assert request.json == {"event": "PostSignIn", "name": "Zoë", "n": 1.5}
    assert request.event == "PostSignIn"
    assert request.headers["webhook-id"] == "d-1"
    assert request.headers["X-SOURCE"] == "identity"
    assert before <= request.arrived_monotonic <= time.monotonic()
    assert abs(request.arrived_wall - time.time()) < 5


async def test_non_json_body_is_kept_raw_with_json_none(session: aiohttp.ClientSession) -> None:
    async with Receiver() as r:
        await post(session, r.url("h"), b"\xff not json")

    assert r.requests[0].body == b"\xff not json"
    assert r.requests[0].json is None
    assert r.requests[0].event is None


async def test_methods_other_than_post_are_recorded_too(session: aiohttp.ClientSession) -> None:
    async with Receiver() as r, session.get(r.url("h")) as response:
        assert response.status == 200

    assert [q.method for q in r.requests] == ["GET"]


async def test_url_points_at_the_hook_path_on_loopback() -> None:
    async with Receiver() as r:
        assert r.port > 0
        assert r.url("audit") == f"http://127.0.0.1:{r.port}/hooks/audit"


# --- scripted replies --------------------------------------------------------------------


async def test_scripted_statuses_are_used_in_order_then_200(
    session: aiohttp.ClientSession,
) -> None:
    async with Receiver() as r:
        r.script("h", [Reply(status=500), Reply(status=503)])
        statuses = [(await post(session, r.url("h")))[0] for _ in range(4)]

    assert statuses == [500, 503, 200, 200]


async def test_scripts_are_per_hook(session: aiohttp.ClientSession) -> None:
    async with Receiver() as r:
        r.script("a", [Reply(status=429)])
        b_status, _, _ = await post(session, r.url("b"))
        a_status, _, _ = await post(session, r.url("a"))

    assert (a_status, b_status) == (429, 200)


async def test_script_forever_answers_once_the_queue_is_empty(
    session: aiohttp.ClientSession,
) -> None:
    async with Receiver() as r:
        r.script("h", [Reply(status=201)])
        r.script_forever("h", Reply(status=410))
        statuses = [(await post(session, r.url("h")))[0] for _ in range(3)]
        r.script_forever("h", None)
        statuses.append((await post(session, r.url("h")))[0])

    assert statuses == [201, 410, 410, 200]


async def test_script_forever_may_choose_each_reply_from_the_request(
    session: aiohttp.ClientSession,
) -> None:
    async with Receiver() as r:
        r.script_forever("h", lambda q: Reply(status=500 if q.body == b"bad" else 204))
        statuses = [(await post(session, r.url("h"), body))[0] for body in (b"ok", b"bad")]

    assert statuses == [204, 500]


async def test_reply_headers_and_body_are_sent(session: aiohttp.ClientSession) -> None:
    async with Receiver() as r:
        r.script("h", [Reply(status=429, headers={"Retry-After": "7"}, body=b"slow down")])
        status, headers, body = await post(session, r.url("h"))

    assert (status, headers["Retry-After"], body) == (429, "7", b"slow down")


async def test_delay_holds_the_answer(session: aiohttp.ClientSession) -> None:
    async with Receiver() as r:
        r.script("h", [Reply(delay_s=0.2)])
        started = time.monotonic()
        status, _, _ = await post(session, r.url("h"))

    assert status == 200
    assert time.monotonic() - started >= 0.2


async def test_drop_connection_ends_the_request_without_a_response(
    session: aiohttp.ClientSession,
) -> None:
    async with Receiver() as r:
        r.script("h", [Reply(drop_connection=True)])
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post(session, r.url("h"))
        # The next request gets a fresh connection and the default answer.
        status, _, _ = await post(session, r.url("h"))

    assert status == 200
    assert len(r.for_hook("h")) == 2


# --- signatures --------------------------------------------------------------------------


def test_logto_signature_matches_logtos_test_vectors() -> None:
    assert logto_signature(VECTOR_KEY, VECTOR_BODY) == VECTOR_SIGNATURE
    assert logto_signature("foo", b"{}") == (
        "c76356efa19d219d1d7e08ccb20b1d26db53b143156f406c99dcb8e0876d6c55"
    )


async def test_correct_signature_is_valid(session: aiohttp.ClientSession) -> None:
    async with Receiver(keys={"h": VECTOR_KEY}) as r:
        await post(session, r.url("h"), VECTOR_BODY, {SIGNATURE_HEADER: VECTOR_SIGNATURE})

    assert r.requests[0].signature_valid is True


async def test_signature_over_other_bytes_or_key_is_invalid(
    session: aiohttp.ClientSession,
) -> None:
    async with Receiver(keys={"h": VECTOR_KEY}) as r:
        tampered = VECTOR_BODY.replace(b"bar", b"baz")
        await post(session, r.url("h"), tampered, {SIGNATURE_HEADER: VECTOR_SIGNATURE})
        wrong_key = logto_signature("not foo", VECTOR_BODY)
        await post(session, r.url("h"), VECTOR_BODY, {SIGNATURE_HEADER: wrong_key})
        await post(session, r.url("h"), VECTOR_BODY, {SIGNATURE_HEADER: VECTOR_SIGNATURE.upper()})

    assert [q.signature_valid for q in r.requests] == [False, False, False]


async def test_missing_signature_on_a_keyed_hook_is_invalid(
    session: aiohttp.ClientSession,
) -> None:
    async with Receiver(keys={"h": VECTOR_KEY}) as r:
        await post(session, r.url("h"), VECTOR_BODY)

    assert r.requests[0].signature_valid is False


async def test_key_is_taken_as_utf8_text(session: aiohttp.ClientSession) -> None:
    key = "clé-ñ-密钥"
    body = '{"name":"李雷"}'.encode()
    async with Receiver(keys={"h": key}) as r:
        await post(session, r.url("h"), body, {SIGNATURE_HEADER: logto_signature(key, body)})

    assert r.requests[0].signature_valid is True


async def test_unsigned_hook_is_none_when_unsigned_and_false_when_signed(
    session: aiohttp.ClientSession,
) -> None:
    async with Receiver(keys={"h": None}) as r:
        await post(session, r.url("h"), VECTOR_BODY)
        await post(session, r.url("h"), VECTOR_BODY, {SIGNATURE_HEADER: VECTOR_SIGNATURE})

    assert [q.signature_valid for q in r.requests] == [None, False]


async def test_hook_without_registered_key_is_not_checked(
    session: aiohttp.ClientSession,
) -> None:
    async with Receiver(keys={"other": "k"}) as r:
        await post(session, r.url("h"), VECTOR_BODY, {SIGNATURE_HEADER: "deadbeef"})

    assert r.requests[0].signature_valid is None


# --- waiting -----------------------------------------------------------------------------


async def test_wait_for_returns_once_enough_requests_arrived(
    session: aiohttp.ClientSession,
) -> None:
    async with Receiver() as r:
        senders = [asyncio.create_task(post(session, r.url(hook))) for hook in "aab"]
        arrived = await r.wait_for(2, hook_id="a", timeout_s=5)
        await asyncio.gather(*senders)
        everything = await r.wait_for(3, timeout_s=5)

    assert [q.hook_id for q in arrived] == ["a", "a"]
    assert len(everything) == 3


async def test_wait_for_times_out_with_what_arrived(session: aiohttp.ClientSession) -> None:
    async with Receiver() as r:
        await post(session, r.url("b"))
        started = time.monotonic()
        with pytest.raises(TimeoutError) as caught:
            await r.wait_for(2, hook_id="a", timeout_s=0.2)

    assert 0.2 <= time.monotonic() - started < 2
    message = str(caught.value)
    assert "at least 2 request(s) for hook 'a' within 0.2 s" in message
    assert "got 0" in message
    assert "{'b': 1}" in message


# --- closing -----------------------------------------------------------------------------


async def test_close_drops_handlers_that_are_still_delaying_and_leaves_no_tasks(
    session: aiohttp.ClientSession,
) -> None:
    tasks_before = asyncio.all_tasks()
    r = Receiver()
    await r.start()
    r.script_forever("stuck", Reply(delay_s=3600))
    pending = asyncio.create_task(post(session, r.url("stuck")))
    await r.wait_for(1, hook_id="stuck")

    started = time.monotonic()
    await r.close()
    assert time.monotonic() - started < 2

    with pytest.raises(aiohttp.ClientError):
        await pending
    await asyncio.sleep(0)
    assert asyncio.all_tasks() <= tasks_before | {asyncio.current_task()}


async def test_close_is_idempotent() -> None:
    r = Receiver()
    await r.start()
    await r.close()
    await r.close()
