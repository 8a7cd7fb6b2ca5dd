"""W3C Trace Context parsing: what a record's traceparent/tracestate headers become.

Cases follow the W3C Trace Context spec ("Trace Context HTTP Request Headers Format") and
its test suite (test/test.py of w3c/trace-context): a valid header is kept, an invalid one
ignored, a future version read by its first four fields and sent on as version 00.
"""

from __future__ import annotations

import pytest

from hookrelay.events.tracecontext import (
    TraceContext,
    parse_traceparent,
    parse_tracestate,
    trace_context,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"


def headers(*pairs: tuple[str, str | bytes | None]) -> list[tuple[str, bytes | None]]:
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs]


def test_a_valid_version_00_traceparent_is_kept_as_it_is() -> None:
    assert parse_traceparent(VALID) == VALID
    assert parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-00") == f"00-{TRACE_ID}-{PARENT_ID}-00"
    assert parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-ff") == f"00-{TRACE_ID}-{PARENT_ID}-ff"


@pytest.mark.parametrize("padded", [f" {VALID}", f"\t{VALID}", f"{VALID} ", f"\t {VALID} \t"])
def test_optional_whitespace_around_the_traceparent_is_dropped(padded: str) -> None:
    assert parse_traceparent(padded) == VALID


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00",
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace-id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent-id
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # HEXDIGLC: lowercase only
        f"00-{TRACE_ID}-{PARENT_ID.upper()}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-0A",
        f"00-{TRACE_ID}-{PARENT_ID}-01.",  # version 00 is exactly 55 characters
        f"00-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like",
        f"00-{TRACE_ID}1-{PARENT_ID}-01",
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}1-01",
        f"00-{TRACE_ID}-{PARENT_ID}-001",
        f"00-{TRACE_ID}-{PARENT_ID}-1",
        f"00-.{TRACE_ID[1:]}-{PARENT_ID}-01",
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff is forbidden
        f".0-{TRACE_ID}-{PARENT_ID}-01",
        f"000-{TRACE_ID}-{PARENT_ID}-01",
        f"0-{TRACE_ID}-{PARENT_ID}-01",
        f"0A-{TRACE_ID}-{PARENT_ID}-01",
        f"cc-{TRACE_ID}-{PARENT_ID}-01.what-the-future-will-be-like",
        f"cc-{TRACE_ID}-{PARENT_ID}",  # shorter than 55 characters
        f"00-{TRACE_ID}-{PARENT_ID}-01\r\nx-injected: 1",
    ],
)
def test_an_invalid_traceparent_is_ignored(value: str) -> None:
    assert parse_traceparent(value) is None
    assert trace_context(headers(("traceparent", value))) is None


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        (f"cc-{TRACE_ID}-{PARENT_ID}-01", f"00-{TRACE_ID}-{PARENT_ID}-01"),
        (f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like", VALID),
        (f"01-{TRACE_ID}-{PARENT_ID}-03-extra", f"00-{TRACE_ID}-{PARENT_ID}-01"),
        (f"01-{TRACE_ID}-{PARENT_ID}-fe", f"00-{TRACE_ID}-{PARENT_ID}-00"),
    ],
)
def test_a_future_version_is_read_by_its_known_fields_and_downgraded_to_00(
    value: str, sent: str
) -> None:
    assert parse_traceparent(value) == sent


def test_the_context_exposes_trace_id_parent_id_and_flags() -> None:
    context = TraceContext(VALID, "rojo=00f067aa0ba902b7")

    assert (context.trace_id, context.parent_id, context.flags) == (TRACE_ID, PARENT_ID, 1)
    assert context.headers() == [
        ("traceparent", VALID.encode()),
        ("tracestate", b"rojo=00f067aa0ba902b7"),
    ]


def test_header_names_are_matched_in_any_case() -> None:
    found = trace_context(headers(("TraceParent", VALID), ("TRACESTATE", "foo=1")))

    assert found == TraceContext(VALID, "foo=1")


def test_a_record_without_trace_headers_has_no_context() -> None:
    assert trace_context([]) is None
    assert trace_context(headers(("content-type", "application/json"))) is None
    assert trace_context(headers(("trace-parent", VALID), ("tracestate", "foo=1"))) is None


def test_two_traceparent_headers_make_the_context_invalid() -> None:
    other = f"00-{'1' * 32}-{PARENT_ID}-01"

    assert trace_context(headers(("traceparent", VALID), ("traceparent", other))) is None


@pytest.mark.parametrize("value", [None, b"", b"\xff\xfe", "00-é".encode()])
def test_a_traceparent_that_is_empty_or_not_ascii_is_ignored(value: bytes | None) -> None:
    assert trace_context([("traceparent", value)]) is None


def test_tracestate_headers_are_combined_in_order_without_empty_members() -> None:
    found = trace_context(
        headers(
            ("traceparent", VALID), ("tracestate", "foo=1,bar=2"), ("tracestate", ""),
            ("tracestate", " rojo=1 \t, ,congo=2"), ("tracestate", "baz=3"),
        )
    )  # fmt: skip

    assert found == TraceContext(VALID, "foo=1,bar=2,rojo=1,congo=2,baz=3")


def test_an_empty_tracestate_is_dropped() -> None:
    assert trace_context(headers(("traceparent", VALID), ("tracestate", ""))) == TraceContext(VALID)


@pytest.mark.parametrize(
    "value",
    [
        "foo=1,foo=2",  # a key given twice
        "foo =1",
        "FOO=1",
        "foo.bar=1",
        "foo@=1,bar=2",
        "@foo=1,bar=2",
        "foo@@bar=1,bar=2",
        "foo@bar@baz=1,bar=2",
        "foo=1=2",
        "foo=a,b",  # "b" alone is not a member
        "foo=",
        "foo=\x7f",
        ",".join(f"k{i}=v" for i in range(33)),  # more than 32 members
    ],
)
def test_an_invalid_tracestate_is_dropped_and_the_traceparent_kept(value: str) -> None:
    assert parse_tracestate([value]) is None
    found = trace_context(headers(("traceparent", VALID), ("tracestate", value)))
    assert found == TraceContext(VALID)


def test_a_tracestate_of_every_allowed_character_is_kept() -> None:
    key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
    value = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",=")
    members = [f"{key}={value}", f"{key}@a-z0-9_-*/={value}", "1tenant@vendor=x"]

    assert parse_tracestate([",".join(members)]) == ",".join(members)
    assert parse_tracestate([",".join(f"k{i}=v" for i in range(32))]) is not None


def test_a_tracestate_without_a_valid_traceparent_is_never_read() -> None:
    assert trace_context(headers(("tracestate", "foo=1"))) is None
    assert trace_context(headers(("traceparent", "garbage"), ("tracestate", "foo=1"))) is None
