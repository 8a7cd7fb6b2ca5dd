"""The admin API over the real daemon: a ``Daemon`` consuming from the real broker and
delivering to a real receiver is the ``AdminBackend`` of an ``AdminServer`` on 127.0.0.1.

Every request and answer goes through ``Admin.call`` of the unit tests, so each one is checked
against the OpenAPI document by openapi-core: what app.Daemon returns must fit the document.

The server is started here with ``backend=daemon``; the daemon's own listener serves ``/v1``
once ``app.daemon`` passes its backend and ``admin.token`` to ``AdminServer``.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

import orjson
import pytest

from hookrelay.app import Daemon
from tests.integration.harness import (
    eventually,
    produce,
    running_daemon,
    settings_for,
    unique,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver, Reply
from tests.unit.ops.admin.test_admin_api import TOKEN, Admin, running

pytestmark = pytest.mark.integration

KEYS = {"crm-sync": "crm-signing-key-0123", "flaky": "flaky-signing-key-4567", "off": None}


def admin_api(daemon: Daemon) -> AbstractAsyncContextManager[Admin]:
    """The admin API of ``daemon`` on a free port, with its token and a client."""
    return running(daemon, TOKEN, daemon.not_ready_reasons, daemon.metrics)


async def new_topic(bootstrap: str, prefix: str) -> str:
    """A fresh event topic and its dead-letter topic on the broker; returns the topic."""
    topic = unique(prefix)
    await create_topics(bootstrap, [topic, f"{topic}.dlq"])
    return topic


def hooks_for(receiver: Receiver) -> list[dict[str, object]]:
    return [
        {
            "id": "crm-sync",
            "name": "CRM sync",
            "events": ["User.Created"],
            "url": receiver.url("crm-sync") + "?token=kept-out-of-the-api",
            "signing_key": KEYS["crm-sync"],
            "rate_limit": {"per_second": 50, "burst": 10},
        },
        {
            "id": "flaky",
            "events": ["User.*"],
            "url": receiver.url("flaky"),
            "signing_key": KEYS["flaky"],
        },
        {"id": "off", "events": ["*"], "url": receiver.url("off"), "enabled": False},
    ]


def user_created(n: int) -> bytes:
    return orjson.dumps(
        {"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": f"u{n}"}}
    )


async def test_the_api_shows_the_daemons_hooks_attempts_and_sends_a_test(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = await new_topic(kafka_bootstrap, "admin-api")
    async with Receiver(keys=KEYS) as receiver:
        receiver.script("flaky", [Reply(status=503, body=b"try later")])
        admin_section = {"listen": "127.0.0.1:0", "keep_response_bodies": True}
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks_for(receiver), extra={"admin": admin_section}
        )
        async with running_daemon(settings_for(path)) as daemon, admin_api(daemon) as admin:
            await produce(kafka_bootstrap, topic, [user_created(n) for n in range(3)])
            await receiver.wait_for(3, hook_id="crm-sync")
            await receiver.wait_for(4, hook_id="flaky")  # one 503, then its retry succeeds

            async def counted() -> bool:
                hooks = (await admin.call("GET", "/v1/hooks")).json["hooks"]
                return [h["last_24h"]["requests"] for h in hooks] == [3, 4, 0]

            await eventually(counted, 10.0, "every attempt counted in last_24h")
            hooks = (await admin.call("GET", "/v1/hooks")).json["hooks"]
            assert [h["id"] for h in hooks] == ["crm-sync", "flaky", "off"]
            crm, flaky, off = hooks
            assert crm["url"] == receiver.url("crm-sync") + "?***"
            assert crm["rate_limit"]["per_second"] == 50
            assert crm["last_24h"] == {"requests": 3, "succeeded": 3, "success_rate": 1.0}
            assert flaky["last_24h"] == {"requests": 4, "succeeded": 3, "success_rate": 0.75}
            assert (flaky["enabled"], flaky["paused"], flaky["circuit"]) == (True, False, "closed")
            assert off["enabled"] is False
            assert (await admin.call("GET", "/v1/hooks/flaky")).json == flaky

            retrying = await admin.call("GET", "/v1/deliveries", params=[("outcome", "retrying")])
            [failed] = retrying.json["deliveries"]
            assert (failed["hook_id"], failed["status"], failed["attempt"]) == ("flaky", 503, 1)
            assert failed["response_body"] == "try later"
            recent = await admin.call("GET", "/v1/deliveries", params=[("hook_id", "crm-sync")])
            assert [d["outcome"] for d in recent.json["deliveries"]] == ["delivered"] * 3
            limited = await admin.call("GET", "/v1/deliveries", params=[("limit", "2")])
            assert len(limited.json["deliveries"]) == 2

            sent = await admin.call(
                "POST", "/v1/hooks/crm-sync/test", body=b'{"event": "PostSignIn"}'
            )
            assert sent.status == 200
            assert (sent.json["status"], sent.json["error"]) == (200, None)
            [*_, test] = await receiver.wait_for(4, hook_id="crm-sync")
            assert test.signature_valid is True
            assert test.json["event"] == "PostSignIn"
            assert test.json["hookId"] == "crm-sync"
            assert test.headers["webhook-id"] == sent.json["delivery_id"]

            disabled = await admin.call("POST", "/v1/hooks/off/test")
            assert disabled.json["event"] == "PostRegister"
            assert [r.event for r in await receiver.wait_for(1, hook_id="off")] == ["PostRegister"]
            unknown = await admin.call("POST", "/v1/hooks/ghost/test")
            assert unknown.status == 404


async def test_a_reload_through_the_api_applies_a_new_hook_and_refuses_a_broken_file(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = await new_topic(kafka_bootstrap, "admin-reload")
    async with Receiver(keys=KEYS) as receiver:
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks_for(receiver))
        async with running_daemon(settings_for(path)) as daemon, admin_api(daemon) as admin:
            config = orjson.loads(path.read_bytes())
            config["hooks"].append({"id": "audit", "events": ["*"], "url": receiver.url("audit")})
            path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))

            applied = await admin.call("POST", "/v1/reload")
            assert applied.status == 200
            assert applied.json == {
                "hooks": 4,
                "added": ["audit"],
                "removed": [],
                "changed": [],
                "restart_required": [],
            }
            hooks = (await admin.call("GET", "/v1/hooks")).json["hooks"]
            assert [h["id"] for h in hooks] == ["crm-sync", "flaky", "off", "audit"]
            await produce(kafka_bootstrap, topic, [user_created(1)])
            await receiver.wait_for(1, hook_id="audit")

            config["hooks"][3]["url"] = "ftp://audit.example.com/"
            path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
            refused = await admin.call("POST", "/v1/reload")
            assert refused.status == 422
            [issue] = refused.json["issues"]
            assert (issue["file"], issue["path"]) == (str(path), "hooks[3].url")
            assert issue["line"] > 0
            assert issue["message"] == "expected an http:// or https:// URL"
            hooks = (await admin.call("GET", "/v1/hooks")).json["hooks"]
            assert hooks[3]["url"] == receiver.url("audit")  # the running configuration stays
