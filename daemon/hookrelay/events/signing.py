"""Build and sign webhook bodies exactly as Logto does.

- Body: the event object with ``"hookId":"<id>"`` appended as the last member (Logto's
  ``createHookRequest`` spreads the payload then sets ``hookId``), spliced onto the
  producer's bytes instead of re-serialising: O(1) and byte-faithful.
- ``logto-signature-sha-256``: lowercase hex HMAC-SHA256 of the body bytes, keyed with the
  signing key's UTF-8 bytes (Logto's ``generateSignature``: ``createHmac('sha256', key)``
  with the key string, ``.digest('hex')``).
- ``webhook-id``: a delivery id stable across retries and redeliveries of the same
  (record, hook), so receivers can deduplicate.
- Standard Webhooks (https://www.standardwebhooks.com/, spec v1), optional per hook:
  ``webhook-timestamp`` (integer Unix seconds) and ``webhook-signature``, one
  ``v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">`` per active key,
  space-separated, so receivers holding either the old or the new key accept a request during
  a key rotation. The HMAC key is the base64-decoded part of a ``whsec_<base64>`` secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Final

LOGTO_SIGNATURE_HEADER: Final = "logto-signature-sha-256"
DELIVERY_ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
"""Standard Webhooks: the Unix time in whole seconds at which the request was signed."""
SIGNATURE_HEADER: Final = "webhook-signature"
"""Standard Webhooks: space-separated ``v1,<base64>`` signatures, one per active key."""

SECRET_PREFIX: Final = "whsec_"
"""Prefix of a Standard Webhooks symmetric secret (the rest is base64)."""
SECRET_MIN_BYTES: Final = 24
SECRET_MAX_BYTES: Final = 64
"""The spec's bounds for a symmetric secret: "between 24 bytes (192 bits) and 64 bytes
(512 bits)" of randomness, decoded."""
_BASE64: Final = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def hook_id_member(hook_id: str) -> bytes:
    """The bytes ``"hookId":"<id>"}`` that close a body for ``hook_id``.

    Hook ids are 1-21 chars of ``[A-Za-z0-9_-]`` (validated by config), so no JSON escaping
    is needed.
    """
    return b'"hookId":"' + hook_id.encode("ascii") + b'"}'


def splice_hook_id(body_head: bytes, empty: bool, member: bytes) -> bytes:
    """Return the full body: ``body_head`` (object bytes without ``}``) plus ``member``.

    ``empty`` tells whether the object had no member before (then no comma is written).
    """
    if empty:
        return body_head + member
    return body_head + b"," + member


class Signer:
    """HMAC-SHA256 signer for one signing key, with the keyed state precomputed.

    ``sign(body) -> str``: 64 lowercase hex chars, Logto's ``logto-signature-sha-256``.
    """

    __slots__ = ("_keyed",)

    def __init__(self, signing_key: str) -> None:
        # The key is used as UTF-8 text, never hex- or base64-decoded: Logto passes the
        # string straight to createHmac.
        self._keyed = hmac.new(signing_key.encode("utf-8"), digestmod=hashlib.sha256)

    def sign(self, body: bytes) -> str:
        """Lowercase hex HMAC-SHA256 of ``body``."""
        mac = self._keyed.copy()
        mac.update(body)
        return mac.hexdigest()


def logto_signature(signing_key: str, body: bytes) -> str:
    """One-shot form of ``Signer(signing_key).sign(body)``."""
    return Signer(signing_key).sign(body)


def verify_logto_signature(signing_key: str | Signer, body: bytes, header_value: str) -> bool:
    """Constant-time check of a received ``logto-signature-sha-256`` header, with a key or
    its ``Signer`` (kept by a caller that checks many bodies). Compared as bytes:
    ``hmac.compare_digest`` raises ``TypeError`` for text holding anything but ASCII, which a
    hostile header may."""
    signer = signing_key if isinstance(signing_key, Signer) else Signer(signing_key)
    given = header_value.strip().lower().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(signer.sign(body).encode("ascii"), given)


def delivery_id(topic: str, partition: int, offset: int, hook_id: str) -> str:
    """Stable ``webhook-id`` for (record, hook): ``msg_`` + 22 url-safe base64 chars.

    Derived from the record's Kafka coordinates and the hook id, so every retry and every
    redelivery after a crash or rebalance carries the same id.
    """
    digest = hashlib.sha256(f"{topic}\x00{partition}\x00{offset}\x00{hook_id}".encode()).digest()
    return "msg_" + base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key (24-64 bytes) of a Standard Webhooks secret ``whsec_<base64>``.

    Like the reference libraries (the ``standardwebhooks`` package's ``Webhook``), the
    ``whsec_`` prefix is optional and padding may be left out, so a receiver given the very
    same text derives the very same key. Decoding is strict where the reference one is lenient
    (it silently drops characters outside the base64 alphabet): a secret with such characters
    is refused rather than signed with a key the receiver might not derive.

    Raises ``ValueError`` with a message that never contains the secret.
    """
    text = secret.removeprefix(SECRET_PREFIX)
    if _BASE64.fullmatch(text) is None:
        raise ValueError(
            "expected a Standard Webhooks secret: whsec_ followed by base64 "
            "(A-Z a-z 0-9 + /, optional = padding)"
        )
    try:
        key = base64.b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4), validate=True)
    except binascii.Error:
        raise ValueError("expected a Standard Webhooks secret whose base64 decodes") from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise ValueError(
            f"expected a Standard Webhooks secret of {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} "
            f"random bytes (it decodes to {len(key)}), e.g. "
            '"whsec_$(openssl rand -base64 32)"'
        )
    return key


class StandardWebhooksSigner:
    """Standard Webhooks signer for one or more keys (decoded bytes), keyed state precomputed.

    ``sign(webhook_id, timestamp_s, body) -> str``: ``v1,<base64>`` for each key, in key order,
    joined by single spaces (the spec's ``webhook-signature`` for several keys). The signed
    content is ``<webhook_id>.<timestamp_s>.<body>``.
    """

    __slots__ = ("_keyed",)

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("expected at least one key")
        self._keyed = tuple(hmac.new(key, digestmod=hashlib.sha256) for key in keys)

    def sign(self, webhook_id: str, timestamp_s: int, body: bytes) -> str:
        """The ``webhook-signature`` value for ``body`` sent as ``webhook_id`` at
        ``timestamp_s`` (integer Unix seconds, the same value sent as ``webhook-timestamp``)."""
        prefix = f"{webhook_id}.{timestamp_s}.".encode()
        signatures = []
        for keyed in self._keyed:
            mac = keyed.copy()
            mac.update(prefix)
            mac.update(body)
            signatures.append("v1," + base64.b64encode(mac.digest()).decode("ascii"))
        return " ".join(signatures)


def standard_webhooks_signature(
    secrets: Sequence[str], webhook_id: str, timestamp_s: int, body: bytes
) -> str:
    """One-shot form of ``StandardWebhooksSigner`` for ``whsec_`` secrets (see
    :func:`standard_webhooks_key`; raises its ``ValueError``)."""
    keys = [standard_webhooks_key(secret) for secret in secrets]
    return StandardWebhooksSigner(keys).sign(webhook_id, timestamp_s, body)
