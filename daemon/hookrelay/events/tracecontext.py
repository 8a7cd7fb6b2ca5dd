"""W3C Trace Context carried from a Kafka record to every webhook request made for it.

A producer that traces its work puts the W3C ``traceparent`` (and optionally ``tracestate``)
header on the record, as OpenTelemetry's Kafka instrumentations do. hookrelay reads them once
per record (``trace_context``) and sends them on with every POST of the event, through
retries (the retry record carries them under the same names), dead letters and ``replay``.
With tracing on (``ops.tracing``), the request carries the attempt span's ``traceparent``
instead, built by OpenTelemetry from this parent.

Parsing follows W3C Trace Context (Recommendation, "Trace Context HTTP Request Headers
Format"):

- ``traceparent`` version ``00`` is exactly ``00-<32 hex trace-id>-<16 hex parent-id>-<2
  hex flags>``, lowercase hex only (``HEXDIGLC``); an all-zero trace-id or parent-id is
  invalid. Surrounding spaces and tabs are optional whitespace and are dropped.
- Version ``ff`` is invalid. A higher version ("Versioning of traceparent") is read by its
  first four fields: at least 55 characters, trace-id and parent-id in place, and the flags
  followed by the end or a dash; what follows is not looked at, and the header is sent on
  downgraded to version ``00`` (the spec's "downgrade the version" mutation), keeping only
  the ``sampled`` flag (the one flag version ``00`` defines).
- Two ``traceparent`` headers make the context invalid (W3C test suite,
  ``test_traceparent_duplicated``): no one can tell which is meant.
- ``tracestate`` is read only with a valid ``traceparent``. Several headers are joined with
  commas (RFC 9110 §5.3); empty members are dropped; a list of more than 32 members, a key or
  value outside the grammar ("tracestate Header Field Values"), or a key given twice drops
  the whole ``tracestate`` and keeps the ``traceparent`` ("failure to parse tracestate MUST
  NOT affect the parsing of traceparent").
- Header names are matched in any case ("Vendors MUST expect the header name in any case").

An invalid header is ignored, never an error: the event is delivered without trace context.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

TRACEPARENT_HEADER: Final = "traceparent"
TRACESTATE_HEADER: Final = "tracestate"
"""Header names, as W3C Trace Context and OpenTelemetry write them (lowercase), on Kafka
records and on HTTP requests alike."""

_V00: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_FUTURE: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?")
_ZERO_TRACE_ID: Final = "0" * 32
_ZERO_PARENT_ID: Final = "0" * 16
_OWS: Final = " \t"
_SAMPLED: Final = 0x01

_MAX_MEMBERS: Final = 32
_MEMBER: Final = re.compile(
    r"(?P<key>[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    r"=(?P<value>[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)
"""One ``tracestate`` list-member: a simple or multi-tenant key (``tenant@system``), ``=``,
and a value of up to 256 printable ASCII characters but ``,`` and ``=``, not ending in a
space."""


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A valid W3C trace context.

    ``traceparent`` is the version-``00`` header value to send (a higher version already
    downgraded); ``tracestate`` the combined, checked ``tracestate`` value, or ``None``.
    """

    traceparent: str
    tracestate: str | None = None

    @property
    def trace_id(self) -> str:
        """The 32 lowercase hex digits of the trace id."""
        return self.traceparent[3:35]

    @property
    def parent_id(self) -> str:
        """The 16 lowercase hex digits of the caller's span id."""
        return self.traceparent[36:52]

    @property
    def flags(self) -> int:
        """The trace-flags byte (bit 0: ``sampled``)."""
        return int(self.traceparent[53:55], 16)

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka record headers (``traceparent``, and ``tracestate`` when there is one)."""
        pairs = [(TRACEPARENT_HEADER, self.traceparent.encode("ascii"))]
        if self.tracestate is not None:
            pairs.append((TRACESTATE_HEADER, self.tracestate.encode("ascii")))
        return pairs


def parse_traceparent(value: str) -> str | None:
    """The version-``00`` form of a ``traceparent`` header value, or ``None`` when it is
    invalid (see the module docstring)."""
    value = value.strip(_OWS)
    if value.startswith("00"):
        match = _V00.fullmatch(value)
        if match is None or not _ids_valid(match.group(1), match.group(2)):
            return None
        return value
    match = _FUTURE.fullmatch(value)
    if match is None or match.group(1) == "ff":
        return None
    version, trace_id, parent_id, flags = match.group(1, 2, 3, 4)
    del version  # unknown fields of a higher version are never looked at, nor kept
    if not _ids_valid(trace_id, parent_id):
        return None
    return f"00-{trace_id}-{parent_id}-{int(flags, 16) & _SAMPLED:02x}"


def _ids_valid(trace_id: str, parent_id: str) -> bool:
    return trace_id != _ZERO_TRACE_ID and parent_id != _ZERO_PARENT_ID


def parse_tracestate(values: Iterable[str]) -> str | None:
    """The combined ``tracestate`` of one or more header values: its members joined with
    ``,`` (empty ones and optional whitespace dropped), or ``None`` when there are none or
    the list is invalid (see the module docstring)."""
    members: list[str] = []
    keys: set[str] = set()
    for value in values:
        for part in value.split(","):
            member = part.strip(_OWS)
            if not member:
                continue
            match = _MEMBER.fullmatch(member)
            if match is None or match.group("key") in keys:
                return None
            keys.add(match.group("key"))
            members.append(member)
    if not members or len(members) > _MAX_MEMBERS:
        return None
    return ",".join(members)


def trace_context(headers: Iterable[tuple[str, bytes | None]]) -> TraceContext | None:
    """The trace context in a Kafka record's headers, or ``None`` when it has no valid
    ``traceparent``. Never raises: a header that is not ASCII, repeated or malformed is
    ignored (see the module docstring)."""
    parents: list[bytes | None] = []
    states: list[bytes | None] = []
    for key, value in headers:
        name = key.lower()
        if name == TRACEPARENT_HEADER:
            parents.append(value)
        elif name == TRACESTATE_HEADER:
            states.append(value)
    if len(parents) != 1:
        return None
    traceparent = parse_traceparent(_ascii(parents[0]))
    if traceparent is None:
        return None
    tracestate = parse_tracestate(_ascii(value) for value in states) if states else None
    return TraceContext(traceparent, tracestate)


def _ascii(value: bytes | None) -> str:
    """``value`` as text, or ``""`` (invalid for every parser here) when it is not ASCII."""
    if not value:
        return ""
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return ""
