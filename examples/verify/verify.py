"""Verify hookrelay's webhooks in Python: a receiver using the standard library only.

Both schemes hookrelay signs with are checked:

* Logto's ``logto-signature-sha-256``: lowercase hex HMAC-SHA256 of the raw body, keyed with
  the signing key's UTF-8 text (exactly as for Logto's own webhooks).
* Standard Webhooks (https://www.standardwebhooks.com/): ``webhook-signature`` holds one or
  more ``v1,<base64>`` signatures (several during a key rotation), each an HMAC-SHA256 of
  ``<webhook-id>.<webhook-timestamp>.<raw body>`` keyed with the base64-decoded part of the
  ``whsec_`` secret; ``webhook-timestamp`` must be within 5 minutes of now (replay window).

Run it::

    LOGTO_SIGNING_KEY=... WEBHOOK_SECRET=whsec_... PORT=8000 python3 verify.py

Set one variable or both (both: a request must pass both checks). It answers 204 to a
verified POST and 401 with the reason otherwise. Always verify the raw bytes as received:
re-serialised JSON is not the body that was signed. Use ``webhook-id`` to drop duplicates
(it is the same for every retry of one delivery). With pip, ``standardwebhooks``'s
``Webhook(secret).verify(body, headers)`` does the Standard Webhooks part for you.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_S = 5 * 60


class VerificationError(Exception):
    """The request is not authentic (the message says why; it never contains a key)."""


def verify_logto(signing_key: str, body: bytes, headers: Mapping[str, str]) -> None:
    """Raise ``VerificationError`` unless ``logto-signature-sha-256`` signs ``body``."""
    received = headers.get("logto-signature-sha-256", "")
    expected = hmac.new(signing_key.encode("utf-8"), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), received.strip().lower().encode()):
        raise VerificationError("logto-signature-sha-256 does not match")


def verify_standard_webhooks(
    secret: str, body: bytes, headers: Mapping[str, str], now_s: float | None = None
) -> None:
    """Raise ``VerificationError`` unless one ``v1`` signature of ``webhook-signature`` signs
    ``<webhook-id>.<webhook-timestamp>.<body>`` with ``secret`` and the timestamp is fresh."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        raise VerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    if not timestamp.isdigit():
        raise VerificationError("webhook-timestamp is not integer seconds")
    now_s = time.time() if now_s is None else now_s
    if abs(now_s - int(timestamp)) > TOLERANCE_S:
        raise VerificationError("webhook-timestamp is outside the 5 minute tolerance")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    except binascii.Error:
        raise VerificationError("the secret is not base64") from None
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for versioned in signatures.split(" "):
        version, _, signature = versioned.partition(",")
        if version == "v1" and hmac.compare_digest(expected, signature.encode()):
            return
    raise VerificationError("no webhook-signature matches")


class Handler(BaseHTTPRequestHandler):
    """POST → 204 when verified, 401 with the reason otherwise."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            if LOGTO_SIGNING_KEY:
                verify_logto(LOGTO_SIGNING_KEY, body, headers)
            if WEBHOOK_SECRET:
                verify_standard_webhooks(WEBHOOK_SECRET, body, headers)
        except VerificationError as e:
            self._answer(401, str(e))
            return
        # Authentic: deduplicate on headers["webhook-id"], then handle json.loads(body).
        self._answer(204, "")

    def _answer(self, status: int, reason: str) -> None:
        payload = reason.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: no request lines (with their headers) on stderr


LOGTO_SIGNING_KEY = os.environ.get("LOGTO_SIGNING_KEY", "")
WEBHOOK_SECRET = os.environ.get("WEBHOOK_SECRET", "")

if __name__ == "__main__":
    if not (LOGTO_SIGNING_KEY or WEBHOOK_SECRET):
        raise SystemExit("set LOGTO_SIGNING_KEY and/or WEBHOOK_SECRET")
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8000"))), Handler)
    print(f"listening on http://127.0.0.1:{server.server_port}/", flush=True)
    server.serve_forever()
