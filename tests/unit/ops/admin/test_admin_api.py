"""The admin listener's HTTP side: a real aiohttp ``AdminServer`` on 127.0.0.1, real HTTP
requests, and a recording fake ``AdminBackend`` in place of the daemon.

Every request a test sends and every answer it receives is checked against the OpenAPI
document with openapi-core (``call`` below), so the document and the code cannot drift; the
document itself is validated with openapi-spec-validator, and schemathesis (its CLI, against
the live server) looks for answers the document does not allow, 500s included.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import os
import re
import secrets
import shutil
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from aiohttp import ClientSession
from aiokafka.errors import KafkaConnectionError
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate as validate_spec
from pydantic import SecretStr
from structlog.testing import capture_logs

from hookrelay import __version__
from hookrelay.errors import ConfigError, ConfigIssue
from hookrelay.ops.admin import (
    DISABLED_DETAIL,
    IDLE_TIMEOUT_S,
    MAX_CONNECTIONS,
    AdminBackend,
    AdminServer,
    ReadinessCheck,
    openapi_document,
)
from hookrelay.ops.logs import redact_secrets
from hookrelay.ops.metrics import Metrics

TOKEN = secrets.token_urlsafe(32)
# openapi-core parses application/json only; problem details (RFC 9457) are JSON too.
SPEC = OpenAPI.from_dict(
    copy.deepcopy(openapi_document()),
    config=Config(extra_media_type_deserializers={"application/problem+json": orjson.loads}),
)


def hook_state(hook_id: str, **changes: Any) -> dict[str, Any]:
    """A hook as ``AdminBackend.hooks()`` describes it."""
    state: dict[str, Any] = {
        "id": hook_id,
        "name": f"{hook_id} receiver",
        "url": f"https://{hook_id}.example.com/hooks?***",
        "events": ["User.Created", "Organization.*"],
        "enabled": True,
        "filter": None,
        "paused": False,
        "paused_by": None,
        "pause_reason": None,
        "retry_backlog": {},
        "retry_backlog_unscanned": 0,
        "circuit": "closed",
        "pending": 0,
        "in_flight": 0,
        "rate_limit": None,
        "ordering": None,
        "last_24h": {"requests": 0, "succeeded": 0, "success_rate": None},
    }
    state.update(changes)
    return state


def attempt(hook_id: str, outcome: str, n: int, **changes: Any) -> dict[str, Any]:
    """A recent attempt as ``AdminBackend.deliveries()`` describes it."""
    record: dict[str, Any] = {
        "time": f"2026-08-21T09:15:{n:02d}.123Z",
        "hook_id": hook_id,
        "delivery_id": f"msg_{hook_id}_{n}",
        "event": "User.Created",
        "attempt": 1,
        "status": 200 if outcome == "delivered" else 503,
        "duration_ms": 12.5,
        "error": None if outcome == "delivered" else "HTTP 503",
        "outcome": outcome,
    }
    record.update(changes)
    return record


@dataclass
class FakeBackend:
    """Records what the API asks; answers from its fields. ``reload_error`` makes ``reload``
    raise; ``test_gate`` (when set) holds ``test_hook`` until it is set."""

    hooks_state: list[dict[str, Any]] = field(default_factory=list)
    recent: list[dict[str, Any]] = field(default_factory=list)
    reload_error: Exception | None = None
    assigned: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def hooks(self) -> list[dict[str, Any]]:
        self.calls.append(("hooks", None))
        return copy.deepcopy(self.hooks_state)

    def deliveries(
        self, *, hook_id: str | None, outcome: str | None, limit: int
    ) -> list[dict[str, Any]]:
        self.calls.append(("deliveries", {"hook_id": hook_id, "outcome": outcome, "limit": limit}))
        found = [
            d
            for d in self.recent
            if hook_id in (None, d["hook_id"]) and outcome in (None, d["outcome"])
        ]
        return copy.deepcopy(found[:limit])

    def partitions(self) -> list[dict[str, Any]]:
        self.calls.append(("partitions", None))
        return copy.deepcopy(self.assigned)

    async def test_hook(self, hook_id: str, event: str | None) -> dict[str, Any]:
        self.calls.append(("test_hook", {"hook_id": hook_id, "event": event}))
        if hook_id not in {h["id"] for h in self.hooks_state}:
            raise LookupError(hook_id)
        if event == "Nope":
            raise ValueError("Nope is not accepted by this backend")
        return {
            "hook_id": hook_id,
            "event": event or "PostRegister",
            "status": 204,
            "duration_ms": 3.25,
            "error": None,
            "response_body": "",
        }

    async def pause_hook(self, hook_id: str, paused: bool, reason: str) -> None:
        self.calls.append(("pause_hook", {"hook_id": hook_id, "paused": paused, "reason": reason}))
        self._known(hook_id)

    async def resume_hook(self, hook_id: str, *, release: bool) -> dict[str, Any]:
        await self.pause_hook(hook_id, False, "")
        answer: dict[str, Any] = {"hook_id": hook_id, "paused": False}
        if release:
            answer["released"] = (await self.release_hook(hook_id, dry_run=False))["released"]
        return answer

    async def release_hook(self, hook_id: str, *, dry_run: bool) -> dict[str, Any]:
        self.calls.append(("release_hook", {"hook_id": hook_id, "dry_run": dry_run}))
        self._known(hook_id)
        return {"hook_id": hook_id, "released": 3, "dry_run": dry_run}

    async def unblock_hook(self, hook_id: str, key: str | None) -> dict[str, Any]:
        self.calls.append(("unblock_hook", {"hook_id": hook_id, "key": key}))
        self._known(hook_id)
        keys = ["user-1", "user-2"] if key is None else [key]
        return {"hook_id": hook_id, "unblocked": len(keys), "keys": keys}

    def _known(self, hook_id: str) -> None:
        if hook_id == "offline":
            raise KafkaConnectionError("broker down")
        if hook_id not in {h["id"] for h in self.hooks_state}:
            raise LookupError(hook_id)

    async def reload(self) -> dict[str, Any]:
        self.calls.append(("reload", None))
        if self.reload_error is not None:
            raise self.reload_error
        return {
            "hooks": len(self.hooks_state),
            "added": ["new-hook"],
            "removed": [],
            "changed": ["crm-sync"],
            "restart_required": ["kafka.bootstrap_servers"],
        }


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Admin:
    """A running AdminServer with its backend (a FakeBackend here, the real Daemon in
    tests/integration/test_admin_api.py) and an HTTP client."""

    server: AdminServer
    backend: Any
    session: ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = TOKEN,
        params: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        request_conforms: bool = True,
        documented: bool = True,
    ) -> Answer:
        """Send one request; check it (``request_conforms``: the document accepts it, else
        refuses it) and the answer against the OpenAPI document. ``documented=False`` is for
        a path or method the document does not have: then the answer is checked against its
        Problem schema."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None:
            sent["Content-Type"] = content_type
        async with self.session.request(
            method, self.base + path, params=params, data=body, headers=sent
        ) as response:
            answer = Answer(response.status, dict(response.headers), await response.read())
        request = MockRequest(
            self.base,
            method,
            path,
            args=params,  # type: ignore[arg-type]  # a list of pairs keeps repeated names
            headers=sent,
            data=body,
            content_type=content_type if body is not None else "",
        )
        if not documented:
            check_problem(answer)
            return answer
        if request_conforms:
            SPEC.validate_request(request)
        else:
            with pytest.raises(Exception):  # noqa: B017  # any of openapi-core's refusals
                SPEC.validate_request(request)
        returned = MockResponse(
            answer.body,
            status_code=answer.status,
            headers=dict(answer.headers),
            content_type=answer.headers.get("Content-Type", ""),
        )
        SPEC.validate_response(request, returned)
        return answer


