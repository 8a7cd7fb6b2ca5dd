"""Pytest plugin: a second real Kafka broker with secured listeners, started only when a test
asks for it (``kafka_secure``), once per session.

Loaded from tests/conftest.py (``pytest_plugins``). deploy/kafka/kafkactl.py starts it in a
temporary data dir with a PLAINTEXT listener (for topic set-up) plus:

- ``SASL_PLAINTEXT`` with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for user :data:`SASL_USER`
  (SCRAM credentials added when kafkactl formats the storage);
- ``SSL`` and ``SASL_SSL`` with a CA and broker certificate (localhost, 127.0.0.1) that
  kafkactl generates with Java's keytool; clients trust ``ca_file``.

The session's ordinary broker (tests.kafka_broker) is not touched.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kafka_broker import START_TIMEOUT_S, run_kafkactl

SASL_USER = "hookrelay"
SASL_PASSWORD = "kafka-Scram-pw-7f3a"
EXIT_PORT_IN_USE = 5


@dataclass(frozen=True)
class SecureKafka:
    """Addresses of the secured broker's listeners (host:port) and the CA clients trust."""

    plaintext: str
    sasl_plaintext: str
    ssl: str
    sasl_ssl: str
    ca_file: Path
    data_dir: Path


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _start(data_dir: Path, attempts: int = 3) -> SecureKafka:
    for _ in range(attempts):
        plain, sasl, tls, sasl_tls = _free_ports(4)
        result = run_kafkactl(
            "start", "--port", str(plain), "--sasl-port", str(sasl), "--ssl-port", str(tls),
            "--sasl-ssl-port", str(sasl_tls), "--sasl-user", f"{SASL_USER}:{SASL_PASSWORD}",
            "--data-dir", str(data_dir), "--timeout", str(START_TIMEOUT_S),
            timeout_s=START_TIMEOUT_S + 120,
        )  # fmt: skip
        if result.returncode == 0:
            host = "127.0.0.1"
            return SecureKafka(
                f"{host}:{plain}", f"{host}:{sasl}", f"{host}:{tls}", f"{host}:{sasl_tls}",
                data_dir / "tls" / "ca.pem", data_dir,
            )  # fmt: skip
        if result.returncode != EXIT_PORT_IN_USE:
            break
    pytest.fail(
        f"could not start the secured Kafka broker (kafkactl exit {result.returncode}):\n"
        f"{result.stderr}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def kafka_secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """The session's secured broker, started on first use and stopped at session end."""
    data_dir = tmp_path_factory.mktemp("kafka-secure")
    try:
        yield _start(data_dir)
    finally:
        run_kafkactl("stop", "--data-dir", str(data_dir), "--timeout", "20", timeout_s=60)
