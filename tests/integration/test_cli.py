"""The ``hookrelay`` command line, run as a real subprocess against the real broker."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from pathlib import Path

import orjson
import pytest

from hookrelay.config import resolve_workers
from tests.integration.harness import (
    HOOKRELAY,
    ROOT,
    committed_offsets,
    edit_config,
    hookrelay_cli,
    produce,
    read_topic,
    unique,
    write_config,
)
from tests.kafka_broker import create_topics, free_port
from tests.receiver import Receiver

pytestmark = pytest.mark.integration

SECRET = "s3cret-signing-key-never-logged"


async def test_check_accepts_the_shipped_configurations() -> None:
    code, out, err = await hookrelay_cli("check", "-c", "deploy/demo/hookrelay.yaml")
    assert code == 0, err
    assert "ok (6 hooks, 5 enabled; ingest: 1 source, batch API off)" in out

    names = ("CRM_SYNC", "AUDIT_LOG", "ORG_SYNC", "SECURITY_ALERTS", "LEGACY_ERP")
    env = {f"{name}_SIGNING_KEY": secrets.token_hex(24) for name in names}
    code, out, err = await hookrelay_cli("check", "-c", "config/hookrelay.yaml", env=env)
    assert "environment variable ANALYTICS_TOKEN is not set" in err
    code, out, err = await hookrelay_cli(
        "check", "-c", "config/hookrelay.yaml", env={**env, "ANALYTICS_TOKEN": "t0k3n"}
    )
    assert code == 0, err
    assert "ok (6 hooks, 5 enabled)\n  workers: 1: one process\n" in out


async def test_check_shows_the_worker_count_auto_resolves_to(tmp_path: Path) -> None:
    config = tmp_path / "hookrelay.yaml"
    config.write_text("workers: auto\n")
    code, out, err = await hookrelay_cli("check", "-c", str(config))
    assert code == 0, err
    cpus = resolve_workers("auto")
    shown = "one process" if cpus == 1 else f"a supervisor and {cpus} worker processes"
    assert f"  workers: {cpus} (auto: the CPUs this process may use): {shown}" in out


async def test_check_refuses_bad_configuration_naming_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "kafka:\n  topics: [identity.events]\n"
        "hooks:\n  - id: a\n    events: ['*']\n    url: ftp://example.com/x\n    enabled: no\n"
    )
    code, _, err = await hookrelay_cli("check", "-c", str(config))
    assert code == 1
    assert f"{config}:6: hooks[0].url:" in err
    assert f"{config}:7: hooks[0].enabled:" in err


async def test_usage_errors_exit_2() -> None:
    code, _, err = await hookrelay_cli("frobnicate")
    assert code == 2
    assert "invalid choice" in err


async def test_send_test_delivers_a_signed_logto_style_payload(tmp_path: Path) -> None:
    async with Receiver(keys={"mine": SECRET}) as receiver:
        hooks = [
            {"id": "mine", "events": ["User.*"], "url": receiver.url("mine"), "signing_key": SECRET}
        ]
        path = write_config(tmp_path, "127.0.0.1:1", "unused", hooks)
        code, out, err = await hookrelay_cli(
            "send-test", "mine", "--event", "User.Created", "-c", str(path)
        )
        assert code == 0, err
        assert "status: 200" in out
        [request] = receiver.requests
    assert request.signature_valid is True
    assert request.json["event"] == "User.Created"
    assert request.body.endswith(b',"hookId":"mine"}')
    assert SECRET not in out + err


async def test_send_test_reports_a_failing_endpoint(tmp_path: Path) -> None:
    hooks = [{"id": "nobody", "events": ["*"], "url": f"http://127.0.0.1:{free_port()}/x"}]
    path = write_config(tmp_path, "127.0.0.1:1", "unused", hooks)
    code, _, err = await hookrelay_cli("send-test", "nobody", "-c", str(path))
    assert code == 1
    assert "connection error" in err
    code, _, err = await hookrelay_cli("send-test", "missing", "-c", str(path))
    assert code == 2
    assert "no hook with id 'missing'" in err


async def test_produce_publishes_json_lines_byte_for_byte(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("produce")
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    lines = [
        b'{"event":"PostSignIn","createdAt":"2026-01-01T00:00:00.000Z","userId":"u1","n":1.50}',
        b'{"event":"User.Created","createdAt":"2026-01-01T00:00:01.000Z","userId":"u2"}',
    ]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n\n")
    path = write_config(tmp_path, kafka_bootstrap, topic, [])
    code, out, err = await hookrelay_cli(
        "produce", "-c", str(path), str(events), "--key-field", "userId"
    )
    assert code == 0, err
    assert f"produced 2 events to {topic}" in out
    records = await read_topic(kafka_bootstrap, topic, 2)
    assert [r.value for r in records] == lines
    assert [r.key for r in records] == [b"u1", b"u2"]


async def test_produce_to_a_topic_the_broker_creates_prints_only_its_own_line(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Found by a new user following the README: aiokafka's "Topic … not found in cluster
    metadata" warning was printed raw beside "produced 1 events"."""
    topic = unique("fresh")
    events = tmp_path / "events.jsonl"
    events.write_bytes(b'{"event":"User.Created","createdAt":"2026-01-01T00:00:00.000Z"}\n')
    path = write_config(tmp_path, kafka_bootstrap, topic, [])
    code, out, err = await hookrelay_cli("produce", "-c", str(path), str(events))
    assert (code, out, err) == (0, f"produced 1 events to {topic}\n", "")


