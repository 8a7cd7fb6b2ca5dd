"""A real webhook receiver for tests and the demo: an aiohttp server on 127.0.0.1.

It records every request to ``/hooks/<hook_id>`` (any method, so a followed redirect would be
visible), checks Logto's signature, and answers with behaviour scripted per hook::

    async with Receiver(keys={"crm-sync": "signing key", "audit": None}) as r:
        r.script("crm-sync", [Reply(status=500), Reply(status=500)])   # then 200
        r.script_forever("audit", Reply(delay_s=3600))                   # never answers
        r.script_forever("flaky", lambda q: Reply(500) if rng.random() < 0.3 else Reply())
        ...point hooks at r.url("crm-sync") / r.url("audit")...
        await r.wait_for(3, hook_id="crm-sync")
        assert [q.signature_valid for q in r.for_hook("crm-sync")] == [True] * 3

Signature check (Logto's algorithm, ``packages/core/src/utils/sign.ts``): header
``logto-signature-sha-256`` must equal the lowercase hex HMAC-SHA256 of the raw body bytes,
keyed with the signing key's UTF-8 bytes; compared in constant time.

Closing the receiver wakes every handler still waiting out a ``delay_s`` and drops its
connection, so closing takes milliseconds and leaves no task behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

SIGNATURE_HEADER = "logto-signature-sha-256"
"""Header carrying the signature, as Logto sends it."""

_MAX_BODY_BYTES = 64 * 1024 * 1024  # well above any size limit a test may want to probe


def logto_signature(key: str, body: bytes) -> str:
    """Return Logto's signature of ``body``: lowercase hex HMAC-SHA256 keyed with UTF-8 ``key``."""
    return hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Reply:
    """How the receiver answers one request.

    ``status``/``headers``/``body`` form the response (e.g. ``headers={"Retry-After": "2"}``).
    ``delay_s`` (seconds) is waited before answering; ``drop_connection`` closes the TCP
    connection instead of answering (after the delay), so the client sees a disconnect.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0
    drop_connection: bool = False


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as it arrived.

    ``hook_id`` comes from the path ``/hooks/<hook_id>``. ``headers`` is case-insensitive.
    ``body`` is the raw bytes; ``json`` the parsed body, or ``None`` when it is not JSON.
    ``arrived_monotonic`` is ``time.monotonic()`` and ``arrived_wall`` ``time.time()`` (seconds)
    taken when the body had been read. ``signature_valid`` is ``True``/``False`` for a hook with
    a key (header present and matching, or not); for a hook registered with ``None`` it is
    ``None`` when unsigned and ``False`` when a signature arrived anyway; for a hook missing from
    ``keys`` it is ``None`` (not checked).
    """

    hook_id: str
    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes
    json: Any
    arrived_monotonic: float
    arrived_wall: float
    signature_valid: bool | None

    @property
    def event(self) -> str | None:
        """The body's ``event`` member, or ``None`` when absent or the body is not an object."""
        if isinstance(self.json, dict):
            event = self.json.get("event")
            return event if isinstance(event, str) else None
        return None


