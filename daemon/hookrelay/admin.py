"""The admin HTTP listener: ``/metrics``, ``/healthz``, ``/readyz``.

- ``/metrics``: Prometheus text exposition of the daemon's registry.
- ``/healthz``: 200 while the process and its event loop are alive (liveness).
- ``/readyz``: 200 when consuming and able to deliver, else 503 with the reasons (readiness).

Binds to ``admin.listen`` (loopback by default).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web

from hookrelay.logs import get_logger
from hookrelay.metrics import CONTENT_TYPE, Metrics

log = get_logger("hookrelay.admin")

ReadinessCheck = Callable[[], list[str]]
"""Returns the reasons the daemon is not ready; empty when ready."""


class AdminServer:
    """aiohttp server for the admin endpoints; ``start()``/``stop()`` own its lifetime."""

    def __init__(self, host: str, port: int, metrics: Metrics, readiness: ReadinessCheck) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._readiness = readiness
        self._runner: web.AppRunner | None = None
        self.port = port

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/healthz", self._get_healthz)
        app.router.add_get("/readyz", self._get_readyz)
        return app

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0 picks a free one, then ``self.port`` tells it)."""
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        if self._runner.addresses:
            self.port = int(self._runner.addresses[0][1])
        log.info("admin_listening", host=self._host, port=self.port)

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _get_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _get_healthz(self, _request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def _get_readyz(self, _request: web.Request) -> web.Response:
        reasons = self._readiness()
        self._metrics.ready.set(0 if reasons else 1)
        body = orjson.dumps({"ready": not reasons, "reasons": reasons})
        return web.Response(
            body=body, status=503 if reasons else 200, content_type="application/json"
        )
