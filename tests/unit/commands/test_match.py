"""``hookrelay match``: the hooks an event reaches and the exact request each would get, built
by the daemon's own decoder, router, splice and sender (the real CLI as a subprocess is in
tests/integration/test_cli.py)."""

from __future__ import annotations

import hashlib
import hmac
import io
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from hookrelay.commands.cli import main
from hookrelay.commands.match import match_event, origin_of, render_text
from hookrelay.config import Settings, load_settings
from hookrelay.errors import InvalidEventError
from hookrelay.events.signing import delivery_id

KEY = "crm-signing-key-0123456789"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EVENT = b'{"event":"User.Created","createdAt":"2026-08-21T09:15:42.123Z","data":{"n":1.50}}'
HOOKS = [
    {"id": "crm", "events": ["User.Created", "Organization.*"], "url": "https://crm.example/in",
     "signing_key": KEY, "headers": {"X-Source": "identity", "Authorization": "Bearer t0ken-x"}},
    {"id": "audit", "events": ["*"], "url": "https://audit.example/in?token=q-secret",
     "standard_webhooks": True, "signing_key": WHSEC},
    {"id": "legacy", "events": ["User.*"], "url": "https://legacy.example/in", "enabled": False},
    {"id": "roles", "events": ["OrganizationRole.*"], "url": "https://roles.example/in"},
]  # fmt: skip


def config_file(tmp_path: Path, hooks: list[dict[str, Any]] = HOOKS, **extra: Any) -> Path:
    path = tmp_path / "hookrelay.yaml"
    path.write_bytes(orjson.dumps({"kafka": {"topics": ["identity.events"]}, "hooks": hooks,
                                   **extra}))  # fmt: skip
    return path


def settings(tmp_path: Path, **extra: Any) -> Settings:
    return load_settings(config_file(tmp_path, **extra), env={})


def requests_by_id(tmp_path: Path, value: bytes, **options: Any) -> dict[str, Any]:
    origin = origin_of("identity.events", 3, 42)
    report = match_event(settings(tmp_path), value, None, origin, **options)
    return {request.hook.id: request for request in report.requests}


def test_each_hook_gets_the_producers_bytes_with_its_hook_id_spliced_last(tmp_path: Path) -> None:
    requests = requests_by_id(tmp_path, EVENT)
    assert requests["crm"].body == EVENT[:-1] + b',"hookId":"crm"}'
    assert requests["audit"].body == EVENT[:-1] + b',"hookId":"audit"}'


def test_a_pretty_printed_event_keeps_its_layout_and_a_producers_hook_id_is_replaced(
    tmp_path: Path,
) -> None:
    pretty = b'{\n  "event": "User.Created",\n  "createdAt": "2026-08-21T09:15:42Z"\n}'
    assert requests_by_id(tmp_path, pretty)["crm"].body == pretty[:-1] + b',"hookId":"crm"}'
    stale = b'{"event":"User.Created","hookId":"old","createdAt":"2026-08-21T09:15:42Z"}'
    assert requests_by_id(tmp_path, stale)["crm"].body == (
        b'{"event":"User.Created","createdAt":"2026-08-21T09:15:42Z","hookId":"crm"}'
    )


def test_wildcards_route_as_the_daemon_does_and_disabled_hooks_are_listed_as_not_delivered(
    tmp_path: Path,
) -> None:
    origin = origin_of("identity.events", 0, 0)
    config = settings(tmp_path)
    user = match_event(config, EVENT, None, origin)
    assert [(r.hook.id, r.hook.enabled) for r in user.requests] == [
        ("crm", True), ("audit", True), ("legacy", False),
    ]  # fmt: skip
    assert user.not_matched == 1
    role = EVENT.replace(b"User.Created", b"OrganizationRole.Created")
    # "Organization.*" keeps its dot: it does not reach OrganizationRole events.
    assert [r.hook.id for r in match_event(config, role, None, origin).requests] == [
        "audit", "roles",
    ]  # fmt: skip


def test_signatures_are_masked_unless_asked_for(tmp_path: Path) -> None:
    masked = requests_by_id(tmp_path, EVENT)
    assert dict(masked["crm"].headers)["logto-signature-sha-256"] == "***"
    assert dict(masked["audit"].headers)["webhook-signature"] == "***"

    shown = requests_by_id(tmp_path, EVENT, show_signatures=True)
    crm, audit = shown["crm"], shown["audit"]
    expected = hmac.new(KEY.encode(), crm.body, hashlib.sha256).hexdigest()
    assert dict(crm.headers)["logto-signature-sha-256"] == expected
    assert Webhook(WHSEC).verify(audit.body, dict(audit.headers)) == orjson.loads(audit.body)


def test_credential_headers_stay_masked_even_with_signatures_shown(tmp_path: Path) -> None:
    crm = requests_by_id(tmp_path, EVENT, show_signatures=True)["crm"]
    assert crm.headers == (
        ("content-type", "application/json"),
        ("user-agent", crm.headers[1][1]),
        ("X-Source", "identity"),
        ("Authorization", "***"),
        ("logto-signature-sha-256", crm.headers[4][1]),
        ("webhook-id", crm.webhook_id),
    )
    assert crm.headers[1][1].startswith("hookrelay/")


def test_the_webhook_id_is_the_daemons_for_the_given_origin(tmp_path: Path) -> None:
    crm = requests_by_id(tmp_path, EVENT)["crm"]
    assert crm.webhook_id == delivery_id("identity.events", 3, 42, "crm")
    assert dict(crm.headers)["webhook-id"] == crm.webhook_id


