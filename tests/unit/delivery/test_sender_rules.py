"""Outcome classification and Retry-After parsing."""

from __future__ import annotations

import email.utils
import time

import aiohttp
import pytest
from aiohttp import HttpVersion11
from aiohttp.http_parser import RawResponseMessage
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from hookrelay.config import DeliverySettings
from hookrelay.delivery.sender import (
    ALLOW_HINT,
    _failure,
    _hint,
    classify_status,
    parse_retry_after,
)

DEFAULT_RETRYABLE_4XX = DeliverySettings().retry_on_status


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (200, None, False),
        (204, None, False),
        (301, "redirect 301 not followed", False),
        (307, "redirect 307 not followed", False),
        (400, "http 400", False),
        (404, "http 404", False),
        (410, "http 410", False),
        (408, "http 408", True),
        (425, "http 425", True),
        (429, "http 429", True),
        (500, "http 500", True),
        (503, "http 503", True),
    ],
)
def test_status_classes(status: int, error: str | None, retryable: bool) -> None:
    assert classify_status(status, DEFAULT_RETRYABLE_4XX) == (error, retryable)


def test_per_hook_retryable_4xx_override() -> None:
    assert classify_status(409, (409,)) == ("http 409", True)
    assert classify_status(429, (409,)) == ("http 429", False)


def test_retry_after_delta_seconds_is_capped() -> None:
    assert parse_retry_after("120", cap_s=3600) == 120.0
    assert parse_retry_after("999999", cap_s=3600) == 3600.0


def test_retry_after_http_date() -> None:
    now = 1_800_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(header, cap_s=3600, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, cap_s=3600, now=now) == 0.0


@pytest.mark.parametrize(
    "value",
    [None, "", "soon", "-5", "1.5e3", "Mon, 99 Foo 2026", "²", "١٢٣", "\uff11\uff12", "+5",
     "Thu, 01 Jan 99999 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:60 GMT"],
)  # fmt: skip
def test_nonsense_retry_after_falls_back_to_the_schedule(value: str | None) -> None:
    """RFC 9110 §10.2.3: delay-seconds are ASCII digits (``1*DIGIT``); superscripts, other
    scripts' digits and fullwidth digits are not, and a date out of range is no date."""
    assert parse_retry_after(value, cap_s=3600) is None


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_any_retry_after_text_gives_a_wait_within_the_cap_or_none(value: str) -> None:
    wait = parse_retry_after(value, cap_s=3600)
    assert wait is None or 0.0 <= wait <= 3600.0


def test_a_tls_alert_reported_as_a_connection_error_is_called_a_tls_error() -> None:
    # A server that requires a client certificate answers with an alert aiohttp reports as
    # a plain connection error (found by a security trial).
    error = OSError("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    result = _failure(error, time.perf_counter(), 10.0)
    assert result.error is not None and result.error.startswith("tls error: OSError: [SSL:")
    assert result.retryable is True


def test_failure_texts_carry_no_python_object_reprs() -> None:
    error = OSError(
        "Cannot connect to host example.com:443 ssl:<ssl.SSLContext object at 0x7f1f424c2180> "
        "[Connect call failed]"
    )
    result = _failure(error, time.perf_counter(), 10.0)
    assert result.error == (
        "connection error: OSError: Cannot connect to host example.com:443 ssl:verified "
        "[Connect call failed]"
    )


def test_a_hang_up_in_the_middle_of_an_answer_is_said_in_words_not_as_a_parser_repr() -> None:
    headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
    partial = RawResponseMessage(HttpVersion11, 20, "", headers, (), True, None, False, False)
    result = _failure(aiohttp.ServerDisconnectedError(partial), time.perf_counter(), 10.0)
    assert result.error == (
        "connection error: ServerDisconnectedError: Server disconnected in the middle of an answer"
    )
    assert result.retryable is True


def test_each_refusal_gets_a_hint_that_can_actually_help() -> None:
    # An allow-list cannot let in a non-canonical address form, and only an exact entry lets
    # in a metadata endpoint (security trial finding: every refusal suggested an allow-list).
    assert _hint("127.0.0.1 is a loopback address") == ALLOW_HINT
    assert "169.254.169.254/32" in _hint("169.254.169.254 is a cloud metadata endpoint")
    assert "canonical" in _hint("2130706433 is not a canonical IP address")
