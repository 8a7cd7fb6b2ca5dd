"""Benchmark event values and the webhook requests they become.

Every benchmark event is a realistic Logto ``PostSignIn`` event (about 600 bytes, compact
JSON) whose first member is ``"benchSeq":<n>``, so the receiver can tell events apart with a
cheap prefix slice instead of parsing JSON. The daemon keeps the producer's bytes and splices
``"hookId":"<id>"`` in as the last member; ``webhook_body`` does exactly the same, so the
baseline client sends byte-identical, identically signed bodies.
"""

from __future__ import annotations

import hashlib
import hmac

SEQ_PREFIX = b'{"benchSeq":'
"""Every benchmark event value starts with these bytes, then the sequence number."""

_TAIL = (
    b'"event":"PostSignIn","interactionEvent":"SignIn","createdAt":"2026-08-21T09:00:22.825Z",'
    b'"sessionId":"aPUj462aHvO5HrMlccZG_","userAgent":"Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 '
    b"like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.6 Mobile/15E148 "
    b'Safari/604.1","userId":"mnqcacvxkna9","userIp":"2001:db8:85a3::8a2e:370:7334","user":{'
    b'"id":"mnqcacvxkna9","username":"lilei","primaryEmail":"li.lei@example.org",'
    b'"primaryPhone":"8613812345678","name":"Li Lei","avatar":null,"customData":{"plan":'
    b'"enterprise","seats":250},"identities":{},"lastSignInAt":1787302822729,"createdAt":'
    b'1751713225112,"updatedAt":1784710681002,"profile":{},"applicationId":null,'
    b'"isSuspended":false},"application":{"id":"nzcb83axch6e5gow46bxr","type":"Native",'
    b'"name":"Acme iOS","description":"iPhone and iPad app"}}'
)


BENCH_KEYS = 1000
"""Distinct record keys of the backlog (user ids): what an ordered hook keeps in order."""


def event_key(seq: int) -> bytes:
    """The record key of benchmark event ``seq``: one of ``BENCH_KEYS`` user ids, in turn."""
    return b"u%d" % (seq % BENCH_KEYS)


def event_value(seq: int) -> bytes:
    """The Kafka record value of benchmark event number ``seq`` (compact JSON bytes)."""
    return SEQ_PREFIX + str(seq).encode("ascii") + b"," + _TAIL


def parse_seq(body: bytes) -> int:
    """The ``benchSeq`` of a webhook body (cheap prefix slice), or -1 for any other body."""
    if not body.startswith(SEQ_PREFIX):
        return -1
    end = body.find(b",", len(SEQ_PREFIX))
    digits = body[len(SEQ_PREFIX) : end]
    return int(digits) if end > 0 and digits.isdigit() else -1


def webhook_body(value: bytes, hook_id: str) -> bytes:
    """The body hookrelay POSTs for ``value`` to hook ``hook_id`` (hookId spliced in last)."""
    return value[:-1] + b',"hookId":"' + hook_id.encode("ascii") + b'"}'


def signature(signing_key: str, body: bytes) -> str:
    """Logto's ``logto-signature-sha-256``: lowercase hex HMAC-SHA256, key as UTF-8 text."""
    return hmac.new(signing_key.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signing_key(hook_id: str) -> str:
    """The benchmark's signing key for ``hook_id`` (signing is part of the measured work)."""
    return f"bench-signing-key-{hook_id}"
