"""A raw asyncio HTTP/1.1 server on 127.0.0.1 whose kept-alive connections go stale on demand:
the keep-alive race of issue 10, item 7.

Two ways to drive it::

    # Every connection answers one request (200, kept alive: no ``Connection: close``), then
    # reads nothing more and closes ``close_after_s`` later, like an endpoint behind a proxy
    # with a very short keep-alive timeout. A client that reuses the pooled connection in
    # that window writes into a connection the server is closing.
    async with StaleServer(close_after_s=0.005) as server:
        ...post to server.url("/hooks/racer")...

    # Connection n (in accept order) follows scripts[n], one step per request that arrives
    # on it; requests past a script, and connections past the list, are answered.
    async with StaleServer(scripts=[(Step.ANSWER, Step.CLOSE)]) as server:
        ...

``requests`` holds every request the server read to the end (answered, answered in part
with ``Step.PARTIAL``, or held unanswered with ``Step.HOLD``); ``dropped`` counts the
requests whose bytes reached it but that it never read: hung up on at their first byte
(``Step.CLOSE``, ``Step.RESET``), or arriving on a connection it had decided to close. Never
reading them is what makes sending them again on another connection safe.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self, cast

OK: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
"""The answer to every answered request: empty, and kept alive (HTTP/1.1's default)."""
PARTIAL_STATUS_LINE: bytes = b"HTTP/1.1 20"
"""What ``Step.PARTIAL`` writes before hanging up: response bytes, but no whole head."""


class Step(enum.Enum):
    """What the server does with one request on a scripted connection."""

    ANSWER = "answer"
    """read it whole, answer 200, keep the connection open"""
    CLOSE = "close"
    """hang up (FIN) at its first byte, without reading it"""
    RESET = "reset"
    """reset the connection (RST) at its first byte, without reading it"""
    PARTIAL = "partial"
    """read it whole, write part of a status line, hang up"""
    HOLD = "hold"
    """read it whole, never answer (the connection stays open until the client gives up)"""


@dataclass(frozen=True)
class Request:
    """One request read to the end: the connection it came on (0 = the first accepted),
    its headers (names lower-cased) and its raw body."""

    connection: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class StaleServer:
    """See the module docstring; use as ``async with StaleServer(...) as server``."""

    def __init__(
        self, *, close_after_s: float | None = None, scripts: Sequence[Sequence[Step]] = ()
    ) -> None:
        self.close_after_s = close_after_s
        self.requests: list[Request] = []
        self.dropped = 0
        self.connections = 0
        self._scripts = [tuple(script) for script in scripts]
        self._open: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._open):
            connection.abort()
        await server.wait_closed()

    def url(self, path: str = "/hook") -> str:
        """``http://127.0.0.1:<port><path>``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> _Connection:
        number = self.connections
        self.connections += 1
        script = self._scripts[number] if number < len(self._scripts) else ()
        return _Connection(self, number, script)


class _Connection(asyncio.Protocol):
    """One accepted connection: splits requests on ``Content-Length`` and plays its script."""

    def __init__(self, server: StaleServer, number: int, script: Sequence[Step]) -> None:
        self._server = server
        self._number = number
        self._steps = deque(script)
        self._step: Step | None = None  # the step of the request being read
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._done = False  # reads nothing more
        self._ignored = False  # a request arrived after that, and was never read
        self._close_later: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server._open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_later is not None:
            self._close_later.cancel()
        self._server._open.discard(self)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._done:  # a server that decided to close reads nothing more
            if not self._ignored:
                self._ignored = True
                self._server.dropped += 1
            return
        self._buffer += data
        while self._buffer and not self._done:
            if self._step is None:
                self._step = self._steps.popleft() if self._steps else Step.ANSWER
                if self._step in (Step.CLOSE, Step.RESET):
                    self._hang_up_unread(self._step)
                    return
            request = self._take_request()
            if request is None:
                return
            self._server.requests.append(request)
            self._respond(self._step)
            self._step = None

    def _hang_up_unread(self, step: Step) -> None:
        self._server.dropped += 1
        self._done = True
        assert self._transport is not None
        if step is Step.RESET:
            # A zero linger time makes the close a reset (RST), not an orderly FIN.
            sock = self._transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._transport.abort()
        else:
            self._transport.close()

    def _respond(self, step: Step) -> None:
        transport = self._transport
        assert transport is not None
        if step is Step.HOLD:
            self._done = True
            return
        if step is Step.PARTIAL:
            transport.write(PARTIAL_STATUS_LINE)
            self._done = True
            transport.close()
            return
        transport.write(OK)
        close_after_s = self._server.close_after_s
        if close_after_s is not None:
            self._done = True
            loop = asyncio.get_running_loop()
            self._close_later = loop.call_later(close_after_s, transport.close)

    def _take_request(self) -> Request | None:
        buffer = self._buffer
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        lines = bytes(buffer[:head_end]).decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        end = head_end + 4 + int(headers.get("content-length", "0"))
        if len(buffer) < end:
            return None
        body = bytes(buffer[head_end + 4 : end])
        del buffer[:end]
        return Request(self._number, method, path, headers, body)
