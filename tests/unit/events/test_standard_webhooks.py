"""Standard Webhooks signing: the spec's test vector, several keys, the headers hookrelay sends
(checked with the ``standardwebhooks`` reference verifier), and the hook keys' configuration:
loading, refusals that name file, line and key path without the key, and warnings."""

from __future__ import annotations

import base64
import textwrap
import time
from pathlib import Path

import jsonschema
import pytest
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from hookrelay.config import (
    DeliverySettings,
    Hook,
    HttpSettings,
    config_warnings,
    json_schemas,
    load_settings,
)
from hookrelay.delivery.sender import HttpSender
from hookrelay.errors import ConfigError
from hookrelay.events.signing import (
    StandardWebhooksSigner,
    logto_signature,
    standard_webhooks_key,
    standard_webhooks_signature,
)
from hookrelay.ops.logs import redact_secrets

# The spec's own vector (standard-webhooks/standard-webhooks, libraries/python/tests,
# test_sign_function): secret, id, timestamp and payload → signature.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP_S = 1614265330
SPEC_PAYLOAD = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NEW_KEY = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OLD_KEY = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
BODY = b'{"event":"User.Created","createdAt":"2026-08-21T09:15:42.123Z","hookId":"crm"}'


# ── Signing ─────────────────────────────────────────────────────────────────────────────────────


def test_signature_matches_the_spec_test_vector() -> None:
    signature = standard_webhooks_signature([SPEC_SECRET], SPEC_ID, SPEC_TIMESTAMP_S, SPEC_PAYLOAD)

    assert signature == SPEC_SIGNATURE


def test_secret_without_the_whsec_prefix_gives_the_same_key_as_the_reference_library() -> None:
    bare = SPEC_SECRET.removeprefix("whsec_")

    assert standard_webhooks_key(bare) == standard_webhooks_key(SPEC_SECRET)
    assert standard_webhooks_key(bare) == Webhook(bare)._whsecret
    assert standard_webhooks_key(SPEC_SECRET) == Webhook(SPEC_SECRET)._whsecret


def test_unpadded_secret_decodes_like_the_reference_library() -> None:
    secret = "whsec_" + base64.b64encode(bytes(range(25))).decode().rstrip("=")

    assert standard_webhooks_key(secret) == bytes(range(25)) == Webhook(secret)._whsecret


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("whsec_not base64!", "expected a Standard Webhooks secret: whsec_ followed by base64"),
        ("whsec_YWJj-_", "expected a Standard Webhooks secret: whsec_ followed by base64"),
        ("whsec_AAAAA", "whose base64 decodes"),
        (
            "whsec_" + base64.b64encode(b"x" * 23).decode(),
            "24 to 64 random bytes (it decodes to 23)",
        ),
        (
            "whsec_" + base64.b64encode(b"x" * 65).decode(),
            "24 to 64 random bytes (it decodes to 65)",
        ),
    ],
)
def test_unusable_secrets_are_refused_without_echoing_them(secret: str, expected: str) -> None:
    with pytest.raises(ValueError, match="Standard Webhooks secret") as caught:
        standard_webhooks_key(secret)

    assert expected in str(caught.value)
    assert secret.removeprefix("whsec_") not in str(caught.value)


def test_each_key_adds_one_v1_signature_in_key_order() -> None:
    signer = StandardWebhooksSigner(
        [standard_webhooks_key(NEW_KEY), standard_webhooks_key(OLD_KEY)]
    )

    header = signer.sign("msg_x", 1700000000, BODY)

    assert header.split(" ") == [
        standard_webhooks_signature([NEW_KEY], "msg_x", 1700000000, BODY),
        standard_webhooks_signature([OLD_KEY], "msg_x", 1700000000, BODY),
    ]


