"""Signing and body building match Logto byte for byte."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from hookrelay.events.signing import (
    Signer,
    delivery_id,
    hook_id_member,
    logto_signature,
    splice_hook_id,
    verify_logto_signature,
)


@pytest.mark.parametrize(
    ("key", "body", "expected"),
    [
        # Logto's own test vectors (packages/core/src/libraries/hook/utils.test.ts).
        ("foo", b'{"bar":"bar","foo":"foo"}', "436958f1dbfefab37712fb3927760490fbf7757da8c0b2306ee7b485f0360eee"),  # noqa: E501
        ("foo", b"{}", "c76356efa19d219d1d7e08ccb20b1d26db53b143156f406c99dcb8e0876d6c55"),
    ],
)  # fmt: skip
def test_logto_signature_test_vectors_reproduce(key: str, body: bytes, expected: str) -> None:
    assert logto_signature(key, body) == expected
    assert Signer(key).sign(body) == expected


def test_signer_reuses_keyed_state_without_mixing_messages() -> None:
    signer = Signer("k")
    first = signer.sign(b"a")
    assert signer.sign(b"b") == hmac.new(b"k", b"b", hashlib.sha256).hexdigest()
    assert signer.sign(b"a") == first


def test_signing_key_is_used_as_utf8_text_not_decoded() -> None:
    key = "c2VjcmV0"  # looks like base64; Logto still uses the text itself
    assert logto_signature(key, b"{}") == hmac.new(key.encode(), b"{}", hashlib.sha256).hexdigest()
    assert (
        logto_signature("clé", b"{}") == hmac.new("clé".encode(), b"{}", hashlib.sha256).hexdigest()
    )


def test_verify_accepts_uppercase_hex_and_rejects_other_bodies() -> None:
    signature = logto_signature("foo", b"{}")
    assert verify_logto_signature("foo", b"{}", signature.upper())
    assert not verify_logto_signature("foo", b"{ }", signature)
    # A hostile header holding non-ASCII text is a mismatch, not a TypeError.
    assert not verify_logto_signature("foo", b"{}", signature[:-1] + "é")
    assert not verify_logto_signature("foo", b"{}", "\udcff" * 64)


def test_hook_id_is_spliced_as_the_last_member() -> None:
    body = splice_hook_id(b'{"event":"User.Created","n":1.50', False, hook_id_member("crm"))
    assert body == b'{"event":"User.Created","n":1.50,"hookId":"crm"}'
    assert list(orjson.loads(body)) == ["event", "n", "hookId"]


def test_hook_id_in_an_empty_object_has_no_comma() -> None:
    assert splice_hook_id(b"{", True, hook_id_member("a")) == b'{"hookId":"a"}'


def test_delivery_id_is_stable_per_record_and_hook() -> None:
    first = delivery_id("identity.events", 2, 41, "crm")
    assert first == delivery_id("identity.events", 2, 41, "crm")
    assert first.startswith("msg_") and len(first) == 26
    others = {
        delivery_id("identity.events", 2, 42, "crm"),
        delivery_id("identity.events", 1, 41, "crm"),
        delivery_id("identity.events", 2, 41, "audit"),
        delivery_id("other", 2, 41, "crm"),
    }
    assert first not in others and len(others) == 4
