"""POST one delivery attempt with a shared aiohttp session and classify what happened.

Outcome rules (DESIGN §1.4 and Part 2):

- 2xx → delivered.
- 3xx → permanent failure; redirects are never followed (a POST turned into a GET to an
  unchecked host loses the payload and is an SSRF hole).
- 408, 425, 429 (``delivery.retry_on_status``, or the hook's own list) and every 5xx →
  retryable; a usable
  ``Retry-After`` (delta-seconds or HTTP-date, RFC 9110 §10.2.3) is returned, capped.
- other 4xx → permanent.
- connection errors, TLS errors, timeouts → retryable.
- an address the SSRF guard refuses (``hookrelay.net.guard``) → permanent failure, ``refused:``.

Connections: one ``aiohttp.ClientSession`` per distinct SSRF allow-list (``http.allow_networks``
plus the hook's own ``allow_networks``); nearly every hook shares the first. Each session's
connector resolves through a ``GuardedResolver``, so it only ever connects to vetted
addresses, and its pool never hands a connection opened under one allow-list to a hook
with another. TLS: every https request carries its hook's ``ssl.SSLContext`` (verification
always on, TLS 1.2 at least, the hook's CA bundle and client certificate), built once per
hook; hooks without ``tls`` share one context.

Stale pooled connections (the keep-alive race): an endpoint may close an idle kept-alive
connection just as a request is written into it. Such a request, when the endpoint hung up
before any byte of an answer, is sent once more at once on a fresh connection, and only
that second request's result counts; see ``HttpSender.attempt`` for when, and for the
duplicate this can cause.

Request headers mirror Logto's ``createHookRequest``: ``content-type: application/json``,
``user-agent``, the hook's custom headers, ``logto-signature-sha-256`` when the hook has a
signing key (its primary key), plus hookrelay's stable ``webhook-id``; with
``standard_webhooks`` also ``webhook-timestamp`` and ``webhook-signature`` (one signature per
active key), made fresh for every attempt as the Standard Webhooks spec intends; and, when
the attempt has a trace context (the event record's, or with tracing on the attempt span's),
W3C ``traceparent`` and ``tracestate``. A hook's own headers can set none of these
(``config.RESERVED_HEADERS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import re
import ssl
import time
import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC
from typing import Final, Protocol

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.helpers import is_ip_address
from aiohttp.tracing import Trace
from multidict import CIMultiDict
from yarl import URL

from hookrelay.config import DeliverySettings, Hook, HttpSettings
from hookrelay.events.model import AttemptResult
from hookrelay.events.signing import (
    DELIVERY_ID_HEADER,
    LOGTO_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Signer,
    StandardWebhooksSigner,
    standard_webhooks_key,
)
from hookrelay.events.tracecontext import TRACEPARENT_HEADER, TRACESTATE_HEADER, TraceContext
from hookrelay.net.guard import AddressRefusedError, GuardedResolver, NetworkPolicy
from hookrelay.net.tls import client_ssl_context
from hookrelay.ops.logs import get_logger, public_text, register_secrets, url_secrets
from hookrelay.ops.metrics import Metrics

log = get_logger("hookrelay.sender")


class Sender(Protocol):
    """The transport seam: the dispatcher only ever calls ``attempt``."""

    async def attempt(
        self, hook: Hook, delivery_id: str, body: bytes, trace: TraceContext | None = None
    ) -> AttemptResult:
        """POST ``body`` to ``hook``'s endpoint once, with ``trace``'s W3C headers when given;
        never raises for endpoint failures."""
        ...


_DELAY_SECONDS: Final = re.compile(r"[0-9]+")
"""Delay-seconds (RFC 9110 ``1*DIGIT``); a huge one is capped like any other."""


def parse_retry_after(value: str | None, cap_s: float, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or ``None`` when absent or nonsense.

    Accepts delta-seconds (``"120"``: ASCII digits only, RFC 9110 §10.2.3 ``1*DIGIT``; not
    ``"²"`` or other scripts' digits, which ``str.isdigit`` accepts) or an HTTP-date; a date
    in the past gives 0.0; the result is capped at ``cap_s``. Anything else (negative,
    fractional, non-ASCII, a date out of range) gives ``None`` so the caller falls back to
    its retry schedule.
    """
    if not value:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return min(float(value), cap_s)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - now), cap_s)


