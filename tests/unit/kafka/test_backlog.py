"""The retry backlog gauge: what a count labels, and how a count replaces the last."""

from __future__ import annotations

from collections import Counter

from aiokafka import ConsumerRecord

from hookrelay.config import Settings
from hookrelay.kafka.backlog import BacklogGauge
from hookrelay.ops.metrics import Metrics

SETTINGS = Settings.model_validate({
    "kafka": {"topics": ["identity.events"], "group_id": "g"},
    "hooks": [{"id": "crm", "events": ["*"], "url": "https://crm.example.com/h"}],
})  # fmt: skip


def retry(hook_id: bytes, group: bytes = b"g", offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    headers = [("hookrelay-hook-id", hook_id), ("hookrelay-group", group),
               ("hookrelay-origin-topic", b"identity.events")]  # fmt: skip
    return ConsumerRecord("g.retry.5s", 0, offset, 0, 0, None, b"{}", None, 0, 0, headers)


def value(metrics: Metrics, hook_id: str, tier: str) -> float:
    return float(metrics.retry_backlog.labels(hook_id, tier)._value.get())


def test_a_count_labels_configured_hooks_bounds_the_rest_and_skips_other_deployments() -> None:
    gauge = BacklogGauge(SETTINGS, Metrics(), dict, lambda *_: False)
    counts: Counter[tuple[str, str]] = Counter()
    for record in [retry(b"crm"), retry(b"crm"), retry(b"x" * 21), retry(b"crm", b"other")]:
        gauge._take(record, counts)
    assert counts == {("crm", "g.retry.5s"): 2, ("other", "g.retry.5s"): 1}


def test_a_series_a_count_no_longer_finds_drops_to_zero() -> None:
    metrics = Metrics()
    gauge = BacklogGauge(SETTINGS, metrics, dict, lambda *_: False)
    gauge._publish(Counter({("crm", "g.retry.5s"): 3, ("crm", "g.retry.1m"): 1}))
    gauge._publish(Counter({("crm", "g.retry.1m"): 2}))
    assert value(metrics, "crm", "g.retry.5s") == 0
    assert value(metrics, "crm", "g.retry.1m") == 2


def test_a_retry_a_release_re_drove_is_no_longer_counted() -> None:
    released = {("crm", "g.retry.5s", 0, 1)}
    gauge = BacklogGauge(SETTINGS, Metrics(), dict, lambda *k: k in released)
    counts: Counter[tuple[str, str]] = Counter()
    for offset in range(3):
        gauge._take(retry(b"crm", offset=offset), counts)
    assert counts == {("crm", "g.retry.5s"): 2}


def test_what_a_count_left_unread_is_said_beside_each_hooks_backlog() -> None:
    # A trial's API showed 100,173 of 400,000 waiting retries and nothing to say it was partial.
    gauge = BacklogGauge(SETTINGS, Metrics(), dict, lambda *_: False)
    assert gauge.unscanned() == 0
    gauge._publish(Counter({("crm", "g.retry.5s"): 3, ("unscanned", "g.retry.5s"): 5,
                            ("unscanned", "g.retry.1m"): 2}))  # fmt: skip
    assert gauge.of_hook("crm") == {"g.retry.5s": 3}
    assert gauge.unscanned() == 7
