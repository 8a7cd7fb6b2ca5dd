"""Secrets audit: a real ``hookrelay run`` process with known signing keys, a credential
header and an admin token goes through successes, failures, retries, dead letters, a reload
and every admin API route; none of the secret values may appear in its log output,
``/metrics``, any admin API answer, the retry and dead-letter records (values and headers),
nor in the errors ``hookrelay check`` prints for a broken configuration."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.integration.harness import (
    edit_config,
    eventually,
    hookrelay_cli,
    produce,
    read_topic,
    settings_for,
    start_daemon_process,
    unique,
    with_admin_port,
    write_config,
)
from tests.integration.test_hostile_input import answers_with, committed_through
from tests.kafka_broker import create_topics
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration

SECRETS = {
    "OK_KEY": "sk-ok-7d1f0c2a9b8e4f63",
    "FLAKY_KEY": "sk-flaky-5e2b8c1d0a9f7e64",
    "DEAD_KEY": "sk-dead-3c9a7e5b1d2f8065",
    "CRM_AUTH": "Bearer crm-token-a8f3e1c9d7b54026",
    "ADMIN_TOKEN": "admin-token-4b7e9d2c1a8f6e30",
    "QUERY_TOKEN": "SECRETQUERY-6f1e2d3c4b5a",
}


def event(n: int) -> bytes:
    return orjson.dumps(
        {"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": f"u{n}"}}
    )


def leaks(text: str | bytes, where: str) -> list[str]:
    """Which secrets appear in ``text`` (raw, or as the tail of a longer token)."""
    data = text.encode() if isinstance(text, str) else text
    found = [name for name, value in SECRETS.items() if value.encode() in data]
    return [f"{name} in {where}" for name in found]


async def admin_answers(port: int) -> dict[str, bytes]:
    """Every admin API route with the right token, and some with a wrong one."""
    base = f"http://127.0.0.1:{port}"
    good = {"Authorization": f"Bearer {SECRETS['ADMIN_TOKEN']}"}
    bad = {"Authorization": f"Bearer {SECRETS['ADMIN_TOKEN']}x"}
    calls = [
        ("GET", "/metrics", {}), ("GET", "/healthz", {}), ("GET", "/readyz", {}),
        ("GET", "/v1/hooks", good), ("GET", "/v1/hooks/ok", good), ("GET", "/v1/hooks/dead", good),
        ("GET", "/v1/deliveries?limit=500", good), ("POST", "/v1/hooks/flaky/test", good),
        ("POST", "/v1/hooks/dead/test", good),
        ("POST", "/v1/reload", good), ("GET", "/v1/openapi.json", good),
        ("GET", "/v1/hooks", bad), ("GET", "/v1/hooks/missing", good), ("POST", "/v1/reload", {}),
    ]  # fmt: skip
    answers: dict[str, bytes] = {}
    async with aiohttp.ClientSession() as session:
        for method, path, headers in calls:
            async with session.request(method, base + path, headers=headers) as answer:
                body = await answer.read()
                answers[f"{method} {path} {bool(headers)}"] = body + str(answer.headers).encode()
    # What no HTTP client library sends: a token file saved with CR LF, a trailing NUL. The
    # server's parser fails on them and logs the request line with the exception.
    # Their answers are searched too: aiohttp's own 400 quoted the offending line.
    token = SECRETS["ADMIN_TOKEN"].encode()
    for tail in (b"\r", b"\x00", b"\r\x00 x"):
        request = b"GET /v1/hooks HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + token + tail
        answer = await _raw_request(port, request + b"\r\n\r\n")
        assert answer.split(b" ", 2)[1] == b"400", answer[:40]
        answers[f"raw {tail!r}"] = answer
    return answers


async def _raw_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


async def _garbling_endpoint(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request with a header line aiohttp cannot parse: its error names the
    request URL, query string and all."""
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
    finally:
        writer.close()