PROBLEM_SCHEMA = openapi_document()["components"]["schemas"]["Problem"]


def check_problem(answer: Answer) -> None:
    """An answer outside the document's operations is still an RFC 9457 problem as the
    document's Problem schema describes it."""
    assert answer.headers["Content-Type"] == "application/problem+json"
    jsonschema.validate(answer.json, PROBLEM_SCHEMA)
    assert answer.json["status"] == answer.status


def problem(status: int, title: str, detail: str, **extensions: Any) -> dict[str, Any]:
    """The body of an RFC 9457 problem answer as the admin API writes it."""
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extensions}


def not_ready() -> list[str]:
    return ["consumer not started"]


@asynccontextmanager
async def running(
    backend: AdminBackend,
    token: str | None,
    readiness: ReadinessCheck = not_ready,
    metrics: Metrics | None = None,
) -> AsyncIterator[Admin]:
    """An AdminServer on a free port of 127.0.0.1 serving ``backend``, with a client."""
    secret = SecretStr(token) if token is not None else None
    server = AdminServer(
        "127.0.0.1", 0, metrics or Metrics(), readiness, backend=backend, token=secret
    )
    await server.start()
    try:
        async with ClientSession() as session:
            yield Admin(server, backend, session)
    finally:
        await server.stop()


ADAPTIVE_RATE_LIMIT = {
    "per_second": 20.0, "burst": 40, "current_per_second": 14.58,
    "adaptive": {"floor": 1.0, "latency_target_ms": 500.0, "decreases": 3,
                 "last_decrease": "throttled"},
}  # fmt: skip


