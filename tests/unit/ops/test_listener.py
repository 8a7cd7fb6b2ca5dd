"""ops.listener.GuardedListener on a real socket: the connection cap holds under a burst of
connections opened at once, and a request still gets through."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from hookrelay.ops.listener import GuardedListener


async def test_a_burst_of_idle_connections_cannot_exceed_the_cap() -> None:
    # A breaker's trial: 2,000 connections opened at once left 750-850 open against a cap
    # of 50 (each new one "evicted" the same already-closed connection).
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    closed: list[str] = []
    listener = GuardedListener(
        app, "127.0.0.1", 0, idle_timeout_s=30.0, max_connections=50, on_close=closed.append
    )
    await listener.start()
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(4):
            opened = await asyncio.gather(
                *(asyncio.open_connection("127.0.0.1", listener.port) for _ in range(150))
            )
            writers.extend(writer for _, writer in opened)
            await asyncio.sleep(0.2)
            assert listener.open_connections <= 50
        url = f"http://127.0.0.1:{listener.port}/"
        async with aiohttp.ClientSession() as session, session.get(url) as answer:
            assert answer.status == 200
        assert len(closed) >= 600 - 50 and "evicted_idle" in closed
    finally:
        for writer in writers:
            writer.close()
        await listener.stop()
