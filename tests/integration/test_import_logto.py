"""Round trip: Logto's hooks JSON → ``hookrelay import-logto`` → a real daemon loaded with the
env file delivers to the imported hooks, signed with the keys Logto had."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from hookrelay.config import load_settings
from tests.integration.harness import hookrelay_cli, produce, running_daemon, unique, write_config
from tests.kafka_broker import create_topics
from tests.receiver import Receiver
from tests.unit.commands.test_import_logto import FIXTURE, LOGTO_KEYS, env_values

pytestmark = pytest.mark.integration


async def test_imported_hooks_deliver_with_signatures_that_verify_with_logtos_keys(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("imported")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=1)
    async with Receiver(keys=LOGTO_KEYS) as receiver:
        logto_hooks = orjson.loads(FIXTURE.read_bytes())
        for hook in logto_hooks:
            hook["config"]["url"] = receiver.url(hook["id"])
        source = tmp_path / "logto-hooks.json"
        source.write_bytes(orjson.dumps(logto_hooks))
        out, env = tmp_path / "hooks.yaml", tmp_path / "hookrelay.env"
        status, _, err = await hookrelay_cli(
            "import-logto", str(source), "--out", str(out), "--env-out", str(env)
        )
        assert status == 0, err
        config = orjson.loads(write_config(tmp_path, kafka_bootstrap, topic, []).read_bytes())
        del config["hooks"]
        config["hooks_file"] = "hooks.yaml"
        main = tmp_path / "hookrelay.yaml"
        main.write_bytes(orjson.dumps(config))
        settings = load_settings(main, env=env_values(env))
        events = [
            {"event": name, "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": "u1"}}
            for name in ("User.Created", "PostRegister", "PostSignIn")
        ]
        async with running_daemon(settings):
            await produce(kafka_bootstrap, topic, [orjson.dumps(e) for e in events])
            await receiver.wait_for(2, timeout_s=30)
    crm, legacy, audit = LOGTO_KEYS
    assert [r.json["event"] for r in receiver.for_hook(crm)] == ["User.Created"]
    assert [r.json["event"] for r in receiver.for_hook(legacy)] == ["PostRegister"]
    assert receiver.for_hook(audit) == []  # disabled in Logto, disabled here
    for request in receiver.requests:
        assert request.signature_valid is True  # verified with the key Logto had
        assert request.json["hookId"] == request.hook_id  # Logto's id, unchanged
    assert receiver.for_hook(crm)[0].headers["Authorization"] == "Bearer crm-api-token-7f3a9c21"
