"""hookrelay on a real broker's secured listeners (tests.kafka_secure): SASL SCRAM-SHA-256 and
SCRAM-SHA-512, TLS with the broker's generated CA, SASL over TLS; a wrong password or CA keeps
the daemon up and not ready, says why, and never logs the password."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import certifi
import pytest

from tests.integration.harness import (
    edit_config,
    hookrelay_cli,
    produce,
    read_topic,
    running_daemon,
    settings_for,
    start_daemon_process,
    unique,
    with_admin_port,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.kafka_secure import SASL_PASSWORD, SASL_USER, SecureKafka
from tests.receiver import Receiver

pytestmark = pytest.mark.integration

SCRAM_256, SCRAM_512 = "SCRAM-SHA-256", "SCRAM-SHA-512"
EVENT = b'{"event":"User.Created","createdAt":"2026-08-21T09:15:42.123Z","data":{"id":"u1"}}'


def secured_config(
    tmp_path: Path, kafka: SecureKafka, listener: str, security: dict[str, Any], url: str
) -> tuple[Path, str]:
    """A config consuming a fresh topic over ``listener`` with ``security`` keys; the password
    goes through sasl_password_file and the CA file is given relative to the config."""
    topic = unique("secure")
    path = write_config(tmp_path, getattr(kafka, listener), topic, [
        {"id": "crm", "events": ["*"], "url": url}
    ])  # fmt: skip
    (tmp_path / "kafka.password").write_text(SASL_PASSWORD + "\n", encoding="utf-8")
    shutil.copy(kafka.ca_file, tmp_path / "kafka-ca.pem")
    extra = {"sasl_username": SASL_USER, "sasl_password_file": "kafka.password"}
    if not security["security_protocol"].startswith("SASL_"):
        extra = {}
    if "SSL" in security["security_protocol"]:
        extra["ssl_ca_file"] = "kafka-ca.pem"
    edit_config(path, "kafka", **security, **extra)
    return path, topic


@pytest.mark.parametrize(
    ("listener", "security"),
    [
        ("sasl_plaintext", {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": SCRAM_256}),
        ("sasl_plaintext", {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": SCRAM_512}),
        ("ssl", {"security_protocol": "SSL"}),
        ("sasl_ssl", {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"}),
    ],
    ids=["scram-sha-256", "scram-sha-512", "tls", "scram-over-tls"],
)  # fmt: skip
async def test_daemon_consumes_and_delivers_over_a_secured_listener(
    kafka_secure: SecureKafka, tmp_path: Path, listener: str, security: dict[str, Any]
) -> None:
    async with Receiver(keys={"crm": None}) as receiver:
        path, topic = secured_config(
            tmp_path, kafka_secure, listener, security, receiver.url("crm")
        )
        await create_topics(kafka_secure.plaintext, [topic])
        settings = settings_for(path)
        assert settings.kafka.security_protocol == security["security_protocol"]
        async with running_daemon(settings) as daemon:
            await produce(kafka_secure.plaintext, topic, [EVENT])
            [request] = await receiver.wait_for(1, timeout_s=20)
            assert request.body == EVENT[:-1] + b',"hookId":"crm"}'
            assert daemon.not_ready_reasons() == []


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as r:
        return r.status, await r.json()


async def test_a_wrong_password_keeps_the_daemon_up_not_ready_and_out_of_the_log(
    kafka_secure: SecureKafka, tmp_path: Path
) -> None:
    wrong = "Wrong-pw-for-kafka-91"
    path, _topic = secured_config(
        tmp_path, kafka_secure, "sasl_ssl",
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256"},
        "http://127.0.0.1:9/hooks/crm",
    )  # fmt: skip
    (tmp_path / "kafka.password").write_text(wrong, encoding="utf-8")
    port = with_admin_port(path)
    log = tmp_path / "daemon.log"
    process = await start_daemon_process(path, log)
    try:
        status, body = 0, {}
        for _ in range(100):
            await asyncio.sleep(0.2)
            try:
                status, body = await readyz(port)
            except aiohttp.ClientConnectionError:
                continue
            if status == 503 and "kafka" in " ".join(body["reasons"]):
                break
        assert status == 503
        assert any(reason.startswith("kafka unreachable") for reason in body["reasons"])
        await asyncio.sleep(2.0)  # a few connection attempts and their log lines
        assert process.returncode is None  # still up, still retrying
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0
    text = log.read_text(encoding="utf-8")
    assert "kafka_unreachable" in text
    assert "invalid credentials with SASL mechanism SCRAM-SHA-256" in text
    assert wrong not in text
    assert SASL_PASSWORD not in text


async def test_a_wrong_ca_is_refused_with_a_certificate_error(
    kafka_secure: SecureKafka, tmp_path: Path
) -> None:
    path, topic = secured_config(
        tmp_path, kafka_secure, "ssl", {"security_protocol": "SSL"}, "http://127.0.0.1:9/hooks/x"
    )
    shutil.copy(certifi.where(), tmp_path / "kafka-ca.pem")  # real CAs, but not the broker's
    events = tmp_path / "events.jsonl"
    events.write_bytes(EVENT + b"\n")
    code, out, err = await hookrelay_cli("produce", "-c", str(path), str(events))
    assert code == 1, out
    assert f"producing to {topic} failed" in err
    assert "CERTIFICATE_VERIFY_FAILED" in err


async def test_produce_and_replay_work_over_sasl_ssl(
    kafka_secure: SecureKafka, tmp_path: Path
) -> None:
    path, topic = secured_config(
        tmp_path, kafka_secure, "sasl_ssl",
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"},
        "http://127.0.0.1:9/hooks/crm",
    )  # fmt: skip
    dead_letters = f"{topic}.dlq"
    await create_topics(kafka_secure.plaintext, [topic, dead_letters])
    events = tmp_path / "events.jsonl"
    events.write_bytes(EVENT + b"\n")
    code, out, err = await hookrelay_cli("produce", "-c", str(path), str(events))
    assert code == 0, err
    [record] = await read_topic(kafka_secure.plaintext, topic, 1)
    assert record.value == EVENT

    await produce(kafka_secure.plaintext, dead_letters, [b"not json"])  # an invalid record
    code, out, err = await hookrelay_cli("replay", "-c", str(path), "--dry-run")
    assert code == 0, err
    assert f"would replay 0 of 1 dead letters from {dead_letters}" in out