def sample_backend() -> FakeBackend:
    return FakeBackend(
        hooks_state=[
            hook_state("crm-sync", rate_limit=ADAPTIVE_RATE_LIMIT),
            hook_state(
                "audit-log",
                circuit="open",
                pending=3,
                in_flight=1,
                last_24h={"requests": 8, "succeeded": 6, "success_rate": 0.75},
            ),
        ],
        recent=[
            attempt("crm-sync", "delivered", 9),
            attempt("audit-log", "retrying", 8, status=None, error="timeout after 10 s"),
            attempt("crm-sync", "dead_lettered", 7, status=400, error="HTTP 400"),
            attempt("audit-log", "parked", 6, status=None, error=None, attempt=2),
            attempt("crm-sync", "delivered", 5, response_body='{"ok":true}'),
        ],
    )


@pytest.fixture
async def admin() -> AsyncIterator[Admin]:
    async with running(sample_backend(), TOKEN) as started:
        yield started


# ── The document ────────────────────────────────────────────────────────────────────────────────


def test_the_openapi_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    validate_spec(copy.deepcopy(document))  # raises on any violation of the 3.1 schema
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == __version__


def test_the_document_describes_every_route_the_server_has() -> None:
    server = AdminServer("127.0.0.1", 0, Metrics(), not_ready, backend=FakeBackend())
    routes = {
        (route.method, route.resource.canonical)
        for route in server._app().router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {
        (method.upper(), path)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert routes == documented


def test_only_probes_and_metrics_are_documented_without_authentication() -> None:
    document = openapi_document()
    assert document["security"] == [{"bearerAuth": []}]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    open_paths = {
        path
        for path, item in document["paths"].items()
        for operation in item.values()
        if isinstance(operation, dict) and operation.get("security") == []
    }
    assert open_paths == {"/metrics", "/healthz", "/readyz"}


async def test_the_document_is_served_as_json(admin: Admin) -> None:
    answer = await admin.call("GET", "/v1/openapi.json")

    assert answer.status == 200
    assert answer.json == openapi_document()
    assert answer.headers["Cache-Control"] == "no-store"


# ── Authentication ──────────────────────────────────────────────────────────────────────────────

V1_REQUESTS = [
    ("GET", "/v1/hooks"),
    ("GET", "/v1/hooks/crm-sync"),
    ("POST", "/v1/hooks/crm-sync/test"),
    ("POST", "/v1/hooks/crm-sync/pause"),
    ("POST", "/v1/hooks/crm-sync/resume"),
    ("POST", "/v1/hooks/crm-sync/release"),
    ("POST", "/v1/hooks/crm-sync/unblock"),
    ("GET", "/v1/deliveries"),
    ("GET", "/v1/partitions"),
    ("POST", "/v1/reload"),
    ("GET", "/v1/openapi.json"),
]


@pytest.mark.parametrize(("method", "path"), V1_REQUESTS)
async def test_every_v1_route_refuses_a_request_without_a_token(
    admin: Admin, method: str, path: str
) -> None:
    answer = await admin.call(method, path, token=None, request_conforms=False)

    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="hookrelay-admin"'
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json == problem(
        401, "Unauthorized", "missing bearer token: send Authorization: Bearer <admin.token>"
    )
    assert admin.backend.calls == []


@pytest.mark.parametrize(("method", "path"), V1_REQUESTS)
async def test_every_v1_route_refuses_a_wrong_token(admin: Admin, method: str, path: str) -> None:
    answer = await admin.call(method, path, token=TOKEN[:-1] + ("A" if TOKEN[-1] != "A" else "B"))

    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == (
        'Bearer realm="hookrelay-admin", error="invalid_token"'
    )
    assert answer.json["detail"] == "invalid bearer token"
    assert admin.backend.calls == []


@pytest.mark.parametrize(
    "authorization",
    [
        f"Basic {TOKEN}",
        "Bearer",
        "Bearer ",
        TOKEN,
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}{TOKEN}",
        "Bearer é-not-ascii-ü",
    ],
)
async def test_anything_but_the_exact_bearer_token_is_refused(
    admin: Admin, authorization: str
) -> None:
    async with admin.session.get(
        admin.base + "/v1/hooks", headers={"Authorization": authorization}
    ) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="hookrelay-admin"')
        assert TOKEN not in await response.text()
    assert admin.backend.calls == []


async def test_the_bearer_scheme_is_case_insensitive(admin: Admin) -> None:
    async with admin.session.get(
        admin.base + "/v1/hooks", headers={"Authorization": f"bearer {TOKEN}"}
    ) as response:
        assert response.status == 200


async def test_unknown_v1_paths_need_the_token_before_saying_not_found(admin: Admin) -> None:
    async with admin.session.get(admin.base + "/v1/secrets") as response:
        assert response.status == 401
    answer = await admin.call("GET", "/v1/hooks/crm-sync/nothing-here", documented=False)
    assert answer.status == 404
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json["title"] == "Not Found"


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
async def test_probes_and_metrics_need_no_token(admin: Admin, path: str) -> None:
    answer = await admin.call("GET", path, token=None)

    assert answer.status in (200, 503)
    assert "Cache-Control" not in answer.headers


async def test_probes_answer_as_before(admin: Admin) -> None:
    health = await admin.call("GET", "/healthz", token=None)
    ready = await admin.call("GET", "/readyz", token=None)
    metrics = await admin.call("GET", "/metrics", token=None)

    assert (health.status, health.json) == (200, {"status": "ok"})
    assert (ready.status, ready.json) == (
        503,
        {"ready": False, "reasons": ["consumer not started"]},
    )
    assert metrics.status == 200
    assert b"hookrelay_ready 0.0" in metrics.body


async def test_a_refused_token_is_logged_without_the_token(admin: Admin) -> None:
    wrong = secrets.token_urlsafe(32)
    with capture_logs() as logs:
        answer = await admin.call("GET", "/v1/hooks", token=wrong)

    assert answer.status == 401
    refused = [entry for entry in logs if entry["event"] == "admin_token_refused"]
    assert refused == [
        {
            "event": "admin_token_refused",
            "log_level": "warning",
            "component": "hookrelay.admin",
            "remote": "127.0.0.1",
            "path": "/v1/hooks",
        }
    ]
    assert all(wrong not in repr(entry) and TOKEN not in repr(entry) for entry in logs)


async def test_the_token_is_registered_with_the_log_redactor(admin: Admin) -> None:
    event = {"event": "oops", "error": f"header was Bearer {TOKEN}"}

    assert redact_secrets(None, "info", event)["error"] == "header was Bearer ***"


# ── The API disabled ────────────────────────────────────────────────────────────────────────────


@pytest.fixture
async def disabled() -> AsyncIterator[Admin]:
    async with running(FakeBackend(hooks_state=[hook_state("crm-sync")]), None) as started:
        yield started


@pytest.mark.parametrize(("method", "path"), [*V1_REQUESTS, ("GET", "/v1/unknown")])
async def test_without_a_configured_token_every_v1_path_answers_403(
    disabled: Admin, method: str, path: str
) -> None:
    async with disabled.session.request(
        method, disabled.base + path, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as response:
        assert response.status == 403
        assert response.headers["Content-Type"] == "application/problem+json"
        assert await response.json(content_type=None) == problem(403, "Forbidden", DISABLED_DETAIL)
    assert DISABLED_DETAIL == "admin API disabled: set admin.token or admin.token_file"
    assert disabled.backend.calls == []


async def test_without_a_configured_token_probes_still_answer(disabled: Admin) -> None:
    for path in ("/metrics", "/healthz", "/readyz"):
        answer = await disabled.call("GET", path, token=None)
        assert answer.status in (200, 503), path


async def test_a_token_can_be_set_later_and_taken_away(disabled: Admin) -> None:
    disabled.server.set_token(SecretStr(TOKEN))
    assert (await disabled.call("GET", "/v1/hooks")).status == 200

    disabled.server.set_token(None)
    answer = await disabled.call("GET", "/v1/hooks")
    assert (answer.status, answer.json["detail"]) == (403, DISABLED_DETAIL)


def test_a_token_without_a_backend_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="needs a backend"):
        AdminServer("127.0.0.1", 0, Metrics(), not_ready, token=SecretStr(TOKEN))


# ── Hooks ───────────────────────────────────────────────────────────────────────────────────────


async def test_hooks_are_listed_with_their_state_in_configuration_order(admin: Admin) -> None:
    answer = await admin.call("GET", "/v1/hooks")

    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json == {"hooks": admin.backend.hooks_state}
    assert answer.headers["Cache-Control"] == "no-store"


async def test_one_hook_is_read_by_id(admin: Admin) -> None:
    answer = await admin.call("GET", "/v1/hooks/audit-log")

    assert answer.status == 200
    assert answer.json == admin.backend.hooks_state[1]
    assert answer.json["last_24h"] == {"requests": 8, "succeeded": 6, "success_rate": 0.75}


@pytest.mark.parametrize("hook_id", ["no-such-hook", "x" * 21])
async def test_an_unknown_hook_is_404(admin: Admin, hook_id: str) -> None:
    answer = await admin.call("GET", f"/v1/hooks/{hook_id}")

    assert answer.status == 404
    assert answer.json == problem(404, "Not Found", "no hook with this id is configured")


async def test_a_wrong_method_is_405_with_allow(admin: Admin) -> None:
    answer = await admin.call("DELETE", "/v1/hooks/crm-sync", documented=False)

    assert answer.status == 405
    assert answer.headers["Allow"] == "GET"
    assert answer.json["title"] == "Method Not Allowed"
    assert "GET" in answer.json["detail"]


# ── Pause, resume, release ──────────────────────────────────────────────────────────────────────


async def test_a_pause_carries_its_reason_and_a_resume_releases_by_default(admin: Admin) -> None:
    paused = await admin.call("POST", "/v1/hooks/crm-sync/pause", body=b'{"reason": "moving"}')
    resumed = await admin.call("POST", "/v1/hooks/crm-sync/resume")

    assert (paused.status, paused.json) == (200, {"hook_id": "crm-sync", "paused": True})
    assert (resumed.status, resumed.json) == (
        200, {"hook_id": "crm-sync", "paused": False, "released": 3},
    )  # fmt: skip
    assert admin.backend.calls == [
        ("pause_hook", {"hook_id": "crm-sync", "paused": True, "reason": "moving"}),
        ("pause_hook", {"hook_id": "crm-sync", "paused": False, "reason": ""}),
        ("release_hook", {"hook_id": "crm-sync", "dry_run": False}),
    ]


async def test_a_resume_can_leave_parked_deliveries_and_a_release_can_only_count(
    admin: Admin,
) -> None:
    resumed = await admin.call("POST", "/v1/hooks/crm-sync/resume", body=b'{"release": false}')
    counted = await admin.call("POST", "/v1/hooks/crm-sync/release", body=b'{"dry_run": true}')

    assert resumed.json == {"hook_id": "crm-sync", "paused": False}
    assert counted.json == {"hook_id": "crm-sync", "released": 3, "dry_run": True}


async def test_an_unblock_names_one_key_or_unblocks_every_key(admin: Admin) -> None:
    one = await admin.call("POST", "/v1/hooks/crm-sync/unblock", body=b'{"key": "user-7"}')
    every = await admin.call("POST", "/v1/hooks/crm-sync/unblock")
    bad = await admin.call("POST", "/v1/hooks/crm-sync/unblock", body=b'{"key": ""}',
                           request_conforms=False)  # fmt: skip

    assert one.json == {"hook_id": "crm-sync", "unblocked": 1, "keys": ["user-7"]}
    assert every.json == {"hook_id": "crm-sync", "unblocked": 2, "keys": ["user-1", "user-2"]}
    assert bad.status == 400
    assert admin.backend.calls == [
        ("unblock_hook", {"hook_id": "crm-sync", "key": "user-7"}),
        ("unblock_hook", {"hook_id": "crm-sync", "key": None}),
    ]


async def test_operator_actions_answer_404_for_an_unknown_hook_and_503_without_kafka(
    admin: Admin,
) -> None:
    unknown = await admin.call("POST", "/v1/hooks/ghost/pause")
    offline = await admin.call("POST", "/v1/hooks/offline/release")
    bad = await admin.call("POST", "/v1/hooks/crm-sync/pause", body=b'{"reason": 5, "x": 1}',
                           request_conforms=False)  # fmt: skip

    assert unknown.status == 404
    assert (offline.status, offline.headers["Retry-After"]) == (503, "5")
    assert "nothing" not in offline.json["detail"] and "Kafka" in offline.json["detail"]
    assert bad.status == 400
    assert sorted(e["pointer"] for e in bad.json["errors"]) == ["#/reason", "#/x"]


# ── Test sends ──────────────────────────────────────────────────────────────────────────────────


async def test_a_test_send_without_a_body_uses_the_backend_default_event(admin: Admin) -> None:
    answer = await admin.call("POST", "/v1/hooks/crm-sync/test")

    assert answer.status == 200
    assert answer.json == {
        "hook_id": "crm-sync",
        "event": "PostRegister",
        "status": 204,
        "duration_ms": 3.25,
        "error": None,
        "response_body": "",
    }
    assert admin.backend.calls == [("test_hook", {"hook_id": "crm-sync", "event": None})]


async def test_a_test_send_takes_the_event_from_the_json_body(admin: Admin) -> None:
    answer = await admin.call(
        "POST", "/v1/hooks/audit-log/test", body=b'{"event": "Organization.Membership.Updated"}'
    )

    assert answer.status == 200
    assert answer.json["event"] == "Organization.Membership.Updated"
    assert admin.backend.calls == [
        ("test_hook", {"hook_id": "audit-log", "event": "Organization.Membership.Updated"})
    ]


async def test_a_test_send_with_an_empty_object_uses_the_default_event(admin: Admin) -> None:
    answer = await admin.call("POST", "/v1/hooks/crm-sync/test", body=b"{}")

    assert answer.status == 200
    assert admin.backend.calls == [("test_hook", {"hook_id": "crm-sync", "event": None})]


async def test_a_test_send_to_an_unknown_hook_is_404(admin: Admin) -> None:
    answer = await admin.call("POST", "/v1/hooks/ghost/test", body=b'{"event": "PostSignIn"}')

    assert answer.status == 404
    assert answer.json["detail"] == "no hook with this id is configured"


EVENT_ERROR = {
    "pointer": "#/event",
    "detail": "expected a hook event name such as PostSignIn or User.Created",
}


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (b'{"event": "User.*"}', [EVENT_ERROR]),
        (b'{"event": ""}', [EVENT_ERROR]),
        (b'{"event": null}', [EVENT_ERROR]),
        (b'{"event": 42}', [EVENT_ERROR]),
        (b'{"evnt": "PostSignIn"}', [{"pointer": "#/evnt", "detail": "unknown member"}]),
        (b'["PostSignIn"]', [{"pointer": "", "detail": "expected a JSON object"}]),
    ],
)
async def test_a_malformed_test_body_is_400_naming_the_member(
    admin: Admin, body: bytes, errors: list[dict[str, str]]
) -> None:
    answer = await admin.call("POST", "/v1/hooks/crm-sync/test", body=body, request_conforms=False)

    assert answer.status == 400
    assert answer.json == problem(
        400,
        "Bad Request",
        'expected no body, or a JSON object such as {"event": "PostSignIn"}',
        errors=errors,
    )
    assert admin.backend.calls == []


