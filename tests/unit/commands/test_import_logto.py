"""``hookrelay import-logto``: Logto's GET /api/hooks JSON → hooks.yaml + a 0600 env file.

The fixture ``tests/fixtures/logto_hooks.json`` is written from Logto's schema (the ``hooks``
table, ``Hooks.guard`` and ``hookResponseGuard`` with ``executionStats``), not fetched. The
output is read back by hookrelay's own loader with the env file sourced by a real shell, the
way ``set -a; . hookrelay.env`` or systemd's ``EnvironmentFile=`` load it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from hookrelay.commands.import_logto import convert, parse
from hookrelay.config import load_settings
from hookrelay.errors import LogtoImportError

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "logto_hooks.json"
ROOT = Path(__file__).resolve().parents[3]
LOGTO_KEYS = {
    "s4x1hp2qk8ve0b7nt3mzc": "kQ7vZ3nR8tW2yB5mC9xL4pF6hJ1dS0aE",
    "9m2c7w4e1r6t8y0u3i5op": "Xb4Tn8Qe2Lr6Vw0Zc3Hy7Jm1Ks5Pa9Dg",
    "e8d7c6b5a4f3g2h1i0jkl": "Pz6Rw1Yt5Ua9Ic3Od7Fe2Gh8Jk4Lm0Nq",
}
AUTHORIZATION = "Bearer crm-api-token-7f3a9c21"


def cli(
    *args: str, stdin: bytes | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookrelay", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True, text=True, cwd=cwd, timeout=60, check=False,
    )  # fmt: skip


def with_env_file(env_file: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` after a POSIX shell sourced ``env_file`` with ``set -a``."""
    script = 'set -a && . "$0" && set +a && exec "$@"'
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HOOKRELAY_")}
    return subprocess.run(
        ["/bin/sh", "-c", script, str(env_file), *command],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False, env=environment,
    )  # fmt: skip


def env_values(env_file: Path) -> dict[str, str]:
    """The variables ``env_file`` sets, as a real shell reads them."""
    done = with_env_file(env_file, "env", "-0")
    assert done.returncode == 0, done.stderr
    pairs = (item.split("=", 1) for item in done.stdout.split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith("HOOKRELAY_")}


def imported(tmp_path: Path, source: Path = FIXTURE) -> tuple[Path, Path, str]:
    out, env = tmp_path / "hooks.yaml", tmp_path / "hookrelay.env"
    done = cli("import-logto", str(source), "--out", str(out), "--env-out", str(env))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote 3 hooks to {out}, signing keys in {env} (mode 0600)"
    return out, env, done.stderr


def main_config(directory: Path) -> Path:
    path = directory / "hookrelay.yaml"
    path.write_text("kafka:\n  bootstrap_servers: ['127.0.0.1:9']\nhooks_file: hooks.yaml\n")
    return path


def test_imported_hooks_load_with_the_env_file_and_keep_logtos_fields(tmp_path: Path) -> None:
    _, env, _ = imported(tmp_path)
    settings = load_settings(main_config(tmp_path), env=env_values(env))
    hooks = {hook.id: hook for hook in settings.hooks}
    assert list(hooks) == list(LOGTO_KEYS)  # Logto's 21-character ids fit as they are
    for hook_id, key in LOGTO_KEYS.items():
        signing_key = hooks[hook_id].signing_key
        assert signing_key is not None and signing_key.get_secret_value() == key
    crm, legacy, audit = hooks.values()
    assert crm.name == "CRM sync" and crm.enabled
    assert crm.events == ("User.Created", "User.Data.Updated", "User.Deleted")
    assert crm.url == "https://crm.example.com/hooks/logto?tenant=acme"
    assert dict(crm.headers) == {"X-Source": "logto", "Authorization": AUTHORIZATION}
    assert legacy.events == ("PostRegister",)  # the legacy single `event` folded in
    assert audit.events == ("PostSignIn", "Identifier.Lockout", "Organization.Membership.Updated")
    assert not audit.enabled
    assert audit.name == "Audit ${SIEM} bridge"  # a literal ${ survives the loader's expansion
    assert dict(audit.headers) == {"X-Env": "${NOT_A_VARIABLE}"}  # Content-Type dropped


