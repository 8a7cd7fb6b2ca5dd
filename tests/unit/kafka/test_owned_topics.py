"""What a deployment owns in Kafka (DESIGN §1.8): names derived from its consumer group, the
warnings for names another deployment may share, and which topics count as former tiers."""

from __future__ import annotations

import time
import types
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from hookrelay.config import KafkaSettings, Settings, config_warnings, load_settings
from hookrelay.config.naming import tier_delay_s, tier_label
from hookrelay.kafka import topics
from hookrelay.kafka.retries import (
    EVENT_COMMIT_METADATA,
    RETRY_COMMIT_METADATA,
    claimed_elsewhere,
    latest_due_s,
)
from hookrelay.kafka.source import due_at_s
from hookrelay.kafka.tiers import candidate_topics
from tests.unit.config.test_config import main_file, refusals


def test_dead_letter_and_retry_names_derive_from_the_group_id(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  group_id: s14-prod\n")
    settings = load_settings(path, env={})
    assert settings.dead_letter_topic == "s14-prod.dlq"
    assert settings.retry_topics[:2] == ("s14-prod.retry.5s", "s14-prod.retry.30s")


def test_the_default_group_keeps_the_names_it_always_had(tmp_path: Path) -> None:
    settings = load_settings(main_file(tmp_path, "{}\n"), env={})
    assert settings.dead_letter_topic == "hookrelay.dlq"
    assert settings.retry_topics[0] == "hookrelay.retry.5s"


def test_explicit_names_win_over_derived_ones(tmp_path: Path) -> None:
    path = main_file(
        tmp_path,
        "kafka:\n  group_id: g1\ndead_letter_topic: ops.dlq\n"
        "delivery:\n  retry_topic_prefix: ops.retry.\n",
    )
    settings = load_settings(path, env={})
    assert (settings.dead_letter_topic, settings.retry_topics[0]) == ("ops.dlq", "ops.retry.5s")


def test_a_group_id_unusable_in_topic_names_is_refused_at_its_line(tmp_path: Path) -> None:
    path = main_file(tmp_path, "kafka:\n  topics: [t]\n  group_id: team a/prod\n")
    [issue] = refusals(path)
    assert issue.startswith(f"{path}:3: kafka.group_id: expected a group id made of")
    assert "set dead_letter_topic and delivery.retry_topic_prefix explicitly" in issue
    path = main_file(
        tmp_path,
        "kafka:\n  group_id: team a/prod\ndead_letter_topic: a.dlq\n"
        "delivery:\n  retry_topic_prefix: a.retry.\n",
    )
    assert load_settings(path, env={}).group_id == "team a/prod"  # explicit names: fine


def test_check_warns_about_the_old_shared_defaults_written_out(tmp_path: Path) -> None:
    path = main_file(
        tmp_path,
        "kafka:\n  group_id: g-stag\ndead_letter_topic: hookrelay.dlq\n"
        "delivery:\n  retry_topic_prefix: hookrelay.retry.\n",
    )
    warnings = [w for w in config_warnings(load_settings(path, env={})) if "every deployment" in w]
    assert [w.split(": ")[1] for w in warnings] == [
        "dead_letter_topic",
        "delivery.retry_topic_prefix",
    ]


def _committed(**topics: str) -> dict[TopicPartition, OffsetAndMetadata]:
    return {
        TopicPartition(topic.replace("_", "."), 0): OffsetAndMetadata(5, metadata)
        for topic, metadata in topics.items()
    }


def test_former_tiers_are_committed_retry_topics_or_tier_names_never_current_topics() -> None:
    settings = Settings.model_validate(
        {"kafka": {"topics": ["ev"], "group_id": "g"}, "delivery": {"retry_schedule_s": [5, 30]}}
    )
    existing = [
        "ev", "g.dlq", "g.retry.5s", "g.retry.30s",  # current: never candidates
        "g.retry.1m", "g.retry.1h30m", "g.retry.250ms",  # tier names of the current prefix
        "old.retry.2m",  # committed with the retry tag: an earlier prefix
        "removed.events",  # committed with the event tag: a removed event topic
        "untagged.topic",  # committed by an older version: needs a peek
        "hookrelay.retry.10h",  # the pre-isolation default prefix
        "g.retry.notatier", "unrelated",
    ]  # fmt: skip
    committed = _committed(
        old_retry_2m=RETRY_COMMIT_METADATA,
        removed_events=EVENT_COMMIT_METADATA,
        untagged_topic="",
        g_retry_5s=RETRY_COMMIT_METADATA,
    )
    known, unconfirmed = candidate_topics(settings, existing, committed)
    assert known == {"old.retry.2m"}
    assert unconfirmed == {
        "untagged.topic", "g.retry.1m", "g.retry.1h30m", "g.retry.250ms", "hookrelay.retry.10h",
    }  # fmt: skip


def test_a_tiers_delay_is_read_back_from_its_name() -> None:
    names = {"g.retry.5s": 5.0, "g.retry.1h30m": 5400.0, "e.retry.300ms": 0.3,
             "dep-c.retry.55h33m20s": 200_000.0, "events": None, "g.retry.": None}  # fmt: skip
    assert {name: tier_delay_s(name) for name in names} == names
    for delay in (0.25, 5, 30, 120, 5400, 200_000):
        assert tier_delay_s(f"g.retry.{tier_label(delay)}") == delay


def test_a_record_can_be_due_at_most_twice_its_tiers_delay_after_its_write() -> None:
    written_ms = 1_700_000_000_000
    assert latest_due_s("g.retry.55h33m20s", written_ms, 1.0) == 1_700_000_000 + 400_000 + 300
    assert latest_due_s("g.unnamed", written_ms, 90.0) == 1_700_000_000 + 90 + 300


def test_any_header_naming_another_group_or_origin_makes_a_record_anothers() -> None:
    ours = [("hookrelay-group", b"a"), ("hookrelay-origin-topic", b"ev")]
    assert claimed_elsewhere(ours, "a", {"ev"}) is None
    assert claimed_elsewhere([("hookrelay-group", None)], "a", {"ev"}) is None
    twice = [("hookrelay-group", b"b"), *ours]
    # The origin topic is named in the log line even when it is one of ours (a breaker saw "").
    assert claimed_elsewhere(twice, "a", {"ev"}) == ("other_group", "b", "ev")
    elsewhere = [*ours, ("hookrelay-origin-topic", b"x")]
    assert claimed_elsewhere(elsewhere, "a", {"ev"}) == ("foreign_origin", "", "x")


def test_a_null_due_at_header_means_due_now() -> None:
    record = ConsumerRecord("t", 0, 0, 0, 0, None, b"{}", None, 0, 2, (("hookrelay-due-at", None),))
    assert due_at_s(record) == 0.0


def test_replay_reads_a_dead_letter_with_a_null_header() -> None:
    from hookrelay.commands.replay import view_of

    headers = (("hookrelay-reason", None), ("hookrelay-hook-id", b"crm"))
    letter = view_of(ConsumerRecord("dlq", 0, 5, 0, 0, None, b"{}", None, 0, 2, headers))
    assert (letter.reason, letter.hook_id) == ("", "crm")


def test_replay_skips_a_letter_it_could_not_turn_into_a_valid_retry_record() -> None:
    from hookrelay.commands.replay import view_of

    good = [
        ("hookrelay-hook-id", b"crm"), ("hookrelay-event", b"User.Created"),
        ("hookrelay-delivery-id", b"msg_1"), ("hookrelay-origin-topic", b"ev"),
        ("hookrelay-origin-partition", b"0"), ("hookrelay-origin-offset", b"7"),
    ]  # fmt: skip
    assert view_of(ConsumerRecord("d", 0, 1, 0, 0, None, b"{}", None, 0, 2, good)).damage() is None
    for name, value in [("origin-partition", b""), ("origin-offset", b"x"),
                        ("delivery-id", None), ("origin-partition", b"-1")]:  # fmt: skip
        headers = [(k, value if k == f"hookrelay-{name}" else v) for k, v in good]
        letter = view_of(ConsumerRecord("d", 0, 1, 0, 0, None, b"{}", None, 0, 2, headers))
        assert letter.damage() is not None, name


def test_a_record_written_in_the_future_is_judged_as_written_now() -> None:
    future_ms = int((time.time() + 3000) * 1000)
    assert latest_due_s("g.retry.2s", future_ms, 1.0) <= time.time() + 4 + 300 + 1


async def test_lag_for_a_partition_revoked_during_the_look_is_skipped_not_a_crash() -> None:
    """A rebalance ran while update_lag awaited end offsets (a chaos test's crash: aiokafka
    asserts the partition is assigned)."""
    from hookrelay.config import KafkaSettings
    from hookrelay.kafka.offsets import AckTracker
    from hookrelay.kafka.source import Backpressure, Source
    from hookrelay.ops.metrics import Metrics

    tp = TopicPartition("ev", 0)

    class Revoking:
        def __init__(self) -> None:
            self.assigned = {tp}

        def assignment(self) -> set[TopicPartition]:
            return set(self.assigned)

        async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            self.assigned = set()  # revoked while the answer travelled
            return dict.fromkeys(tps, 10)

        async def position(self, tp: TopicPartition) -> int:
            raise AssertionError("Partition is not assigned")

        def last_stable_offset(self, tp: TopicPartition) -> int:
            raise AssertionError("Partition is not assigned")

        highwater = last_stable_offset

    metrics = Metrics()
    source = Source(KafkaSettings(), AckTracker(), metrics, Backpressure(lambda: 0.0, 0.8))
    await source.consumer.stop()
    source.consumer = Revoking()  # type: ignore[assignment]
    await source.update_lag()  # must not raise
    assert (
        metrics.registry.get_sample_value(
            "hookrelay_consumer_lag", {"topic": "ev", "partition": "0"}
        )
        is None
    )


class CreatingAdmin:
    """Answers create_topics as a broker does: per-topic error codes, nothing raised."""

    def __init__(self, codes: dict[str, int]) -> None:
        self.codes = codes
        self.requests: list[list[Any]] = []

    async def create_topics(self, new: list[Any]) -> Any:
        self.requests.append(new)
        errors = [(t.name, self.codes.get(t.name, 0), "policy says no") for t in new]
        return types.SimpleNamespace(topic_errors=errors)


async def test_missing_topics_are_created_in_one_request_the_control_topic_compacted() -> None:
    kafka = KafkaSettings(topic_partitions=3)
    admin = CreatingAdmin({"g.dlq": 36})  # another replica created it first: fine
    await topics._create(admin, kafka, ["g.dlq", "g.retry.5s", "g.control"], "g.control")  # type: ignore[arg-type]
    [request] = admin.requests
    assert [(t.name, t.num_partitions, dict(t.topic_configs)) for t in request] == [
        ("g.dlq", 3, {}), ("g.retry.5s", 3, {}), ("g.control", 1, {"cleanup.policy": "compact"}),
    ]  # fmt: skip


async def test_a_topic_the_broker_refuses_to_create_is_an_error_not_a_log_line() -> None:
    admin = CreatingAdmin({"g.retry.5s": 44})  # POLICY_VIOLATION
    with pytest.raises(KafkaError, match=r"g\.retry\.5s: policy says no"):
        await topics._create(admin, KafkaSettings(), ["g.dlq", "g.retry.5s"])  # type: ignore[arg-type]