def test_signer_reuses_its_keyed_state_without_mixing_requests() -> None:
    signer = StandardWebhooksSigner([standard_webhooks_key(SPEC_SECRET)])

    first = signer.sign(SPEC_ID, SPEC_TIMESTAMP_S, SPEC_PAYLOAD)
    signer.sign("msg_other", 1, b"{}")

    assert signer.sign(SPEC_ID, SPEC_TIMESTAMP_S, SPEC_PAYLOAD) == first == SPEC_SIGNATURE


def test_signer_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        StandardWebhooksSigner([])


# ── The headers hookrelay sends ─────────────────────────────────────────────────────────────────


def _headers(hook: Hook, delivery_id: str = "msg_abc", body: bytes = BODY) -> dict[str, str]:
    sender = HttpSender(HttpSettings(), DeliverySettings())
    return dict(sender.headers(hook, delivery_id, body))


def _hook(**fields: object) -> Hook:
    return Hook.model_validate({"id": "crm", "events": ["*"], "url": "http://x/", **fields})


def test_rotation_headers_verify_with_either_key_and_logto_header_uses_the_primary() -> None:
    hook = _hook(signing_keys=[NEW_KEY, OLD_KEY], standard_webhooks=True)

    before = int(time.time())
    headers = _headers(hook)

    assert before <= int(headers["webhook-timestamp"]) <= int(time.time())
    assert headers["webhook-id"] == "msg_abc"
    for key in (NEW_KEY, OLD_KEY):
        assert Webhook(key).verify(BODY, headers) == {
            "event": "User.Created",
            "createdAt": "2026-08-21T09:15:42.123Z",
            "hookId": "crm",
        }
    assert headers["logto-signature-sha-256"] == logto_signature(NEW_KEY, BODY)


def test_a_key_not_in_the_list_is_rejected_by_the_reference_verifier() -> None:
    headers = _headers(_hook(signing_keys=[NEW_KEY], standard_webhooks=True))

    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(OLD_KEY).verify(BODY, headers)


def test_a_tampered_body_is_rejected_by_the_reference_verifier() -> None:
    headers = _headers(_hook(signing_key=NEW_KEY, standard_webhooks=True))

    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(NEW_KEY).verify(BODY.replace(b"User", b"Role"), headers)


def test_without_standard_webhooks_only_logto_header_is_sent() -> None:
    headers = _headers(_hook(signing_keys=[NEW_KEY, OLD_KEY]))

    assert "webhook-signature" not in headers and "webhook-timestamp" not in headers
    assert headers["logto-signature-sha-256"] == logto_signature(NEW_KEY, BODY)


def test_single_signing_key_is_the_one_element_list() -> None:
    hook = _hook(signing_key=SPEC_SECRET, standard_webhooks=True)

    headers = _headers(hook, SPEC_ID, SPEC_PAYLOAD)

    assert hook.active_signing_keys == (SecretStr(SPEC_SECRET),)
    expected = standard_webhooks_signature(
        [SPEC_SECRET], SPEC_ID, int(headers["webhook-timestamp"]), SPEC_PAYLOAD
    )
    assert headers["webhook-signature"] == expected


def test_unsigned_hook_sends_no_signature_headers() -> None:
    headers = _headers(_hook())

    assert {"logto-signature-sha-256", "webhook-signature", "webhook-timestamp"}.isdisjoint(headers)


def test_every_key_of_a_prepared_hook_is_registered_with_the_log_redactor() -> None:
    _headers(_hook(signing_keys=[NEW_KEY, OLD_KEY], standard_webhooks=True))

    event = redact_secrets(None, "info", {"a": f"x{NEW_KEY}y", "b": OLD_KEY})
    assert event == {"a": "x***y", "b": "***"}


# ── Configuration ───────────────────────────────────────────────────────────────────────────────

HOOK = """
    - id: crm-sync
      events: [User.Created]
      url: https://crm.example.com/hooks/logto
"""