def classify_status(status: int, retry_on_status: tuple[int, ...]) -> tuple[str | None, bool]:
    """``(error, retryable)`` for an HTTP status; error ``None`` means delivered."""
    if 200 <= status < 300:
        return None, False
    if 300 <= status < 400:
        return f"redirect {status} not followed", False
    if status >= 500 or status in retry_on_status:
        return f"http {status}", True
    return f"http {status}", False


@dataclass(frozen=True, slots=True)
class _PreparedHook:
    """Per-hook request parts that never change between deliveries: fixed headers, and the
    keyed HMAC states (Logto's for the primary key; Standard Webhooks' for every active key)."""

    hook: Hook
    headers: CIMultiDict[str]
    signer: Signer | None
    standard_signer: StandardWebhooksSigner | None
    timeout: aiohttp.ClientTimeout

    @classmethod
    def build(cls, hook: Hook, http: HttpSettings) -> _PreparedHook:
        headers: CIMultiDict[str] = CIMultiDict()
        headers["content-type"] = "application/json"
        headers["user-agent"] = http.user_agent
        for name, value in hook.headers:
            headers[name] = value
        keys = [key.get_secret_value() for key in hook.active_signing_keys]
        # Whoever built the Hook, a key that signs, and what its URL hides, are known to the
        # log redactor before its first use (the daemon registers them at start-up and on
        # reload too).
        register_secrets([*keys, *url_secrets(hook.url)])
        signer = Signer(keys[0]) if keys else None
        standard_signer = None
        if hook.standard_webhooks and keys:
            standard_signer = StandardWebhooksSigner([standard_webhooks_key(k) for k in keys])
        total = hook.effective_timeout_s(http)
        timeout = aiohttp.ClientTimeout(total=total, connect=min(http.connect_timeout_s, total))
        return cls(hook, headers, signer, standard_signer, timeout)

    def request_headers(
        self, delivery_id: str, body: bytes, trace: TraceContext | None = None
    ) -> CIMultiDict[str]:
        """The fixed headers plus this request's signatures and ``webhook-id`` (and, with
        Standard Webhooks, ``webhook-timestamp``: the wall clock in whole seconds, read once,
        the same value that is signed), and ``trace``'s ``traceparent``/``tracestate``."""
        headers = self.headers.copy()
        if trace is not None:
            headers[TRACEPARENT_HEADER] = trace.traceparent
            if trace.tracestate is not None:
                headers[TRACESTATE_HEADER] = trace.tracestate
        if self.signer is not None:
            headers[LOGTO_SIGNATURE_HEADER] = self.signer.sign(body)
        headers[DELIVERY_ID_HEADER] = delivery_id
        if self.standard_signer is not None:
            timestamp_s = int(time.time())
            headers[TIMESTAMP_HEADER] = str(timestamp_s)
            headers[SIGNATURE_HEADER] = self.standard_signer.sign(delivery_id, timestamp_s, body)
        return headers


ALLOW_HINT: Final = "allow it with http.allow_networks or the hook's allow_networks"


def _hint(refusal: str) -> str:
    """What the operator can do about ``refusal``: an allow-list helps most refusals, but a
    metadata endpoint needs an entry naming exactly it, and a non-canonical address form
    (``2130706433``, ``0x7f.1``) no entry at all."""
    if "not a canonical IP address" in refusal:
        return "write the address in its canonical dotted-quad or IPv6 form"
    if "metadata endpoint" in refusal:
        return "only an allow-list entry naming exactly this address, e.g. 169.254.169.254/32"
    return ALLOW_HINT


@dataclass(frozen=True, slots=True)
class _HookTransport:
    """How a hook's requests travel: its SSRF policy, its TLS context, and, when the URL's
    host is an IP address the policy refuses, why (aiohttp never asks the resolver about
    IP literals, so they are vetted here, once per hook)."""

    hook: Hook
    policy: NetworkPolicy
    ssl_context: ssl.SSLContext
    refusal: str | None

    @classmethod
    def build(cls, hook: Hook, http: HttpSettings, shared: ssl.SSLContext) -> _HookTransport:
        policy = NetworkPolicy((*http.allow_networks, *hook.allow_networks))
        context = shared
        if hook.tls is not None:
            tls = hook.tls
            context = client_ssl_context(tls.ca_file or http.ca_file, tls.cert_file, tls.key_file)
        return cls(hook, policy, context, _literal_refusal(hook.url, policy))


