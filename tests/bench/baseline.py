"""The baseline: a bare aiohttp client POSTing pre-signed bodies, no Kafka, no hookrelay.

It runs in its own process, with uvloop when installed (as the daemon does), and mirrors the
daemon's client settings: one ``ClientSession`` with a ``TCPConnector`` (same connection
limit), no automatic headers or decompression, redirects not followed, the answer read up to
the same cap. ``concurrency`` workers share one list of requests, each sent in turn; the
requests carry the same bytes and headers the daemon would send (spliced ``hookId``,
``logto-signature-sha-256``, ``webhook-id``), all built and signed before the clock starts.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from multiprocessing.connection import Connection

import aiohttp

from tests.bench.loops import run_loop

MAX_CONNECTIONS = 512
"""The daemon's default ``http.max_connections``."""
MAX_RESPONSE_BYTES = 65536
"""The daemon's default ``http.max_response_bytes``."""


@dataclass(frozen=True)
class Request:
    """One pre-built POST: absolute URL, body bytes and header pairs."""

    url: str
    body: bytes
    headers: tuple[tuple[str, str], ...]


async def _worker(
    session: aiohttp.ClientSession, todo: itertools.count[int], requests: list[Request], n: int
) -> int:
    """Send requests ``next(todo) % len(requests)`` until ``n`` were taken; return failures."""
    failures = 0
    while (index := next(todo)) < n:
        request = requests[index % len(requests)]
        async with session.post(
            request.url, data=request.body, headers=request.headers, allow_redirects=False
        ) as response:
            await response.content.read(MAX_RESPONSE_BYTES)
            failures += not 200 <= response.status < 300
    return failures


async def _send_all(requests: list[Request], n: int, concurrency: int) -> int:
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=0)
    async with aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
    ) as session:
        todo = itertools.count()
        workers = (_worker(session, todo, requests, n) for _ in range(concurrency))
        return sum(await asyncio.gather(*workers))


def run(requests: list[Request], n: int, concurrency: int, out: Connection) -> None:
    """Process entry point: wait for "go", send ``n`` requests, report failures to ``out``."""
    out.send("ready")
    out.recv()
    out.send(run_loop(_send_all(requests, n, concurrency)))