def test_no_secret_is_written_into_hooks_yaml_and_the_env_file_is_private(tmp_path: Path) -> None:
    out, env, _ = imported(tmp_path)
    text = out.read_text()
    for secret in [*LOGTO_KEYS.values(), AUTHORIZATION, "crm-api-token"]:
        assert secret not in text
    assert "signing_key: ${HOOKRELAY_KEY_S4X1HP2QK8VE0B7NT3MZC}" in text
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert env_values(env) == {
        "HOOKRELAY_HEADER_S4X1HP2QK8VE0B7NT3MZC_AUTHORIZATION": AUTHORIZATION,
        # A query string may hold a token: the URL goes along (here only a tenant name).
        "HOOKRELAY_URL_S4X1HP2QK8VE0B7NT3MZC": "https://crm.example.com/hooks/logto?tenant=acme",
        **{f"HOOKRELAY_KEY_{hook_id.upper()}": key for hook_id, key in LOGTO_KEYS.items()},
    }


def test_hookrelay_check_passes_with_the_env_file_loaded(tmp_path: Path) -> None:
    imported(tmp_path)
    config = main_config(tmp_path)
    done = with_env_file(
        tmp_path / "hookrelay.env", sys.executable, "-m", "hookrelay", "check", "-c", str(config)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok (3 hooks, 2 enabled)\n  workers: 1: one process\n" in done.stdout
    assert "signing key written inline" not in done.stdout
    without = cli("check", "-c", str(config))  # the keys are nowhere else
    assert without.returncode == 1 and "HOOKRELAY_KEY_" in without.stderr


def test_dropped_and_unknown_fields_are_reported_not_silently_lost(tmp_path: Path) -> None:
    _, _, notes = imported(tmp_path)
    lines = notes.splitlines()
    assert "note: hook s4x1hp2qk8ve0b7nt3mzc: config.retries not carried over" in notes
    assert "note: hook e8d7c6b5a4f3g2h1i0jkl: header 'Content-Type' dropped" in notes
    for name in ("tenantId", "createdAt", "executionStats"):
        assert any(line.startswith(f"note: {name} (3 hooks) not carried over") for line in lines)
    for secret in LOGTO_KEYS.values():
        assert secret not in notes
    hooks = orjson.loads(FIXTURE.read_bytes())
    hooks[0]["secretCredentials"] = {"x": 1}
    hooks[0]["config"]["method"] = "PUT"
    notes = "\n".join(convert(hooks).notes)
    assert "unknown field 'secretCredentials' not carried over" in notes
    assert "unknown field 'config.method' not carried over" in notes


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    out, env, _ = imported(tmp_path)
    env.write_text("KEEP=1\n")
    again = cli("import-logto", str(FIXTURE), "--out", str(out), "--env-out", str(env))
    assert again.returncode == 1 and "exists; pass --force" in again.stderr
    assert env.read_text() == "KEEP=1\n"
    env.chmod(0o644)
    forced = cli("import-logto", str(FIXTURE), "--out", str(out), "--env-out", str(env), "--force")
    assert forced.returncode == 0
    assert "KEEP" not in env.read_text() and stat.S_IMODE(env.stat().st_mode) == 0o600


def test_standard_input_is_read_with_a_dash(tmp_path: Path) -> None:
    one_hook = orjson.dumps(orjson.loads(FIXTURE.read_bytes())[1])  # GET /api/hooks/{id}
    done = cli(
        "import-logto", "-", "--out", "h.yaml", "--env-out", "k.env", stdin=one_hook, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "id: 9m2c7w4e1r6t8y0u3i5op" in (tmp_path / "h.yaml").read_text()


def logto_hook(**changes: Any) -> dict[str, Any]:
    hook: dict[str, Any] = orjson.loads(FIXTURE.read_bytes())[1]
    hook.update(changes)
    return hook


def test_an_id_outside_hookrelays_rule_is_mapped_and_said() -> None:
    hooks = [logto_hook(id="legacy hook/id with spaces"), logto_hook(id="legacy-hook-id-with-s")]
    conversion = convert(hooks)
    assert "- id: legacy-hook-id-with-s\n" in conversion.hooks_yaml
    assert "- id: legacy-hook-id-wit-2\n" in conversion.hooks_yaml  # taken: a suffix
    assert [n for n in conversion.notes if "id mapped to" in n] == [
        "hook 0 (legacy hook/id with spaces): id mapped to 'legacy-hook-id-with-s' (hookrelay "
        "ids are 1-21 characters of A-Z a-z 0-9 _ -, unique); receivers will see this hookId "
        "instead of Logto's",
        "hook 1 (legacy-hook-id-with-s): id mapped to 'legacy-hook-id-wit-2' (hookrelay ids are "
        "1-21 characters of A-Z a-z 0-9 _ -, unique); receivers will see this hookId instead "
        "of Logto's",
    ]


def test_an_unsigned_logto_hook_stays_unsigned() -> None:
    conversion = convert([logto_hook(signingKey="")])
    assert "signing_key" not in conversion.hooks_yaml and conversion.env_text == ""


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ([logto_hook(event=None, events=[])], "neither events nor event"),
        ([logto_hook(config={"url": "ftp://files.example.com/hook"})], "url"),
        (
            [logto_hook(config={"url": "https://x.example", "headers": {"X-A": "a\r\nX-B: b"}})],
            "headers",
        ),
        ([logto_hook(signingKey="it's quoted")], "environment file cannot carry"),
        ([logto_hook(signingKey="two\nlines")], "control character (U+000A)"),
        ([logto_hook(enabled="yes")], "enabled"),
    ],
)
def test_hooks_hookrelay_would_refuse_stop_the_import(
    hooks: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(LogtoImportError) as caught:
        convert(hooks)
    assert message in str(caught.value)
    assert "multiline" not in str(caught.value)


@pytest.mark.parametrize("raw", [b"not json", b"42", b'[{"id":"a"}, 3]'])
def test_input_that_is_not_logtos_hooks_is_refused(raw: bytes) -> None:
    with pytest.raises(LogtoImportError):
        parse(raw)


def test_a_credential_header_holding_a_dollar_brace_still_goes_to_the_env_file(
    tmp_path: Path,
) -> None:
    """Found by a security trial: such a value stayed in the world-readable hooks.yaml."""
    source = tmp_path / "hooks.json"
    source.write_text(orjson.dumps([{
        "id": "e2e2", "name": "x", "events": ["User.Created"], "signingKey": "k" * 32,
        "enabled": True,
        "config": {"url": "https://crm.example.com/", "headers": {
            "Authorization": "Bearer tok-${HOME}", "X-A": "${B}",
        }},
    }]).decode())  # fmt: skip
    out, env = tmp_path / "hooks.yaml", tmp_path / "hookrelay.env"
    done = cli("import-logto", str(source), "--out", str(out), "--env-out", str(env))
    assert done.returncode == 0, done.stderr
    assert "tok-" not in out.read_text()
    assert env_values(env)["HOOKRELAY_HEADER_E2E2_AUTHORIZATION"] == "Bearer tok-${HOME}"
    check = with_env_file(env, sys.executable, "-m", "hookrelay", "check", "-c",
                          str(main_config(tmp_path)))  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    hook = load_settings(main_config(tmp_path), env=env_values(env)).hooks[0]
    assert dict(hook.headers) == {"Authorization": "Bearer tok-${HOME}", "X-A": "${B}"}


def test_a_url_with_a_query_string_goes_to_the_env_file(tmp_path: Path) -> None:
    """Found by a new user's trial: ``?apikey=…`` stayed in the world-readable hooks.yaml."""
    source = tmp_path / "hooks.json"
    url = "https://crm.example.com/hook?apikey=QUERYSECRET1&tenant=a"
    source.write_text(orjson.dumps([{
        "id": "q1", "name": "x", "events": ["User.Created"], "signingKey": "",
        "enabled": True, "config": {"url": url},
    }]).decode())  # fmt: skip
    out, env = tmp_path / "hooks.yaml", tmp_path / "hookrelay.env"
    done = cli("import-logto", str(source), "--out", str(out), "--env-out", str(env))
    assert done.returncode == 0, done.stderr
    assert "QUERYSECRET1" not in out.read_text()
    assert "url: ${HOOKRELAY_URL_Q1}" in out.read_text()
    assert "hook q1: url has a query string" in done.stderr
    assert env_values(env) == {"HOOKRELAY_URL_Q1": url}
    hook = load_settings(main_config(tmp_path), env=env_values(env)).hooks[0]
    assert hook.url == url


def test_a_header_name_with_a_line_break_is_never_printed_raw() -> None:
    """A breaker's trial: the refusal echoed a header name holding CR LF to the terminal."""
    with pytest.raises(LogtoImportError) as caught:
        convert([logto_hook(config={"url": "https://crm.example.com/",
                                    "headers": {"X-A\r\nInjected": "v"}})])  # fmt: skip
    assert "\r" not in str(caught.value) and "\n" not in str(caught.value)
    assert "'X-A\\r\\nInjected'" in str(caught.value)


def test_transport_headers_are_dropped_with_a_note() -> None:
    conversion = convert([logto_hook(config={"url": "https://crm.example.com/",
                                             "headers": {"Expect": "100-continue"}})])  # fmt: skip
    assert "headers" not in conversion.hooks_yaml
    assert any(
        "header 'Expect' dropped (the HTTP client manages it)" in n for n in conversion.notes
    )
