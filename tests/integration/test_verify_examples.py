"""The receiver examples of ``examples/verify/`` on real requests produced by hookrelay.

A real daemon (real broker) delivers one event during a key rotation to a recording receiver;
the captured request (raw body and headers) is then replayed to each example running as its
own process: ``verify.py`` with this Python, ``verify.mjs`` with the machine's ``node`` (CI
has node 20; a missing node fails the test). Each must accept the request as sent, with the
new key or the old one, and reject a tampered body, a wrong key and a stale timestamp.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest

from hookrelay.events.signing import standard_webhooks_signature
from tests.integration.harness import produce, running_daemon, settings_for, unique, write_config
from tests.kafka_broker import create_topics
from tests.receiver import ReceivedRequest, Receiver

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "verify"
NEW_KEY = "whsec_" + base64.b64encode(os.urandom(32)).decode()
OLD_KEY = "whsec_" + base64.b64encode(os.urandom(32)).decode()
OTHER_KEY = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def example_command(name: str) -> list[str]:
    if name == "verify.mjs":
        node = shutil.which("node")
        assert node is not None, "node is required for the Node.js example (CI has node 20)"
        return [node, str(EXAMPLES / name)]
    return [sys.executable, str(EXAMPLES / name)]


@asynccontextmanager
async def example_server(name: str, **env: str) -> AsyncIterator[str]:
    """Run the example on a free port with ``env``; yield its URL; stop it afterwards."""
    process = await asyncio.create_subprocess_exec(
        *example_command(name),
        env={"PATH": os.environ.get("PATH", ""), "PORT": "0", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, f"{name} did not start: {line!r}"
        yield f"http://127.0.0.1:{match.group(1)}/hooks/sw"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status, await r.text()


async def captured_request(kafka_bootstrap: str, tmp_path: Path) -> ReceivedRequest:
    """One request hookrelay sent for a hook signing with NEW_KEY (primary) and OLD_KEY."""
    topic = unique("verify")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    (tmp_path / "new.key").write_text(NEW_KEY, encoding="utf-8")
    (tmp_path / "old.key").write_text(OLD_KEY, encoding="utf-8")
    async with Receiver(keys={"sw": NEW_KEY}) as receiver:
        hook = {"id": "sw", "events": ["*"], "url": receiver.url("sw"),
                "standard_webhooks": True, "signing_key_files": ["new.key", "old.key"]}  # fmt: skip
        path = write_config(tmp_path, kafka_bootstrap, topic, [hook])
        async with running_daemon(settings_for(path)):
            body = {"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z", "n": 1}
            await produce(kafka_bootstrap, topic, [orjson.dumps(body)])
            [request] = await receiver.wait_for(1, "sw", timeout_s=30)
    assert request.signature_valid is True
    return request


def signed_headers(request: ReceivedRequest) -> dict[str, str]:
    names = ("logto-signature-sha-256", "webhook-id", "webhook-timestamp", "webhook-signature")
    return {name: request.headers[name] for name in names} | {"content-type": "application/json"}


@pytest.mark.parametrize("example", ["verify.py", "verify.mjs"])
async def test_example_accepts_hookrelays_requests_and_rejects_forgeries(
    kafka_bootstrap: str, tmp_path: Path, example: str
) -> None:
    request = await captured_request(kafka_bootstrap, tmp_path)
    headers = signed_headers(request)
    body = request.body
    stale_s = int(time.time()) - 301
    stale = headers | {
        "webhook-timestamp": str(stale_s),
        "webhook-signature": standard_webhooks_signature(
            [NEW_KEY], headers["webhook-id"], stale_s, body
        ),
    }

    async with example_server(example, LOGTO_SIGNING_KEY=NEW_KEY, WEBHOOK_SECRET=NEW_KEY) as url:
        assert await post(url, body, headers) == (204, "")
        assert await post(url, body.replace(b'"n":1', b'"n":2'), headers) == (
            401,
            "logto-signature-sha-256 does not match",
        )
        assert await post(url, body, stale) == (
            401,
            "webhook-timestamp is outside the 5 minute tolerance",
        )
    async with example_server(example, WEBHOOK_SECRET=OLD_KEY) as url:  # mid-rotation receiver
        assert await post(url, body, headers) == (204, "")
        tampered = body.replace(b"User.Created", b"User.Deleted")
        assert await post(url, tampered, headers) == (401, "no webhook-signature matches")
    async with example_server(example, WEBHOOK_SECRET=OTHER_KEY) as url:
        assert await post(url, body, headers) == (401, "no webhook-signature matches")
    async with example_server(example, LOGTO_SIGNING_KEY=OLD_KEY) as url:  # not the primary
        assert await post(url, body, headers) == (401, "logto-signature-sha-256 does not match")
