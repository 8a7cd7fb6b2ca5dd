"""The SSRF guard on the real path: broker → daemon → sender, and the send-test command.

Every receiver here listens on 127.0.0.1, which the guard refuses unless allowed; these tests
write ``http`` without the harness's loopback allow-list."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import orjson
import pytest

from hookrelay.config import DeliverySettings, Hook, HttpSettings
from hookrelay.delivery.sender import HttpSender
from tests.integration.harness import (
    headers_of,
    hookrelay_cli,
    produce,
    read_topic,
    running_daemon,
    settings_for,
    unique,
    write_config,
)
from tests.kafka_broker import create_topics
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration

NO_ALLOW_LIST = {"http": {"timeout_s": 5}}
EVENT = orjson.dumps({"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z"})


def refused_attempts(metrics: str, hook_id: str) -> float:
    """``hookrelay_attempts_total{status_class="refused"}`` of ``hook_id`` from a scrape."""
    wanted = f'hookrelay_attempts_total{{hook_id="{hook_id}",status_class="refused"}} '
    lines = [line for line in metrics.splitlines() if line.startswith(wanted)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


async def test_a_loopback_endpoint_is_refused_for_good_and_never_contacted(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("events")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq])
    async with Receiver(keys={"local": None}) as receiver:
        hooks = [{"id": "local", "events": ["*"], "url": receiver.url("local")}]
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks, dead_letter_topic=dlq, extra=NO_ALLOW_LIST
        )
        async with running_daemon(settings_for(path)) as daemon:
            await produce(kafka_bootstrap, topic, [EVENT])
            [letter] = await read_topic(kafka_bootstrap, dlq, 1)
            metrics = daemon.metrics.render().decode()
        assert receiver.for_hook("local") == []
    headers = headers_of(letter)
    assert headers["hookrelay-reason"] == "permanent_failure"
    assert headers["hookrelay-attempts"] == "1"  # not retried
    assert headers["hookrelay-error"] == (
        "refused: 127.0.0.1 is a loopback address "
        "(allow it with http.allow_networks or the hook's allow_networks)"
    )
    assert refused_attempts(metrics, "local") == 1.0


async def test_a_name_resolving_to_loopback_is_refused_unless_its_hook_allows_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """``localhost`` goes through the resolver (DNS rebinding's path): the vetted answer is
    refused for one hook and allowed, then connected to, for the hook that allows it."""
    topic = unique("events")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic, dlq])
    async with Receiver(keys={"named": None, "allowed": None}) as receiver:
        port = receiver.url("x").split(":")[2].split("/")[0]
        hooks = [
            {"id": "named", "events": ["*"], "url": f"http://localhost:{port}/hooks/named"},
            {
                "id": "allowed",
                "events": ["*"],
                "url": f"http://localhost:{port}/hooks/allowed",
                "allow_networks": ["127.0.0.0/8", "::1"],
            },
        ]
        path = write_config(
            tmp_path, kafka_bootstrap, topic, hooks, dead_letter_topic=dlq, extra=NO_ALLOW_LIST
        )
        async with running_daemon(settings_for(path)):
            await produce(kafka_bootstrap, topic, [EVENT])
            [letter] = await read_topic(kafka_bootstrap, dlq, 1)
            assert len(receiver.for_hook("allowed")) == 1
        assert receiver.for_hook("named") == []
    headers = headers_of(letter)
    assert headers["hookrelay-hook-id"] == "named"
    assert headers["hookrelay-reason"] == "permanent_failure"
    error = headers["hookrelay-error"]
    assert error.startswith("refused: localhost resolves only to refused addresses: ")
    assert "is a loopback address" in error


async def test_send_test_is_refused_like_a_delivery(tmp_path: Path) -> None:
    async with Receiver(keys={"mine": None}) as receiver:
        hooks = [{"id": "mine", "events": ["*"], "url": receiver.url("mine")}]
        path = write_config(tmp_path, "127.0.0.1:1", "unused", hooks, extra=NO_ALLOW_LIST)
        code, _, err = await hookrelay_cli("send-test", "mine", "-c", str(path))
        assert receiver.for_hook("mine") == []
    assert code == 1
    assert "refused: 127.0.0.1 is a loopback address" in err


async def test_answers_are_read_up_to_the_cap_and_redirects_are_not_followed() -> None:
    """Issue 6's other two limits on what an endpoint can do to hookrelay: a huge answer
    costs at most ``http.max_response_bytes``, and a redirect (here to the metadata address)
    is a permanent failure, never a second request."""
    http = HttpSettings(
        allow_networks=(ipaddress.ip_network("127.0.0.0/8"),), max_response_bytes=1000
    )
    async with Receiver(keys={"big": None, "moved": None}) as receiver:
        receiver.script_forever("big", Reply(status=200, body=b"x" * 1_000_000))
        location = {"Location": "http://169.254.169.254/latest/meta-data/"}
        receiver.script_forever("moved", Reply(status=307, headers=location))
        sender = HttpSender(http, DeliverySettings())
        await sender.start()
        try:
            big = await sender.attempt(web_hook("big", receiver.url("big")), "d-1", b"{}")
            moved = await sender.attempt(web_hook("moved", receiver.url("moved")), "d-2", b"{}")
        finally:
            await sender.close()
        assert len(receiver.for_hook("moved")) == 1
    assert (big.status, big.error, big.response_head) == (200, None, b"x" * 1000)
    assert (moved.status, moved.error, moved.retryable) == (307, "redirect 307 not followed", False)


def web_hook(hook_id: str, url: str) -> Hook:
    return Hook(id=hook_id, events=("*",), url=url)