def _literal_refusal(url: str, policy: NetworkPolicy) -> str | None:
    """Why the IP literal host of ``url`` is refused, ``None`` for an allowed one or a name.
    The host is the one aiohttp connects to (yarl's ``raw_host``), judged by aiohttp's own
    test of what an IP literal is."""
    host = URL(url).raw_host or ""
    if not is_ip_address(host):
        return None
    try:
        return policy.refusal(host)
    except ValueError:
        return f"{host} is not a canonical IP address"


_connection_reused: Final[ContextVar[bool]] = ContextVar("connection_reused", default=False)
"""Whether the last connection ``_PoolConnector.connect`` handed to this task came from the
pool. Not cleared per request, for speed: when a request fails before it got a connection,
this still describes the previous one, and sending again a request that never went out is
harmless."""


class _PoolConnector(aiohttp.TCPConnector):
    """aiohttp's ``TCPConnector``, telling each request whether its connection is a reused one.

    ``connect`` (the connector's public method, awaited by ``ClientSession`` in the task that
    sends the request) marks each protocol it hands out; one handed out before came from the
    pool. The answer travels back to ``HttpSender.attempt`` in a context variable, which is
    local to that task. Should aiohttp ever call ``connect`` from another task, the variable
    would just stay ``False``: no stale-connection resend, today's behaviour, never a wrong one.

    Why not aiohttp's public way to learn this, a ``TraceConfig`` with
    ``on_connection_reuseconn``: it costs every request, stale or not, far more. With any trace
    config aiohttp builds a ``Trace`` per request and awaits a signal at each step (request
    start, connection, headers sent, each chunk, request end): +17 to +21 % CPU per healthy
    ``attempt`` (15 to 20 µs, when hookrelay's own work per delivery is about 22 µs), against
    +1 to +5 % for this whole change, the noise of a shared machine included
    (``python -m tests.bench.sender_attempt``). This override costs one extra await, a
    ``WeakSet`` lookup and a context-variable read: about 0.7 µs per request in a tight loop.
    """

    def __init__(self, resolver: GuardedResolver, max_connections: int) -> None:
        super().__init__(
            limit=max_connections, limit_per_host=0, ttl_dns_cache=60, resolver=resolver
        )
        # Weak: a closed connection's protocol leaves the set once nothing else holds it.
        self._handed_out: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        if protocol is not None:
            reused = protocol in self._handed_out
            if not reused:
                self._handed_out.add(protocol)
            # Set only on a change: in steady state every request reuses, and a read costs a
            # fraction of a set.
            if _connection_reused.get() is not reused:
                _connection_reused.set(reused)
        return connection


def closed_before_answer(error: BaseException) -> bool:
    """True when ``error`` (raised by aiohttp before a response head was complete) says the
    endpoint closed or reset the connection before any byte of an answer arrived.

    - ``ServerDisconnectedError``: the connection ended cleanly (FIN) with no answer. When
      part of a status line or head had arrived, aiohttp's (C) parser hands that partial
      message over as ``error.message`` instead of the text ``"Server disconnected"``: the
      endpoint was answering, so it read the request.
    - ``ClientOSError`` (``"Can not write request body"``, ``ECONNRESET``, ``EPIPE``) and
      ``ClientConnectionResetError`` (``"Cannot write to closing transport"``): writing the
      request or reading the answer failed at the socket.
    - Not ``ClientConnectorError`` (opening a connection failed: never a pooled one), timeouts
      (the endpoint may be working on the request), TLS errors, or a malformed answer.

    Limits: aiohttp reports a reset (RST) the same way whether or not some bytes of an answer
    came first, and its pure-Python parser (``AIOHTTP_NO_EXTENSIONS``) drops a partial status
    line, so either counts as unanswered here.
    """
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return isinstance(error.message, str)
    if isinstance(error, aiohttp.ClientConnectorError):
        return False
    return isinstance(error, aiohttp.ClientOSError | aiohttp.ClientConnectionResetError)