async def test_a_test_body_that_is_not_json_is_400(admin: Admin) -> None:
    answer = await admin.call(
        "POST", "/v1/hooks/crm-sync/test", body=b"{event: PostSignIn}", request_conforms=False
    )

    assert answer.status == 400
    assert answer.json["detail"].startswith("request body is not JSON")


async def test_a_test_body_of_another_media_type_is_415(admin: Admin) -> None:
    answer = await admin.call(
        "POST",
        "/v1/hooks/crm-sync/test",
        body=b"event=PostSignIn",
        content_type="application/x-www-form-urlencoded",
        request_conforms=False,
    )

    assert answer.status == 415
    assert answer.json["title"] == "Unsupported Media Type"
    assert admin.backend.calls == []


async def test_a_test_body_over_64_kib_is_413(admin: Admin) -> None:
    body = orjson.dumps({"event": "PostSignIn", "padding": "x" * 70_000})
    answer = await admin.call("POST", "/v1/hooks/crm-sync/test", body=body, request_conforms=False)

    assert answer.status == 413
    assert answer.json["detail"] == "request body larger than 65536 bytes"
    assert admin.backend.calls == []


async def test_an_event_the_backend_refuses_is_400(admin: Admin) -> None:
    answer = await admin.call("POST", "/v1/hooks/crm-sync/test", body=b'{"event": "Nope"}')

    assert answer.status == 400
    assert answer.json["errors"] == [
        {"pointer": "#/event", "detail": "Nope is not accepted by this backend"}
    ]