def test_an_invalid_event_raises_the_reason_the_daemon_dead_letters_with(tmp_path: Path) -> None:
    origin = origin_of("identity.events", 0, 0)
    with pytest.raises(InvalidEventError) as missing:
        match_event(settings(tmp_path), b'{"event":"User.Created"}', None, origin)
    assert (missing.value.reason, missing.value.detail) == (
        "bad_created_at", "member 'createdAt' must be ISO-8601 text",
    )  # fmt: skip
    small = settings(tmp_path, delivery={"max_event_bytes": 1024})
    with pytest.raises(InvalidEventError) as large:
        match_event(small, EVENT[:-1] + b',"pad":"' + b"x" * 1024 + b'"}', None, origin)
    assert large.value.reason == "oversized"


def test_matching_opens_no_http_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("a session was opened")

    monkeypatch.setattr(aiohttp, "ClientSession", refuse)
    monkeypatch.setattr(aiohttp, "TCPConnector", refuse)
    assert len(requests_by_id(tmp_path, EVENT)) == 3


def test_the_text_output_shows_the_body_on_lines_of_its_own_and_what_the_id_depends_on(
    tmp_path: Path,
) -> None:
    origin = origin_of("identity.events", 3, 42)
    text = render_text(match_event(settings(tmp_path), EVENT, b"u1", origin))
    assert text.splitlines()[0] == (
        f"event User.Created ({len(EVENT)} bytes, key 'u1'): valid; 2 of 4 hooks would receive it; "
        "1 disabled hook(s) match too (not delivered)"
    )
    assert f'\n{EVENT[:-1].decode()},"hookId":"crm"}}\n' in text
    assert "hook legacy  POST https://legacy.example/in  [DISABLED: not delivered" in text
    assert "hook audit  POST https://audit.example/in?***  [enabled]" in text
    assert "topic identity.events, partition 3, offset 42" in text
    assert "q-secret" not in text and "t0ken-x" not in text


# ── The command line, in process ────────────────────────────────────────────────────────────


def run(
    capsys: pytest.CaptureFixture[str], *args: str, stdin: bytes | None = None
) -> tuple[int, str, str]:
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        code = main(["match", *args])
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_is_one_document_for_scripts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path)
    code, out, _ = run(capsys, "-c", str(config), "--json", "--key", "u1", "--offset", "7", "-",
                       stdin=EVENT + b"\n")  # fmt: skip
    assert code == 0
    document = orjson.loads(out)
    assert document["valid"] is True
    assert document["event"] == {"name": "User.Created", "created_at": "2026-08-21T09:15:42.123Z",
                                 "bytes": len(EVENT), "key": "u1"}  # fmt: skip
    assert document["origin"] == {"topic": "identity.events", "partition": 0, "offset": 7}
    assert document["not_matched"] == 1
    assert document["signatures_shown"] is False
    crm = document["hooks"][0]
    assert crm["id"] == "crm" and crm["enabled"] is True
    assert crm["body"].encode() == EVENT[:-1] + b',"hookId":"crm"}'
    assert crm["webhook_id"] == delivery_id("identity.events", 0, 7, "crm")
    assert crm["headers"]["Authorization"] == "***"
    assert [(h["id"], h["enabled"]) for h in document["hooks"][1:]] == [
        ("audit", True), ("legacy", False),
    ]  # fmt: skip


def test_no_matching_hook_exits_0_and_says_nothing_would_be_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hooks = [{"id": "roles", "events": ["Role.*"], "url": "https://roles.example/in"}]
    event = tmp_path / "event.json"
    event.write_bytes(EVENT)
    code, out, _ = run(capsys, "-c", str(config_file(tmp_path, hooks)), str(event))
    assert code == 0
    assert out == (
        f"event User.Created ({len(EVENT)} bytes): valid; no enabled hook of 1 matches it, "
        "nothing would be sent\n"
    )


def test_an_invalid_event_exits_1_with_the_dead_letter_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(config_file(tmp_path))
    code, out, err = run(capsys, "-c", config, "--json", "-", stdin=b"[1, 2]")
    assert code == 1
    assert orjson.loads(out) == {
        "valid": False, "reason": "not_object", "detail": "JSON list is not an object",
    }  # fmt: skip
    assert err == (
        "hookrelay: invalid event: the daemon would dead-letter it with reason not_object: "
        "JSON list is not an object\n"
    )


def test_an_unreadable_event_file_exits_1_and_a_negative_offset_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(config_file(tmp_path))
    code, _, err = run(capsys, "-c", config, str(tmp_path / "missing.json"))
    assert code == 1
    assert err.startswith(f"hookrelay: cannot read the event from {tmp_path / 'missing.json'}:")
    with pytest.raises(SystemExit) as usage:
        run(capsys, "-c", config, "--offset", "-1", "-")
    assert usage.value.code == 2
    assert "expected a number of at least 0, got -1" in capsys.readouterr().err


def test_a_topic_the_daemon_does_not_consume_is_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(config_file(tmp_path))
    code, out, err = run(capsys, "-c", config, "--topic", "other", "--json", "-", stdin=EVENT)
    assert code == 0
    assert orjson.loads(out)["origin"]["topic"] == "other"
    assert err == "note: topic 'other' is not in kafka.topics; the daemon does not consume it\n"


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_records_trace_context_is_in_the_headers_shown_and_an_invalid_one_is_not(
    tmp_path: Path,
) -> None:
    traced = requests_by_id(tmp_path, EVENT, headers=[("traceparent", TRACEPARENT.encode())])
    assert ("traceparent", TRACEPARENT) in traced["crm"].headers
    zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
    plain = requests_by_id(tmp_path, EVENT, headers=[("traceparent", zeros.encode())])
    assert "traceparent" not in dict(plain["crm"].headers)


def test_a_header_argument_must_be_name_equals_value(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["match", "-c", str(config_file(tmp_path)), "--header", "traceparent", "-"])
    assert exited.value.code == 2