@dataclass(frozen=True, slots=True)
class _Sessions:
    """The two sessions of one SSRF policy, both resolving through its ``GuardedResolver``
    with a pool of up to ``http.max_connections``: ``pooled`` keeps connections alive and
    sends every request; ``fresh`` (``force_close``) opens a new connection for each request
    and closes it after, for the one resend of a request whose pooled connection was stale.
    A resend starts only after the stale connection was released: an attempt never holds two
    connections at once, so the resends add no connections beyond the attempts in flight.
    """

    pooled: aiohttp.ClientSession
    fresh: aiohttp.ClientSession

    @classmethod
    def open(cls, policy: NetworkPolicy, max_connections: int) -> _Sessions:
        resolver = GuardedResolver(policy)  # shared: neither connector owns (closes) it
        pooled = _PoolConnector(resolver, max_connections)
        fresh = aiohttp.TCPConnector(
            limit=max_connections, limit_per_host=0, ttl_dns_cache=60, resolver=resolver,
            force_close=True,
        )  # fmt: skip
        return cls(_session(pooled), _session(fresh))

    async def close(self) -> None:
        """Close both sessions and their connections."""
        await self.pooled.close()
        await self.fresh.close()


def _session(connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
    # No cookie jar: Logto's sender keeps no cookies, and one endpoint's Set-Cookie must not
    # ride along on later deliveries (to it, or to another hook on the same host).
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        raise_for_status=False,
    )


