"""Demo webhook receiver: verifies Logto signatures, logs each delivery, serves counts.

    python deploy/demo/receiver.py --port 8787 --keys-dir deploy/demo/keys --stats-file PATH

Routes:

- ``POST /hooks/{hook_id}`` — checks header ``logto-signature-sha-256`` (lowercase hex
  HMAC-SHA256 of the raw body, keyed with the UTF-8 key; Logto's algorithm from
  ``packages/core/src/utils/sign.ts``) against ``<keys-dir>/<hook_id>.key`` (UTF-8 text, one
  trailing newline stripped). A hook without a key file must arrive unsigned. Answers 200, or
  401 on a missing, wrong or unexpected signature. Logs one line per request to stdout.
- ``GET /stats`` — JSON::

      {"received": N, "verified": N, "unsigned": N, "bad_signature": N, "duplicates": N,
       "by_hook": {"<hook id>": {"received": N, "verified": N, "unsigned": N,
                                 "bad_signature": N}},
       "deliveries": [["<hook id>", "<event>", "<webhook-id>"], ...]}

  ``deliveries`` lists the accepted requests (answered 200) in arrival order; ``event`` and
  ``webhook-id`` are ``null`` when absent. ``duplicates`` counts accepted requests whose
  ``webhook-id`` had already been accepted (retries the receiver saw twice).

Key files are read once at start-up. ``--stats-file`` gets the same JSON after every request
and at exit (written atomically). SIGTERM or SIGINT stops the server cleanly, exit status 0.
Needs only Python 3.11+ and aiohttp, so it runs outside hookrelay's virtualenv too.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

SIGNATURE_HEADER = "logto-signature-sha-256"
LOG = logging.getLogger("demo-receiver")


@dataclass
class Counts:
    """Request tallies, for all hooks or one hook."""

    received: int = 0
    verified: int = 0
    unsigned: int = 0
    bad_signature: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "verified": self.verified,
            "unsigned": self.unsigned,
            "bad_signature": self.bad_signature,
        }


@dataclass
class Stats:
    """Everything ``GET /stats`` reports; mutated only by the request handler."""

    total: Counts = field(default_factory=Counts)
    by_hook: dict[str, Counts] = field(default_factory=dict)
    deliveries: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    seen_webhook_ids: set[str] = field(default_factory=set)
    duplicates: int = 0

    def record(self, hook_id: str, verdict: str) -> None:
        """Count one request; ``verdict`` is ``verified``, ``unsigned`` or ``bad_signature``."""
        for counts in (self.total, self.by_hook.setdefault(hook_id, Counts())):
            counts.received += 1
            setattr(counts, verdict, getattr(counts, verdict) + 1)

    def accept(self, hook_id: str, event: str | None, webhook_id: str | None) -> None:
        """Remember one accepted delivery."""
        if webhook_id is not None:
            if webhook_id in self.seen_webhook_ids:
                self.duplicates += 1
            self.seen_webhook_ids.add(webhook_id)
        self.deliveries.append((hook_id, event, webhook_id))

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.total.as_dict(),
            "duplicates": self.duplicates,
            "by_hook": {hook: counts.as_dict() for hook, counts in sorted(self.by_hook.items())},
            "deliveries": [list(delivery) for delivery in self.deliveries],
        }


def load_keys(keys_dir: Path | None) -> dict[str, str]:
    """Read ``<hook_id>.key`` files: hook id → key text with one trailing newline stripped."""
    if keys_dir is None:
        return {}
    if not keys_dir.is_dir():
        raise SystemExit(f"--keys-dir {keys_dir}: not a directory")
    keys = {}
    for path in sorted(keys_dir.glob("*.key")):
        text = path.read_bytes().decode("utf-8")
        keys[path.stem] = strip_one_newline(text)
    return keys


def strip_one_newline(text: str) -> str:
    """Drop one final ``\\n`` or ``\\r\\n``: editors add it; the key is what comes before."""
    for newline in ("\r\n", "\n"):
        if text.endswith(newline):
            return text[: -len(newline)]
    return text


def check_signature(key: str | None, body: bytes, received: str | None) -> str:
    """Return ``verified``, ``unsigned`` or ``bad_signature`` for one request."""
    if key is None:
        return "unsigned" if received is None else "bad_signature"
    if received is None:
        return "bad_signature"
    expected = hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(received.encode("utf-8"), expected.encode("ascii"))
    return "verified" if ok else "bad_signature"


def event_name(body: bytes) -> str | None:
    """The body's ``event`` member, or ``None`` if the body is not a JSON object with one."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    event = parsed.get("event") if isinstance(parsed, dict) else None
    return event if isinstance(event, str) else None


class DemoReceiver:
    """The aiohttp application: verifies, counts, logs, and writes the stats file."""

    def __init__(self, keys: Mapping[str, str], stats_file: Path | None) -> None:
        self.keys = dict(keys)
        self.stats = Stats()
        self.stats_file = stats_file

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/hooks/{hook_id}", self.handle_hook)
        app.router.add_get("/stats", self.handle_stats)
        return app

    async def handle_hook(self, request: web.Request) -> web.Response:
        hook_id = request.match_info["hook_id"]
        body = await request.read()
        verdict = check_signature(
            self.keys.get(hook_id), body, request.headers.get(SIGNATURE_HEADER)
        )
        event = event_name(body)
        webhook_id = request.headers.get("webhook-id")
        self.stats.record(hook_id, verdict)
        status = 401 if verdict == "bad_signature" else 200
        if status == 200:
            self.stats.accept(hook_id, event, webhook_id)
        LOG.info(
            "%s hook=%s event=%s webhook-id=%s bytes=%d signature=%s",
            status,
            hook_id,
            event,
            webhook_id,
            len(body),
            verdict,
        )
        # Synchronous on purpose: a few hundred bytes per request in a demo; the file then
        # always matches what the receiver has answered so far.
        self.write_stats_file()
        return web.json_response({"ok": status == 200}, status=status)

    async def handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    def write_stats_file(self) -> None:
        if self.stats_file is None:
            return
        tmp = self.stats_file.with_name(self.stats_file.name + ".tmp")
        tmp.write_text(json.dumps(self.stats.as_dict(), ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.stats_file)


async def serve(host: str, port: int, receiver: DemoReceiver) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, finish in-flight requests, exit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    runner = web.AppRunner(receiver.app(), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        LOG.info(
            "listening on http://%s:%d (keys for %d hook(s): %s)",
            host,
            port,
            len(receiver.keys),
            ", ".join(sorted(receiver.keys)) or "none",
        )
        await stop.wait()
        LOG.info("stopping")
    finally:
        await runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        receiver.write_stats_file()
    total = receiver.stats.total
    LOG.info(
        "stopped: received=%d verified=%d unsigned=%d bad_signature=%d",
        total.received,
        total.verified,
        total.unsigned,
        total.bad_signature,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Demo webhook receiver for hookrelay.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8787, help="TCP port (default 8787)")
    parser.add_argument("--keys-dir", type=Path, help="directory of <hook_id>.key files")
    parser.add_argument("--stats-file", type=Path, help="write the /stats JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s.%(msecs)03d receiver %(message)s",
        datefmt="%H:%M:%S",
    )
    receiver = DemoReceiver(load_keys(args.keys_dir), args.stats_file)
    try:
        asyncio.run(serve(args.host, args.port, receiver))
    except OSError as e:
        LOG.error("cannot listen on %s:%d: %s", args.host, args.port, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