async def test_produce_validate_checks_the_published_contract(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("contract")
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    events = tmp_path / "events.jsonl"
    good = b'{"event":"User.Created","createdAt":"2026-01-01T00:00:00.000Z","ip":"192.0.2.1"}'
    typed_wrong = b'{"event":"PostSignIn","createdAt":"2026-01-01T00:00:00Z","userIp":7}'
    events.write_bytes(good + b"\n" + typed_wrong + b"\n")
    path = write_config(tmp_path, kafka_bootstrap, topic, [])
    code, out, err = await hookrelay_cli("produce", "-c", str(path), str(events), "--validate")
    assert (code, out) == (1, "")
    assert err.splitlines()[1:] == ["  line 2: userIp: 7 is not of type 'string'"]
    # The daemon's own rules alone accept it (it routes on event and createdAt only).
    code, out, err = await hookrelay_cli("produce", "-c", str(path), str(events))
    assert code == 0, err
    assert [r.value for r in await read_topic(kafka_bootstrap, topic, 2)] == [good, typed_wrong]


async def test_produce_refuses_events_the_daemon_would_dead_letter_unless_raw(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("produce")
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    events = tmp_path / "events.jsonl"
    good = b'{"event":"User.Created","createdAt":"2026-01-01T00:00:00.000Z"}'
    events.write_bytes(b"\n".join([good, b"this is not json", b'{"event":"User.Created"}']))
    # A hook whose key is unset and an admin token from an unset variable: produce needs
    # neither.
    hooks = [{"id": "crm", "events": ["*"], "url": "https://crm.example.com/",
              "signing_key": "${UNSET_KEY_FOR_PRODUCE}"}]  # fmt: skip
    path = write_config(tmp_path, kafka_bootstrap, topic, hooks,
                        extra={"admin": {"token": "${UNSET_ADMIN_TOKEN}"}})  # fmt: skip
    code, out, err = await hookrelay_cli("produce", "-c", str(path), str(events))
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0].endswith("2 invalid event(s), nothing produced (--raw sends them anyway, "
                             "to the dead-letter path):")  # fmt: skip
    assert lines[1].startswith("  line 2: not_json: ")
    assert lines[2].startswith("  line 3: bad_created_at: ")
    code, out, err = await hookrelay_cli("produce", "-c", str(path), str(events), "--raw")
    assert code == 0, err
    assert f"produced 3 events to {topic}" in out
    records = await read_topic(kafka_bootstrap, topic, 3)
    assert records[0].value == good  # nothing was sent by the refused run


async def test_produce_to_an_unreachable_cluster_says_so_once_and_closes_its_client(
    tmp_path: Path,
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b'{"event":"User.Created","createdAt":"2026-01-01T00:00:00.000Z"}\n')
    path = write_config(tmp_path, f"127.0.0.1:{free_port()}", "nowhere", [])
    code, out, err = await hookrelay_cli("produce", "-c", str(path), str(events))
    assert code == 1
    assert out == ""
    # aiokafka's line says why (refused, or a certificate error); then ours, and no
    # "Unclosed AIOKafkaProducer": the client whose start failed was closed.
    assert "Unclosed" not in err
    assert err.splitlines()[-1].startswith(
        "hookrelay: producing to nowhere failed: KafkaConnectionError"
    )


async def test_run_delivers_then_drains_commits_and_exits_0_on_sigterm(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=1)
    async with Receiver(keys={"crm": SECRET}) as receiver:
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm"), "signing_key": SECRET}]
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        edit_config(path, "admin", listen=f"127.0.0.1:{free_port()}")
        edit_config(path, "logging", level="debug")  # successes are logged at debug
        config = orjson.loads(path.read_bytes())
        values = [
            orjson.dumps({"event": "User.Created", "createdAt": "2026-01-01T00:00:00.000Z",
                          "data": {"primaryEmail": f"private-{i}@example.com"}})
            for i in range(20)
        ]  # fmt: skip
        await produce(kafka_bootstrap, topic, values, partition=0)
        daemon = await asyncio.create_subprocess_exec(
            *HOOKRELAY, "run", "-c", str(path), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            await receiver.wait_for(20, timeout_s=30)
        finally:
            daemon.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(daemon.communicate(), 30)
    assert daemon.returncode == 0, output.decode()[-3000:]
    assert all(r.signature_valid for r in receiver.requests)
    group = config["kafka"]["group_id"]
    committed = await committed_offsets(kafka_bootstrap, group)
    assert [o for tp, o in committed.items() if tp.topic == topic] == [20]
    logs = [orjson.loads(line) for line in output.splitlines() if line.startswith(b"{")]
    names = [entry["event"] for entry in logs]
    assert names.index("shutdown_requested") < names.index("deliveries_drained")
    assert names[-1] == "daemon_stopped"
    succeeded = [entry for entry in logs if entry["event"] == "delivery_succeeded"]
    assert len(succeeded) == 20
    assert {"hook_id", "delivery_id", "event_name", "attempt", "status"} <= set(succeeded[0])
    assert SECRET.encode() not in output
    assert b"private-" not in output  # payload bodies are never logged


async def test_run_refuses_invalid_configuration_without_starting(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("kafka:\n  group_id: ${HOOKRELAY_TEST_UNSET_VARIABLE}\n")
    code, _, err = await hookrelay_cli("run", "-c", str(config))
    assert code == 1
    assert "HOOKRELAY_TEST_UNSET_VARIABLE" in err
    assert f"{config}:2: kafka.group_id:" in err


async def test_a_session_timeout_the_broker_refuses_ends_run_with_the_cause_and_a_hint(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A breaker's trial: the daemon died with "ExceptionGroup: unhandled errors in a
    TaskGroup", the cause (InvalidSessionTimeoutError) only deep in a traceback."""
    topic = unique("sess")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=1)
    path = write_config(tmp_path, kafka_bootstrap, topic, [])
    edit_config(path, "kafka", session_timeout_s=2)  # the broker's minimum is 6 s
    code, out, _ = await hookrelay_cli("run", "-c", str(path))
    assert code == 1
    failed = [orjson.loads(line) for line in out.splitlines() if '"daemon_failed"' in line]
    assert [entry["error"] for entry in failed] == [
        "InvalidSessionTimeoutError: [Error 26] InvalidSessionTimeoutError"
    ]
    assert "group.min.session.timeout.ms" in failed[0]["hint"]
