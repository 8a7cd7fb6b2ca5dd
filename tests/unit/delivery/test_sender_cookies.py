"""The sender keeps no cookies: a real aiohttp server on 127.0.0.1 sets one, and no later
request carries it back (Logto's sender keeps none either)."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from hookrelay.config import DeliverySettings, Hook, HttpSettings
from hookrelay.delivery.sender import HttpSender

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


async def test_a_cookie_an_endpoint_sets_never_rides_along_on_later_deliveries() -> None:
    seen: list[str | None] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.Response(text="ok")
        response.set_cookie("session", "abc", path="/")
        return response

    app = web.Application()
    app.router.add_post("/{hook}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    # A host name, not an IP literal: aiohttp's cookie jar refuses cookies for IP addresses.
    hooks = [
        Hook.model_validate({"id": name, "events": ["*"], "url": f"http://localhost:{port}/{name}"})
        for name in ("a", "b")
    ]
    sender = HttpSender(HttpSettings(allow_networks=LOOPBACK), DeliverySettings())
    await sender.start()
    try:
        for n, hook in enumerate([hooks[0], hooks[0], hooks[1]]):
            result = await sender.attempt(hook, f"msg_{n}", b"{}")
            assert result.status == 200, result.error
    finally:
        await sender.close()
        await runner.cleanup()
    assert seen == [None, None, None]
