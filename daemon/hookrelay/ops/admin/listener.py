"""The admin HTTP listener: probes and metrics, and the ``/v1`` admin API mounted on it.

Routes (``admin_openapi.yaml`` in this package is the OpenAPI 3.1 document of them all, and is
served at ``GET /v1/openapi.json``)::

    GET  /metrics                 Prometheus text exposition              no auth
    GET  /healthz                 200 while the event loop runs           no auth
    GET  /readyz                  200 when consuming, else 503 + reasons  no auth
    GET  /v1/...                  the admin API (``api.py``)              bearer token

The listener binds to ``admin.listen`` (loopback by default). It stays usable under a flood
of connections, authenticated or not, because the kubelet and Prometheus must always get
through (``ops.listener.GuardedListener``): a connection without a whole request
``IDLE_TIMEOUT_S`` after it opened or after its last answer is closed, and at most
``MAX_CONNECTIONS`` are open at once. Both kinds of close are counted in
``hookrelay_admin_connections_closed_total{reason}``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Final

import orjson
from aiohttp import web
from pydantic import SecretStr

from hookrelay.ops.admin.api import MAX_REQUEST_BYTES, AdminApi, AdminBackend
from hookrelay.ops.listener import GuardedListener
from hookrelay.ops.logs import get_logger
from hookrelay.ops.metrics import CONTENT_TYPE, ProcessMetrics

log = get_logger("hookrelay.admin")

ReadinessCheck = Callable[[], list[str] | Awaitable[list[str]]]
"""Returns the reasons the daemon is not ready; empty when ready (the supervisor of worker
processes asks them, so its answer is awaited)."""
Exposition = Callable[[], Awaitable[bytes]]
"""The ``/metrics`` body, when it is not the metrics' own registry (the supervisor's merge)."""

IDLE_TIMEOUT_S: Final = 5.0
"""Seconds a connection may hold without a request in progress (aiohttp's keep-alive timer,
which also runs from the moment a connection opens)."""
MAX_CONNECTIONS: Final = 64
"""Open admin connections at most: far above what probes, scrapes and an operator need, and
far below a process's file-descriptor limit (deliveries and Kafka need theirs)."""


class AdminServer:
    """aiohttp server for the admin listener; ``start()``/``stop()`` own its lifetime.

    ``backend`` and ``token`` make the ``/v1`` API (:class:`AdminApi`): without a token it is
    disabled (403); a token without a backend raises ``ValueError``. ``exposition``, when
    given, answers ``/metrics`` instead of ``metrics.render()``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: ProcessMetrics,
        readiness: ReadinessCheck,
        *,
        backend: AdminBackend | None = None,
        token: SecretStr | None = None,
        exposition: Exposition | None = None,
    ) -> None:
        self._host = host
        self._exposition = exposition
        self._port = port
        self._metrics = metrics
        self._readiness = readiness
        self._backend = backend
        self.api = AdminApi(backend, token)
        self._listener: GuardedListener | None = None
        self.port = port

    def set_token(self, token: SecretStr | None) -> None:
        """Use ``token`` for the ``/v1`` API from now on (``None`` disables it)."""
        self.api.set_token(token)

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/healthz", self._get_healthz)
        app.router.add_get("/readyz", self._get_readyz)
        self.api.add_routes(app)
        return app

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0 picks a free one, then ``self.port`` tells it)."""
        self._listener = GuardedListener(
            self._app(), self._host, self._port, idle_timeout_s=IDLE_TIMEOUT_S,
            max_connections=MAX_CONNECTIONS,
            on_close=lambda reason: self._metrics.admin_connections_closed.labels(reason).inc(),
        )  # fmt: skip
        await self._listener.start()
        self.port = self._listener.port
        api = "enabled" if self.api.enabled else "disabled (no admin.token)"
        if self._backend is None:
            api = "none (probes and metrics only)"
        log.info("admin_listening", host=self._host, port=self.port, api=api)

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None

    # Probes and metrics: never authenticated (Prometheus and the kubelet have no token).

    async def _get_metrics(self, _request: web.Request) -> web.Response:
        body = self._metrics.render() if self._exposition is None else await self._exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _get_healthz(self, _request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def _get_readyz(self, _request: web.Request) -> web.Response:
        found = self._readiness()
        reasons = await found if inspect.isawaitable(found) else found
        self._metrics.ready.set(0 if reasons else 1)
        body = orjson.dumps({"ready": not reasons, "reasons": reasons})
        return web.Response(
            body=body, status=503 if reasons else 200, content_type="application/json"
        )
