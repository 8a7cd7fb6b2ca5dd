"""The static member id a subscription joins with (``membership.static_member_id``)."""

from __future__ import annotations

from typing import Any

from hookrelay.config import KafkaSettings
from hookrelay.kafka.membership import GrowthAwareAssignor, static_member_id


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


class _Cluster:
    """aiokafka's ClusterMetadata as the assignor reads it."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.listeners: list[Any] = []

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        n = self.counts.get(topic)
        return None if n is None else set(range(n))

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def refreshed(self) -> None:
        for listener in self.listeners:
            listener(self)


def test_a_grown_topic_asks_for_one_rebalance_and_changes_the_join_metadata() -> None:
    cluster = _Cluster({"events": 3, "retry.5s": 4})
    rejoins: list[int] = []
    assignor = GrowthAwareAssignor()
    assignor.attach(cluster, lambda: rejoins.append(1))
    first = assignor.metadata(["events", "retry.5s"])
    assert assignor.name == "roundrobin"  # one protocol with members of older versions
    assert first.subscription == ["events", "retry.5s"]
    cluster.refreshed()
    assert rejoins == []  # nothing grew
    cluster.counts["events"] = 4
    cluster.refreshed()
    cluster.refreshed()  # asked once, not at every refresh until the join
    assert rejoins == [1]
    again = assignor.metadata(["events", "retry.5s"])
    # Other metadata than the group holds: the coordinator rebalances, even for a static
    # member, which would otherwise get its previous assignment back.
    assert again.user_data != first.user_data
    assert assignor.metadata(["retry.5s", "events"]).user_data == again.user_data


def test_a_subscribed_topic_that_appears_asks_for_a_rebalance() -> None:
    cluster = _Cluster({"events": 2})
    rejoins: list[int] = []
    assignor = GrowthAwareAssignor()
    assignor.attach(cluster, lambda: rejoins.append(1))
    assignor.metadata(["events", "added"])
    cluster.counts["added"] = 1
    cluster.refreshed()
    assert rejoins == [1]
