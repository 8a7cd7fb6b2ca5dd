"""kafka.security_protocol, SASL and TLS settings: loading, refusals that name file, line and
key (never the password), `hookrelay check` warnings, and the aiokafka client options built
from them (hookrelay.kafka.clients)."""

from __future__ import annotations

import shutil
import ssl
import textwrap
from pathlib import Path

import certifi
import pytest

from hookrelay.config import KafkaSettings, config_warnings, load_settings
from hookrelay.errors import ConfigError
from hookrelay.kafka.clients import client_options

PASSWORD = "s3cret-Kafka-pass"


def main_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hookrelay.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def refusals(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=env or {})
    issues = [str(issue) for issue in caught.value.issues]
    assert all(PASSWORD not in issue for issue in issues)
    return issues


def a_ca_bundle(directory: Path) -> Path:
    """A real PEM CA bundle (certifi's) copied next to the configuration."""
    return Path(shutil.copy(certifi.where(), directory / "ca.pem"))


# ── Defaults and accepted settings ──────────────────────────────────────────────────────────────


def test_default_is_plaintext_without_sasl_or_tls_options() -> None:
    options = client_options(KafkaSettings(), "admin")
    assert options == {
        "bootstrap_servers": ["127.0.0.1:9092"],
        "client_id": "hookrelay-admin",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_with_scram_from_the_environment_builds_a_verifying_context(
    tmp_path: Path,
) -> None:
    ca = a_ca_bundle(tmp_path)
    path = main_file(
        tmp_path,
        """
        kafka:
          security_protocol: SASL_SSL
          sasl_mechanism: SCRAM-SHA-512
          sasl_username: hookrelay
          sasl_password: ${KAFKA_PASSWORD}
          ssl_ca_file: ca.pem
        """,
    )
    settings = load_settings(path, env={"KAFKA_PASSWORD": PASSWORD})
    assert settings.kafka.ssl_ca_file == str(ca)  # made absolute, relative to the file
    assert PASSWORD not in repr(settings)
    options = client_options(settings.kafka)
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.cert_store_stats()["x509_ca"] > 0
    assert options == {
        "bootstrap_servers": ["127.0.0.1:9092"],
        "client_id": "hookrelay",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "hookrelay",
        "sasl_plain_password": PASSWORD,
    }
    assert not [warning for warning in config_warnings(settings) if "kafka." in warning]


def test_sasl_password_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "kafka").write_text(PASSWORD + "\n", encoding="utf-8")
    path = main_file(
        tmp_path,
        """
        kafka:
          security_protocol: SASL_PLAINTEXT
          sasl_mechanism: SCRAM-SHA-256
          sasl_username: hookrelay
          sasl_password_file: secrets/kafka
        """,
    )
    settings = load_settings(path, env={})
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == PASSWORD
    assert not [w for w in config_warnings(settings) if "kafka" in w]


def test_ssl_without_a_ca_file_uses_the_system_cas() -> None:
    options = client_options(KafkaSettings(security_protocol="SSL"))
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    # The same trust store as Python's default context: the system's CAs (a context that
    # trusts none fails here on any machine that has some).
    system = ssl.create_default_context()
    assert context.cert_store_stats() == system.cert_store_stats()
    assert context.get_ca_certs() == system.get_ca_certs()
    assert "sasl_mechanism" not in options


# ── Refusals ────────────────────────────────────────────────────────────────────────────────────