class HttpSender:
    """The real sender: one shared pair of ``aiohttp.ClientSession`` for every hook.

    ``start()`` opens the sessions, ``close()`` closes them (and the sessions of hooks with
    their own allow-list, opened on first use: one pair per distinct list, see ``_Sessions``).
    One ``Signer`` per signing key is cached so the keyed HMAC state is computed once.
    ``metrics``, when given, counts stale-connection resends
    (``hookrelay_stale_connection_retries_total``). Raises ``TlsFilesError`` when
    ``http.ca_file`` cannot be loaded.
    """

    def __init__(
        self, http: HttpSettings, delivery: DeliverySettings, *, metrics: Metrics | None = None
    ) -> None:
        self._http = http
        self._delivery = delivery
        self._metrics = metrics
        self._session: _Sessions | None = None
        self._sessions: dict[NetworkPolicy, _Sessions] = {}
        self._hooks: dict[str, _PreparedHook] = {}
        self._routes: dict[str, tuple[_HookTransport, _Sessions]] = {}
        self._ssl = client_ssl_context(http.ca_file)

    async def start(self) -> None:
        """Open the shared sessions (connection pools of ``http.max_connections``)."""
        self._session = self._session_for(NetworkPolicy(self._http.allow_networks))

    def _session_for(self, policy: NetworkPolicy) -> _Sessions:
        sessions = self._sessions.get(policy)
        if sessions is None:
            sessions = self._sessions[policy] = _Sessions.open(policy, self._http.max_connections)
        return sessions

    async def close(self) -> None:
        """Close the sessions and their connections."""
        sessions, self._sessions, self._session = self._sessions, {}, None
        self._routes.clear()
        for pair in sessions.values():
            await pair.close()

    def headers(
        self, hook: Hook, delivery_id: str, body: bytes, trace: TraceContext | None = None
    ) -> CIMultiDict[str]:
        """The request headers for ``body`` sent to ``hook`` (signed when it has a key; with
        ``trace``'s ``traceparent``/``tracestate`` when given)."""
        return self._prepared(hook).request_headers(delivery_id, body, trace)

    def _prepared(self, hook: Hook) -> _PreparedHook:
        """What is the same for every request to ``hook``, built once per hook object (a
        configuration change brings a new, frozen ``Hook``, so the cache never goes stale)."""
        prepared = self._hooks.get(hook.id)
        if prepared is None or prepared.hook is not hook:
            prepared = _PreparedHook.build(hook, self._http)
            self._hooks[hook.id] = prepared
        return prepared

    def _route(self, hook: Hook) -> tuple[_HookTransport, _Sessions]:
        """The hook's SSRF policy and TLS context, and the sessions of its policy, looked up
        once per hook object rather than by hashing the policy on every request."""
        route = self._routes.get(hook.id)
        if route is None or route[0].hook is not hook:
            transport = _HookTransport.build(hook, self._http, self._ssl)
            route = self._routes[hook.id] = (transport, self._session_for(transport.policy))
        return route

    async def attempt(
        self, hook: Hook, delivery_id: str, body: bytes, trace: TraceContext | None = None
    ) -> AttemptResult:
        """POST ``body`` to ``hook`` (with ``trace``'s W3C headers when given) and classify
        the answer (module docstring); never raises for endpoint failures, only
        ``RuntimeError`` if not started.

        One request, except in the keep-alive race: when the request went out on a *reused*
        pooled connection and the endpoint closed or reset it before any byte of an answer
        arrived (``closed_before_answer``), it is sent again at once, with the same headers
        and body, on a *fresh* connection, within what is left of the hook's timeout. The
        result is that second request's, so a stale connection never costs a retry or trips
        the circuit; ``hookrelay_stale_connection_retries_total`` counts these resends and
        ``stale_connection_retry`` is logged at debug. A failure on a fresh connection, after
        answer bytes arrived, or a timeout is returned as it is (normal retry schedule).

        Why this is safe enough for a POST: RFC 9112 §9.3.1 lets a client retry a
        non-idempotent request automatically only when it knows the request was not
        processed. An endpoint that closes an idle connection as the request arrives never
        read it, and that is by far the common way for a reused connection to end with no
        answer. It is not proof: an endpoint that read the request, acted on it, then
        crashed or closed without answering gets it twice. The resend carries the same
        ``webhook-id`` (and ``webhook-timestamp``), as every retry does, so receivers that
        deduplicate on it, as the README asks, see one delivery.
        """
        if self._session is None:
            raise RuntimeError("HttpSender.start() was not awaited")
        started = time.perf_counter()
        transport, sessions = self._route(hook)
        if transport.refusal is not None:
            refusal = transport.refusal
            return _failed(f"refused: {refusal} ({_hint(refusal)})", started, retryable=False)
        prepared = self._prepared(hook)
        timeout = prepared.timeout
        headers = prepared.request_headers(delivery_id, body, trace)
        ssl_context = transport.ssl_context
        try:
            return await self._post(
                sessions.pooled, hook, body,
                headers=headers, timeout=timeout, ssl_context=ssl_context, started=started,
            )  # fmt: skip
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            if not (_connection_reused.get() and closed_before_answer(e)):
                return _failure(e, started, timeout.total or 0.0)
            stale = e
        return await self._resend(sessions.fresh, hook, body, headers=headers,
                                  ssl_context=ssl_context, started=started, stale=stale,
                                  delivery_id=delivery_id)  # fmt: skip

    async def _resend(
        self,
        session: aiohttp.ClientSession,
        hook: Hook,
        body: bytes,
        *,
        headers: CIMultiDict[str],
        ssl_context: ssl.SSLContext,
        started: float,
        stale: BaseException,
        delivery_id: str,
    ) -> AttemptResult:
        """The stale-connection resend of ``attempt`` on ``session`` (a fresh connection);
        ``stale`` is what the first request raised."""
        total_s = hook.effective_timeout_s(self._http)
        left_s = total_s - (time.perf_counter() - started)
        if left_s <= 0:  # no time left: the stale failure is the attempt's result
            return _failure(stale, started, total_s)
        if self._metrics is not None:
            self._metrics.stale_connection_retries.labels(hook.id).inc()
        log.debug("stale_connection_retry", hook_id=hook.id, delivery_id=delivery_id,
                  error=f"{type(stale).__name__}: {_readable(stale)}"[:300])  # fmt: skip
        connect_s = min(self._http.connect_timeout_s, left_s)
        timeout = aiohttp.ClientTimeout(total=left_s, connect=connect_s)
        try:
            return await self._post(session, hook, body, headers=headers, timeout=timeout,
                                    ssl_context=ssl_context, started=started)  # fmt: skip
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return _failure(e, started, total_s)

    async def _post(
        self,
        session: aiohttp.ClientSession,
        hook: Hook,
        body: bytes,
        *,
        headers: CIMultiDict[str],
        timeout: aiohttp.ClientTimeout,
        ssl_context: ssl.SSLContext,
        started: float,
    ) -> AttemptResult:
        """One POST on ``session``. What aiohttp raises before the response head is complete
        propagates (the caller decides whether it was a stale connection); a failure while
        reading the capped body comes back as a failed result."""
        async with session.post(
            hook.url,
            data=body,
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
            ssl=ssl_context,
        ) as response:
            try:
                head = await response.content.read(self._http.max_response_bytes)
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                return _failure(e, started, hook.effective_timeout_s(self._http))
            return self._answered(hook, response.status, response.headers, head, started)

    def _answered(
        self,
        hook: Hook,
        status: int,
        headers: Mapping[str, str],
        head: bytes,
        started: float,
    ) -> AttemptResult:
        if 200 <= status < 300:  # the common case, without classification
            return AttemptResult(status, None, False, None, time.perf_counter() - started, head)
        error, retryable = classify_status(status, hook.effective_retry_on_status(self._delivery))
        retry_after = None
        if error is not None and retryable:
            cap_s = self._delivery.max_retry_after_s
            retry_after = parse_retry_after(headers.get("Retry-After"), cap_s)
        return AttemptResult(
            status, error, retryable, retry_after, time.perf_counter() - started, head
        )


