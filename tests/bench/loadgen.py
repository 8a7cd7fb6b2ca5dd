"""A raw-socket load generator, used once per run to show the receiver's own ceiling.

Each connection sends one pre-built request, waits for the receiver's fixed answer, and
sends the next (no pipelining: the same request pattern as an HTTP client with keep-alive).
It runs in its own process and is much cheaper per request than aiohttp, so the rate it
reaches is a lower bound of what the receiver can take.
"""

from __future__ import annotations

import asyncio
import time
from multiprocessing.connection import Connection
from typing import cast

from tests.bench.loops import run_loop
from tests.bench.receiver import RESPONSE


class _Client(asyncio.Protocol):
    """One keep-alive connection sending ``request`` back to back until ``stop_at``."""

    def __init__(self, request: bytes, stop_at: float, closed: asyncio.Future[None]) -> None:
        self._request = request
        self._stop_at = stop_at
        self._closed = closed
        self._received = 0
        self._transport: asyncio.Transport | None = None
        self.completed = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        if self._received < len(RESPONSE):
            return
        self._received -= len(RESPONSE)
        self.completed += 1
        assert self._transport is not None
        if time.monotonic() < self._stop_at:
            self._transport.write(self._request)
        else:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)


async def _load(port: int, request: bytes, connections: int, duration_s: float) -> int:
    loop = asyncio.get_running_loop()
    stop_at = time.monotonic() + duration_s
    clients = []
    for _ in range(connections):
        closed: asyncio.Future[None] = loop.create_future()
        _, client = await loop.create_connection(
            lambda closed=closed: _Client(request, stop_at, closed), "127.0.0.1", port
        )
        clients.append((client, closed))
    await asyncio.wait_for(asyncio.gather(*(c for _, c in clients)), duration_s + 10.0)
    return sum(client.completed for client, _ in clients)


def run(port: int, request: bytes, connections: int, duration_s: float, out: Connection) -> None:
    """Process entry point: load the receiver, then send the number of answers to ``out``."""
    out.send(run_loop(_load(port, request, connections, duration_s)))
