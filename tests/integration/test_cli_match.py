"""``hookrelay match``, run as a real subprocess: the bytes and headers it shows are those a
receiver would get, computed here independently of hookrelay's code. Needs no broker."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration.harness import hookrelay_cli, write_config

pytestmark = pytest.mark.integration

CRM_KEY = "crm-key-never-printed-0123"
AUDIT_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "Bearer tok-never-printed-4567"
ENV = {"MATCH_CRM_KEY": CRM_KEY, "MATCH_TOKEN": TOKEN}
# Non-ASCII text, a number as the producer wrote it and a space after a colon: a
# re-serialised body would differ from these bytes.
EVENT = (
    '{"event":"Organization.Membership.Updated","createdAt":"2026-08-21T09:15:42.123Z",'
    '"organizationId":"org-1","name":"Zoë","score": 1.50}'
).encode()
HOOKS = [
    {"id": "crm", "events": ["User.Created", "Organization.*"], "url": "https://crm.example/in",
     "signing_key": "${MATCH_CRM_KEY}",
     "headers": {"Authorization": "${MATCH_TOKEN}", "X-Source": "identity"}},
    {"id": "audit", "events": ["*"], "url": "https://audit.example/in",
     "standard_webhooks": True, "signing_key": AUDIT_SECRET},
    {"id": "old-org", "events": ["Organization.*"], "url": "https://old.example/in",
     "enabled": False},
    {"id": "roles", "events": ["OrganizationRole.*"], "url": "https://roles.example/in"},
]  # fmt: skip


def body_for(hook_id: str, value: bytes = EVENT) -> bytes:
    """What Logto and hookrelay send: the producer's object with hookId as its last member."""
    assert value.endswith(b"}")
    return value[:-1] + b',"hookId":"' + hook_id.encode() + b'"}'


async def match(tmp_path: Path, *args: str, event: bytes = EVENT) -> tuple[int, str, str]:
    config = write_config(tmp_path, "127.0.0.1:1", "identity.events", HOOKS)
    path = tmp_path / "event.json"
    path.write_bytes(event + b"\n")
    return await hookrelay_cli("match", "-c", str(config), str(path), *args, env=ENV)


def block(out: str, hook_id: str) -> str:
    """The text block of one hook in the human output."""
    return out.split(f"hook {hook_id}  POST ", 1)[1].split("\n\n", 1)[0]


async def test_the_text_output_shows_each_body_byte_for_byte_and_masks_secrets(
    tmp_path: Path,
) -> None:
    code, out, err = await match(tmp_path, "--offset", "12")
    assert code == 0, err
    assert out.splitlines()[0] == (
        f"event Organization.Membership.Updated ({len(EVENT)} bytes): valid; 2 of 4 hooks "
        "would receive it; 1 disabled hook(s) match too (not delivered)"
    )
    crm = block(out, "crm")
    assert crm.split("-----\n")[1].encode() == body_for("crm") + b"\n"
    assert "    Authorization: ***" in crm.splitlines()
    assert "    logto-signature-sha-256: ***" in crm.splitlines()
    assert "    webhook-signature: ***" in block(out, "audit").splitlines()
    assert block(out, "old-org").startswith("https://old.example/in  [DISABLED: not delivered")
    assert "hook roles" not in out
    assert "topic identity.events, partition 0, offset 12" in out
    assert CRM_KEY not in out + err and "tok-never-printed" not in out + err


async def test_shown_signatures_verify_against_the_bytes_shown(tmp_path: Path) -> None:
    code, out, err = await match(tmp_path, "--json", "--show-signatures", "--partition", "2")
    assert code == 0, err
    document = orjson.loads(out)
    hooks = {hook["id"]: hook for hook in document["hooks"]}
    assert [(h["id"], h["enabled"]) for h in document["hooks"]] == [
        ("crm", True), ("audit", True), ("old-org", False),
    ]  # fmt: skip
    assert document["not_matched"] == 1
    crm, audit = hooks["crm"], hooks["audit"]
    assert crm["body"].encode() == body_for("crm")
    signature = hmac.new(CRM_KEY.encode(), body_for("crm"), hashlib.sha256).hexdigest()
    assert crm["headers"]["logto-signature-sha-256"] == signature
    assert crm["headers"]["Authorization"] == "***"  # credentials stay masked
    assert audit["body"].encode() == body_for("audit")
    verified = Webhook(AUDIT_SECRET).verify(body_for("audit"), audit["headers"])
    assert verified == orjson.loads(body_for("audit"))
    assert document["origin"] == {"topic": "identity.events", "partition": 2, "offset": 0}
    assert "tok-never-printed" not in out


async def test_signatures_are_masked_in_json_without_the_flag(tmp_path: Path) -> None:
    code, out, _ = await match(tmp_path, "--json")
    assert code == 0
    crm, audit = orjson.loads(out)["hooks"][:2]
    assert crm["headers"]["logto-signature-sha-256"] == "***"
    assert audit["headers"]["webhook-signature"] == "***"
    assert audit["headers"]["webhook-id"] == audit["webhook_id"]


async def test_an_invalid_event_exits_1_with_the_dead_letter_reason(tmp_path: Path) -> None:
    code, out, err = await match(tmp_path, event=b'{"event":"User.Created","createdAt":7}')
    assert (code, out) == (1, "")
    assert err == (
        "hookrelay: invalid event: the daemon would dead-letter it with reason bad_created_at: "
        "member 'createdAt' must be ISO-8601 text\n"
    )


async def test_an_event_no_hook_takes_exits_0_and_says_so(tmp_path: Path) -> None:
    hooks = [hook for hook in HOOKS if hook["id"] in ("crm", "roles")]
    config = write_config(tmp_path, "127.0.0.1:1", "identity.events", hooks)
    event = b'{"event":"Role.Created","createdAt":"2026-08-21T09:15:42.123Z"}'
    code, out, err = await hookrelay_cli("match", "-c", str(config), "-", stdin=event, env=ENV)
    assert (code, err) == (0, "")
    assert out == (
        f"event Role.Created ({len(event)} bytes): valid; no enabled hook of 2 matches it, "
        "nothing would be sent\n"
    )
