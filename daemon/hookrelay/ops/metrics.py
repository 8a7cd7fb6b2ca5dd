"""Every Prometheus metric hookrelay exports; with ``metrics_merge`` (a deployment of worker
processes), the only module that touches prometheus_client.

Each ``Metrics`` owns its own ``CollectorRegistry`` (with the process and platform
collectors), so several daemons in one test process never collide. Labels are bounded:
hook id, event name (only catalogue names or names some hook subscribes to; anything else is
``other``), outcome, status class, reason, tier, topic/partition — never URLs, user ids or
IPs. Durations are seconds.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections.abc import Iterator
from typing import Final

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from hookrelay import __version__

REQUEST_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENCY_BUCKETS_S: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600,
)  # fmt: skip
INGEST_BUCKETS_S: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
)  # fmt: skip
RATE_LIMIT_WAIT_BUCKETS_S: Final = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip
"""The first bucket (1 ms) holds the deliveries that found a token on entering the lane."""
CLOSE_REASONS: Final = ("evicted_idle", "over_limit")
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# The *_created series double the exposition size and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated


class ProcessMetrics:
    """What every hookrelay process exports (the daemon's ``Metrics``, the ingest process's
    ``IngestMetrics``): build info, readiness, the admin listener's closed connections, and
    the process and platform collectors. ``ready_help`` says what readiness means there."""

    def __init__(self, ready_help: str) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        r.register(PROCESS_COLLECTOR)
        r.register(PLATFORM_COLLECTOR)
        p = "hookrelay_"
        self.build_info = Gauge(p + "build_info", "Build information", ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        self.ready = Gauge(p + "ready", ready_help, registry=r)
        self.admin_connections_closed = Counter(
            p + "admin_connections_closed", "Admin listener connections closed to keep room "
            "for probes and scrapes: evicted_idle (the longest idle one, for a new "
            "connection), over_limit (a new one, every slot busy with a request)", ["reason"],
            registry=r,
        )  # fmt: skip
        for reason in CLOSE_REASONS:
            self.admin_connections_closed.labels(reason)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)


class ReloadMetrics:
    """The configuration reload metrics of a process that reloads (the daemon, or the
    supervisor of its worker processes)."""

    def _reload_metrics(self, p: str, r: CollectorRegistry) -> None:
        self.config_reloads = Counter(
            p + "config_reloads", "Configuration reloads by result (success, failure)",
            ["result"], registry=r,
        )  # fmt: skip
        for result in ("success", "failure"):
            self.config_reloads.labels(result)
        self.config_last_reload_successful = Gauge(
            p + "config_last_reload_successful", "1 when the last reload was applied, 0 when it "
            "was refused (the previous configuration still runs)", registry=r,
        )  # fmt: skip
        self.config_last_reload_successful.set(1)
        self.config_last_reload_success = Gauge(
            p + "config_last_reload_success_timestamp_seconds",
            "When the running configuration was loaded (epoch seconds)", registry=r,
        )  # fmt: skip
        self.config_last_reload_success.set_to_current_time()


class IngestMetrics(ProcessMetrics):
    """The ``hookrelay ingest`` process's metric set. ``source`` labels are configured source
    ids, ``batch`` for the batch API, or ``unmatched`` (no route); ``status`` is the HTTP
    status answered."""

    def __init__(self) -> None:
        super().__init__("1 when the Kafka cluster answers and requests are taken")
        r = self.registry
        p = "hookrelay_ingest_"
        self.requests = Counter(
            p + "requests", "Requests answered, by source and HTTP status", ["source", "status"],
            registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            p + "request_duration_seconds", "Seconds from a request's headers to its answer "
            "(a 2xx includes the broker's acknowledgement)", ["source"],
            buckets=INGEST_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.request_bytes = Counter(
            p + "request_bytes", "Request body bytes read, by source", ["source"], registry=r
        )
        self.events_written = Counter(
            p + "events_written", "Events written to Kafka and acknowledged, by source and topic",
            ["source", "topic"], registry=r,
        )  # fmt: skip
        self.producer_errors = Counter(
            p + "producer_errors", "Writes that failed or timed out (answered 503), by source "
            "and error (the client's exception name, or timeout)", ["source", "error"],
            registry=r,
        )  # fmt: skip
        self.batch_events_refused = Counter(
            p + "batch_events_refused", "Events of the batch API refused by the decoder, by "
            "reason", ["reason"], registry=r,
        )  # fmt: skip
        self.connections_closed = Counter(
            p + "connections_closed", "Ingest listener connections closed by the guard: "
            "evicted_idle, over_limit", ["reason"], registry=r,
        )  # fmt: skip
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason)


class Metrics(ProcessMetrics, ReloadMetrics):
    """The daemon's metric set. Attribute names follow the exported names without prefix."""

    def __init__(self) -> None:
        super().__init__("1 when consuming and able to deliver")
        r = self.registry
        p = "hookrelay_"
        self.instance_conflict = Gauge(
            p + "group_instance_conflict", "1 once another process joined the consumer group "
            "with this daemon's kafka.group_instance_id: this daemon stopped consuming",
            registry=r,
        )  # fmt: skip
        self.events_consumed = Counter(
            p + "events_consumed", "Kafka records consumed", ["topic"], registry=r
        )
        self.events_invalid = Counter(
            p + "events_invalid", "Records refused by the decoder", ["reason"], registry=r
        )
        self.events_matched = Counter(
            p + "events_matched", "Valid events by name and whether any hook matched",
            ["event", "matched"], registry=r,
        )  # fmt: skip
        self._hooks: dict[str, HookStats] = {}
        self._reload_metrics(p, r)
        r.register(_HookStatsCollector(self._hooks))
        self.in_flight = Gauge(
            p + "in_flight_deliveries", "Deliveries accepted and not yet settled", registry=r
        )
        self._lane_metrics(p, r)
        self.retries_scheduled = Counter(
            p + "retries_scheduled", "Retries scheduled after a retryable failure, by tier",
            ["hook_id", "tier"], registry=r,
        )  # fmt: skip
        self.unknown_hook_retries = Counter(
            p + "unknown_hook_retries", "Retries taken back for a hook this replica does not "
            "know: parked again (grace period) or dead-lettered hook_removed", ["action"],
            registry=r,
        )  # fmt: skip
        for action in ("parked", "dead_lettered"):
            self.unknown_hook_retries.labels(action)
        self.settled_skipped = Counter(
            p + "settled_skipped", "Work skipped after an assignment because the partition's "
            "previous owner (this or another replica, before a rebalance or restart) had "
            "settled it above its committed offset: record (every delivery of a record), "
            "delivery (one hook's delivery of a record still owed to others)", ["unit"],
            registry=r,
        )  # fmt: skip
        for unit in ("record", "delivery"):
            self.settled_skipped.labels(unit)
        self.retry_records_skipped = Counter(
            p + "retry_records_skipped", "Records in a retry topic left alone because another "
            "deployment wrote them: other_group, or foreign_origin (origin topic not consumed "
            "here)", ["reason"], registry=r,
        )  # fmt: skip
        for reason in ("other_group", "foreign_origin"):
            self.retry_records_skipped.labels(reason)
        self.stale_connection_retries = Counter(
            p + "stale_connection_retries", "POSTs sent again at once on a fresh connection: "
            "the endpoint had closed the kept-alive one before answering", ["hook_id"],
            registry=r,
        )  # fmt: skip
        self.retry_backlog = Gauge(
            p + "retry_backlog", "Retries waiting in the retry partitions this member is "
            "assigned, by hook and tier (counted every 30 s from the committed offsets; sum "
            "over replicas for the deployment)", ["hook_id", "tier"], registry=r,
        )  # fmt: skip
        self.retries_superseded = Counter(
            p + "retries_superseded", "Retry records left alone because an operator's release "
            "re-drove a copy of them (hookrelay release)", registry=r,
        )  # fmt: skip
        self.retries_consumed = Counter(
            p + "retries_consumed", "Records taken back from a retry topic", ["tier"],
            registry=r,
        )  # fmt: skip
        self.dead_lettered = Counter(
            p + "dead_lettered", "Records written to the dead-letter topic", ["reason"],
            registry=r,
        )  # fmt: skip
        self.outcomes_written = Counter(
            p + "outcomes_written", "Outcome records the broker acknowledged (outcomes.enabled), "
            "by status", ["status"], registry=r,
        )  # fmt: skip
        self.kafka_write_rejected = Counter(
            p + "kafka_write_rejected", "Writes the broker refused for good (record too large)",
            ["kind"], registry=r,
        )  # fmt: skip
        self.kafka_write_failures = Counter(
            p + "kafka_write_failures", "Retry/dead-letter writes that failed and were retried",
            ["kind"], registry=r,
        )  # fmt: skip
        self.offsets_committed = Counter(
            p + "offset_commits", "Successful offset commits", registry=r
        )
        self.commit_failures = Counter(
            p + "offset_commit_failures", "Offset commits that failed", registry=r
        )
        self.rebalances = Counter(
            p + "rebalances", "Consumer-group rebalances this member went through", registry=r
        )
        self.consumer_paused = Gauge(
            p + "consumer_paused", "1 while fetching is paused by backpressure", registry=r
        )
        self.partitions_paused = Gauge(
            p + "partitions_paused", "Assigned partitions paused, by reason",
            ["reason"], registry=r,
        )  # fmt: skip
        self.consumer_lag = Gauge(
            p + "consumer_lag", "High watermark minus position, per partition",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.offset_resets = Counter(
            p + "offset_resets", "Assigned event partitions that did not start at a committed "
            "offset: out_of_range (retention deleted past it), no_committed_offset (a new "
            "group, or offsets the broker expired)", ["reason"], registry=r,
        )  # fmt: skip
        for reason in ("out_of_range", "no_committed_offset"):
            self.offset_resets.labels(reason)
        self.held_by_transaction = Gauge(
            p + "partition_held_by_open_transaction", "1 while this member has read a "
            "partition up to its last stable offset and an open transaction holds back what "
            "follows (read-committed isolation); other partitions flow",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.committed_offset = Gauge(
            p + "committed_offset", "Last committed offset per partition",
            ["topic", "partition"], registry=r,
        )  # fmt: skip

    def hook_stats(self, hook_id: str) -> HookStats:
        """The per-delivery counters of ``hook_id`` (created on first use, kept for the
        process lifetime so a hook that is removed and re-added never sees a counter reset).
        ``hook_id`` must be a configured hook's id: it becomes a label value."""
        stats = self._hooks.get(hook_id)
        if stats is None:
            stats = self._hooks[hook_id] = HookStats()
        return stats

    def _lane_metrics(self, p: str, r: CollectorRegistry) -> None:
        """What each hook's lane exports: queue, sends, ordering, parks, circuit, pause and
        rate limit."""
        self.lane_pending = Gauge(
            p + "lane_pending", "Deliveries queued in a hook's lane", ["hook_id"], registry=r
        )
        self.lane_in_flight = Gauge(
            p + "lane_in_flight", "Requests being sent for a hook", ["hook_id"], registry=r
        )
        self.ordering_held = Gauge(
            p + "ordering_held_deliveries",
            "Deliveries an ordered hook holds in memory: behind their key's head, or heads "
            "waiting for a retry or a pause to end", ["hook_id"], registry=r,
        )  # fmt: skip
        self.ordering_blocked_keys = Gauge(
            p + "ordering_blocked_keys",
            "Keys of an ordered hook whose head waits for its next attempt", ["hook_id"],
            registry=r,
        )  # fmt: skip
        self.ordering_dead_letter_blocked = Gauge(
            p + "ordering_keys_blocked_by_dead_letter",
            "Keys an ordered hook with ordering_after_dead_letter: block keeps blocked (their "
            "events dead-lettered key_blocked) until unblocked", ["hook_id"], registry=r,
        )  # fmt: skip
        self.parked = Counter(
            p + "parked", "Deliveries parked in a retry topic without an attempt",
            ["hook_id", "reason"], registry=r,
        )  # fmt: skip
        self.deliveries_skipped = Counter(
            p + "deliveries_skipped", "(event, hook) pairs settled without a request: "
            "filtered (the hook's payload filter kept the event out)",
            ["hook_id", "reason"], registry=r,
        )  # fmt: skip
        self.circuit_state = Gauge(
            p + "circuit_state", "Circuit breaker per hook: 0 closed, 1 open, 2 half-open",
            ["hook_id"], registry=r,
        )  # fmt: skip
        self.hook_paused = Gauge(
            p + "hook_paused", "1 while a hook is paused: its endpoint answered 410 Gone, or an "
            "operator paused it (hookrelay pause)",
            ["hook_id"], registry=r,
        )  # fmt: skip
        self.rate_limit_wait = Histogram(
            p + "rate_limit_wait_seconds", "Time a delivery of a rate-limited hook waited "
            "from entering its lane to its token (the queue behind the limit included)",
            ["hook_id"],
            buckets=RATE_LIMIT_WAIT_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.rate_limit_current = Gauge(
            p + "rate_limit_current_per_second", "Requests/s a hook's rate limit lets through "
            "now: rate_limit.per_second, or where the adaptive rate limit has set it",
            ["hook_id"], registry=r,
        )  # fmt: skip
        self.rate_limit_decreases = Counter(
            p + "rate_limit_decreases", "Decreases of a hook's adaptive rate limit, by reason: "
            "throttled (429 or 503), latency (a window's median over the target)",
            ["hook_id", "reason"], registry=r,
        )  # fmt: skip

    def forget_lane(self, hook_id: str) -> None:
        """Drop the per-lane gauges of a hook that is no longer configured (its counters
        stay: a counter that vanished and came back would read as a reset)."""
        gauges = (
            self.lane_pending, self.lane_in_flight, self.circuit_state, self.hook_paused,
            self.ordering_held, self.ordering_blocked_keys, self.ordering_dead_letter_blocked,
            self.rate_limit_current,
        )  # fmt: skip
        for gauge in gauges:
            with contextlib.suppress(KeyError):
                gauge.remove(hook_id)

    def forget_ordering(self, hook_id: str) -> None:
        """Drop the ordering gauges of a hook that is no longer ordered."""
        for gauge in (
            self.ordering_held,
            self.ordering_blocked_keys,
            self.ordering_dead_letter_blocked,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(hook_id)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop per-partition series of a revoked partition so they do not go stale."""
        for gauge in (self.consumer_lag, self.committed_offset, self.held_by_transaction):
            with contextlib.suppress(KeyError):
                gauge.remove(topic, str(partition))


class SupervisorMetrics(ProcessMetrics, ReloadMetrics):
    """The supervisor's own metrics (``workers`` > 1): readiness of the deployment, its
    reloads, and the workers' lives. Its ``/metrics`` merges them with the workers'
    (``metrics_merge``)."""

    def __init__(self, workers: int) -> None:
        super().__init__("1 when every worker process is consuming and able to deliver")
        r = self.registry
        p = "hookrelay_"
        self._reload_metrics(p, r)
        self.workers = Gauge(p + "workers", "Worker processes configured", registry=r)
        self.workers.set(workers)
        self.workers_ready = Gauge(
            p + "workers_ready", "Worker processes running and ready", registry=r
        )
        self.worker_restarts = Counter(
            p + "worker_restarts", "Worker processes restarted after an unexpected exit, by "
            "worker index", ["worker"], registry=r,
        )  # fmt: skip
        self.worker_partitions = Gauge(
            p + "worker_partitions", "Event partitions assigned to each worker process "
            "(uneven: rate-limited hooks deliver below their limit)", ["worker"], registry=r,
        )  # fmt: skip
        for index in range(workers):
            self.worker_restarts.labels(str(index))


class HistogramCounts:
    """A histogram as plain numbers: ``counts[i]`` observations ``<= bounds[i]`` and above
    ``bounds[i-1]`` (the last slot is +Inf), and their ``sum``; seconds."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (Prometheus ``le`` semantics: a value equal to a bound
        falls in that bound's bucket)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """``[(le, cumulative count), ...]`` ending with ``("+Inf", total)``."""
        out = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((floatToGoString(bound), float(total)))  # type: ignore[no-untyped-call]
        return out


class HookStats:
    """What a hook's lane counts on every delivery, exported at scrape time.

    These are the hot-path metrics (several per delivery): plain ints and bucket lists cost
    a fraction of prometheus_client children, which take a lock and a few calls per update.
    The event loop is the only writer and the scrape runs on the same loop, so no lock is
    needed. ``attempts`` by status class, ``outcomes`` by ``Outcome`` value, request
    duration and end-to-end latency in seconds.
    """

    __slots__ = ("attempts", "latency", "outcomes", "request_duration")

    def __init__(self) -> None:
        # Exported at 0 from the start, so rate() and increase() see the first event too.
        self.attempts: dict[str, int] = {"2xx": 0}
        self.outcomes: dict[str, int] = {"delivered": 0, "dead_lettered": 0, "abandoned": 0}
        self.request_duration = HistogramCounts(REQUEST_BUCKETS_S)
        self.latency = HistogramCounts(LATENCY_BUCKETS_S)

    def count_attempt(self, status_class: str, duration_s: float) -> None:
        """One POST answered (or failed) after ``duration_s`` seconds."""
        self.attempts[status_class] = self.attempts.get(status_class, 0) + 1
        self.request_duration.observe(duration_s)

    def count_outcome(self, outcome: str, n: int = 1) -> None:
        """``n`` deliveries finished with ``outcome`` (an ``Outcome`` value)."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n


class _HookStatsCollector(Collector):
    """Exports every ``HookStats`` as the hookrelay_deliveries_total,
    hookrelay_attempts_total, hookrelay_request_duration_seconds and
    hookrelay_end_to_end_latency_seconds families."""

    def __init__(self, hooks: dict[str, HookStats]) -> None:
        self._hooks = hooks

    def collect(self) -> Iterator[Metric]:
        p = "hookrelay_"
        deliveries = CounterMetricFamily(
            p + "deliveries", "Deliveries finished, by hook and outcome",
            labels=["hook_id", "outcome"],
        )  # fmt: skip
        attempts = CounterMetricFamily(
            p + "attempts", "POST attempts by hook and status class",
            labels=["hook_id", "status_class"],
        )  # fmt: skip
        duration = HistogramMetricFamily(
            p + "request_duration_seconds", "One POST, request sent to response read",
            labels=["hook_id"],
        )  # fmt: skip
        latency = HistogramMetricFamily(
            p + "end_to_end_latency_seconds", "Kafka record timestamp to 2xx received",
            labels=["hook_id"],
        )  # fmt: skip
        for hook_id, stats in list(self._hooks.items()):
            for outcome, n in list(stats.outcomes.items()):
                deliveries.add_metric([hook_id, outcome], n)
            for status_class, n in list(stats.attempts.items()):
                attempts.add_metric([hook_id, status_class], n)
            for family, counts in ((duration, stats.request_duration), (latency, stats.latency)):
                family.add_metric([hook_id], counts.cumulative(), counts.sum)
        yield from (deliveries, attempts, duration, latency)
