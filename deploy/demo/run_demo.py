#!/usr/bin/env python3
"""``make demo``: the whole path on real components, then a one-line verdict.

1. start a throw-away local Kafka broker on the port ``deploy/demo/hookrelay.yaml`` names;
2. create the event topic and the dead-letter topic;
3. start the demo receiver (verifies Logto signatures) on 127.0.0.1:8787;
4. start ``hookrelay run -c deploy/demo/hookrelay.yaml`` and ``hookrelay ingest`` on the same
   file, and wait until both answer;
5. publish ``deploy/demo/events.jsonl`` (every catalogue event, all three payload families):
   the first half with ``hookrelay produce``, the second half POSTed to the ingest endpoint
   as Logto posts its webhooks (``hookId`` last, signed with the source's key);
6. wait until every expected (event, hook) webhook arrived, and print the summary;
7. stop the daemon and the ingest process (SIGTERM, expects exit 0), the receiver and the
   broker.

Exit status 0 only when every expected webhook arrived exactly once with a valid signature
(or unsigned, for hooks without a signing key) and nothing unexpected arrived.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, suppress
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from hookrelay.config import Settings, load_settings
from hookrelay.delivery.router import Router

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "demo" / "hookrelay.yaml"
EVENTS = ROOT / "deploy" / "demo" / "events.jsonl"
KEYS = ROOT / "deploy" / "demo" / "keys"
RECEIVER_PORT = 8787
BIN = Path(sys.executable).parent


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def get_json(url: str, timeout_s: float = 2.0) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def wait_for(url: str, what: str, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"demo: {what} exited early with status {process.returncode}")
        try:
            get_json(url)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"demo: {what} not ready after {timeout_s:.0f}s ({url})")


def post_as_logto(url: str, signing_key: str, events: list[bytes]) -> None:
    """POST each event as Logto posts a webhook: its body with ``hookId`` last, signed with
    HMAC-SHA256 of the body (``logto-signature-sha-256``); every answer must be 204."""
    for event in events:
        body = event.rstrip()[:-1] + b',"hookId":"demoLogtoHook"}'
        signature = hmac.new(signing_key.encode(), body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "logto-signature-sha-256": signature,
            "User-Agent": "Logto (https://logto.io/)",
        })  # fmt: skip
        with urllib.request.urlopen(request, timeout=15) as answer:
            if answer.status != 204:
                raise SystemExit(f"demo: the ingest endpoint answered {answer.status}")


def expected_pairs() -> collections.Counter[tuple[str, str]]:
    """(hook id, event) → count, from the shipped hooks and the events file."""
    router = Router(load_settings(CONFIG).hooks)
    pairs: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in EVENTS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            name = json.loads(line)["event"]
            pairs.update((hook.id, name) for hook in router.match(name))
    return pairs


class Ingest:
    """Where the demo's ingest process listens, and its one source's key."""

    def __init__(self, settings: Settings) -> None:
        ingest = settings.ingest
        assert ingest is not None and ingest.sources, "deploy/demo/hookrelay.yaml has one"
        source = ingest.sources[0]
        self.port = int(ingest.listen.rpartition(":")[2])
        self.metrics_port = int(ingest.metrics_listen.rpartition(":")[2])
        self.url = f"http://127.0.0.1:{self.port}{source.route}"
        self.metrics = f"http://127.0.0.1:{self.metrics_port}"
        self.signing_key = source.signing_key.get_secret_value()


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def check_ports(ports: dict[int, str]) -> None:
    """Refuse to start when a port the demo needs is taken, saying which and why."""
    busy = [f"{port} ({what})" for port, what in ports.items() if port_in_use(port)]
    if busy:
        raise SystemExit(
            "demo: port(s) already in use: "
            + ", ".join(busy)
            + ". Stop whatever listens there (make kafka-stop, if it is a broker started with"
            " make kafka-start) and run make demo again."
        )


def start_kafka(stack: ExitStack, port: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="hookrelay-demo-kafka-"))
    stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
    kafkactl = [sys.executable, str(ROOT / "deploy" / "kafka" / "kafkactl.py")]
    say(f"starting Kafka on 127.0.0.1:{port} (first run downloads the broker jars)")
    started = subprocess.run(
        [*kafkactl, "start", "--port", str(port), "--data-dir", str(data_dir)], check=False
    )
    if started.returncode != 0:
        raise SystemExit(f"demo: the local Kafka broker did not start (exit {started.returncode})")
    stack.callback(subprocess.run, [*kafkactl, "stop", "--data-dir", str(data_dir)], check=False)


async def create_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for topic in topics:
            with suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()


def start_process(stack: ExitStack, args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log = stack.enter_context(log_path.open("wb"))
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def stop() -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()

    stack.callback(stop)
    return process


def await_deliveries(
    expected: collections.Counter[tuple[str, str]], timeout_s: float
) -> dict[str, object]:
    total = sum(expected.values())
    deadline = time.monotonic() + timeout_s
    stats = get_json(f"http://127.0.0.1:{RECEIVER_PORT}/stats")
    while time.monotonic() < deadline:
        stats = get_json(f"http://127.0.0.1:{RECEIVER_PORT}/stats")
        if int(stats["received"]) >= total:  # type: ignore[call-overload]
            time.sleep(1.0)  # let anything unexpected arrive before judging
            return get_json(f"http://127.0.0.1:{RECEIVER_PORT}/stats")
        time.sleep(0.25)
    return stats


def verdict(
    expected: collections.Counter[tuple[str, str]], stats: dict[str, object]
) -> tuple[bool, str]:
    """Print per-hook counts; return (all good, the summary line)."""
    deliveries = stats["deliveries"]
    assert isinstance(deliveries, list)
    got = collections.Counter((hook, event) for hook, event, _ in deliveries)
    total = sum(expected.values())
    delivered = sum((got & expected).values())
    missing, unexpected = expected - got, got - expected
    by_hook = collections.Counter(hook for hook, _ in expected.elements())
    for hook, count in sorted(by_hook.items()):
        say(f"  {hook:<18} {got_for(got, hook):>3}/{count:<3} webhooks")
    ok = not missing and not unexpected and stats["bad_signature"] == 0
    if missing:
        say(f"missing: {sorted(missing.elements())[:10]}")
    if unexpected:
        say(f"unexpected: {sorted(unexpected.elements())[:10]}")
    state = (
        "signatures verified"
        if stats["bad_signature"] == 0
        else f"{stats['bad_signature']} BAD signatures"
    )
    say(f"{stats['verified']} signed and verified, {stats['unsigned']} unsigned by design")
    return ok, f"{delivered}/{total} webhooks delivered, {state}"


def got_for(got: collections.Counter[tuple[str, str]], hook: str) -> int:
    return sum(n for (h, _), n in got.items() if h == hook)


def main() -> int:
    settings = load_settings(CONFIG)
    ingest = Ingest(settings)
    bootstrap = settings.kafka.bootstrap_servers[0]
    port = int(bootstrap.rsplit(":", 1)[1])
    expected = expected_pairs()
    check_ports({
        port: "Kafka, kafka.bootstrap_servers in deploy/demo/hookrelay.yaml",
        RECEIVER_PORT: "the demo receiver, the url of the hooks in deploy/demo/hooks.yaml",
        settings.admin.port: "admin.listen in deploy/demo/hookrelay.yaml",
        ingest.port: "ingest.listen in deploy/demo/hookrelay.yaml",
        ingest.metrics_port: "ingest.metrics_listen in deploy/demo/hookrelay.yaml",
    })  # fmt: skip
    logs = Path(tempfile.mkdtemp(prefix="hookrelay-demo-logs-"))
    with ExitStack() as stack:
        start_kafka(stack, port)
        asyncio.run(create_topics(bootstrap, [*settings.kafka.topics, settings.dead_letter_topic]))
        receiver = start_process(
            stack,
            [
                sys.executable,
                "deploy/demo/receiver.py",
                "--port",
                str(RECEIVER_PORT),
                "--keys-dir",
                str(KEYS),
            ],
            logs / "receiver.log",
        )
        wait_for(f"http://127.0.0.1:{RECEIVER_PORT}/stats", "demo receiver", 15, receiver)
        daemon = start_process(
            stack, [str(BIN / "hookrelay"), "run", "-c", str(CONFIG)], logs / "daemon.log"
        )
        admin = f"http://{settings.admin.host}:{settings.admin.port}"
        wait_for(f"{admin}/healthz", "hookrelay daemon", 30, daemon)
        ingest_process = start_process(
            stack, [str(BIN / "hookrelay"), "ingest", "-c", str(CONFIG)], logs / "ingest.log"
        )
        wait_for(f"{ingest.metrics}/readyz", "hookrelay ingest", 30, ingest_process)
        lines = [line for line in EVENTS.read_bytes().splitlines() if line.strip()]
        half = len(lines) // 2
        produced = Path(logs) / "produced.jsonl"
        produced.write_bytes(b"\n".join(lines[:half]) + b"\n")
        say(f"daemon running (admin {admin}); {half} events of {EVENTS.relative_to(ROOT)} "
            "with hookrelay produce")  # fmt: skip
        subprocess.run(
            [str(BIN / "hookrelay"), "produce", "-c", str(CONFIG), str(produced),
             "--key-field", "userId"],
            check=True,
        )  # fmt: skip
        say(f"{len(lines) - half} events POSTed to {ingest.url} as Logto posts them")
        post_as_logto(ingest.url, ingest.signing_key, lines[half:])
        stats = await_deliveries(expected, timeout_s=60)
        ok, summary = verdict(expected, stats)
        for name, process in (("daemon", daemon), ("ingest process", ingest_process)):
            process.send_signal(signal.SIGTERM)
            status = process.wait(30)
            say(f"{name} stopped with exit status {status}")
            ok = ok and status == 0
    if ok:
        shutil.rmtree(logs, ignore_errors=True)  # nothing to look at: leave /tmp clean
    else:
        say(f"daemon and receiver logs kept in {logs}")
    say(summary)
    return 0 if ok else 1


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
