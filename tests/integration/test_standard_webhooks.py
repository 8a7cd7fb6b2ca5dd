"""Standard Webhooks on the real thing: real broker, real daemon, real receiver on 127.0.0.1.

Every request the receiver got is verified with the ``standardwebhooks`` reference library
(``Webhook(secret).verify(body, headers)``), once per key on its own, and with Logto's algorithm
(the receiver's own check) using the primary key; then a reload removes the old key and the
old key's verifier rejects what follows.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.integration.harness import produce, running_daemon, settings_for, unique, write_config
from tests.kafka_broker import create_topics
from tests.receiver import ReceivedRequest, Receiver, Reply

pytestmark = pytest.mark.integration

NEW_KEY = "whsec_" + base64.b64encode(os.urandom(32)).decode()
OLD_KEY = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def event(name: str, n: int) -> bytes:
    return orjson.dumps({"event": name, "createdAt": "2026-08-21T09:15:42.123Z", "n": n})


def rotating_hook(receiver: Receiver, key_files: list[str]) -> dict[str, Any]:
    return {
        "id": "sw",
        "events": ["*"],
        "url": receiver.url("sw"),
        "standard_webhooks": True,
        "signing_key_files": key_files,
    }


def verified_body(key: str, request: ReceivedRequest) -> Any:
    """The parsed body, after the reference verifier accepted the request for ``key``."""
    return Webhook(key).verify(request.body, dict(request.headers))


def rewrite_hooks(path: Path, hooks: list[dict[str, Any]]) -> None:
    config = orjson.loads(path.read_bytes())
    config["hooks"] = hooks
    path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))


async def test_rotation_signs_with_both_keys_then_a_reload_retires_the_old_one(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("sw")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    (tmp_path / "new.key").write_text(NEW_KEY + "\n", encoding="utf-8")
    (tmp_path / "old.key").write_text(OLD_KEY + "\n", encoding="utf-8")
    async with Receiver(keys={"sw": NEW_KEY}) as receiver:
        # The first attempt fails once, 1.1 s after it was sent: its retry is sent at least a
        # second later, so a reused timestamp would show.
        receiver.script("sw", [Reply(status=500, delay_s=1.1)])
        hooks = [rotating_hook(receiver, ["new.key", "old.key"])]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        async with running_daemon(settings_for(path)) as daemon:
            await produce(
                kafka_bootstrap, topic, [event("User.Created", 1), event("Role.Created", 2)]
            )
            during = await receiver.wait_for(3, "sw", timeout_s=30)

            # During the rotation each key's verifier accepts every request on its own, and
            # Logto's header is the primary (new) key's.
            for request in during:
                assert verified_body(NEW_KEY, request) == verified_body(OLD_KEY, request)
                assert len(request.headers["webhook-signature"].split(" ")) == 2
                assert request.signature_valid is True
            # Both events are sent at once, so either may be the one answered 500 and retried.
            numbers = [orjson.loads(r.body)["n"] for r in during]
            assert sorted(set(numbers)) == [1, 2] and len(numbers) == 3
            retried = max(set(numbers), key=numbers.count)
            # The retry carries the first attempt's webhook-id, freshly timestamped and signed.
            first, retry = [r for r in during if orjson.loads(r.body)["n"] == retried]
            assert first.headers["webhook-id"] == retry.headers["webhook-id"]
            assert int(retry.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
            assert abs(int(retry.headers["webhook-timestamp"]) - retry.arrived_wall) <= 1.5

            # Rotation done: the old key is removed and the configuration reloaded.
            rewrite_hooks(path, [rotating_hook(receiver, ["new.key"])])
            await daemon.reload()
            await produce(kafka_bootstrap, topic, [event("User.Created", 3)])
            [*_, after] = await receiver.wait_for(4, "sw", timeout_s=30)

            assert verified_body(NEW_KEY, after)["n"] == 3
            assert len(after.headers["webhook-signature"].split(" ")) == 1
            with pytest.raises(WebhookVerificationError, match="No matching signature"):
                verified_body(OLD_KEY, after)
            assert after.signature_valid is True
