"""Hostile Kafka record values for the decoder fuzz test and the hostile-input daemon test.

Two sources, both deterministic:

- hypothesis strategies (``records()``): JSON objects assembled from byte fragments, so that
  what a JSON library would refuse to write can be written anyway: numbers beyond 64 bits and
  beyond a double (``1e400``), lone surrogates (escaped ``\\ud800`` and raw ``ED A0 80``),
  invalid UTF-8, nesting deeper than orjson's limits (1024 levels to parse, 255 to write),
  oversized strings, ``event``/``createdAt``/``hookId`` members of every JSON type, duplicate
  keys, escaped key spellings, odd whitespace, and truncated or arbitrary bytes;
- ``adversarial_corpus()``: a fixed list built from the same fragments with a seeded
  ``random.Random``, for a test that needs a known set of records rather than examples.
"""

from __future__ import annotations

import json
import random
from typing import Final

from hypothesis import strategies as st

VALID_EVENT: Final = b'"User.Created"'
VALID_CREATED_AT: Final = b'"2026-08-21T09:15:42.123Z"'


def nested(depth: int, *, objects: bool = False) -> bytes:
    """A value nested ``depth`` levels deep: ``[[[…]]]`` or ``{"a":{"a":…}}``."""
    if objects:
        return b'{"a":' * depth + b"0" + b"}" * depth
    return b"[" * depth + b"]" * depth


HOSTILE_VALUES: Final[tuple[bytes, ...]] = (
    # numbers: beyond 64 bits, beyond a double, negative zero, long fractions, exponents
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1" + b"0" * 400,
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"-0",
    b"0.1000000000000000055511151231257827021181583404541015625",
    b"1.50",
    b"1E+2",
    # not JSON numbers
    b"NaN",
    b"Infinity",
    b"01",
    b"+1",
    b"0x10",
    # strings: lone surrogates escaped and raw, invalid UTF-8, controls, escapes
    b'"\\ud800"',
    b'"\\udc00x"',
    b'"\\ud83d\\ude00"',
    b'"\xed\xa0\x80"',
    b'"\xff\xfe"',
    b'"\xc3\x28"',
    b'"\xf4\x90\x80\x80"',
    b'"\x00"',
    b'"a\nb"',
    b'"\\u0000"',
    b'"}\\"{,]["',
    b'"hookId"',
    b'""',
    # other types
    b"null",
    b"true",
    b"false",
    b"[]",
    b"{}",
    b'{"hookId":"inner","event":"Role.Created"}',
    b'["User.Created"]',
    # nesting around orjson's limits (254/255 to write, 1024 to parse)
    nested(254),
    nested(256),
    nested(1023, objects=True),
    nested(1024),
    nested(1025),
    nested(5000),
    # large values
    b'"' + b"x" * 70_000 + b'"',
    b"[" + b",".join([b"1"] * 5000) + b"]",
)
"""JSON value fragments (some deliberately not JSON) placed as members of event objects."""

_CREATED_AT_TEXTS: Final = (
    b'"2026-08-21T09:15:42.123Z"',
    b'"2026-08-21"',
    b'"2026-13-01T00:00:00Z"',
    b'"yesterday"',
    b'"2026-08-21T09:15:42.123+25:00"',
    b"1755767742123",
)

_KEYS: Final = (
    b'"event"',
    b'"createdAt"',
    b'"hookId"',
    b'"hook\\u0049d"',
    b'"data"',
    b'"\\ud800"',
    b'"\xed\xa0\x80"',
    b'""',
    b'"ev\\u0065nt"',
)

_SPACE: Final = (b"", b" ", b"\n", b"\t", b"\r\n  ")