def with_hooks(tmp_path: Path, hooks_text: str) -> Path:
    text = "hooks:\n" + textwrap.dedent(hooks_text).lstrip("\n")
    (tmp_path / "hooks.yaml").write_text(text, encoding="utf-8")
    main = tmp_path / "hookrelay.yaml"
    main.write_text("hooks_file: hooks.yaml\n", encoding="utf-8")
    return main


def refusals(path: Path, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=env)
    return [str(issue) for issue in caught.value.issues]


def test_signing_keys_from_variables_load_primary_first(tmp_path: Path) -> None:
    path = with_hooks(
        tmp_path, HOOK + "      signing_keys: ['${NEW}', '${OLD}']\n      standard_webhooks: true\n"
    )

    [hook] = load_settings(path, env={"NEW": NEW_KEY, "OLD": OLD_KEY}).hooks

    assert [k.get_secret_value() for k in hook.active_signing_keys] == [NEW_KEY, OLD_KEY]
    assert hook.standard_webhooks is True
    assert hook.signing_key is None


def test_signing_key_files_are_read_relative_to_the_yaml_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "new").write_text(NEW_KEY + "\n", encoding="utf-8")
    (tmp_path / "keys" / "old").write_text(OLD_KEY, encoding="utf-8")
    path = with_hooks(tmp_path, HOOK + "      signing_key_files: [keys/new, keys/old]\n")

    [hook] = load_settings(path, env={}).hooks

    assert [k.get_secret_value() for k in hook.active_signing_keys] == [NEW_KEY, OLD_KEY]


def test_a_missing_key_file_is_refused_naming_its_item(tmp_path: Path) -> None:
    (tmp_path / "new").write_text(NEW_KEY, encoding="utf-8")
    path = with_hooks(tmp_path, HOOK + "      signing_key_files:\n        - new\n        - gone\n")

    assert refusals(path, {}) == [
        f"{tmp_path / 'hooks.yaml'}:7: hooks[0].signing_key_files[1]: "
        f"cannot read signing key file {tmp_path / 'gone'}: No such file or directory"
    ]


def test_duplicate_keys_are_refused_naming_both_lines_without_the_key(tmp_path: Path) -> None:
    path = with_hooks(
        tmp_path,
        HOOK + "      signing_keys:\n        - ${NEW}\n        - ${OLD}\n        - ${NEW}\n",
    )

    [issue] = refusals(path, {"NEW": NEW_KEY, "OLD": OLD_KEY})

    hooks = tmp_path / "hooks.yaml"
    assert issue == (
        f"{hooks}:8: hooks[0].signing_keys[2]: duplicate signing key; the same key as "
        f"signing_keys[0] at {hooks}:6"
    )


def test_duplicate_key_files_are_refused_at_the_file_item(tmp_path: Path) -> None:
    (tmp_path / "a").write_text(NEW_KEY, encoding="utf-8")
    (tmp_path / "b").write_text(NEW_KEY + "\n", encoding="utf-8")
    path = with_hooks(tmp_path, HOOK + "      signing_key_files:\n        - a\n        - b\n")

    [issue] = refusals(path, {})

    assert issue.startswith(f"{tmp_path / 'hooks.yaml'}:7: hooks[0].signing_keys[1]: duplicate")
    assert NEW_KEY.removeprefix("whsec_") not in issue


def test_a_key_that_is_no_standard_webhooks_secret_is_refused_by_line_and_path(
    tmp_path: Path,
) -> None:
    path = with_hooks(
        tmp_path,
        HOOK + "      standard_webhooks: true\n      signing_keys:\n"
        "        - ${NEW}\n        - ${LOGTO_STYLE}\n",
    )

    [issue] = refusals(path, {"NEW": NEW_KEY, "LOGTO_STYLE": "not-a-secret!"})

    assert issue == (
        f"{tmp_path / 'hooks.yaml'}:8: hooks[0].signing_keys[1]: expected a Standard Webhooks "
        "secret: whsec_ followed by base64 (A-Z a-z 0-9 + /, optional = padding) "
        "(standard_webhooks is true)"
    )


