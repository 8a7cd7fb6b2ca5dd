"""Section outcomes: off by default, a topic named after the group, refused where it would
collide with a topic the deployment reads or writes for something else."""

from __future__ import annotations

from pathlib import Path

from hookrelay.config import load_settings
from hookrelay.kafka.topics import owned_topics
from tests.unit.config.test_config import HOOK, main_file, refusals


def test_outcomes_are_off_by_default_and_their_topic_derives_from_the_group(
    tmp_path: Path,
) -> None:
    settings = load_settings(main_file(tmp_path, "kafka: {group_id: billing}\nhooks:" + HOOK))
    assert settings.outcomes.enabled is False
    assert settings.outcomes.topic == "billing.outcomes"
    assert "billing.outcomes" not in owned_topics(settings)


def test_enabled_outcomes_make_their_topic_one_the_daemon_creates(tmp_path: Path) -> None:
    path = main_file(tmp_path, "outcomes: {enabled: true, topic: audit.outcomes}\nhooks:" + HOOK)
    settings = load_settings(path)
    assert owned_topics(settings)[-1] == "audit.outcomes"


def test_an_outcome_topic_that_is_the_dead_letter_topic_is_refused_with_its_line(
    tmp_path: Path,
) -> None:
    path = main_file(
        tmp_path,
        "dead_letter_topic: dl\noutcomes:\n  enabled: true\n  topic: dl\nhooks:" + HOOK,
    )
    [issue] = refusals(path)
    assert issue.startswith(f"{path}:4: outcomes.topic: expected a topic of its own")


def test_a_group_id_no_topic_can_be_named_after_is_refused_only_with_outcomes_on(
    tmp_path: Path,
) -> None:
    names = "dead_letter_topic: dl\ndelivery: {retry_topic_prefix: r.}\n"
    quiet = main_file(tmp_path, "kafka: {group_id: 'team a'}\n" + names + "hooks:" + HOOK)
    assert load_settings(quiet).outcomes.topic == ""  # valid before outcomes existed
    on = main_file(
        tmp_path,
        "kafka: {group_id: 'team a'}\n" + names + "outcomes: {enabled: true}\nhooks:" + HOOK,
    )
    [issue] = refusals(on)
    assert "kafka.group_id: expected a group id made of A-Z a-z 0-9" in issue
    assert "or set outcomes.topic" in issue
