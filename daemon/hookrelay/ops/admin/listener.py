"""The admin HTTP listener: probes and metrics, and the ``/v1`` admin API mounted on it.

Routes (``admin_openapi.yaml`` in this package is the OpenAPI 3.1 document of them all, and is
served at ``GET /v1/openapi.json``)::

    GET  /metrics                 Prometheus text exposition              no auth
    GET  /healthz                 200 while the event loop runs           no auth
    GET  /readyz                  200 when consuming, else 503 + reasons  no auth
    GET  /v1/...                  the admin API (``api.py``)              bearer token

The listener binds to ``admin.listen`` (loopback by default). It stays usable under a flood
of connections, authenticated or not, because the kubelet and Prometheus must always get
through: a connection that has not sent a whole request ``IDLE_TIMEOUT_S`` after it opened or
after its last answer is closed (slow or never-finished headers included), and at most
``MAX_CONNECTIONS`` are open at once — a new one beyond that closes the connection idle the
longest, or is refused (closed at once) when every connection is busy with a request. Both are
counted in ``hookrelay_admin_connections_closed_total{reason}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from pydantic import SecretStr

from hookrelay.ops.admin.api import MAX_REQUEST_BYTES, AdminApi, AdminBackend
from hookrelay.ops.logs import get_logger
from hookrelay.ops.metrics import CONTENT_TYPE, Metrics

log = get_logger("hookrelay.admin")

ReadinessCheck = Callable[[], list[str]]
"""Returns the reasons the daemon is not ready; empty when ready."""

IDLE_TIMEOUT_S: Final = 5.0
"""Seconds a connection may hold without a request in progress (aiohttp's keep-alive timer,
which also runs from the moment a connection opens)."""
MAX_CONNECTIONS: Final = 64
"""Open admin connections at most: far above what probes, scrapes and an operator need, and
far below a process's file-descriptor limit (deliveries and Kafka need theirs)."""


class _QuietHandler(RequestHandler):
    """aiohttp's request handler, except that the answer to a request its parser refused
    (400) says only "Bad Request": aiohttp's quotes the offending line, which may hold the
    admin token (a token file saved with CR LF sends ``Bearer <token>\\r``)."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if message is not None and 400 <= status < 500:
            message = HTTPStatus(status).phrase
        response: web.StreamResponse = super().handle_error(request, status, exc, message)
        return response


class _Refused(asyncio.Protocol):
    """A connection beyond ``MAX_CONNECTIONS`` when none can make room: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class AdminServer:
    """aiohttp server for the admin listener; ``start()``/``stop()`` own its lifetime.

    ``backend`` and ``token`` make the ``/v1`` API (:class:`AdminApi`): without a token it is
    disabled (403); a token without a backend raises ``ValueError``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        readiness: ReadinessCheck,
        *,
        backend: AdminBackend | None = None,
        token: SecretStr | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._readiness = readiness
        self.api = AdminApi(backend, token)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
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
        self._runner = web.AppRunner(
            self._app(), access_log=None, handle_signals=False, keepalive_timeout=IDLE_TIMEOUT_S
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None, "set up above"
        # Our own listening socket rather than web.TCPSite: every accepted connection goes
        # through _admit, which enforces MAX_CONNECTIONS.
        self._listener = await asyncio.get_running_loop().create_server(
            lambda: self._admit(server), self._host, self._port, reuse_address=True
        )
        self.port = int(self._listener.sockets[0].getsockname()[1])
        api = "enabled" if self.api.enabled else "disabled (no admin.token)"
        log.info("admin_listening", host=self._host, port=self.port, api=api)

    def _admit(self, server: web.Server) -> asyncio.BaseProtocol:
        """The protocol for a new connection: aiohttp's handler, after making room for it
        (the connection idle the longest is closed); a connection that finds every slot
        busy with a request is closed at once."""
        connections = server.connections
        if len(connections) >= MAX_CONNECTIONS:
            # aiohttp keeps connections in the order they opened; _request_in_progress is
            # its own flag for a handler answering a request (aiohttp 3.9+).
            idle = [h for h in connections if not getattr(h, "_request_in_progress", True)]
            if not idle:
                self._metrics.admin_connections_closed.labels("over_limit").inc()
                return _Refused()
            idle[0].force_close()
            self._metrics.admin_connections_closed.labels("evicted_idle").inc()
        # aiohttp's own handler, but answering a malformed request without quoting it.
        return _QuietHandler(server, loop=server._loop, **server._kwargs)

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # Probes and metrics: never authenticated (Prometheus and the kubelet have no token).

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
