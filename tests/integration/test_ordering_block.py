"""An ordered hook that blocks a key after a dead letter (``ordering_after_dead_letter:
block``), on a real broker and a real daemon: a head answered 400 blocks its key (its later
events are dead-lettered ``key_blocked``, in order) while other keys flow; a restart keeps
the key blocked; ``hookrelay replay`` of its letters unblocks it and re-drives them in order;
``hookrelay unblock`` lets a key blocked again through."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.integration import harness as h
from tests.kafka_broker import create_topics
from tests.receiver import ReceivedRequest, Receiver, Reply

pytestmark = pytest.mark.integration


def event(key: str, seq: int) -> bytes:
    return orjson.dumps({"event": "User.Data.Updated", "createdAt": "2026-08-21T09:15:42.123Z",
                         "data": {"id": key, "seq": seq}})  # fmt: skip


def seqs(receiver: Receiver, key: str) -> list[int]:
    """Seq of every request for ``key``, in arrival order."""
    return [q.json["data"]["seq"] for q in receiver.for_hook("crm") if q.json["data"]["id"] == key]


async def publish(bootstrap: str, topic: str, pairs: list[tuple[str, int]]) -> None:
    await h.produce(bootstrap, topic, [event(k, s) for k, s in pairs],
                  keys=[k.encode() for k, _s in pairs])  # fmt: skip


async def letters(bootstrap: str, dlq: str, count: int) -> list[tuple[int, str]]:
    """(seq, reason) of the first ``count`` dead letters."""
    records = await h.read_topic(bootstrap, dlq, count)
    return [(orjson.loads(r.value or b"")["data"]["seq"],
             dict(r.headers)["hookrelay-reason"].decode()) for r in records]  # fmt: skip


async def cli(path: Path, *args: str) -> str:
    code, out, err = await h.hookrelay_cli(*args, "-c", str(path))
    assert code == 0, err
    return out


async def test_a_dead_lettered_head_blocks_its_key_across_a_restart_until_replayed_or_unblocked(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = h.unique("block")
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [topic], partitions=2)
    await create_topics(kafka_bootstrap, [dlq], partitions=1)  # one order to read back
    refused = {("bad", 0)}

    def reply(request: ReceivedRequest) -> Reply:
        data = request.json["data"]
        return Reply(status=400) if (data["id"], data["seq"]) in refused else Reply()

    async with Receiver() as receiver:
        receiver.script_forever("crm", reply)
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm"), "ordering": "key",
                  "ordering_after_dead_letter": "block"}]  # fmt: skip
        path = h.write_config(tmp_path, kafka_bootstrap, topic, hooks, dead_letter_topic=dlq)
        settings = h.settings_for(path)
        async with h.running_daemon(settings) as daemon:
            await publish(kafka_bootstrap, topic, [(k, s) for s in range(3) for k in ("bad", "ok")])
            await receiver.wait_for(4, hook_id="crm")  # ok's three, bad's first
            assert await letters(kafka_bootstrap, dlq, 3) == [
                (0, "permanent_failure"), (1, "key_blocked"), (2, "key_blocked"),
            ]  # fmt: skip
            assert daemon.control.state.blocked.of("crm") == [b"bad"]
        async with h.running_daemon(settings) as daemon:  # the block outlives the process
            await publish(kafka_bootstrap, topic, [("bad", 3), ("ok", 3)])
            await h.wait_until(lambda: seqs(receiver, "ok") == [0, 1, 2, 3], what="ok's 4th")
            assert (await letters(kafka_bootstrap, dlq, 4))[3] == (3, "key_blocked")
            assert seqs(receiver, "bad") == [0]
            hook_view = daemon.dispatcher.lane_state("crm")
            assert hook_view is not None
            assert hook_view["ordering"]["keys_blocked_by_dead_letter"] == 1

            refused.clear()  # the endpoint is fixed: replay the key's letters, in order
            out = await cli(path, "replay", "--hook-id", "crm")
            assert "replayed 4 of 4" in out and "unblocked 1 keys" in out
            await h.wait_until(lambda: seqs(receiver, "bad") == [0, 0, 1, 2, 3], what="replayed")
            await publish(kafka_bootstrap, topic, [("bad", 4)])
            await h.wait_until(lambda: seqs(receiver, "bad")[-1:] == [4], what="bad's 5th")

            refused.add(("bad", 5))  # blocked again, then unblocked by an operator
            await publish(kafka_bootstrap, topic, [("bad", 5), ("bad", 6)])
            await h.wait_until(lambda: daemon.control.state.blocked.of("crm") == [b"bad"])
            assert "unblocked 1 keys of crm" in await cli(path, "unblock", "crm", "--key", "bad")
            await h.wait_until(lambda: daemon.control.state.blocked.of("crm") == [], 5, "unblocked")
            await publish(kafka_bootstrap, topic, [("bad", 7)])
            await h.wait_until(lambda: seqs(receiver, "bad")[-1:] == [7], what="bad's 8th")
        assert seqs(receiver, "bad") == [0, 0, 1, 2, 3, 4, 5, 7]
        assert [reason for _seq, reason in await letters(kafka_bootstrap, dlq, 6)][4:] == [
            "permanent_failure", "key_blocked",
        ]  # fmt: skip