def test_sasl_protocol_without_credentials_is_refused_at_the_kafka_line(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  security_protocol: SASL_SSL\n")
    assert refusals(path) == [
        f"{path}:1: kafka.sasl_mechanism: expected sasl_mechanism with security_protocol SASL_SSL"
    ]


def test_missing_password_names_both_ways_to_give_it(tmp_path: Path) -> None:
    path = main_file(
        tmp_path,
        """
        kafka:
          security_protocol: SASL_PLAINTEXT
          sasl_mechanism: SCRAM-SHA-256
          sasl_username: hookrelay
        """,
    )
    assert refusals(path) == [
        f"{path}:1: kafka.sasl_password: expected sasl_password or sasl_password_file with "
        "security_protocol SASL_PLAINTEXT"
    ]


def test_sasl_credentials_without_a_sasl_protocol_are_refused_not_ignored(tmp_path: Path) -> None:
    path = main_file(
        tmp_path,
        f"""
        kafka:
          sasl_mechanism: PLAIN
          sasl_username: hookrelay
          sasl_password: {PASSWORD}
        """,
    )
    assert refusals(path) == [
        f"{path}:2: kafka.sasl_mechanism: not used with security_protocol PLAINTEXT; remove it "
        "or choose a protocol that uses it"
    ]


def test_tls_files_without_a_tls_protocol_are_refused(tmp_path: Path) -> None:
    a_ca_bundle(tmp_path)
    path = main_file(
        tmp_path,
        """
        kafka:
          security_protocol: SASL_PLAINTEXT
          sasl_mechanism: SCRAM-SHA-256
          sasl_username: hookrelay
          sasl_password: ${KAFKA_PASSWORD}
          ssl_ca_file: ca.pem
        """,
    )
    [issue] = refusals(path, env={"KAFKA_PASSWORD": PASSWORD})
    assert issue.startswith(f"{path}:6: kafka.ssl_ca_file: not used with security_protocol")


def test_unknown_mechanism_lists_the_supported_ones(tmp_path: Path) -> None:
    path = main_file(
        tmp_path,
        """
        kafka:
          security_protocol: SASL_SSL
          sasl_mechanism: GSSAPI
          sasl_username: hookrelay
          sasl_password: ${KAFKA_PASSWORD}
        """,
    )
    assert refusals(path, env={"KAFKA_PASSWORD": PASSWORD}) == [
        f"{path}:3: kafka.sasl_mechanism: expected one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
    ]


def test_a_missing_ca_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  security_protocol: SSL\n  ssl_ca_file: nowhere.pem\n")
    [issue] = refusals(path)
    assert issue.startswith(
        f"{path}:3: kafka.ssl_ca_file: cannot read CA file {tmp_path / 'nowhere.pem'}:"
    )


def test_a_ca_file_without_certificates_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n", encoding="utf-8")
    path = main_file(tmp_path, "kafka:\n  security_protocol: SSL\n  ssl_ca_file: ca.pem\n")
    [issue] = refusals(path)
    assert issue.startswith(
        f"{path}:3: kafka.ssl_ca_file: CA file {tmp_path / 'ca.pem'} holds no PEM certificate"
    )


def test_a_client_certificate_that_does_not_load_is_refused(tmp_path: Path) -> None:
    a_ca_bundle(tmp_path)
    (tmp_path / "client.key").write_text("not a key\n", encoding="utf-8")
    path = main_file(
        tmp_path,
        """
        kafka:
          security_protocol: SSL
          ssl_ca_file: ca.pem
          ssl_cert_file: ca.pem
          ssl_key_file: client.key
        """,
    )
    [issue] = refusals(path)
    assert issue.startswith(f"{path}:4: kafka.ssl_cert_file: certificate {tmp_path / 'ca.pem'}")
    assert "do not load as a PEM certificate chain with its unencrypted private key" in issue


def test_a_missing_client_key_is_refused_at_ssl_key_file(tmp_path: Path) -> None:
    a_ca_bundle(tmp_path)
    path = main_file(
        tmp_path,
        """
        kafka:
          security_protocol: SSL
          ssl_cert_file: ca.pem
          ssl_key_file: missing.key
        """,
    )
    [issue] = refusals(path)
    assert issue.startswith(f"{path}:4: kafka.ssl_key_file: cannot read {tmp_path / 'missing.key'}")


def test_a_key_without_its_certificate_is_refused(tmp_path: Path) -> None:
    a_ca_bundle(tmp_path)
    path = main_file(tmp_path, "kafka:\n  security_protocol: SSL\n  ssl_key_file: ca.pem\n")
    assert refusals(path) == [
        f"{path}:3: kafka.ssl_key_file: expected ssl_cert_file with it (the key's certificate)"
    ]


def test_a_missing_password_file_is_named_and_both_ways_are_exclusive(tmp_path: Path) -> None:
    path = main_file(
        tmp_path,
        """
        kafka:
          security_protocol: SASL_SSL
          sasl_mechanism: PLAIN
          sasl_username: hookrelay
          sasl_password_file: absent
        """,
    )
    [issue] = refusals(path)
    assert issue.startswith(
        f"{path}:5: kafka.sasl_password_file: cannot read SASL password file {tmp_path / 'absent'}"
    )
    both = main_file(
        tmp_path,
        f"""
        kafka:
          security_protocol: SASL_SSL
          sasl_mechanism: PLAIN
          sasl_username: hookrelay
          sasl_password: {PASSWORD}
          sasl_password_file: absent
        """,
    )
    assert (
        f"{both}:6: kafka.sasl_password_file: use either sasl_password or "
        "sasl_password_file, not both" in refusals(both)
    )


def test_an_empty_password_is_refused(tmp_path: Path) -> None:
    path = main_file(
        tmp_path,
        """
        kafka:
          security_protocol: SASL_SSL
          sasl_mechanism: SCRAM-SHA-256
          sasl_username: hookrelay
          sasl_password: ""
        """,
    )
    assert refusals(path) == [f"{path}:5: kafka.sasl_password: expected a non-empty password"]


# ── hookrelay check warnings ────────────────────────────────────────────────────────────────────


def kafka_warnings(path: Path, env: dict[str, str]) -> list[str]:
    return [w for w in config_warnings(load_settings(path, env=env)) if "kafka." in w]


def test_plain_over_sasl_plaintext_warns_that_the_password_crosses_in_clear(
    tmp_path: Path,
) -> None:
    path = main_file(
        tmp_path,
        """
        kafka:
          security_protocol: SASL_PLAINTEXT
          sasl_mechanism: PLAIN
          sasl_username: hookrelay
          sasl_password: ${KAFKA_PASSWORD}
        """,
    )
    assert kafka_warnings(path, {"KAFKA_PASSWORD": PASSWORD}) == [
        f"{path}:3: kafka.sasl_mechanism: SASL PLAIN over SASL_PLAINTEXT: the password crosses "
        "the network in clear; use SASL_SSL, or a SCRAM mechanism"
    ]


def test_an_inline_password_warns_without_echoing_it(tmp_path: Path) -> None:
    a_ca_bundle(tmp_path)
    path = main_file(
        tmp_path,
        f"""
        kafka:
          security_protocol: SASL_SSL
          sasl_mechanism: PLAIN
          sasl_username: hookrelay
          sasl_password: {PASSWORD}
          ssl_ca_file: ca.pem
        """,
    )
    assert kafka_warnings(path, {}) == [
        f"{path}:5: kafka.sasl_password: SASL password written inline; use ${{VAR}} or "
        "sasl_password_file to keep it secret"
    ]
