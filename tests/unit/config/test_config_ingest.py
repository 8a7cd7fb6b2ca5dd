"""The ingest section: sources with their signing keys from ${VAR} or files, the batch token,
the listeners; refused values name file, line and key; the daemon's commands never need the
section's secrets."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from hookrelay.config import load_settings
from hookrelay.config.checks import config_warnings
from hookrelay.errors import ConfigError

KEY = "logto-signing-key-0123456789"
TOKEN = "0123456789abcdef0123456789abcdef"


def write(directory: Path, ingest: str) -> Path:
    body = "kafka:\n  topics: [identity.events, other.events]\ningest:\n"
    body += textwrap.indent(textwrap.dedent(ingest).strip("\n"), "  ") + "\n"
    path = directory / "hookrelay.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def refusals(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=env or {})
    return [str(issue).split(": ", 1)[1] for issue in caught.value.issues]


def test_a_source_takes_its_key_from_the_environment_or_a_file_and_defaults_the_rest(
    tmp_path: Path,
) -> None:
    (tmp_path / "staging.key").write_text(KEY + "-staging\n", encoding="utf-8")
    path = write(
        tmp_path,
        """
        sources:
          - id: prod
            signing_key: ${LOGTO_PROD_KEY}
          - id: staging
            path: /hooks/logto-staging
            signing_key_file: staging.key
            topic: other.events
            key: data.id
        batch:
          token_file: batch.token
    """,
    )
    (tmp_path / "batch.token").write_text(TOKEN + "\n", encoding="utf-8")
    settings = load_settings(path, env={"LOGTO_PROD_KEY": KEY})
    assert settings.ingest is not None
    prod, staging = settings.ingest.sources
    assert (prod.route, prod.signing_key.get_secret_value(), prod.key) == (
        "/logto/prod",
        KEY,
        "auto",
    )
    assert settings.event_topic(prod.topic) == "identity.events"
    assert (staging.route, staging.signing_key.get_secret_value()) == (
        "/hooks/logto-staging", KEY + "-staging",
    )  # fmt: skip
    assert (settings.event_topic(staging.topic), staging.key) == ("other.events", "data.id")
    assert settings.ingest.batch is not None
    assert settings.ingest.batch.token.get_secret_value() == TOKEN
    assert (settings.ingest.listen, settings.ingest.metrics_listen) == (
        "127.0.0.1:8088", "127.0.0.1:9465",
    )  # fmt: skip


def test_bad_values_are_refused_with_their_line_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        sources:
          - id: "prod tenant"
            signing_key: ${LOGTO_PROD_KEY}
            path: logto/prod?x=1
            key: "data id"
        batch:
          token: short
    """,
    )
    assert refusals(path) == [
        "ingest.sources[0].id: expected 1-64 characters of A-Z a-z 0-9 _ - (it is a metric label)",
        "ingest.sources[0].signing_key: environment variable LOGTO_PROD_KEY is not set",
        "ingest.sources[0].path: expected an absolute URL path of segments made of "
        "A-Z a-z 0-9 . _ ~ -, e.g. /logto/production (no query, no trailing slash)",
        "ingest.sources[0].key: expected auto, none, or a member path of the event such as data.id",
        "ingest.batch.token: expected a bearer token of at least 16 characters of "
        "A-Z a-z 0-9 - . _ ~ + / (then optional =), e.g. from `openssl rand -hex 32`",
    ]


def test_a_missing_key_file_is_one_problem_not_two(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        sources:
          - id: prod
            signing_key_file: absent.key
    """,
    )
    (problem,) = refusals(path)
    assert problem.startswith("ingest.sources[0].signing_key_file: cannot read signing key file")


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        ("id: other\n    path: /logto/prod",
         "ingest.sources[1].path: duplicate path /logto/prod; already served for sources[0]"),
        ("id: prod\n    path: /logto/other", "ingest.sources[1].id: duplicate source id; "
         "already used by sources[0]"),
    ],
)  # fmt: skip
def test_two_sources_may_not_share_an_id_or_a_path(
    tmp_path: Path, second: str, expected: str
) -> None:
    path = write(tmp_path, f"sources:\n  - id: prod\n    signing_key: {KEY}\n"
                           f"  - {second}\n    signing_key: {KEY}\n")  # fmt: skip
    (problem,) = refusals(path)
    assert problem.startswith(expected)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("topic: hookrelay.dlq", "expected an event topic: this is one the deployment writes "
         "(dead-letter, retry, control or outcome topic), which the daemon does not read as "
         "events"),
        ("topic: hookrelay.control", "(dead-letter, retry, control or outcome topic), which the "
         "daemon does not read as events"),
        ("topic: hookrelay.retry.now", "(dead-letter, retry, control or outcome topic), which "
         "the daemon does not read as events"),
        ("path: /v1/events", "/v1/events is the batch API's path; choose another"),
    ],
)  # fmt: skip
def test_a_source_may_not_write_to_the_deployments_own_topics_or_shadow_the_batch_api(
    tmp_path: Path, extra: str, expected: str
) -> None:
    path = write(
        tmp_path,
        f"""
        sources:
          - id: prod
            signing_key: {KEY}
            {extra}
    """,
    )
    (problem,) = refusals(path)
    assert problem.endswith(expected)


def test_the_metrics_listener_needs_its_own_port(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        listen: 0.0.0.0:8088
        metrics_listen: 127.0.0.1:8088
        sources: [{{id: prod, signing_key: {KEY}}}]
    """,
    )
    (problem,) = refusals(path)
    assert problem.startswith("ingest.metrics_listen: expected a port other than listen's")