# ── Deliveries ──────────────────────────────────────────────────────────────────────────────────


async def test_recent_attempts_default_to_100_newest_first(admin: Admin) -> None:
    answer = await admin.call("GET", "/v1/deliveries")

    assert answer.status == 200
    assert answer.json == {"deliveries": admin.backend.recent}
    assert admin.backend.calls == [("deliveries", {"hook_id": None, "outcome": None, "limit": 100})]
    assert answer.json["deliveries"][-1]["response_body"] == '{"ok":true}'


async def test_recent_attempts_are_filtered_by_hook_outcome_and_limit(admin: Admin) -> None:
    params = [("hook_id", "crm-sync"), ("outcome", "delivered"), ("limit", "1")]
    answer = await admin.call("GET", "/v1/deliveries", params=params)

    assert answer.status == 200
    assert [d["delivery_id"] for d in answer.json["deliveries"]] == ["msg_crm-sync_9"]
    assert admin.backend.calls == [
        ("deliveries", {"hook_id": "crm-sync", "outcome": "delivered", "limit": 1})
    ]


@pytest.mark.parametrize("outcome", ["delivered", "retrying", "dead_lettered", "parked"])
async def test_every_documented_outcome_is_accepted_as_a_filter(admin: Admin, outcome: str) -> None:
    answer = await admin.call("GET", "/v1/deliveries", params=[("outcome", outcome)])

    assert answer.status == 200
    assert {d["outcome"] for d in answer.json["deliveries"]} == {outcome}


