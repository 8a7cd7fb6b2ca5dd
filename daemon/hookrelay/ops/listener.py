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

    guard: GuardedListener | None = None
    """The listener counting this connection (``GuardedListener._admit`` sets it)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.guard is not None:
            self.guard._made(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self.guard is not None:
            self.guard._lost(self)


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
        # Connections closed to make room that aiohttp still lists: it drops one only when
        # its connection_lost runs, on a later turn of the loop, and the loop accepts a
        # burst of connections in one turn. Without this, every connection of a burst
        # "evicted" the same closed one and the cap held nothing (a breaker's trial: 850
        # connections open with max_connections 50).
        self._closing: set[RequestHandler] = set()
        # Connections accepted whose handler aiohttp does not list yet: asyncio makes the
        # connection on a later turn (after the TLS handshake, for HTTPS), and one turn
        # accepts a whole burst. Value: when accepted (loop time), to forget a handshake
        # that never completed (its handler is never told).
        self._pending: dict[RequestHandler, float] = {}

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
                # aiohttp sees a TLS connection only once its handshake is done: bound the
                # handshake as an idle connection is bound (asyncio's default is 60 s).
                ssl_handshake_timeout=self._idle_timeout_s if self._ssl_context else None,
            )  # fmt: skip
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = int(self._listener.sockets[0].getsockname()[1])

    def _admit(self, server: web.Server) -> asyncio.BaseProtocol:
        """The protocol for a new connection: aiohttp's handler, after making room for it
        (the oldest idle connection is closed); a connection that finds every slot busy (a
        request in progress, or not yet made) is closed at once."""
        loop = server._loop
        self._forget_stale_pending(loop.time())
        if self._open(server) >= self._max_connections:
            # aiohttp keeps connections in the order they opened; _request_in_progress is
            # its own flag for a handler answering a request (aiohttp 3.9+).
            idle = next(
                (h for h in server.connections
                 if h not in self._closing and not getattr(h, "_request_in_progress", True)),
                None,
            )  # fmt: skip
            if idle is None:
                self._on_close("over_limit")
                return _Refused()
            idle.force_close()
            self._closing.add(idle)  # until its connection_lost
            self._on_close("evicted_idle")
        # aiohttp's own handler, but answering a malformed request without quoting it.
        handler = _QuietHandler(server, loop=loop, **server._kwargs)
        self._pending[handler] = loop.time()
        handler.guard = self
        return handler

    def _made(self, handler: RequestHandler) -> None:
        self._pending.pop(handler, None)

    def _lost(self, handler: RequestHandler) -> None:
        self._pending.pop(handler, None)
        self._closing.discard(handler)

    def _forget_stale_pending(self, now: float) -> None:
        # Past the handshake timeout a pending connection is made (and forgotten) or closed.
        stale = now - self._idle_timeout_s - 0.5
        if self._pending and next(iter(self._pending.values())) < stale:
            self._pending = {h: at for h, at in self._pending.items() if at >= stale}

    def _open(self, server: web.Server) -> int:
        return len(server.connections) - len(self._closing) + len(self._pending)

    @property
    def open_connections(self) -> int:
        """Connections open now, including those accepted and not yet handed to aiohttp
        (a TLS handshake in progress)."""
        server = self._runner.server if self._runner is not None else None
        return 0 if server is None else self._open(server)

    async def stop(self) -> None:
        """Stop listening, let requests in progress finish (up to ``shutdown_timeout_s``),
        close every connection."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
