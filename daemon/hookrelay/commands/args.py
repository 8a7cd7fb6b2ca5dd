"""What the subcommands share: argparse value types and raw output."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer ≥ ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from e
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected a number of at least {minimum}, got {value}"
            )
        return value

    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)  # a partition, an offset


_AGO = re.compile(r"([0-9]{1,9})(s|m|h|d)")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def timestamp_ms(text: str) -> int:
    """argparse type: ISO-8601 (``2026-08-21T09:00:00Z`` or a date; UTC when no offset is
    given), or a duration ago (``15m``, ``2h``, ``1d``, ``90s``) → epoch milliseconds."""
    ago = _AGO.fullmatch(text.strip())
    if ago is not None:
        return int((time.time() - int(ago.group(1)) * _UNIT_S[ago.group(2)]) * 1000)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected an ISO-8601 time or a duration ago such as 15m, 2h, 1d; got {text!r}"
        ) from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def record_header(text: str) -> tuple[str, bytes]:
    """argparse type: ``NAME=VALUE`` → a Kafka record header ``(NAME, VALUE as UTF-8)``, such
    as ``traceparent=00-...`` (the W3C trace context a record may carry)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.encode("utf-8")


def write_stdout(data: bytes) -> None:
    """``data`` to stdout as bytes: a body is shown byte for byte, whatever the locale's
    encoding."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
