"""Log hygiene: secrets are masked, library noise is rate-limited."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog
import yarl
from aiokafka.errors import (
    LeaderNotAvailableError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
)

from hookrelay.ops.logs import (
    RepeatFilter,
    configure_logging,
    debug_enabled,
    get_logger,
    public_text,
    redact_secrets,
    register_secrets,
    url_secrets,
)


def record(msg: str, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, ("x",), None)


def test_a_repeated_library_message_passes_once_per_window_then_says_how_many_were_dropped() -> (
    None
):
    now = [0.0]
    f = RepeatFilter(window_s=30.0, clock=lambda: now[0])
    assert f.filter(record("Unable connect to %s"))
    assert not any(f.filter(record("Unable connect to %s")) for _ in range(70))
    assert f.filter(record("another message"))
    now[0] = 31.0
    again = record("Unable connect to %s")
    assert f.filter(again)
    assert again.suppressed == 70  # type: ignore[attr-defined]


def test_registered_secrets_are_masked_in_every_string_value() -> None:
    register_secrets(["s3cret-key-value"])
    event = {"event": "x", "error": "bad header s3cret-key-value here", "n": 1}
    assert redact_secrets(None, "info", event)["error"] == "bad header *** here"
    assert event["n"] == 1


def test_registered_secrets_are_masked_inside_lists_and_nested_dicts() -> None:
    register_secrets(["nested-secret-value"])
    event = {
        "errors": ["a.yaml:3: key nested-secret-value bad", "fine"],
        "context": {"header": "Bearer nested-secret-value", "n": 3},
        "pair": ("nested-secret-value", 1),
    }
    redacted = redact_secrets(None, "info", event)
    assert redacted == {
        "errors": ["a.yaml:3: key *** bad", "fine"],
        "context": {"header": "Bearer ***", "n": 3},
        "pair": ("***", 1),
    }


@pytest.fixture
def structlog_restored() -> Iterator[None]:
    """Put structlog and the root logger back as they were: other tests capture logs with
    structlog's defaults, which configure_logging() replaces."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("structlog_restored")
def test_configuring_again_changes_level_and_format_of_loggers_already_in_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    log = get_logger("tests.reconfigure")
    log.info("first_info")
    log.debug("first_debug")
    configure_logging("warning", "json")  # a reload raises the level
    log.info("dropped_info")
    log.warning("kept_warning")
    configure_logging("debug", "console")  # and another lowers it and switches the format
    log.debug("now_debug")
    lines = capsys.readouterr().out.splitlines()
    events = [orjson.loads(line)["event"] for line in lines[:2]]
    assert events == ["first_info", "kept_warning"]
    assert len(lines) == 3 and "now_debug" in lines[2] and not lines[2].startswith("{")
    assert debug_enabled() is True
    configure_logging("info", "json")  # the module's level back to its default


@pytest.mark.usefixtures("structlog_restored")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_secret_inside_a_library_exception_never_reaches_the_log(
    capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """aiohttp.server logs "Error handling request" with exc_info; a token sent with a CR LF
    (a token file saved on Windows) is inside the exception's message and traceback."""
    secret = "tok-" + "9f8e7d6c5b4a" * 3
    register_secrets([secret])
    configure_logging("info", fmt)
    try:
        raise ValueError(f"Invalid header value: b'Bearer {secret}\\r\\n'")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
        get_logger("tests.redaction").exception("handler_failed", detail=f"x{secret}x")
    out = capsys.readouterr().out
    assert "Error handling request" in out and "handler_failed" in out
    assert "ValueError" in out  # the traceback is kept, only the secret is masked
    assert secret not in out
    assert secret[:12] not in out  # not even escaped or cut differently
    configure_logging("info", "json")


def test_urls_in_any_text_lose_user_info_and_query() -> None:
    text = (
        "ClientResponseError: 400, message='Invalid header token', "
        "url='http://127.0.0.1:19511/h/hQ?token=SECRETQUERY123' and "
        "Can not write request body for https://bob:pa55@crm.example.com:8443/x?k=v#frag"
    )
    shown = public_text(text)
    assert "SECRETQUERY123" not in shown and "pa55" not in shown and "bob" not in shown
    assert "url='http://127.0.0.1:19511/h/hQ?***'" in shown
    assert "https://***@crm.example.com:8443/x?***" in shown
    assert public_text("http://[::1") == "http://[::1"  # not a URL it can parse: left alone


@pytest.mark.parametrize(
    "url", ["http://h:1/p?token=PCT%27SECRET", "http://h:1/p?token=AB(CD)EFSECRET",
            "http://h:1/p?a=1&token=QQ%27RRSECRET", "http://h:1/p?t=A+B%20SECRET"],
)  # fmt: skip
def test_a_query_is_masked_whole_however_a_library_prints_it(url: str) -> None:
    """A breaker's trial: aiohttp prints the query percent-decoded (%27 as "'"), and the mask
    stopped at the quote, leaving "SECRET" in the log, dead letters and the admin API."""
    register_secrets(url_secrets(url))
    printed = str(yarl.URL(url, encoded=True))
    for shown in (public_text(f"message='x', url='{printed}'"), public_text(
        f"url={yarl.URL(url).human_repr()}"), public_text(f"{url} failed")):  # fmt: skip
        assert "SECRET" not in shown, shown


@pytest.mark.usefixtures("structlog_restored")
def test_a_missing_event_topic_is_not_an_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    cluster = logging.getLogger("aiokafka.cluster")
    cluster.error("Topic %s not found in cluster metadata", "identity.events")
    cluster.error("Something else broke: %s", "x")
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["event"], e["level"]) for e in lines] == [
        ("Topic identity.events not found in cluster metadata", "warning"),
        ("Something else broke: x", "error"),
    ]


@pytest.mark.usefixtures("structlog_restored")
def test_a_new_partition_without_a_leader_yet_is_not_an_error_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Two of three first starts of a deployment logged this at ERROR: aiokafka resets the
    # offsets of the topics the daemon just created before their leaders serve, and retries.
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    tp = "TopicPartition(topic='d.control', partition=0)"
    errors = (NotLeaderForPartitionError, LeaderNotAvailableError, TopicAuthorizationFailedError)
    for error in errors:
        configure_logging("info", "json")  # anew: a repeat within 30 s would be dropped
        fetcher.error("Failed fetch offsets from %s: %s", 1, error(tp))
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["level"] for e in lines] == ["warning", "warning", "error"]
    assert "NotLeaderForPartitionError" in lines[0]["event"]