def test_tls_files_that_do_not_load_are_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate", encoding="utf-8")
    path = write(
        tmp_path,
        f"""
        tls: {{cert_file: cert.pem}}
        sources: [{{id: prod, signing_key: {KEY}}}]
    """,
    )
    (problem,) = refusals(path)
    assert problem == (
        f"ingest.tls.cert_file: cannot use {tmp_path / 'cert.pem'} as the server certificate: "
        "expected a PEM certificate chain and its unencrypted PEM private key"
    )


def test_the_daemon_loads_the_file_without_the_ingest_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        sources:
          - id: prod
            signing_key: ${LOGTO_PROD_KEY}
    """,
    )
    settings = load_settings(path, env={}, skip=("ingest",))
    assert settings.ingest is None


def test_inline_ingest_secrets_are_warned_about(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        sources: [{{id: prod, signing_key: {KEY}}}]
        batch: {{token: {TOKEN}}}
    """,
    )
    warnings = config_warnings(load_settings(path, env={}))
    assert any("ingest.sources[0].signing_key: signing key written inline" in w for w in warnings)
    assert any("ingest.batch.token: batch token written inline" in w for w in warnings)


SHIPPED_MAIN_FILES = [
    "config/hookrelay.yaml",
    "deploy/demo/hookrelay.yaml",
    "deploy/kubernetes/base/config/hookrelay.yaml",
    "deploy/kubernetes/components/ingest/config/hookrelay.yaml",
    "deploy/kubernetes/overlays/example/hookrelay.yaml",
    "deploy/kubernetes/overlays/example/ingest/hookrelay.yaml",
]


@pytest.mark.parametrize("name", SHIPPED_MAIN_FILES)
def test_every_shipped_main_file_is_valid_for_the_editors_schema(name: str) -> None:
    # An editor that validates against config/hookrelay.schema.json must accept what we ship
    # (a new user's trial: the schema required signing_key where the demo uses a key file).
    root = Path(__file__).resolve().parents[3]
    schema = json.loads((root / "config/hookrelay.schema.json").read_text(encoding="utf-8"))
    document = YAML(typ="safe", pure=True).load((root / name).read_text(encoding="utf-8"))
    problems = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft202012Validator(schema).iter_errors(document)
    ]
    assert problems == []


def test_the_schema_takes_a_key_or_a_key_file_for_a_source_and_the_batch_token() -> None:
    schema = json.loads(
        (Path(__file__).resolve().parents[3] / "config/hookrelay.schema.json").read_text()
    )
    validator = jsonschema.Draft202012Validator(schema)
    source: dict[str, object] = {"id": "prod"}
    for given, valid in (
        ({"signing_key": "k"}, True),
        ({"signing_key_file": "k.key"}, True),
        ({}, False),
        ({"signing_key": "k", "signing_key_file": "k.key"}, False),
    ):
        document = {"ingest": {"sources": [{**source, **given}]}}
        assert validator.is_valid(document) is valid, given
    assert validator.is_valid({"ingest": {"batch": {"token_file": "t"}}})
    assert not validator.is_valid({"ingest": {"batch": {}}})


def test_a_path_with_dot_segments_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, f"sources: [{{id: prod, path: /logto/../prod, signing_key: {KEY}}}]")
    (problem,) = refusals(path)
    assert problem.startswith("ingest.sources[0].path: expected a path without . or ..")


def test_check_warns_about_an_ingest_section_that_serves_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: 127.0.0.1:8088")
    warnings = config_warnings(load_settings(path, env={}))
    assert any("ingest: no sources and no batch API" in w for w in warnings)
