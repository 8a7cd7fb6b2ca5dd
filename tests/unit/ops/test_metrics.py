"""The hot-path hook counters export exactly what prometheus_client's own types would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from hookrelay.ops.metrics import LATENCY_BUCKETS_S, REQUEST_BUCKETS_S, Metrics

DURATIONS_S = (0.0, 0.004, 0.005, 0.0051, 0.25, 1, 7.5, 30, 31, 1e9)


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, tuple[object, ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        if family.name == name
        for sample in family.samples
    }


def test_hook_histograms_match_prometheus_client_histograms_bucket_for_bucket() -> None:
    metrics = Metrics()
    stats = metrics.hook_stats("crm")
    reference = CollectorRegistry()
    duration = Histogram(
        "hookrelay_request_duration_seconds", "", ["hook_id"], buckets=REQUEST_BUCKETS_S,
        registry=reference,
    ).labels("crm")  # fmt: skip
    latency = Histogram(
        "hookrelay_end_to_end_latency_seconds", "", ["hook_id"], buckets=LATENCY_BUCKETS_S,
        registry=reference,
    ).labels("crm")  # fmt: skip
    for value in DURATIONS_S:
        stats.count_attempt("2xx", value)
        duration.observe(value)
        stats.latency.observe(value * 100)
        latency.observe(value * 100)
    for name in ("hookrelay_request_duration_seconds", "hookrelay_end_to_end_latency_seconds"):
        assert _samples(metrics.registry, name) == _samples(reference, name)


def test_hook_counters_match_prometheus_client_counters() -> None:
    metrics = Metrics()
    reference = CollectorRegistry()
    deliveries = Counter(
        "hookrelay_deliveries", "", ["hook_id", "outcome"], registry=reference
    )  # fmt: skip
    attempts = Counter(
        "hookrelay_attempts", "", ["hook_id", "status_class"], registry=reference
    )  # fmt: skip
    for hook_id in ("crm", "audit"):  # hookrelay exports these at 0 from the start
        for outcome in ("delivered", "dead_lettered", "abandoned"):
            deliveries.labels(hook_id, outcome)
        attempts.labels(hook_id, "2xx")
    for hook_id, outcome, status_class in (
        ("crm", "delivered", "2xx"), ("crm", "delivered", "2xx"),
        ("crm", "dead_lettered", "4xx"), ("audit", "delivered", "5xx"),
    ):  # fmt: skip
        metrics.hook_stats(hook_id).count_outcome(outcome)
        metrics.hook_stats(hook_id).count_attempt(status_class, 0.01)
        deliveries.labels(hook_id, outcome).inc()
        attempts.labels(hook_id, status_class).inc()
    metrics.hook_stats("crm").count_outcome("abandoned", 3)
    deliveries.labels("crm", "abandoned").inc(3)
    for name in ("hookrelay_deliveries", "hookrelay_attempts"):
        assert _samples(metrics.registry, name) == _samples(reference, name)


def test_exposition_names_the_hot_path_families_once() -> None:
    metrics = Metrics()
    metrics.hook_stats("crm").count_attempt("2xx", 0.02)
    text = metrics.render().decode()
    assert text.count("# TYPE hookrelay_deliveries_total counter") == 1
    assert text.count("# TYPE hookrelay_request_duration_seconds histogram") == 1
    assert 'hookrelay_attempts_total{hook_id="crm",status_class="2xx"} 1.0' in text
    assert 'hookrelay_request_duration_seconds_bucket{hook_id="crm",le="0.025"} 1.0' in text
