"""The static member id a subscription joins with (``membership.static_member_id``)."""

from __future__ import annotations

from hookrelay.config import KafkaSettings
from hookrelay.kafka.membership import static_member_id


def kafka(instance: str | None) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=["b:9092"], group_instance_id=instance)


def test_a_member_keeps_its_id_across_restarts_while_it_subscribes_to_the_same_topics() -> None:
    first = static_member_id(kafka("pod-0"), ["events", "r.5s", "r.30s"])
    assert first == static_member_id(kafka("pod-0"), ["r.30s", "events", "r.5s", "events"])
    assert first is not None
    assert first.startswith("pod-0-")
    assert first != static_member_id(kafka("pod-0"), ["events", "r.5s", "r.1m"])  # schedule
    assert first != static_member_id(kafka("pod-0"), ["events", "more", "r.5s", "r.30s"])
    assert first != static_member_id(kafka("pod-1"), ["events", "r.5s", "r.30s"])


def test_without_static_membership_there_is_no_id_and_a_long_one_stays_within_kafkas_limit() -> (
    None
):
    assert static_member_id(kafka(None), ["events"]) is None
    long = static_member_id(kafka("p" * 249), ["events"])
    assert long is not None
    assert len(long) == 249
    assert long != static_member_id(kafka("p" * 248 + "q"), ["events"])  # the digest tells
