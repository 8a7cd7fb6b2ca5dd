"""The admin API's memory: the bounded attempt log and the per-hook 24-hour counts."""

from __future__ import annotations

from hookrelay.config import Hook
from hookrelay.events.decode import decode
from hookrelay.events.model import AttemptResult, Delivery, Origin
from hookrelay.kafka.offsets import AckTracker, TopicPartition
from hookrelay.ops.history import AttemptLog, History, HourlyCounts
from hookrelay.ops.logs import redacted_url, register_secrets

T0 = 1_790_000_000.0  # an epoch second in 2026
OK = AttemptResult(200, None, False, None, 0.0123, b"thanks")
BUSY = AttemptResult(503, "http 503", True, None, 0.5, b"busy " * 400)


def delivery(hook_id: str, offset: int) -> Delivery:
    event = decode(b'{"event":"User.Created","createdAt":"2026-08-21T09:15:42.123Z"}', None,
                   Origin("t", 0, offset, 0), 1 << 20)  # fmt: skip
    hook = Hook.model_validate({"id": hook_id, "events": ["*"], "url": "https://example.com/"})
    ticket = AckTracker().register(TopicPartition("t", 0), offset, 1)
    return Delivery(event, hook, f"msg_{offset}", b'"hookId":"h"}', ticket, attempts=1)


def test_attempt_log_keeps_the_newest_entries_and_filters_them() -> None:
    log = AttemptLog(size=3, keep_bodies=False)
    attempts = [
        ("a", OK, "delivered"), ("b", BUSY, "retrying"), ("a", BUSY, "dead_lettered"),
        ("b", OK, "delivered"),
    ]  # fmt: skip
    for n, (hook_id, result, outcome) in enumerate(attempts):
        log.record(T0 + n, delivery(hook_id, n), result, outcome)
    assert [e["delivery_id"] for e in log.recent()] == ["msg_3", "msg_2", "msg_1"]
    assert [e["delivery_id"] for e in log.recent(hook_id="a")] == ["msg_2"]
    assert [e["delivery_id"] for e in log.recent(outcome="delivered", limit=1)] == ["msg_3"]
    newest = log.recent()[0]
    assert newest == {
        "time": "2026-09-21T14:13:23.000+00:00", "hook_id": "b", "delivery_id": "msg_3",
        "event": "User.Created", "attempt": 1, "status": 200, "duration_ms": 12.3,
        "error": None, "outcome": "delivered",
    }  # fmt: skip


def test_attempt_log_keeps_a_kib_of_the_answer_only_when_asked() -> None:
    log = AttemptLog(size=10, keep_bodies=True)
    log.record(T0, delivery("a", 0), BUSY, "retrying")
    assert log.recent()[0]["response_body"] == ("busy " * 400)[:1024]
    assert "response_body" not in History(10, keep_bodies=False).attempts.recent()


def test_attempt_log_of_size_zero_keeps_nothing() -> None:
    log = AttemptLog(size=0, keep_bodies=False)
    log.record(T0, delivery("a", 0), OK, "delivered")
    assert log.recent() == []


def test_hourly_counts_cover_exactly_the_last_24_hours() -> None:
    counts = HourlyCounts()
    counts.count(True, T0)
    counts.count(False, T0 + 60)
    counts.count(True, T0 + 5 * 3600)
    assert counts.totals(T0 + 5 * 3600) == (3, 2)
    # 24 hours after the first hour began, its slot no longer counts.
    hour_start = T0 - T0 % 3600
    assert counts.totals(hour_start + 24 * 3600) == (1, 1)
    # Writing into a slot a day later starts it over.
    counts.count(False, T0 + 24 * 3600)
    assert counts.totals(T0 + 24 * 3600) == (2, 1)


def test_last_24h_gives_a_rate_only_with_requests() -> None:
    history = History()
    assert history.last_24h("a", T0) == {"requests": 0, "succeeded": 0, "success_rate": None}
    history.hourly("a").count(True, T0)
    history.hourly("a").count(False, T0)
    history.hourly("a").count(True, T0)
    assert history.last_24h("a", T0) == {"requests": 3, "succeeded": 2, "success_rate": 0.6667}


def test_redacted_url_hides_user_info_and_query_but_keeps_the_endpoint() -> None:
    assert redacted_url("https://user:pw@crm.example.com:8443/hooks/logto?token=s3cret#x") == (
        "https://***@crm.example.com:8443/hooks/logto?***"
    )
    assert redacted_url("http://127.0.0.1:8787/hooks/a") == "http://127.0.0.1:8787/hooks/a"


def test_kept_answers_show_no_registered_secret() -> None:
    """Found by a new user's trial: an endpoint echoing its signing key or the request's
    credentials had them shown in clear by GET /v1/deliveries."""
    register_secrets(["sk-echoed-key-0a1b2c3d"])
    log = AttemptLog(size=3, keep_bodies=True)
    echo = AttemptResult(
        500, "http 500", True, None, 0.1, b"bad signature, key sk-echoed-key-0a1b2c3d"
    )
    log.record(T0, delivery("a", 0), echo, "retrying")
    assert log.recent()[0]["response_body"] == "bad signature, key ***"
