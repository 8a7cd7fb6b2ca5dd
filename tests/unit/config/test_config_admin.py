"""admin.token and admin.token_file: the admin API's bearer token in the configuration, and
the warnings `hookrelay check` gives about the admin listener."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr

from hookrelay.config import (
    AdminSettings,
    Settings,
    config_warnings,
    json_schemas,
    load_settings,
)
from hookrelay.errors import ConfigError

TOKEN = "0123456789abcdef0123456789abcdef"
HOOKS = """
hooks:
  - id: crm-sync
    events: [User.Created]
    url: https://crm.example.com/hooks/logto
"""


def config(directory: Path, admin: str) -> Path:
    """hookrelay.yaml with ``admin`` (the section's body, indented by the caller's dedent)
    and one hook, so that only admin warnings can appear."""
    (directory / "hooks.yaml").write_text(textwrap.dedent(HOOKS).lstrip(), encoding="utf-8")
    body = "admin:\n" + textwrap.indent(textwrap.dedent(admin).strip("\n"), "  ") + "\n"
    path = directory / "hookrelay.yaml"
    path.write_text(body + "hooks_file: hooks.yaml\n", encoding="utf-8")
    return path


def refusals(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=env or {})
    return [str(issue) for issue in caught.value.issues]


# ── Where the token comes from ──────────────────────────────────────────────────────────────────


def test_no_token_by_default() -> None:
    assert AdminSettings().token is None
    assert Settings().admin.token is None


def test_token_from_an_environment_variable(tmp_path: Path) -> None:
    path = config(tmp_path, "token: ${HOOKRELAY_ADMIN_TOKEN}")
    settings = load_settings(path, env={"HOOKRELAY_ADMIN_TOKEN": TOKEN})

    assert settings.admin.token == SecretStr(TOKEN)
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings.model_dump())
    assert config_warnings(settings) == []


def test_token_file_is_relative_to_the_yaml_file_with_one_newline_stripped(
    tmp_path: Path,
) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "admin-token").write_text(TOKEN + "\n", encoding="utf-8")
    settings = load_settings(config(tmp_path, "token_file: secrets/admin-token"), env={})

    assert settings.admin.token is not None
    assert settings.admin.token.get_secret_value() == TOKEN
    assert config_warnings(settings) == []


def test_token_file_path_may_come_from_a_variable(tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text(TOKEN, encoding="utf-8")
    path = config(tmp_path, "token_file: ${SECRETS}/admin-token")
    settings = load_settings(path, env={"SECRETS": str(tmp_path)})

    assert settings.admin.token == SecretStr(TOKEN)


def test_the_same_token_loads_equal_settings(tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text(TOKEN, encoding="utf-8")
    from_file = load_settings(config(tmp_path, "token_file: admin-token"), env={})
    from_env = load_settings(config(tmp_path, "token: ${T}"), env={"T": TOKEN})

    assert from_file.admin == from_env.admin


# ── Refusals: they name the file, line and key, never the token ─────────────────────────────────


def test_missing_token_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = config(tmp_path, "token_file: secrets/admin-token")

    assert refusals(path) == [
        f"{path}:2: admin.token_file: cannot read admin token file "
        f"{tmp_path / 'secrets' / 'admin-token'}: No such file or directory"
    ]


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text("\n", encoding="utf-8")
    path = config(tmp_path, "token_file: admin-token")

    assert refusals(path) == [
        f"{path}:2: admin.token_file: admin token file {tmp_path / 'admin-token'} is empty"
    ]


def test_token_file_that_is_not_utf8_is_refused_without_its_content(tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_bytes(b"\xff\xfe" + TOKEN.encode())
    path = config(tmp_path, "token_file: admin-token")

    problems = refusals(path)
    assert problems == [
        f"{path}:2: admin.token_file: admin token file {tmp_path / 'admin-token'} is not UTF-8 text"
    ]


def test_token_and_token_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text(TOKEN, encoding="utf-8")
    path = config(tmp_path, "token: ${T}\ntoken_file: admin-token")

    assert refusals(path, env={"T": TOKEN}) == [
        f"{path}:3: admin.token_file: use either token or token_file, not both"
    ]


def test_token_file_that_is_not_a_string_is_refused(tmp_path: Path) -> None:
    path = config(tmp_path, "token_file: [a, b]")

    assert refusals(path) == [f"{path}:2: admin.token_file: expected a string; quote the value"]


def test_unset_token_variable_is_refused(tmp_path: Path) -> None:
    path = config(tmp_path, "token: ${HOOKRELAY_ADMIN_TOKEN}")

    assert refusals(path) == [
        f"{path}:2: admin.token: environment variable HOOKRELAY_ADMIN_TOKEN is not set"
    ]


BAD_TOKEN = (
    "admin.token: expected a bearer token of at least 16 characters of A-Z a-z 0-9 - . _ ~ + / "
    "(then optional =), e.g. from `openssl rand -hex 32`"
)


@pytest.mark.parametrize(
    "token",
    [
        "0123456789abcde",  # 15 characters: one short
        "has a space in the middle!",
        'quote"in-the-token-value',
        "ünïcode-token-value-here",
        "=leading-padding-is-not-b64token",
    ],
)
def test_a_token_that_cannot_be_a_bearer_token_is_refused_without_echoing_it(
    tmp_path: Path, token: str
) -> None:
    path = config(tmp_path, "token: ${T}")

    problems = refusals(path, env={"T": token})
    assert problems == [f"{path}:2: {BAD_TOKEN}"]
    assert token not in "".join(problems)


def test_a_token_read_from_a_file_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text("too-short\n", encoding="utf-8")
    path = config(tmp_path, "token_file: admin-token")

    problems = refusals(path)
    assert problems == [f"{path}:2: {BAD_TOKEN}"]
    assert "too-short" not in "".join(problems)


@pytest.mark.parametrize(
    "token", ["0123456789abcdef", "A-Za-z0-9._~+/AZaz09==", "x" * 256, "dGhpcyBpcyBhIHRva2Vu"]
)
def test_b64token_characters_of_16_or_more_are_accepted(tmp_path: Path, token: str) -> None:
    settings = load_settings(config(tmp_path, "token: ${T}"), env={"T": token})

    assert settings.admin.token == SecretStr(token)


def test_a_misspelt_token_file_key_gets_a_suggestion(tmp_path: Path) -> None:
    path = config(tmp_path, "tokenfile: admin-token")

    assert refusals(path) == [
        f"{path}:2: admin.tokenfile: unknown key 'tokenfile'; did you mean 'token_file'?"
    ]


# ── Warnings (hookrelay check) ──────────────────────────────────────────────────────────────────

EXPOSED = (
    "admin.listen: reachable beyond loopback without admin.token or admin.token_file: "
    "/metrics, /healthz and /readyz answer anyone who can connect, and the /v1 admin API is off"
)


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "[::]:9464", "10.1.2.3:9464", "admin:9464"])
def test_listening_beyond_loopback_without_a_token_is_warned(tmp_path: Path, listen: str) -> None:
    path = config(tmp_path, f'listen: "{listen}"')

    assert config_warnings(load_settings(path, env={})) == [f"{path}:2: {EXPOSED}"]


@pytest.mark.parametrize("listen", ["127.0.0.1:9464", "127.0.0.53:0", "[::1]:9464", "localhost:1"])
def test_listening_on_loopback_without_a_token_is_fine(tmp_path: Path, listen: str) -> None:
    path = config(tmp_path, f'listen: "{listen}"')

    assert config_warnings(load_settings(path, env={})) == []


def test_listening_beyond_loopback_with_a_token_is_fine(tmp_path: Path) -> None:
    path = config(tmp_path, 'listen: "0.0.0.0:9464"\ntoken: ${T}')

    assert config_warnings(load_settings(path, env={"T": TOKEN})) == []


def test_a_token_written_inline_is_warned_without_echoing_it(tmp_path: Path) -> None:
    path = config(tmp_path, f"token: {TOKEN}")
    warnings = config_warnings(load_settings(path, env={}))

    assert warnings == [
        f"{path}:2: admin.token: admin token written inline; use ${{VAR}} or token_file to "
        "keep it secret"
    ]


def test_a_token_partly_from_a_variable_is_not_called_inline(tmp_path: Path) -> None:
    path = config(tmp_path, "token: ${PREFIX}-0123456789abcdef")

    assert config_warnings(load_settings(path, env={"PREFIX": "prod"})) == []


def test_hookrelay_check_prints_the_admin_warnings(tmp_path: Path) -> None:
    path = config(tmp_path, f'listen: "0.0.0.0:9464"\ntoken: {TOKEN}')
    result = subprocess.run(
        [sys.executable, "-m", "hookrelay", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"warning: {path}:3: admin.token: admin token written inline; use ${{VAR}} or "
        "token_file to keep it secret"
    )
    assert TOKEN not in result.stdout + result.stderr


# ── JSON Schema ─────────────────────────────────────────────────────────────────────────────────


def test_the_json_schema_offers_token_or_token_file_not_both() -> None:
    admin = json_schemas()["hookrelay.schema.json"]["$defs"]["AdminSettings"]

    assert list(admin["properties"])[:3] == ["listen", "token", "token_file"]
    assert admin["properties"]["token"]["anyOf"][0]["writeOnly"] is True
    assert admin["properties"]["token_file"]["type"] == "string"
    assert admin["not"] == {"required": ["token", "token_file"]}