def _failed(error: str, started: float, *, retryable: bool = True) -> AttemptResult:
    return AttemptResult(None, error, retryable, None, time.perf_counter() - started)


def _failure(error: BaseException, started: float, timeout_s: float) -> AttemptResult:
    """An attempt that raised ``error``: refusals are permanent, the rest retryable."""
    if isinstance(error, TimeoutError):
        return _failed(f"timeout after {timeout_s:g}s", started)
    if isinstance(error, aiohttp.ClientSSLError) or _TLS_ALERT.search(str(error)):
        return _failed(f"tls error: {type(error).__name__}: {_readable(error)}"[:300], started)
    if isinstance(error, aiohttp.InvalidURL):
        return _failed("refused: invalid url", started, retryable=False)
    cause = getattr(error, "os_error", None)
    if isinstance(cause, AddressRefusedError):
        reasons = "; ".join(cause.reasons)
        text = f"refused: {cause.host} resolves only to refused addresses: {reasons}"
        return _failed(f"{text[:400]} ({ALLOW_HINT})", started, retryable=False)
    return _failed(f"connection error: {type(error).__name__}: {_readable(error)}"[:300], started)


_TLS_ALERT: Final = re.compile(r"\bTLSV1[0-9]?_ALERT_|\bSSLV3_ALERT_|CERTIFICATE_REQUIRED")
"""A TLS alert from the server (e.g. a missing client certificate) that aiohttp reports as
a plain connection error: it is a TLS problem for the operator."""
_SSL_CONTEXT_REPR: Final = re.compile(r"ssl:<ssl\.SSLContext object at 0x[0-9a-f]+>")


def _readable(error: BaseException) -> str:
    """``error`` as text for logs, dead letters and the admin API, without Python object
    reprs (aiohttp prints the hook's SSL context as ``<ssl.SSLContext object at 0x...>``, and
    a hang-up in the middle of an answer as the ``RawResponseMessage`` it had parsed), with
    URLs masked and registered secrets hidden (``logs.public_text``)."""
    if isinstance(error, aiohttp.ServerDisconnectedError) and not isinstance(error.message, str):
        return "Server disconnected in the middle of an answer"
    # aiohttp names the request URL in many errors ("url='...?token=...'"): mask it as the
    # admin API's /v1/hooks does, since this text reaches logs, the API and dead letters.
    return public_text(_SSL_CONTEXT_REPR.sub("ssl:verified", str(error)))


async def close_quietly(sender: HttpSender, timeout_s: float = 5.0) -> None:
    """Close ``sender`` within ``timeout_s``; a hung close is abandoned, not awaited forever."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await sender.close()
