"""What a reload applies live and what waits for a restart (pure; no daemon)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from hookrelay.config import Settings, load_settings
from hookrelay.ops.reload import plan_reload


def settings(tmp_path: Path, name: str, **config: Any) -> Settings:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(orjson.dumps(config))
    return load_settings(path, env={})


def hook(hook_id: str, events: list[str], **extra: Any) -> dict[str, Any]:
    return {"id": hook_id, "events": events, "url": f"https://example.com/{hook_id}", **extra}


def test_hooks_and_logging_apply_and_every_other_change_waits_for_a_restart(
    tmp_path: Path,
) -> None:
    running = settings(
        tmp_path, "old", kafka={"group_id": "g1", "max_poll_records": 500},
        hooks=[hook("keep", ["*"]), hook("edit", ["User.Created"]), hook("drop", ["*"])],
    )  # fmt: skip
    new = settings(
        tmp_path, "new", kafka={"group_id": "g2", "max_poll_records": 500},
        delivery={"retry_schedule_s": [1, 2]}, logging={"level": "debug"},
        hooks=[hook("keep", ["*"]), hook("edit", ["User.*"]), hook("add", ["*"])],
    )  # fmt: skip
    plan = plan_reload(running, new)
    assert (plan.added, plan.removed, plan.changed) == (("add",), ("drop",), ("edit",))
    # The dead-letter, control and outcome topics and the retry prefix derive from the group
    # id: they move with it.
    assert plan.restart_required == (
        "kafka.group_id", "dead_letter_topic", "control_topic", "delivery.retry_schedule_s",
        "delivery.retry_topic_prefix", "outcomes.topic",
    )  # fmt: skip
    applied = plan.settings
    assert [h.id for h in applied.hooks] == ["keep", "edit", "add"]
    assert applied.logging.level == "debug"
    assert applied.kafka.group_id == "g1"  # the running value stays until a restart
    assert applied.delivery.retry_schedule_s == running.delivery.retry_schedule_s


def test_identical_files_change_nothing(tmp_path: Path) -> None:
    running = settings(tmp_path, "a", hooks=[hook("one", ["*"], rate_limit={"per_second": 5})])
    again = settings(tmp_path, "b", hooks=[hook("one", ["*"], rate_limit={"per_second": 5})])
    plan = plan_reload(running, again)
    assert plan.summary() == {
        "hooks": 1, "added": [], "removed": [], "changed": [], "restart_required": [],
    }  # fmt: skip


def test_a_new_signing_key_is_a_hook_change(tmp_path: Path) -> None:
    running = settings(tmp_path, "a", hooks=[hook("one", ["*"], signing_key="old-key-123")])
    new = settings(tmp_path, "b", hooks=[hook("one", ["*"], signing_key="new-key-456")])
    assert plan_reload(running, new).changed == ("one",)