async def test_the_largest_limit_is_1000(admin: Admin) -> None:
    answer = await admin.call("GET", "/v1/deliveries", params=[("limit", "1000")])

    assert answer.status == 200
    assert admin.backend.calls[-1] == (
        "deliveries",
        {"hook_id": None, "outcome": None, "limit": 1000},
    )


LIMIT_ERROR = {"parameter": "limit", "detail": "expected an integer from 1 to 1000"}
OUTCOME_ERROR = {
    "parameter": "outcome",
    "detail": "expected one of: delivered, retrying, dead_lettered, parked",
}
HOOK_ID_ERROR = {
    "parameter": "hook_id",
    "detail": "expected a hook id: 1-21 characters of A-Z a-z 0-9 _ -",
}
REPEATED_ERROR = {"parameter": "limit", "detail": "given more than once"}
UNKNOWN_ERROR = {
    "parameter": "hook",
    "detail": "unknown parameter; expected hook_id, outcome or limit",
}


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ([("limit", "0")], [LIMIT_ERROR]),
        ([("limit", "1001")], [LIMIT_ERROR]),
        ([("limit", "-1")], [LIMIT_ERROR]),
        ([("limit", "ten")], [LIMIT_ERROR]),
        ([("limit", "")], [LIMIT_ERROR]),
        ([("limit", "9" * 5000)], [LIMIT_ERROR]),
        ([("outcome", "failed")], [OUTCOME_ERROR]),
        ([("hook_id", "has space")], [HOOK_ID_ERROR]),
        ([("hook", "crm-sync")], [UNKNOWN_ERROR]),
        ([("limit", "5"), ("limit", "6")], [REPEATED_ERROR]),
        ([("outcome", "nope"), ("limit", "0")], [OUTCOME_ERROR, LIMIT_ERROR]),
    ],
)
async def test_a_bad_query_is_400_listing_every_problem(
    admin: Admin, params: list[tuple[str, str]], errors: list[dict[str, str]]
) -> None:
    # A repeated or unknown parameter is not something OpenAPI can forbid; the rest it can.
    refusable = not any(name == "hook" for name, _ in params) and len(params) == len(dict(params))
    answer = await admin.call(
        "GET", "/v1/deliveries", params=params, request_conforms=not refusable
    )

    assert answer.status == 400
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json == problem(400, "Bad Request", "invalid query parameters", errors=errors)
    assert admin.backend.calls == []


