"""The ingest endpoint's bench (issue 14): ``hookrelay ingest`` against a bare aiohttp server
that only answers 204, driven by the same client process.

- **Requests/s**: ``connections`` keep-alive connections POST Logto-style signed bodies back
  to back for ``ingest_s``; the rate counts 204s after the first 10 % of the run. The bare
  server does no Kafka write, no signature check and no parsing: it is the ceiling of an
  aiohttp server on this machine with this client.
- **Added ack latency**: an open-loop client offers half of the ingest process's measured
  rate, to the ingest process and then to the bare server; the added latency at each
  percentile is the ingest figure minus the bare one (what the signature check, the decoder
  and the broker's acknowledgement add).

Both servers and the client run in processes of their own (uvloop when installed), as the
daemon bench runs its receiver and baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from multiprocessing.connection import Connection
from typing import Any, Final

import aiohttp
from aiohttp import web

from tests.bench.events import event_value, signature
from tests.bench.loops import run_loop
from tests.bench.stats import latency_summary

PATH: Final = "/logto/bench"
SIGNING_KEY: Final = "bench-ingest-source-signing-key"
DISTINCT_BODIES: Final = 1000
WARM_UP_FRACTION: Final = 0.1


def bodies() -> list[tuple[bytes, str]]:
    """Logto bodies (the event with ``hookId`` last) and their signatures."""
    made = []
    for seq in range(DISTINCT_BODIES):
        body = event_value(seq)[:-1] + b',"hookId":"benchLogtoHook"}'
        made.append((body, signature(SIGNING_KEY, body)))
    return made


# -- the bare server ---------------------------------------------------------------------


async def _serve_bare(port: int, out: Connection) -> None:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post(PATH, answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    out.send("ready")
    while not out.poll():
        await asyncio.sleep(0.1)
    await runner.cleanup()


def bare_server(port: int, out: Connection) -> None:
    """Process entry point: serve ``POST PATH`` → 204 on ``port`` until ``out`` says stop."""
    run_loop(_serve_bare(port, out))


# -- the client --------------------------------------------------------------------------


class _Load:
    def __init__(self, url: str, connections: int) -> None:
        self.url = url
        self.connections = connections
        self.bodies = bodies()
        self.done: list[tuple[float, float]] = []  # (answered at, latency s) of each 204
        self.other: dict[int, int] = {}
        self._next = 0

    async def post(self, session: Any) -> None:
        body, signed = self.bodies[self._next % len(self.bodies)]
        self._next += 1
        headers = {"Content-Type": "application/json", "logto-signature-sha-256": signed}
        started = time.perf_counter()
        async with session.post(self.url, data=body, headers=headers) as answer:
            await answer.read()
            status = answer.status
        ended = time.perf_counter()
        if status == 204:
            self.done.append((ended, ended - started))
        else:
            self.other[status] = self.other.get(status, 0) + 1

    async def closed_loop(self, session: Any, duration_s: float) -> None:
        stop_at = time.perf_counter() + duration_s

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                await self.post(session)

        await asyncio.gather(*(worker() for _ in range(self.connections)))

    async def open_loop(self, session: Any, duration_s: float, rate: float) -> None:
        """Start one request every 1/rate s (at most ``connections`` in flight)."""
        limit = asyncio.Semaphore(self.connections)
        interval = 1.0 / rate
        start = time.perf_counter()
        tasks: set[asyncio.Task[None]] = set()

        async def one() -> None:
            async with limit:
                await self.post(session)

        n = 0
        while (due := start + n * interval) < start + duration_s:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks)

    def figures(self, duration_s: float) -> dict[str, Any]:
        if not self.done:
            return {"requests_per_s": 0.0, "other_statuses": self.other}
        first = self.done[0][0]
        kept = [(t, lat) for t, lat in self.done if t >= first + duration_s * WARM_UP_FRACTION]
        window = kept[-1][0] - kept[0][0] if len(kept) > 1 else 0.0
        return {
            "requests_per_s": round(len(kept) / window, 1) if window else 0.0,
            "answered_204": len(self.done),
            "other_statuses": self.other,
            "latency": latency_summary([lat for _, lat in kept]),
        }


async def _drive(url: str, connections: int, duration_s: float, rate: float | None) -> Any:
    load = _Load(url, connections)
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        with contextlib.suppress(aiohttp.ClientError):
            await load.post(session)  # connect once before the clock starts
        load.done.clear()
        if rate is None:
            await load.closed_loop(session, duration_s)
        else:
            await load.open_loop(session, duration_s, rate)
    return load.figures(duration_s)


def client(
    url: str, connections: int, duration_s: float, rate: float | None, out: Connection
) -> None:
    """Process entry point: load ``url`` (closed loop, or open loop at ``rate`` requests/s),
    then send the figures to ``out``."""
    out.send(run_loop(_drive(url, connections, duration_s, rate)))
