"""Static membership (``kafka.group_instance_id``, Kafka's ``group.instance.id``, KIP-345):
notice another process of the group joined with the same instance id, and give way.

A static member's id changes only when the broker fenced it: another process joined with
its instance id, or its session expired. aiokafka reports both as an unknown member id and
rejoins, so two processes with one id take the partitions from each other at every
heartbeat, and both deliver everything. ``REPLACEMENTS`` fencings within ``WINDOW_S`` are
that fight, not one expired session: the member stops consuming (``contested``), waits two
heartbeat intervals and asks the broker whose member it holds — the process that joined
last, Kafka's own rule. If it is this one, it consumes again; otherwise it stays stopped,
logs ``group_instance_id_in_use``, sets ``hookrelay_group_instance_conflict`` and reports
not ready until restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from aiokafka.errors import KafkaError

from hookrelay.config import KafkaSettings
from hookrelay.kafka.clients import client_options, closed
from hookrelay.ops.logs import get_logger
from hookrelay.ops.metrics import Metrics

log = get_logger("hookrelay.membership")

REPLACEMENTS: Final = 2
WINDOW_S: Final = 120.0
"""A static member fenced this often within this window shares its instance id: one fencing
is what an expired session costs, a second so soon is the other process taking the
partitions back. Both processes deliver everything while they fight, so the sooner one
gives way the fewer copies."""


def static_member_id(settings: KafkaSettings, topics: Iterable[str]) -> str | None:
    """The ``group.instance.id`` this member joins with: ``kafka.group_instance_id`` and a
    digest of it and of the ``topics`` the member subscribes to when it starts (event
    topics, retry tiers, and the former tiers it drains); None without static membership.

    A static member that rejoins within its session gets back the assignment the group made
    for its previous process, without a rebalance, even when the new process subscribes to
    other topics: a trial restarted one with another retry schedule and aiokafka failed on
    every fetch, for good ("Received an assignment for unsubscribed topic"), and one with an
    added event topic never read it. Changing what a member subscribes to changes its id,
    so the group sees a new member and rebalances, as without static membership (the old
    id's partitions wait out its session). At most 249 characters, Kafka's limit."""
    base = settings.group_instance_id
    if base is None:
        return None
    subscription = "\0".join([base, *sorted(set(topics))])
    return f"{base[:240]}-{hashlib.sha256(subscription.encode()).hexdigest()[:8]}"


class InstanceGuard:
    """Watches this member's id across assignments (see the module docstring). ``consumer``
    is the source's ``AIOKafkaConsumer``; ``resubscribe`` subscribes it again."""

    def __init__(
        self,
        settings: KafkaSettings,
        consumer: Any,
        metrics: Metrics,
        *,
        heartbeat_s: float,
        resubscribe: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._metrics = metrics
        self._heartbeat_s = heartbeat_s
        self._resubscribe = resubscribe
        self._timeout_s = min(10.0, settings.request_timeout_s)
        self._member_id: str | None = None
        self._replaced_at: deque[float] = deque(maxlen=REPLACEMENTS)
        self.contested = False  # fenced too often: the poll loop must call settle()
        self.settling = False  # stopped, looking which process the group keeps
        self.conflict = ""  # the instance id another process holds: stopped for good

    def replaced(self) -> bool:
        """At an assignment: True when this member must stop consuming now (it unsubscribed;
        the poll loop then calls ``settle``)."""
        instance = self._settings.group_instance_id
        member = getattr(self._consumer._coordinator, "member_id", None)
        previous, self._member_id = self._member_id, member
        if instance is None or previous is None or member == previous:
            return False
        now = time.monotonic()
        self._replaced_at.append(now)
        recent = [t for t in self._replaced_at if now - t <= WINDOW_S]
        if len(recent) < REPLACEMENTS:
            log.warning("group_member_replaced", group_instance_id=instance,
                        hint="the broker fenced this member: its session expired, or another "
                        "process uses the same kafka.group_instance_id")  # fmt: skip
            return False
        self.contested = True
        self._consumer.unsubscribe()
        return True

    async def settle(self, stopping: asyncio.Event) -> None:
        """Stop rejoining for two heartbeat intervals, then look whose member the broker
        holds for the instance id: consume again if it is this one, else stay stopped.
        Returns at once when ``stopping`` is set (a shutdown must not wait for it)."""
        self.contested = False
        instance = self._settings.group_instance_id
        self.settling = True
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2 * self._heartbeat_s):
                    await stopping.wait()
            if stopping.is_set():
                return
            async with asyncio.timeout(self._timeout_s):
                held = await self._member_registered()
        except (KafkaError, TimeoutError) as e:
            log.warning("group_describe_failed", error=f"{type(e).__name__}: {e}")
            held = False
        finally:
            self.settling = False
        if held:
            log.warning("group_instance_id_kept", group_instance_id=instance,
                        hint="fenced twice within two minutes, and the group still holds this "
                        "member: this process stalled past kafka.session_timeout_s, or "
                        "another one with the same id gave way; this one consumes")  # fmt: skip
            self._member_id = None
            self._replaced_at.clear()
            self._resubscribe()
            return
        self.conflict = instance or ""
        self._metrics.instance_conflict.set(1)
        log.error(
            "group_instance_id_in_use", group_instance_id=instance,
            hint="another process of this consumer group uses the same "
            "kafka.group_instance_id; give each replica its own (e.g. ${POD_NAME}) and "
            "restart this one; it consumes nothing until then",
        )  # fmt: skip

    def problems(self) -> list[str]:
        """Why this member does not consume although connected (readiness reasons)."""
        if self.conflict:
            return [
                f"kafka.group_instance_id {self.conflict!r} is used by another process of "
                "the group; this daemon stopped consuming (restart it once fixed)"
            ]
        if self.settling:
            return [
                "another process may use this kafka.group_instance_id: stopped consuming "
                "while looking which process the group keeps"
            ]
        return []

    async def _member_registered(self) -> bool:
        """True when the group still lists this member's last member id."""
        admin = AIOKafkaAdminClient(
            **client_options(self._settings, "admin"),
            request_timeout_ms=int(self._settings.request_timeout_s * 1000),
        )
        try:  # start inside: a client whose start failed is closed too
            await admin.start()
            responses = await admin.describe_consumer_groups([self._settings.group_id])
        finally:
            await closed(admin.close())
        # DescribeGroups v0-v3 (aiokafka): groups of (error, id, state, protocol type,
        # protocol, members of (member id, client id, host, metadata, assignment), ...).
        members = {m[0] for r in responses for g in r.groups for m in g[5]}
        return self._member_id in members


class GrowthAwareAssignor(RoundRobinPartitionAssignor):  # type: ignore[misc]  # untyped base
    """aiokafka's round-robin assignor (same protocol name, so members of older versions
    share a group with it), whose join metadata also carries a digest of the partition
    counts this member sees for the topics it subscribes to, and which asks the group to
    rebalance when a count grows.

    aiokafka watches partition counts only in the member that computed the last assignment
    (Kafka's KIP-814 is not implemented there). A static member restarted within its session
    gets its assignment back without a rebalance, so after a restart nobody watched: a
    partition added to an event topic was never assigned and its events never delivered (a
    new user's trial, with one process and with workers). Now every member watches
    (``attach``): on growth it requests a rejoin (``event_partitions_added``), and its new
    metadata differs from what the group holds, so the coordinator rebalances even for a
    static member. A member started after the growth joins with other metadata than its
    previous process did, which rebalances too.
    """

    def __init__(self) -> None:
        self._cluster: Any = None
        self._rejoin: Callable[[], None] | None = None
        self._topics: tuple[str, ...] = ()
        self._joined: dict[str, int] = {}

    def attach(self, cluster: Any, rejoin: Callable[[], None]) -> None:
        """Watch ``cluster`` (aiokafka's ``ClusterMetadata`` of the consumer) and call
        ``rejoin`` when a subscribed topic has more partitions than at the last join."""
        self._cluster, self._rejoin = cluster, rejoin
        cluster.add_listener(self._metadata_updated)

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        self._topics = tuple(sorted(topics))
        self._joined = self._counts()
        digest = hashlib.sha256(repr(sorted(self._joined.items())).encode()).digest()[:8]
        return ConsumerProtocolMemberMetadata(self.version, list(self._topics), digest)

    def _counts(self) -> dict[str, int]:
        """Partitions per subscribed topic, for the topics the metadata knows."""
        if self._cluster is None:
            return {}
        counts = {}
        for topic in self._topics:
            partitions = self._cluster.partitions_for_topic(topic)
            if partitions:
                counts[topic] = len(partitions)
        return counts

    def _metadata_updated(self, _cluster: Any) -> None:
        now = self._counts()
        grown = {topic: n for topic, n in now.items() if n > self._joined.get(topic, 0)}
        if not grown or self._rejoin is None:
            return
        # Asked once per growth: the listener runs at every metadata refresh until the
        # rebalance's join records the new counts.
        before = {topic: self._joined.get(topic, 0) for topic in grown}
        self._joined.update(grown)
        log.info("event_partitions_added", partitions=grown, before=before,
                 hint="rebalancing so that the new partitions are assigned")  # fmt: skip
        self._rejoin()