# ── Reload ──────────────────────────────────────────────────────────────────────────────────────


async def test_a_reload_answers_what_changed(admin: Admin) -> None:
    answer = await admin.call("POST", "/v1/reload")

    assert answer.status == 200
    assert answer.json == {
        "hooks": 2,
        "added": ["new-hook"],
        "removed": [],
        "changed": ["crm-sync"],
        "restart_required": ["kafka.bootstrap_servers"],
    }
    assert admin.backend.calls == [("reload", None)]


async def test_a_refused_configuration_is_422_with_every_issue(admin: Admin) -> None:
    hooks_file, missing = "/etc/hookrelay/hooks.yaml", "/etc/hookrelay/missing.yaml"
    admin.backend.reload_error = ConfigError(
        [
            ConfigIssue(hooks_file, 4, 10, "hooks[0].url", "expected an http:// or https:// URL"),
            ConfigIssue(
                hooks_file, 5, 18, "hooks[0].signing_key", "environment variable CRM_KEY is not set"
            ),
            ConfigIssue(missing, 0, 0, "", "cannot read this file: No such file or directory"),
        ]
    )
    answer = await admin.call("POST", "/v1/reload")

    assert answer.status == 422
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json == {
        "type": "about:blank",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "configuration refused (3 problem(s)); the running configuration stays",
        "issues": [
            {
                "file": "/etc/hookrelay/hooks.yaml",
                "line": 4,
                "column": 10,
                "path": "hooks[0].url",
                "message": "expected an http:// or https:// URL",
            },
            {
                "file": "/etc/hookrelay/hooks.yaml",
                "line": 5,
                "column": 18,
                "path": "hooks[0].signing_key",
                "message": "environment variable CRM_KEY is not set",
            },
            {
                "file": "/etc/hookrelay/missing.yaml",
                "line": 0,
                "column": 0,
                "path": "",
                "message": "cannot read this file: No such file or directory",
            },
        ],
    }


async def test_a_backend_failure_is_500_without_its_message(admin: Admin) -> None:
    admin.backend.reload_error = RuntimeError(f"boom with {TOKEN}")
    with capture_logs() as logs:
        answer = await admin.call("POST", "/v1/reload")

    assert answer.status == 500
    assert answer.json == problem(
        500, "Internal Server Error", "internal error (RuntimeError); see the daemon's log"
    )
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["admin_request_failed"]


# ── The fake has the backend's shape ───────────────────────────────────────────────────────────


@pytest.mark.parametrize("name", ["hooks", "deliveries", "test_hook", "reload"])
def test_the_fake_backend_has_the_protocols_methods(name: str) -> None:
    """The fake answers the same calls as AdminBackend (names, parameters, sync or async), so
    a change to the interface fails here before it fails in app.Daemon."""
    ours, theirs = getattr(FakeBackend, name), getattr(AdminBackend, name)
    assert [(p.name, p.kind) for p in inspect.signature(ours).parameters.values()] == [
        (p.name, p.kind) for p in inspect.signature(theirs).parameters.values()
    ]
    assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(theirs)


# ── schemathesis against the live server ────────────────────────────────────────────────────────


def schemathesis_command() -> list[str]:
    """The schemathesis CLI of this interpreter's environment (installed with the dev extra)."""
    script = Path(sys.executable).with_name("schemathesis")
    if script.exists():
        return [str(script)]
    found = shutil.which("schemathesis")
    assert found is not None, "schemathesis is missing: pip install -e '.[dev]'"
    return [found]


