"""An HTTP listener that stays usable under a flood of connections: the admin listener's and
the ingest endpoint's.

aiohttp serves the application, on a listening socket of our own so that every accepted
connection passes :meth:`GuardedListener._admit`:

- a connection that has not sent a whole request ``idle_timeout_s`` after it opened or after
  its last answer is closed (slow or never-finished headers included: aiohttp's keep-alive
  timer runs from the moment a connection opens and is not reset by partial data);
- at most ``max_connections`` are open at once: a new one beyond that closes the connection
  idle the longest, or is itself closed at once when every connection is busy with a request.

Each close is reported to ``on_close`` with its reason, ``evicted_idle`` or ``over_limit``.
A request aiohttp's parser refuses is answered 400 "Bad Request", without quoting the line
(aiohttp's own answer quotes it, and it may hold a token).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["LINGER_S", "GuardedListener"]

LINGER_S: Final = 2.0
"""Seconds aiohttp goes on reading (and discarding) the rest of a body its handler did not
read, before closing: a client that sends a body slowly holds a connection this long after
its answer (aiohttp's default is 10 s)."""


class _QuietHandler(RequestHandler):
    """aiohttp's request handler, except that the answer to a request its parser refused
    (400) says only "Bad Request": aiohttp's quotes the offending line, which may hold a
    token (a token file saved with CR LF sends ``Bearer <token>\\r``)."""

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
    """A connection beyond the cap when none can make room: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class GuardedListener:
    """Serves ``app`` on ``host:port`` (port 0 picks a free one; ``port`` then tells it);
    ``start()``/``stop()`` own its lifetime. ``ssl_context`` makes it HTTPS.

    ``stop()`` stops listening, then gives requests in progress ``shutdown_timeout_s`` to be
    answered before their connections are closed.
    """

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        idle_timeout_s: float,
        max_connections: int,
        on_close: Callable[[str], None],
        ssl_context: ssl.SSLContext | None = None,
        shutdown_timeout_s: float = 5.0,
    ) -> None:
        self._app = app
        self._host = host
        self.port = port
        self._idle_timeout_s = idle_timeout_s
        self._max_connections = max_connections
        self._on_close = on_close
        self._ssl_context = ssl_context
        self._shutdown_timeout_s = shutdown_timeout_s
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen. Raises ``OSError`` when the address cannot be bound."""
        self._runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False,
            keepalive_timeout=self._idle_timeout_s, shutdown_timeout=self._shutdown_timeout_s,
            lingering_time=LINGER_S,
        )  # fmt: skip
        await self._runner.setup()
        server = self._runner.server
        assert server is not None, "set up above"
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                lambda: self._admit(server), self._host, self.port, reuse_address=True,
                ssl=self._ssl_context,
            )  # fmt: skip
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = int(self._listener.sockets[0].getsockname()[1])

    def _admit(self, server: web.Server) -> asyncio.BaseProtocol:
        """The protocol for a new connection: aiohttp's handler, after making room for it
        (the connection idle the longest is closed); a connection that finds every slot
        busy with a request is closed at once."""
        connections = server.connections
        if len(connections) >= self._max_connections:
            # aiohttp keeps connections in the order they opened; _request_in_progress is
            # its own flag for a handler answering a request (aiohttp 3.9+).
            idle = [h for h in connections if not getattr(h, "_request_in_progress", True)]
            if not idle:
                self._on_close("over_limit")
                return _Refused()
            idle[0].force_close()
            self._on_close("evicted_idle")
        # aiohttp's own handler, but answering a malformed request without quoting it.
        return _QuietHandler(server, loop=server._loop, **server._kwargs)

    async def stop(self) -> None:
        """Stop listening, let requests in progress finish (up to ``shutdown_timeout_s``),
        close every connection."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