class Receiver:
    """A scripted, recording webhook receiver; use as ``async with Receiver(...) as r``.

    ``keys`` maps hook id → signing key (``str``) or ``None`` for a hook that must arrive
    unsigned. Requests are answered in arrival order per hook: first the replies queued with
    :meth:`script`, then the :meth:`script_forever` reply if one is set, else ``200``.
    """

    def __init__(self, keys: Mapping[str, str | None] | None = None) -> None:
        self.keys: dict[str, str | None] = dict(keys or {})
        self.requests: list[ReceivedRequest] = []
        self._scripts: dict[str, deque[Reply]] = {}
        self._forever: dict[str, Reply | Callable[[ReceivedRequest], Reply]] = {}
        self._arrived = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port (see :attr:`port`)."""
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_route("*", "/hooks/{hook_id}", self._handle)
        # A short shutdown timeout is only a backstop: close() has already woken the handlers.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner

    async def close(self) -> None:
        """Drop connections of handlers still delaying, then stop the server.

        Idempotent; a closed receiver is not restarted (make a new one).
        """
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def port(self) -> int:
        """The TCP port listened on (0 before :meth:`start`)."""
        return self._port

    def url(self, hook_id: str) -> str:
        """Return ``http://127.0.0.1:<port>/hooks/<hook_id>``."""
        return f"http://127.0.0.1:{self._port}/hooks/{hook_id}"

    def script(self, hook_id: str, replies: Iterable[Reply]) -> None:
        """Queue ``replies`` for the next requests to ``hook_id``, after any already queued."""
        self._scripts.setdefault(hook_id, deque()).extend(replies)

    def script_forever(
        self, hook_id: str, reply: Reply | Callable[[ReceivedRequest], Reply] | None
    ) -> None:
        """Answer ``hook_id`` with ``reply`` once its queue is empty; ``None`` restores 200.

        ``reply`` may be a function of the request that returns the reply (called once per
        request, in arrival order): e.g. to fail a random share of the requests and remember
        which ones."""
        if reply is None:
            self._forever.pop(hook_id, None)
        else:
            self._forever[hook_id] = reply

    def for_hook(self, hook_id: str) -> list[ReceivedRequest]:
        """Requests received for ``hook_id``, in arrival order."""
        return [request for request in self.requests if request.hook_id == hook_id]

    def counts(self) -> dict[str, int]:
        """Number of requests received per hook id."""
        return dict(Counter(request.hook_id for request in self.requests))

    async def wait_for(
        self, count: int, hook_id: str | None = None, timeout_s: float = 10.0
    ) -> list[ReceivedRequest]:
        """Wait until at least ``count`` requests arrived (for ``hook_id`` if given).

        Returns the matching requests so far. Raises ``TimeoutError`` after ``timeout_s``
        seconds, saying how many arrived and for which hooks.
        """

        def matching() -> list[ReceivedRequest]:
            return self.requests if hook_id is None else self.for_hook(hook_id)

        try:
            async with asyncio.timeout(timeout_s), self._arrived:
                await self._arrived.wait_for(lambda: len(matching()) >= count)
        except TimeoutError as e:
            scope = "in total" if hook_id is None else f"for hook {hook_id!r}"
            raise TimeoutError(
                f"expected at least {count} request(s) {scope} within {timeout_s} s, "
                f"got {len(matching())}; received per hook: {self.counts()}"
            ) from e
        return matching()

    def _next_reply(self, request: ReceivedRequest) -> Reply:
        queue = self._scripts.get(request.hook_id)
        if queue:
            return queue.popleft()
        reply = self._forever.get(request.hook_id, Reply())
        return reply if isinstance(reply, Reply) else reply(request)

    def _check_signature(
        self, hook_id: str, headers: CIMultiDictProxy[str], body: bytes
    ) -> bool | None:
        if hook_id not in self.keys:
            return None
        key = self.keys[hook_id]
        received = headers.get(SIGNATURE_HEADER)
        if key is None:
            return None if received is None else False
        if received is None:
            return False
        return hmac.compare_digest(received.encode("utf-8"), logto_signature(key, body).encode())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        hook_id = request.match_info["hook_id"]
        body = await request.read()
        arrived_monotonic, arrived_wall = time.monotonic(), time.time()
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        received = ReceivedRequest(
            hook_id=hook_id,
            method=request.method,
            path=request.path,
            headers=headers,
            body=body,
            json=_parse_json(body),
            arrived_monotonic=arrived_monotonic,
            arrived_wall=arrived_wall,
            signature_valid=self._check_signature(hook_id, headers, body),
        )
        self.requests.append(received)
        reply = self._next_reply(received)
        async with self._arrived:
            self._arrived.notify_all()

        woken_by_close = await self._delay(reply.delay_s)
        if reply.drop_connection or woken_by_close:
            return _drop(request)
        return web.Response(status=reply.status, headers=dict(reply.headers), body=reply.body)

    async def _delay(self, delay_s: float) -> bool:
        """Wait ``delay_s`` seconds; return ``True`` if the receiver started closing meanwhile."""
        if delay_s <= 0:
            return self._closing.is_set()
        try:
            async with asyncio.timeout(delay_s):
                await self._closing.wait()
        except TimeoutError:
            return False
        return True


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _drop(request: web.Request) -> web.StreamResponse:
    # Abort (not close) so nothing more is written: the client sees the connection end with no
    # response. aiohttp then fails to write the returned response and discards it quietly.
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=499)