async def test_schemathesis_finds_no_answer_the_document_does_not_allow(tmp_path: Path) -> None:
    # Ready, so that /readyz's documented 503 does not read as a server error to schemathesis.
    async with running(sample_backend(), TOKEN, readiness=list) as admin:
        await run_schemathesis(admin, tmp_path)


async def run_schemathesis(admin: Admin, tmp_path: Path) -> None:
    """schemathesis's CLI, every check, against ``admin``; bounded: 25 examples an operation,
    a fixed seed, about 5 s."""
    document = tmp_path / "admin_openapi.json"
    document.write_bytes(orjson.dumps(openapi_document()))
    process = await asyncio.create_subprocess_exec(
        *schemathesis_command(),
        "run",
        str(document),
        "--url",
        admin.base,
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--checks",
        "all",
        "--max-examples",
        "25",
        "--seed",
        "1",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # its .schemathesis/ and .hypothesis/ caches stay out of the work tree
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=90)
    text = output.decode("utf-8", "replace")

    assert process.returncode == 0, text
    assert re.search(r"\b\d+ passed\b|No issues found", text), text
    # It really called the operations, through the fake backend.
    assert {name for name, _ in admin.backend.calls} >= {"hooks", "deliveries", "reload"}


async def test_partitions_are_listed_with_offsets_lag_and_what_holds_them(admin: Admin) -> None:
    admin.backend.assigned = [
        {"topic": "identity.events", "partition": 0, "role": "event", "committed_offset": 120,
         "lag": 4, "unsettled": 3, "paused": None, "held_by_open_transaction": True},
        {"topic": "hookrelay.retry.5s", "partition": 1, "role": "retry",
         "committed_offset": None, "lag": None, "unsettled": 0, "paused": "retry_not_due",
         "held_by_open_transaction": False},
    ]  # fmt: skip
    answer = await admin.call("GET", "/v1/partitions")

    assert answer.status == 200
    assert answer.json == {"partitions": admin.backend.assigned}
    assert admin.backend.calls == [("partitions", None)]


# ── A connection flood ─────────────────────────────────────────────────────────────────────────


async def _probe(admin: Admin, path: str) -> int:
    async with asyncio.timeout(2.0), ClientSession() as fresh, fresh.get(admin.base + path) as r:
        return r.status


async def test_probes_and_metrics_answer_through_a_flood_of_idle_and_half_sent_connections(
    admin: Admin,
) -> None:
    paths = ("/healthz", "/readyz", "/metrics")
    calm = [await _probe(admin, p) for p in paths]  # this backend is not ready: 503
    flood = []
    for n in range(3 * MAX_CONNECTIONS):
        reader, writer = await asyncio.open_connection("127.0.0.1", admin.server.port)
        if n % 2:
            writer.write(b"GET /v1/hooks HTTP/1.1\r\nHost: a\r\nAuthoriz")  # never finished
        flood.append((reader, writer))
    try:
        assert [await _probe(admin, p) for p in paths] == calm
        closed = admin.server._metrics.admin_connections_closed
        assert closed.labels("evicted_idle")._value.get() >= 2 * MAX_CONNECTIONS
        # Whatever was not evicted is closed once idle for IDLE_TIMEOUT_S.
        async with asyncio.timeout(IDLE_TIMEOUT_S + 3):
            for reader, _ in flood:
                assert await reader.read() in (b"", b"HTTP/1.1 408 Request Timeout\r\n")
    finally:
        for _, writer in flood:
            writer.close()


async def test_a_connection_beyond_the_limit_is_refused_while_every_slot_answers_a_request(
    admin: Admin,
) -> None:
    gate = asyncio.Event()

    async def slow_test_hook(hook_id: str, event: str | None) -> dict[str, Any]:
        await gate.wait()
        return {"hook_id": hook_id, "event": "PostRegister", "status": 204,
                "duration_ms": 1.0, "error": None, "response_body": ""}  # fmt: skip

    admin.backend.test_hook = slow_test_hook
    request = (
        b"POST /v1/hooks/crm-sync/test HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
    )
    busy = []
    for _ in range(MAX_CONNECTIONS):
        reader, writer = await asyncio.open_connection("127.0.0.1", admin.server.port)
        writer.write(request)
        busy.append((reader, writer))
    await asyncio.sleep(0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", admin.server.port)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed at once
        writer.close()
        closed = admin.server._metrics.admin_connections_closed
        assert closed.labels("over_limit")._value.get() == 1
        gate.set()
        answers = [await asyncio.wait_for(r.readuntil(b"\r\n"), 5) for r, _ in busy]
        assert set(answers) == {b"HTTP/1.1 200 OK\r\n"}
    finally:
        gate.set()
        for _, w in busy:
            w.close()
