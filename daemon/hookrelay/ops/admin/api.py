"""The ``/v1`` admin API: its routes, bearer-token guard, handlers and problem answers.

Routes::

    GET  /v1/hooks                every hook with its state
    GET  /v1/hooks/{id}           one hook (404 if not configured)
    POST /v1/hooks/{id}/test      send a Logto-style test payload now
    POST /v1/hooks/{id}/pause     park the hook's deliveries (every replica, across restarts)
    POST /v1/hooks/{id}/resume    deliver again, and release what was parked meanwhile
    POST /v1/hooks/{id}/release   send the hook's parked deliveries now
    POST /v1/hooks/{id}/unblock   unblock keys an ordered hook blocked after a dead letter
    GET  /v1/deliveries           recent attempts (?hook_id=&outcome=&limit=)
    GET  /v1/partitions           assigned partitions: offsets, lag, holds
    POST /v1/reload               re-read the configuration files
    GET  /v1/openapi.json         the OpenAPI document

Everything under ``/v1`` needs ``Authorization: Bearer <admin.token>`` (RFC 6750), compared in
constant time. Without a configured token the ``/v1`` API is disabled: every ``/v1`` path
answers 403. A missing or wrong token answers 401 with ``WWW-Authenticate: Bearer``. Errors
under ``/v1`` are ``application/problem+json`` (RFC 9457: ``type``, ``title``, ``status``,
``detail``, plus ``errors`` for bad parameters and ``issues`` for a refused configuration);
the token never appears in an answer or a log line. ``/v1`` answers carry
``Cache-Control: no-store``. What the API reports and does comes from an
:class:`AdminBackend`, which the supervisor (``hookrelay.app``) implements.
"""

from __future__ import annotations

import hmac
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from functools import cache
from http import HTTPStatus
from importlib import resources
from typing import Any, Final, Protocol

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError
from multidict import MultiMapping
from pydantic import SecretStr
from ruamel.yaml import YAML

from hookrelay.errors import ConfigError, RunClaimedError
from hookrelay.ops.logs import get_logger, register_secrets

