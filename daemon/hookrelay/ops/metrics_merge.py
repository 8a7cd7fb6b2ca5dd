"""One Prometheus exposition for a deployment of several worker processes: the workers'
``/metrics`` texts (scraped by the supervisor over loopback) merged with the supervisor's own.

Why scrape-and-merge rather than prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``): that mode sees only the library's own metric classes, and the
daemon's hot-path counters are a custom collector (``metrics.HookStats``: deliveries,
attempts, request duration, end-to-end latency), which it would not export at all; its
gauges would need a mode each, and the process collector is not supported there.

Each family is merged by what it means (:data:`RULES`; by default counters, histograms and
summaries are summed and a gauge keeps one series per worker, under a ``worker`` label):

- ``sum``: totals of the deployment (deliveries, attempts, queue depths, the rate a hook's
  limit lets through now, the retries waiting);
- ``max``: series every worker reports about the same thing (a partition's lag or committed
  offset, seen by its owner and, during a rebalance, its previous owner; a hook paused,
  which the shared control topic decides);
- ``worker``: a per-worker view is what an operator needs (a circuit breaker, the consumer
  paused by backpressure, each process's memory and CPU);
- ``drop``: the supervisor answers these itself (readiness, reloads, build info, its
  listener's connections).

Counters never go backwards across a worker's restart: the last values scraped from a worker
that died are carried into every later total (:meth:`MetricsMerger.retire`), as the
multiprocess mode keeps a dead process's files. What it counted after that scrape is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Final, Literal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

Rule = Literal["sum", "max", "worker", "drop"]

RULES: Final[Mapping[str, Rule]] = {
    "hookrelay_build_info": "drop",
    "hookrelay_ready": "drop",
    "hookrelay_admin_connections_closed": "drop",
    "hookrelay_config_reloads": "drop",
    "hookrelay_config_last_reload_successful": "drop",
    "hookrelay_config_last_reload_success_timestamp_seconds": "drop",
    "python_info": "drop",
    "hookrelay_in_flight_deliveries": "sum",
    "hookrelay_lane_pending": "sum",
    "hookrelay_lane_in_flight": "sum",
    "hookrelay_ordering_held_deliveries": "sum",
    "hookrelay_ordering_blocked_keys": "sum",
    "hookrelay_retry_backlog": "sum",
    "hookrelay_partitions_paused": "sum",
    "hookrelay_rate_limit_current_per_second": "sum",
    "hookrelay_ordering_keys_blocked_by_dead_letter": "max",
    "hookrelay_hook_paused": "max",
    "hookrelay_consumer_lag": "max",
    "hookrelay_committed_offset": "max",
    "hookrelay_partition_held_by_open_transaction": "max",
    "hookrelay_circuit_state": "worker",
    "hookrelay_consumer_paused": "worker",
    "hookrelay_group_instance_conflict": "worker",
}
"""How each family (name without ``_total``) merges; others by :func:`rule_of`."""

SUPERVISOR: Final = "supervisor"
"""The ``worker`` label of the supervisor's own process metrics."""

_Key = tuple[str, tuple[tuple[str, str], ...]]
"""A sample: its name and sorted labels."""


def rule_of(name: str, kind: str) -> Rule:
    """How family ``name`` of type ``kind`` merges: :data:`RULES`, else ``worker`` for the
    process collector's families and for gauges, ``sum`` for the rest."""
    rule = RULES.get(name)
    if rule is not None:
        return rule
    if name.startswith("process_") or kind in ("gauge", "info", "stateset", "unknown"):
        return "worker"
    return "sum"


class _Family:
    """A merged family being built: its samples by key, in first-seen order."""

    def __init__(self, name: str, documentation: str, kind: str) -> None:
        self.name, self.documentation, self.kind = name, documentation, kind
        self.samples: dict[_Key, float] = {}

    def add(self, key: _Key, value: float, rule: Rule) -> None:
        if key not in self.samples:
            self.samples[key] = value
        elif rule == "sum":
            self.samples[key] += value
        else:
            self.samples[key] = max(self.samples[key], value)

    def metric(self) -> Metric:
        family = Metric(self.name, self.documentation, self.kind)
        for (sample, labels), value in self.samples.items():
            family.add_sample(sample, dict(labels), value)
        return family


class _Merged(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def parse(text: str) -> list[Metric]:
    """The families of a Prometheus text exposition. Raises ``ValueError`` when it is not
    one."""
    return list(text_string_to_metric_families(text))


class MetricsMerger:
    """Merges the workers' expositions; remembers each worker's last one, so a worker that
    misses a scrape still counts, and one that died is carried over (:meth:`retire`)."""

    def __init__(self) -> None:
        self._last: dict[str, list[Metric]] = {}
        self._carried: dict[str, _Family] = {}

    def update(self, worker: str, text: str) -> None:
        """Keep ``text``, the exposition just scraped from ``worker``; an unreadable one is
        ignored (the previous one stays). Raises nothing."""
        try:
            self._last[worker] = parse(text)
        except ValueError:
            return

    def retire(self, worker: str) -> None:
        """``worker`` died: carry its last summed series (counters, histograms) into every
        later total, and forget the rest of what it reported."""
        for family in self._last.pop(worker, []):
            if rule_of(family.name, family.type) != "sum" or family.type == "gauge":
                continue
            carried = self._carried.setdefault(
                family.name, _Family(family.name, family.documentation, family.type)
            )
            for sample in family.samples:
                carried.add(_key(sample.name, sample.labels), sample.value, "sum")

    def merged(self, own: bytes) -> bytes:
        """The deployment's exposition: ``own`` (the supervisor's registry, whose process
        metrics get ``worker="supervisor"``) and every worker's last exposition merged by
        :func:`rule_of`, plus what retired workers counted."""
        families: dict[str, _Family] = {}
        for family in parse(own.decode("utf-8")):
            self._add(families, family, SUPERVISOR, supervisor=True)
        for name, carried in self._carried.items():
            merged = families.setdefault(name, _Family(name, carried.documentation, carried.kind))
            for key, value in carried.samples.items():
                merged.add(key, value, "sum")
        for worker, found in sorted(self._last.items()):
            for family in found:
                self._add(families, family, worker, supervisor=False)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(f.metric() for f in families.values()))
        return generate_latest(registry)

    @staticmethod
    def _add(
        families: dict[str, _Family], family: Metric, worker: str, *, supervisor: bool
    ) -> None:
        rule = rule_of(family.name, family.type)
        if supervisor:
            # The supervisor's own series are the deployment's, except its process metrics.
            rule = "worker" if family.name.startswith("process_") else "max"
        elif rule == "drop":
            return
        merged = families.setdefault(
            family.name, _Family(family.name, family.documentation, family.type)
        )
        for sample in family.samples:
            labels = dict(sample.labels)
            if rule == "worker":
                labels["worker"] = worker
            merged.add(_key(sample.name, labels), sample.value, rule)


def _key(name: str, labels: Mapping[str, str]) -> _Key:
    return name, tuple(sorted(labels.items()))