def json_values() -> st.SearchStrategy[bytes]:
    """Well-formed JSON of every type (Python's ``json``, so integers of any size and
    non-ASCII text written raw or escaped), nested a few levels."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**80), max_value=2**80)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20)
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )
    return st.builds(
        lambda value, ascii_only: json.dumps(value, ensure_ascii=ascii_only).encode("utf-8"),
        values,
        st.booleans(),
    )


def value_fragments() -> st.SearchStrategy[bytes]:
    """A member value: well-formed JSON, a hostile fragment, or a few arbitrary bytes."""
    return st.one_of(
        json_values(), st.sampled_from(HOSTILE_VALUES), st.binary(min_size=1, max_size=12)
    )


@st.composite
def event_objects(draw: st.DrawFn) -> bytes:
    """A JSON object (or something close to one) whose ``event``, ``createdAt`` and
    ``hookId`` members are often valid and often anything else, with other members mixed in."""
    members: list[tuple[bytes, bytes]] = []
    if draw(st.integers(0, 9)) > 0:
        event = VALID_EVENT if draw(st.booleans()) else draw(value_fragments())
        members.append((b'"event"', event))
    if draw(st.integers(0, 9)) > 0:
        created_at = draw(st.sampled_from(_CREATED_AT_TEXTS) | value_fragments())
        members.append((b'"createdAt"', VALID_CREATED_AT if draw(st.booleans()) else created_at))
    others = draw(
        st.lists(st.tuples(st.sampled_from(_KEYS) | json_keys(), value_fragments()), max_size=4)
    )
    members.extend(others)
    members = draw(st.permutations(members))
    space = draw(st.sampled_from(_SPACE))
    inner = b",".join(space + key + space + b":" + space + value for key, value in members)
    text = space + b"{" + inner + space + b"}" + space
    if draw(st.integers(0, 19)) == 0:  # now and then a record cut short
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    return text


def json_keys() -> st.SearchStrategy[bytes]:
    return st.text(max_size=8).map(lambda key: json.dumps(key).encode("utf-8"))


def records() -> st.SearchStrategy[bytes]:
    """A Kafka record value: mostly event-like objects, sometimes any bytes or any JSON."""
    return st.one_of(event_objects(), event_objects(), st.binary(max_size=256), json_values())


def event_record(members: dict[bytes, bytes]) -> bytes:
    """A compact object with a valid ``event`` and ``createdAt`` unless ``members`` overrides
    them; values are byte fragments written as they are."""
    merged = {b'"event"': VALID_EVENT, b'"createdAt"': VALID_CREATED_AT, **members}
    return b"{" + b",".join(key + b":" + value for key, value in merged.items()) + b"}"


def adversarial_corpus(seed: int = 6) -> list[bytes]:
    """A fixed list of about 300 hostile record values: every hostile fragment as ``event``,
    as ``createdAt``, as ``hookId`` and as a data member; escaped and duplicated ``hookId``
    keys; every hostile fragment as the whole record; truncated valid events; and arbitrary
    byte strings from ``random.Random(seed)``."""
    rng = random.Random(seed)
    corpus: list[bytes] = []
    for fragment in HOSTILE_VALUES:
        corpus += [
            event_record({b'"event"': fragment}),
            event_record({b'"createdAt"': fragment}),
            event_record({b'"hookId"': fragment}),
            event_record({b'"data"': fragment}),
            fragment,
        ]
    corpus += [
        b'{"hook\\u0049d":"spoofed","event":"User.Created","hookId":1,'
        b'"createdAt":"2026-08-21T09:15:42.123Z","hookId":[{"}":"]"}]}',
        b' \r\n{ "event" : "User.Created" , "createdAt" : "2026-08-21T09:15:42.123Z" } \n',
        b"",
        b"{}",
        b"\xef\xbb\xbf" + event_record({}),  # a UTF-8 byte order mark
    ]
    valid = event_record({b'"data"': b'{"id":"u1","name":"Zo\\u00eb"}'})
    corpus += [valid[: rng.randrange(1, len(valid))] for _ in range(20)]
    corpus += [rng.randbytes(rng.randrange(1, 200)) for _ in range(40)]
    return corpus