async def test_no_secret_reaches_logs_metrics_admin_answers_or_kafka_records(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(f"TEST_SECRET_{name}", value)
    topic = unique("secrets")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq], partitions=1)
    keys = {"ok": SECRETS["OK_KEY"], "flaky": SECRETS["FLAKY_KEY"], "dead": SECRETS["DEAD_KEY"]}
    async with Receiver(keys=keys) as receiver:
        receiver.script("flaky", [Reply(status=503, body=b"busy")] * 2)
        # An endpoint that echoes what it got (a debug build): its answer holds the hook's
        # key, the credential header and the admin token, and is kept for the admin API.
        echo = " ".join((SECRETS["DEAD_KEY"], SECRETS["CRM_AUTH"], SECRETS["ADMIN_TOKEN"]))
        receiver.script_forever("dead", Reply(status=400, body=f"no such tenant: {echo}".encode()))
        garbling = await asyncio.start_server(_garbling_endpoint, "127.0.0.1", 0)
        garbled_url = f"http://127.0.0.1:{garbling.sockets[0].getsockname()[1]}/h/hQ"
        hooks = [
            {"id": hook_id, "events": ["*"], "url": receiver.url(hook_id) + "?sig=1",
             "signing_key": f"${{TEST_SECRET_{hook_id.upper()}_KEY}}",
             "headers": {"Authorization": "${TEST_SECRET_CRM_AUTH}"}}
            for hook_id in keys
        ] + [{"id": "garbled", "events": ["*"], "timeout_s": 2,
              "url": garbled_url + "?token=${TEST_SECRET_QUERY_TOKEN}"}]  # fmt: skip
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks, dead_letter_topic=dlq,
            extra={"admin": {"listen": "127.0.0.1:0", "token": "${TEST_SECRET_ADMIN_TOKEN}",
                             "keep_response_bodies": True}},
        )  # fmt: skip
        group = orjson.loads(path.read_bytes())["kafka"]["group_id"]
        port = with_admin_port(path)
        log = tmp_path / "daemon.log"
        daemon = await start_daemon_process(path, log)
        try:
            await eventually(
                lambda: answers_with(f"http://127.0.0.1:{port}/readyz", 200),
                60,
                "the daemon to become ready",
            )
            values = [event(n) for n in range(5)] + [b"not json", b'{"event":"x"}']
            await produce(kafka_bootstrap, topic, values, partition=0)
            await receiver.wait_for(5, hook_id="ok", timeout_s=30)
            await receiver.wait_for(7, hook_id="flaky", timeout_s=30)  # 2 failures, 5 successes
            await eventually(
                lambda: committed_through(kafka_bootstrap, group, topic, len(values)),
                60,
                "all settled",
            )
            edit_config(path, "logging", level="debug")
            daemon.send_signal(signal.SIGHUP)  # a reload, logged at debug from then on
            await asyncio.sleep(1.0)
            answers = await admin_answers(port)
        finally:
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
            exit_code = await asyncio.wait_for(daemon.wait(), 30)
            garbling.close()
        assert exit_code == 0
    retry_topics = settings_for(path).retry_topics
    found: list[str] = []
    found += leaks(log.read_bytes(), "the daemon's log")
    for call, body in answers.items():
        found += leaks(body, call)
    letters = await read_topic(kafka_bootstrap, dlq, 12)  # 5 dead + 5 garbled + 2 invalid
    garbled = [r for r in letters if ("hookrelay-hook-id", b"garbled") in r.headers]
    assert len(garbled) == 5
    assert all(b"/h/hQ?***" in dict(r.headers)["hookrelay-error"] for r in garbled)
    retries = [r for t in retry_topics for r in await _all_records(kafka_bootstrap, t)]
    assert retries, "the flaky hook's failures went through retry topics"
    for record in [*letters, *retries]:
        found += leaks(record.value or b"", f"{record.topic} value")
        found += leaks(repr(record.headers), f"{record.topic} headers")
        found += leaks(record.key or b"", f"{record.topic} key")
    assert found == []
    assert b"config_reloaded" in log.read_bytes()  # the reload happened and was logged
    assert sum(r.signature_valid is True for r in receiver.requests) == len(receiver.requests)


async def _all_records(bootstrap: str, topic: str) -> list[object]:
    try:
        return list(await read_topic(bootstrap, topic, 1, timeout_s=5))
    except TimeoutError:
        return []


async def test_check_errors_on_a_broken_configuration_never_echo_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SECRET_KEY", SECRETS["OK_KEY"])
    monkeypatch.setenv("TEST_SECRET_AUTH", SECRETS["CRM_AUTH"] + "\r\nX-Injected: 1")
    monkeypatch.setenv("TEST_SECRET_SHORT", SECRETS["ADMIN_TOKEN"][:12])
    (tmp_path / "key").write_text(SECRETS["DEAD_KEY"] + "\n")
    hooks = [
        {"id": "a", "events": ["*"], "url": "ftp://x.example/", "signing_key": "${TEST_SECRET_KEY}",
         "headers": {"Authorization": "${TEST_SECRET_AUTH}"}},
        {"id": "b", "events": ["*"], "url": f"https://u:{SECRETS['FLAKY_KEY']}@x.example/",
         "signing_key_file": "key", "timeout_s": "soon"},
        {"id": "c", "events": [], "url": "https://x.example/", "signing_key": SECRETS["DEAD_KEY"],
         "rate_limit": {"per_second": -1}},
    ]  # fmt: skip
    path = write_config(
        tmp_path, "127.0.0.1:9", "t", hooks,
        extra={"admin": {"listen": "127.0.0.1:0", "token": "${TEST_SECRET_SHORT}"}},
    )  # fmt: skip
    status, out, err = await hookrelay_cli("check", "-c", str(path))
    assert status == 1 and "invalid configuration" in err
    for needle in ("hooks[0].url", "hooks[0].headers", "hooks[1].url", "admin.token"):
        assert needle in err
    partial = [SECRETS["ADMIN_TOKEN"][:12]]
    assert leaks(out + err, "hookrelay check") == []
    assert [p for p in partial if p in out + err] == []
