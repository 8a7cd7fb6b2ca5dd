"""Log hygiene: secrets are masked, library noise is rate-limited."""

from __future__ import annotations

import logging

from hookrelay.logs import RepeatFilter, redact_secrets, register_secrets


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