def test_a_logto_style_key_is_used_as_is_without_standard_webhooks(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      signing_keys: ['${K}']\n")

    [hook] = load_settings(path, env={"K": "not-a-secret!"}).hooks

    assert hook.active_signing_keys == (SecretStr("not-a-secret!"),)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "      signing_key: ${NEW}\n      signing_keys: ['${OLD}']\n",
            "6: hooks[0].signing_keys: use either signing_key (one key) or signing_keys "
            "(a list), not both",
        ),
        (
            "      signing_keys: ['${NEW}']\n      signing_key_files: [k]\n",
            "6: hooks[0].signing_key_files: use either signing_keys or signing_key_files, not both",
        ),
        ("      signing_keys: []\n", "5: hooks[0].signing_keys: expected a non-empty list"),
        (
            "      signing_key_files: []\n",
            "5: hooks[0].signing_key_files: expected a non-empty list of file paths",
        ),
        (
            "      standard_webhooks: true\n",
            "5: hooks[0].standard_webhooks: expected signing_key or signing_keys (or "
            "signing_key_file, signing_key_files) with standard_webhooks: true",
        ),
        (
            "      signing_keys: ['${NEW}', '']\n",
            "5: hooks[0].signing_keys[1]: expected a non-empty signing key",
        ),
    ],
)
def test_inconsistent_key_settings_are_refused(tmp_path: Path, extra: str, expected: str) -> None:
    path = with_hooks(tmp_path, HOOK + extra)

    issues = refusals(path, {"NEW": NEW_KEY, "OLD": OLD_KEY})

    assert issues == [f"{tmp_path / 'hooks.yaml'}:{expected}"]


def test_warns_about_inline_keys_in_the_list_but_not_variables(tmp_path: Path) -> None:
    path = with_hooks(
        tmp_path,
        HOOK + f"      standard_webhooks: true\n      signing_keys:\n        - ${{NEW}}\n"
        f"        - {OLD_KEY}\n",
    )

    warnings = config_warnings(load_settings(path, env={"NEW": NEW_KEY}))

    assert warnings == [
        f"{tmp_path / 'hooks.yaml'}:8: hooks[0].signing_keys[1]: signing key written inline; "
        "use ${VAR} or signing_key_files to keep it secret"
    ]
    assert all(OLD_KEY not in warning for warning in warnings)


def test_warns_that_extra_keys_sign_nothing_without_standard_webhooks(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      signing_keys: ['${NEW}', '${OLD}']\n")

    warnings = config_warnings(load_settings(path, env={"NEW": NEW_KEY, "OLD": OLD_KEY}))

    assert warnings == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].signing_keys: only the first key signs "
        "(logto-signature-sha-256 carries one signature); the others sign only with "
        "standard_webhooks: true"
    ]


def test_unknown_key_near_standard_webhooks_is_suggested(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + "      standard_webhook: true\n")

    assert refusals(path, {}) == [
        f"{tmp_path / 'hooks.yaml'}:5: hooks[0].standard_webhook: unknown key "
        "'standard_webhook'; did you mean 'standard_webhooks'?"
    ]


def test_json_schema_lists_the_key_forms_and_allows_only_one() -> None:
    schema = json_schemas()["hooks.schema.json"]
    hook = schema["$defs"]["Hook"]
    names = list(hook["properties"])
    assert names[names.index("signing_keys") + 1] == "signing_key_files"
    assert "standard_webhooks" in names

    base = {"id": "a", "events": ["*"], "url": "https://a.example/"}
    jsonschema.validate(
        {"hooks": [{**base, "signing_keys": ["k"], "standard_webhooks": True}]}, schema
    )
    for pair in [
        {"signing_key": "k", "signing_keys": ["k"]},
        {"signing_key_file": "f", "signing_key_files": ["f"]},
        {"signing_keys": ["k"], "signing_key_files": ["f"]},
    ]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"hooks": [{**base, **pair}]}, schema)
