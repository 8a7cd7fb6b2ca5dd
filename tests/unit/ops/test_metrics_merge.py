"""The supervisor's /metrics: the workers' expositions merged by what each family means."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from hookrelay.ops.metrics import Metrics, SupervisorMetrics
from hookrelay.ops.metrics_merge import RULES, MetricsMerger, rule_of


def worker_metrics(delivered: int, *, lag: int, circuit: int, seconds: float) -> Metrics:
    metrics = Metrics()
    stats = metrics.hook_stats("crm")
    stats.count_outcome("delivered", delivered)
    stats.count_attempt("2xx", seconds)
    metrics.lane_pending.labels("crm").set(3)
    metrics.consumer_lag.labels("events", "0").set(lag)
    metrics.circuit_state.labels("crm").set(circuit)
    metrics.rate_limit_current.labels("crm").set(10)
    return metrics


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition.decode())
        for s in family.samples
    }


def merged_of(
    *workers: Metrics, merger: MetricsMerger | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    merger = merger or MetricsMerger()
    for index, metrics in enumerate(workers):
        merger.update(str(index), metrics.render().decode())
    return samples(merger.merged(SupervisorMetrics(len(workers)).render()))


def test_counters_and_histograms_are_summed_over_the_workers() -> None:
    merged = merged_of(
        worker_metrics(5, lag=1, circuit=0, seconds=0.02),
        worker_metrics(7, lag=4, circuit=1, seconds=2.0),
    )
    crm = (("hook_id", "crm"),)
    assert (
        merged[("hookrelay_deliveries_total", (("hook_id", "crm"), ("outcome", "delivered")))] == 12
    )
    assert merged[("hookrelay_request_duration_seconds_count", crm)] == 2
    assert merged[("hookrelay_request_duration_seconds_sum", crm)] == 2.02
    le_005 = (("hook_id", "crm"), ("le", "0.025"))
    assert merged[("hookrelay_request_duration_seconds_bucket", le_005)] == 1


def test_gauges_merge_by_meaning_sum_max_or_one_series_per_worker() -> None:
    merged = merged_of(
        worker_metrics(0, lag=1, circuit=0, seconds=0.1),
        worker_metrics(0, lag=4, circuit=1, seconds=0.1),
    )
    assert merged[("hookrelay_lane_pending", (("hook_id", "crm"),))] == 6  # sum
    assert merged[("hookrelay_rate_limit_current_per_second", (("hook_id", "crm"),))] == 20
    assert merged[("hookrelay_consumer_lag", (("partition", "0"), ("topic", "events")))] == 4
    assert merged[("hookrelay_circuit_state", (("hook_id", "crm"), ("worker", "0")))] == 0
    assert merged[("hookrelay_circuit_state", (("hook_id", "crm"), ("worker", "1")))] == 1
    memory = [k for k in merged if k[0] == "process_resident_memory_bytes"]
    workers = {dict(labels)["worker"] for _, labels in memory}
    assert workers == {"0", "1", "supervisor"} or memory == []  # no /proc: no process metrics


def test_the_supervisor_answers_readiness_reloads_and_build_info_itself() -> None:
    merged = merged_of(worker_metrics(1, lag=0, circuit=0, seconds=0.1))
    assert merged[("hookrelay_config_reloads_total", (("result", "success"),))] == 0
    assert merged[("hookrelay_ready", ())] == 0  # the supervisor's, not the worker's
    assert merged[("hookrelay_workers", ())] == 1
    assert len([k for k in merged if k[0] == "hookrelay_build_info"]) == 1


def test_a_restarted_worker_does_not_make_the_totals_go_backwards() -> None:
    merger = MetricsMerger()
    before = merged_of(worker_metrics(5, lag=0, circuit=0, seconds=0.1),
                       worker_metrics(7, lag=0, circuit=0, seconds=0.1), merger=merger)  # fmt: skip
    merger.retire("1")  # killed; its new life starts from 0
    after = merged_of(worker_metrics(6, lag=0, circuit=0, seconds=0.1),
                      worker_metrics(1, lag=0, circuit=0, seconds=0.1), merger=merger)  # fmt: skip
    key = ("hookrelay_deliveries_total", (("hook_id", "crm"), ("outcome", "delivered")))
    assert (before[key], after[key]) == (12, 14)  # 6 + 1 now, 7 carried over
    assert after[("hookrelay_lane_pending", (("hook_id", "crm"),))] == 6  # gauges are not


def test_every_gauge_the_daemon_exports_has_a_merge_rule() -> None:
    """A new gauge must be given its meaning here; by default it would get a worker label."""
    families = text_string_to_metric_families(Metrics().render().decode())
    gauges = {f.name for f in families if f.type == "gauge" and f.name.startswith("hookrelay_")}
    assert gauges - set(RULES) == set()
    assert rule_of("hookrelay_something_new", "gauge") == "worker"
    assert rule_of("hookrelay_something_new", "counter") == "sum"