log = get_logger("hookrelay.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
View = list[dict[str, Any]] | Awaitable[list[dict[str, Any]]]
"""What a backend's views return: the list, or (the supervisor of worker processes, which
asks its workers) an awaitable of it."""


async def _resolved(view: View) -> list[dict[str, Any]]:
    return await view if inspect.isawaitable(view) else view


class AdminBackend(Protocol):
    """What the admin API asks the daemon; app.Daemon implements it."""

    def hooks(self) -> View:
        """Every configured hook with its state, in configuration order. Each dict:
        {"id": str, "name": str, "url": str (userinfo and query string replaced by "***"),
         "events": [str], "enabled": bool, "paused": bool,
         "paused_by": "gone" (410 Gone seen) | "operator" (POST .../pause) | None,
         "pause_reason": str | None (the operator's),
         "retry_backlog": {tier: int} (retries waiting in this replica's retry partitions,
         as last counted; see kafka.backlog), "retry_backlog_unscanned": int (records past
         one count's limit, of any hook: retry_backlog is then a lower bound),
         "circuit": "closed"|"open"|"half_open", "pending": int, "in_flight": int,
         "rate_limit": {"per_second": float, "burst": int, "current_per_second": float
                        (requests/s now), "adaptive": None | {"floor": float,
                        "latency_target_ms": float | None, "decreases": int,
                        "last_decrease": "throttled" | "latency" | None}} | None,
         "last_24h": {"requests": int, "succeeded": int, "success_rate": float | None}}"""

    def deliveries(self, *, hook_id: str | None, outcome: str | None, limit: int) -> View:
        """Recent attempts, newest first, at most ``limit``. Each dict:
        {"time": ISO-8601 UTC str, "hook_id": str, "delivery_id": str, "event": str,
         "attempt": int, "status": int | None, "duration_ms": float, "error": str | None,
         "outcome": "delivered"|"retrying"|"dead_lettered"|"parked",
         "response_body": str  (only present when admin.keep_response_bodies is true)}"""

    def partitions(self) -> View:
        """The partitions this member is assigned, by topic and partition. Each dict:
        {"topic": str, "partition": int, "role": "event"|"retry",
         "committed_offset": int | None, "lag": int | None, "unsettled": int,
         "paused": "starting"|"backpressure"|"retry_not_due"|None,
         "held_by_open_transaction": bool}"""

    async def test_hook(self, hook_id: str, event: str | None) -> dict[str, Any]:
        """POST a Logto-style test payload (see ``events.test_payload``) to one hook now, outside
        the retry machinery. Raises LookupError for an unknown hook id and ValueError for a
        bad event name. Returns {"hook_id", "event", "status": int | None,
        "duration_ms": float, "error": str | None, "response_body": str (first KiB)}"""

    async def pause_hook(self, hook_id: str, paused: bool, reason: str) -> None:
        """Pause (or resume) a configured hook for every replica, kept across restarts.
        Raises LookupError for an unknown hook id, aiokafka's KafkaError when the cluster
        cannot be reached."""

    async def resume_hook(self, hook_id: str, *, release: bool) -> dict[str, Any]:
        """Resume a configured hook for every replica and, with ``release``, send what it
        parked meanwhile (``kafka.control.resume``). Returns {"hook_id": str,
        "paused": False, "released": int (with release)}. Raises as ``release_hook``."""

    async def release_hook(self, hook_id: str, *, dry_run: bool) -> dict[str, Any]:
        """Send a configured hook's parked deliveries now. Returns {"hook_id": str,
        "released": int, "dry_run": bool}. Raises LookupError for an unknown hook id,
        RunClaimedError while another release of it runs, aiokafka's KafkaError or
        TimeoutError when the cluster cannot be read or written."""

    async def unblock_hook(self, hook_id: str, key: str | None) -> dict[str, Any]:
        """Unblock ``key`` (UTF-8 text; None: every key) of a configured hook that blocked
        it after a dead letter (``ordering_after_dead_letter: block``), for every replica.
        Returns {"hook_id": str, "unblocked": int, "keys": [str] (at most 100)}. Raises
        LookupError for an unknown hook id, aiokafka's KafkaError or TimeoutError when the
        cluster cannot be read or written."""

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration files and apply them. Raises hookrelay.errors.ConfigError
        (its .issues carry file, line, key path, message) when invalid — the running
        configuration stays. Returns {"hooks": int, "added": [ids], "removed": [ids],
        "changed": [ids], "restart_required": [key paths that changed but only apply at restart]}"""


DELIVERY_OUTCOMES: Final = ("delivered", "retrying", "dead_lettered", "parked")
"""Values of ``outcome`` in the deliveries log, and of the ``outcome`` filter."""

DELIVERIES_LIMIT_DEFAULT: Final = 100
DELIVERIES_LIMIT_MAX: Final = 1000
"""``GET /v1/deliveries?limit=`` runs 1..1000 and defaults to 100."""

MAX_REQUEST_BYTES: Final = 64 * 1024
"""Largest request body read (the only body the API takes is ``{"event": ...}``); more is 413."""

API_PREFIX: Final = "/v1"
DISABLED_DETAIL: Final = "admin API disabled: set admin.token or admin.token_file"
_REALM: Final = 'Bearer realm="hookrelay-admin"'
_HOOK_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,21}")
"""A hook id as the configuration accepts it (``config.models.HookId``; Logto's hookId)."""
_EVENT_NAME: Final = re.compile(r"[A-Za-z0-9]{1,64}(?:\.[A-Za-z0-9]{1,64}){0,7}")
"""An exact hook event name (``PostSignIn``, ``User.Data.Updated``); no wildcards."""


_TITLES: Final = {413: "Content Too Large", 422: "Unprocessable Content"}
"""Reason phrases as RFC 9110 names them, where Python 3.11's ``HTTPStatus`` still has the
older RFC 7231 ones; the rest come from ``HTTPStatus``."""


class _ApiError(Exception):
    """An error answer under ``/v1``: RFC 9457 problem details plus extension members."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions

    def response(self) -> web.Response:
        """The ``application/problem+json`` answer; ``type`` is ``about:blank`` because each
        status has one meaning in this API, so ``title`` is the status's reason phrase."""
        body = {
            "type": "about:blank",
            "title": _TITLES.get(self.status) or HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
            **self.extensions,
        }
        return web.Response(
            status=self.status,
            body=orjson.dumps(body),
            content_type="application/problem+json",
            headers=self.headers,
        )


def _json(data: object) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


@cache
def openapi_document() -> dict[str, Any]:
    """The admin listener's OpenAPI 3.1 document (``admin_openapi.yaml``, package data) as
    plain JSON-compatible data."""
    text = resources.files("hookrelay.ops.admin").joinpath("admin_openapi.yaml").read_text("utf-8")
    document: dict[str, Any] = YAML(typ="safe", pure=True).load(text)
    return document


@cache
def _openapi_json() -> bytes:
    return orjson.dumps(openapi_document())


def is_api(path: str) -> bool:
    """True for ``/v1`` and every path under it (the API's guard answers them all)."""
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


class AdminApi:
    """The ``/v1`` routes and their guard: ``backend`` answers them and ``token``
    (``admin.token``) guards them; without a token every ``/v1`` path answers 403. A token
    without a backend is a programming error (``ValueError``): there would be nothing to
    serve. The token is registered with the log redactor so that it never reaches a log line.
    """

    def __init__(self, backend: AdminBackend | None, token: SecretStr | None) -> None:
        self._backend = backend
        self._token: bytes | None = None
        self.set_token(token)
        openapi_document()  # a broken package fails at construction, not on the first GET

    @property
    def enabled(self) -> bool:
        """True when a token is configured (the API answers requests)."""
        return self._token is not None

    def set_token(self, token: SecretStr | None) -> None:
        """Use ``token`` from now on (a reload may rotate it; ``None`` disables ``/v1``)."""
        if token is None:
            self._token = None
            return
        if self._backend is None:
            raise ValueError("an admin token needs a backend: the /v1 API would serve nothing")
        text = token.get_secret_value()
        register_secrets([text])
        self._token = text.encode("utf-8")

    def add_routes(self, app: web.Application) -> None:
        """Mount the ``/v1`` routes and the guard that answers every ``/v1`` path."""
        app.middlewares.append(self._api_guard)
        v1 = API_PREFIX
        app.router.add_get(f"{v1}/hooks", self._list_hooks, allow_head=False)
        app.router.add_get(f"{v1}/hooks/{{id}}", self._get_hook, allow_head=False)
        app.router.add_post(f"{v1}/hooks/{{id}}/test", self._test_hook)
        app.router.add_post(f"{v1}/hooks/{{id}}/pause", self._pause_hook)
        app.router.add_post(f"{v1}/hooks/{{id}}/resume", self._resume_hook)
        app.router.add_post(f"{v1}/hooks/{{id}}/release", self._release_hook)
        app.router.add_post(f"{v1}/hooks/{{id}}/unblock", self._unblock_hook)
        app.router.add_get(f"{v1}/deliveries", self._list_deliveries, allow_head=False)
        app.router.add_get(f"{v1}/partitions", self._list_partitions, allow_head=False)
        app.router.add_post(f"{v1}/reload", self._reload)
        app.router.add_get(f"{v1}/openapi.json", self._get_openapi, allow_head=False)

    # Authorisation and errors for every path under /v1, matched or not.

    @web.middleware
    async def _api_guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_api(request.path):
            return await handler(request)
        try:
            self._authorize(request)
            response = await handler(request)
        except _ApiError as problem:
            response = problem.response()
        except web.HTTPException as e:  # aiohttp's own: no route, wrong method, body too large
            response = _http_problem(e).response()
        except Exception as e:
            log.exception("admin_request_failed", method=request.method, path=request.path)
            detail = f"internal error ({type(e).__name__}); see the daemon's log"
            response = _ApiError(500, detail).response()
        response.headers["Cache-Control"] = "no-store"
        return response

    def _authorize(self, request: web.Request) -> None:
        """Raise the 403 (API disabled) or 401 (missing or wrong bearer token) problem."""
        if self._token is None:
            raise _ApiError(403, DISABLED_DETAIL)
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            raise _ApiError(
                401,
                "missing bearer token: send Authorization: Bearer <admin.token>",
                headers={"WWW-Authenticate": _REALM},
            )
        # aiohttp decodes header bytes as UTF-8 with surrogateescape; encode back the same way
        # so that any header compares, in time independent of where it differs.
        given = credentials.encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self._token):
            log.warning("admin_token_refused", remote=request.remote, path=request.path)
            raise _ApiError(
                401,
                "invalid bearer token",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )

    @property
    def _api(self) -> AdminBackend:
        assert self._backend is not None, "a token (checked first) requires a backend"
        return self._backend

    async def _list_hooks(self, _request: web.Request) -> web.Response:
        return _json({"hooks": await _resolved(self._api.hooks())})

    async def _get_hook(self, request: web.Request) -> web.Response:
        hook_id = request.match_info["id"]
        for hook in await _resolved(self._api.hooks()):
            if hook["id"] == hook_id:
                return _json(hook)
        raise _ApiError(404, "no hook with this id is configured")

    async def _test_hook(self, request: web.Request) -> web.Response:
        hook_id = request.match_info["id"]
        event = await _test_event(request)
        try:
            result = await self._api.test_hook(hook_id, event)
        except LookupError:
            raise _ApiError(404, "no hook with this id is configured") from None
        except ValueError as e:
            raise _ApiError(400, f"event: {e}", errors=[_error("#/event", str(e))]) from None
        log.info(
            "admin_test_sent",
            hook_id=hook_id,
            event_name=result.get("event"),
            status=result.get("status"),
            remote=request.remote,
        )
        return _json(result)

    async def _pause_hook(self, request: web.Request) -> web.Response:
        members: _Members = {"reason": (lambda v: isinstance(v, str) and len(v) <= 500,
                                        "expected text of at most 500 characters")}  # fmt: skip
        body = await _optional_body(request, members, 'expected no body, or {"reason": "..."}')
        reason = str(body.get("reason", ""))

        async def pause(hook_id: str) -> dict[str, Any]:
            await self._api.pause_hook(hook_id, True, reason)
            return {"hook_id": hook_id, "paused": True}

        return await self._act(request, "pause", pause)

    async def _resume_hook(self, request: web.Request) -> web.Response:
        members: _Members = {"release": (lambda v: isinstance(v, bool), "expected true or false")}
        body = await _optional_body(request, members, 'expected no body, or {"release": false}')

        return await self._act(
            request, "resume",
            lambda hook_id: self._api.resume_hook(hook_id, release=body.get("release", True)),
        )  # fmt: skip

    async def _release_hook(self, request: web.Request) -> web.Response:
        members: _Members = {"dry_run": (lambda v: isinstance(v, bool), "expected true or false")}
        body = await _optional_body(request, members, 'expected no body, or {"dry_run": true}')
        dry_run = body.get("dry_run") is True
        return await self._act(
            request, "release", lambda hook_id: self._api.release_hook(hook_id, dry_run=dry_run)
        )

    async def _unblock_hook(self, request: web.Request) -> web.Response:
        members: _Members = {"key": (lambda v: isinstance(v, str) and 0 < len(v) <= 1000,
                                     "expected text of 1 to 1000 characters")}  # fmt: skip
        body = await _optional_body(request, members, 'expected no body, or {"key": "..."}')
        key = body.get("key")
        return await self._act(
            request, "unblock", lambda hook_id: self._api.unblock_hook(hook_id, key)
        )

    async def _act(
        self,
        request: web.Request,
        action: str,
        run: Callable[[str], Awaitable[dict[str, Any]]],
    ) -> web.Response:
        """Run one operator action on the hook of the path: 404 for an unknown hook, 503
        when Kafka cannot be reached (a pause or resume then decided nothing)."""
        hook_id = request.match_info["id"]
        try:
            result = await run(hook_id)
        except LookupError:
            raise _ApiError(404, "no hook with this id is configured") from None
        except RunClaimedError as e:
            raise _ApiError(409, str(e)) from None
        except (KafkaError, TimeoutError) as e:
            detail = f"Kafka could not be reached ({type(e).__name__}); try again"
            raise _ApiError(503, detail, headers={"Retry-After": "5"}) from None
        log.info("admin_hook_action", action=action, hook_id=hook_id, remote=request.remote)
        return _json(result)

    async def _list_deliveries(self, request: web.Request) -> web.Response:
        hook_id, outcome, limit = _deliveries_query(request.query)
        found = await _resolved(self._api.deliveries(hook_id=hook_id, outcome=outcome, limit=limit))
        return _json({"deliveries": found})

    async def _list_partitions(self, _request: web.Request) -> web.Response:
        return _json({"partitions": await _resolved(self._api.partitions())})

    async def _reload(self, request: web.Request) -> web.Response:
        log.info("admin_reload_requested", remote=request.remote)
        try:
            result = await self._api.reload()
        except ConfigError as e:
            issues = [
                {
                    "file": issue.file,
                    "line": issue.line,
                    "column": issue.column,
                    "path": issue.key_path,
                    "message": issue.message,  # ConfigIssue messages never hold a value
                }
                for issue in e.issues
            ]
            detail = (
                f"configuration refused ({len(issues)} problem(s)); the running configuration stays"
            )
            raise _ApiError(422, detail, issues=issues) from None
        return _json(result)

    async def _get_openapi(self, _request: web.Request) -> web.Response:
        return web.Response(body=_openapi_json(), content_type="application/json")


def _error(where: str, detail: str, *, parameter: bool = False) -> dict[str, str]:
    """One entry of a problem's ``errors``: ``pointer`` (RFC 6901, into the JSON body) or
    ``parameter`` (a query parameter's name), and what was expected."""
    return {"parameter" if parameter else "pointer": where, "detail": detail}


def _http_problem(e: web.HTTPException) -> _ApiError:
    """aiohttp's own refusals (no such route, wrong method, body too large) as problems."""
    headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
    details = {
        404: "no such route in the admin API; GET /v1/openapi.json lists them",
        405: f"method not allowed here; allowed: {e.headers.get('Allow', 'none')}",
        413: f"request body larger than {MAX_REQUEST_BYTES} bytes",
    }
    return _ApiError(e.status, details.get(e.status, e.reason), headers=headers)


_TEST_BODY_HINT: Final = 'expected no body, or a JSON object such as {"event": "PostSignIn"}'
_EVENT_EXPECTED: Final = "expected a hook event name such as PostSignIn or User.Created"
_Members = Mapping[str, tuple[Callable[[Any], bool], str]]
"""Members a request body may hold: name → (check, what was expected)."""


async def _test_event(request: web.Request) -> str | None:
    """The ``event`` of ``POST /v1/hooks/{id}/test``'s optional JSON body (``None``: the
    backend's default event). Raises the 415 or 400 problem for a body that is not that."""
    members: _Members = {
        "event": (lambda v: isinstance(v, str) and bool(_EVENT_NAME.fullmatch(v)), _EVENT_EXPECTED)
    }
    event = (await _optional_body(request, members, _TEST_BODY_HINT)).get("event")
    return None if event is None else str(event)


async def _optional_body(request: web.Request, members: _Members, hint: str) -> dict[str, Any]:
    """An optional JSON object body holding only ``members``, each passing its check (an
    empty body is ``{}``). Raises the 415 or 400 problem (``hint`` says what is expected)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    if request.content_type != "application/json":
        raise _ApiError(415, f"send Content-Type: application/json; {hint}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _ApiError(
            400, f"request body is not JSON; {hint}", errors=[_error("", "not JSON")]
        ) from None
    if not isinstance(body, dict):
        raise _ApiError(400, hint, errors=[_error("", "expected a JSON object")])
    errors = [_error(f"#/{name}", "unknown member") for name in body if name not in members]
    errors += [
        _error(f"#/{name}", expected)
        for name, (check, expected) in members.items()
        if name in body and not check(body[name])
    ]
    if errors:
        raise _ApiError(400, hint, errors=errors)
    return body


def _deliveries_query(query: MultiMapping[str]) -> tuple[str | None, str | None, int]:
    """``(hook_id, outcome, limit)`` from ``GET /v1/deliveries``'s query string. Raises the 400
    problem listing every unknown, repeated or malformed parameter."""
    errors = [
        _error(name, "unknown parameter; expected hook_id, outcome or limit", parameter=True)
        for name in dict.fromkeys(query)
        if name not in ("hook_id", "outcome", "limit")
    ]
    errors.extend(
        _error(name, "given more than once", parameter=True)
        for name in ("hook_id", "outcome", "limit")
        if len(query.getall(name, ())) > 1
    )
    hook_id, outcome, limit = query.get("hook_id"), query.get("outcome"), query.get("limit")
    if hook_id is not None and not _HOOK_ID.fullmatch(hook_id):
        expected = "expected a hook id: 1-21 characters of A-Z a-z 0-9 _ -"
        errors.append(_error("hook_id", expected, parameter=True))
    if outcome is not None and outcome not in DELIVERY_OUTCOMES:
        expected = f"expected one of: {', '.join(DELIVERY_OUTCOMES)}"
        errors.append(_error("outcome", expected, parameter=True))
    count = _limit(limit)
    if count is None:
        expected = f"expected an integer from 1 to {DELIVERIES_LIMIT_MAX}"
        errors.append(_error("limit", expected, parameter=True))
    if errors or count is None:
        raise _ApiError(400, "invalid query parameters", errors=errors)
    return hook_id, outcome, count


def _limit(text: str | None) -> int | None:
    if text is None:
        return DELIVERIES_LIMIT_DEFAULT
    # Short ASCII digits only: int() would also take "+5", " 5", other scripts' digits and
    # 4,300-digit strings.
    if len(text) > 4 or not text.isascii() or not text.isdigit():
        return None
    count = int(text)
    return count if 1 <= count <= DELIVERIES_LIMIT_MAX else None
