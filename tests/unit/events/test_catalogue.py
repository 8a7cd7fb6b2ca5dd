"""The event catalogue is Logto's ``hookEvents`` list, and the demo fixtures cover all of it
with payloads shaped as Logto sends them (DESIGN §1.3)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from hookrelay.events.catalogue import (
    EXCEPTION_EVENTS,
    HOOK_EVENTS,
    INTERACTION_EVENTS,
    KNOWN_EVENTS,
    event_family,
)

LOGTO_HOOK_EVENTS = (
    "PostRegister",
    "PostSignIn",
    "PostSignInAdaptiveMfaTriggered",
    "PostResetPassword",
    "User.Created",
    "User.Deleted",
    "User.Data.Updated",
    "User.SuspensionStatus.Updated",
    "TrustedDevice.Created",
    "TrustedDevice.Deleted",
    "Role.Created",
    "Role.Deleted",
    "Role.Data.Updated",
    "Role.Scopes.Updated",
    "Scope.Created",
    "Scope.Deleted",
    "Scope.Data.Updated",
    "Organization.Created",
    "Organization.Deleted",
    "Organization.Data.Updated",
    "Organization.Membership.Updated",
    "OrganizationRole.Created",
    "OrganizationRole.Deleted",
    "OrganizationRole.Data.Updated",
    "OrganizationRole.Scopes.Updated",
    "OrganizationScope.Created",
    "OrganizationScope.Deleted",
    "OrganizationScope.Data.Updated",
    "Identifier.Lockout",
    "Message.RateLimited",
    "Grant.LimitExceeded",
)
"""Logto's ``hookEvents``, in its order, as of logto-io/logto 1fbc554 (2026-08-21):
``packages/schemas/src/foundations/jsonb-types/hooks.ts``. The two ``TrustedDevice.*`` names
are its ``devFeatureHookEvents``, spread into the list after ``User.SuspensionStatus.Updated``;
the first four are ``InteractionHookEvent`` and the last three ``ExceptionHookEvent``."""

LOGTO_INTERACTION_EVENTS = LOGTO_HOOK_EVENTS[:4]
LOGTO_EXCEPTION_EVENTS = LOGTO_HOOK_EVENTS[-3:]
DEMO_EVENTS = Path(__file__).resolve().parents[3] / "deploy" / "demo" / "events.jsonl"


def test_the_catalogue_holds_exactly_logtos_31_hook_events() -> None:
    assert len(LOGTO_HOOK_EVENTS) == len(set(LOGTO_HOOK_EVENTS)) == 31
    assert len(HOOK_EVENTS) == len(set(HOOK_EVENTS)) == 31
    assert set(HOOK_EVENTS) == set(LOGTO_HOOK_EVENTS) == KNOWN_EVENTS


def test_the_catalogue_keeps_logtos_order() -> None:
    assert HOOK_EVENTS == LOGTO_HOOK_EVENTS
    assert INTERACTION_EVENTS == LOGTO_INTERACTION_EVENTS
    assert EXCEPTION_EVENTS == LOGTO_EXCEPTION_EVENTS


@pytest.mark.parametrize("name", LOGTO_HOOK_EVENTS)
def test_each_event_belongs_to_logtos_family(name: str) -> None:
    expected = (
        "interaction"
        if name in LOGTO_INTERACTION_EVENTS
        else "exception"
        if name in LOGTO_EXCEPTION_EVENTS
        else "data"
    )
    assert event_family(name) == expected


def test_a_name_outside_the_catalogue_is_of_unknown_family() -> None:
    assert event_family("User.Archived") == "unknown"


def demo_fixtures() -> list[dict[str, Any]]:
    lines = DEMO_EVENTS.read_bytes().splitlines()
    return [orjson.loads(line) for line in lines if line.strip()]


def test_the_demo_fixtures_cover_every_event() -> None:
    assert {fixture["event"] for fixture in demo_fixtures()} == set(LOGTO_HOOK_EVENTS)


@pytest.mark.parametrize("fixture", demo_fixtures(), ids=lambda f: str(f["event"]))
def test_each_fixture_is_shaped_as_logto_sends_it(fixture: dict[str, Any]) -> None:
    """Members as Logto builds the payloads (DESIGN §1.3), never ``hookId`` (hookrelay adds
    it), ``createdAt`` as ISO-8601 UTC with milliseconds."""
    name = fixture["event"]
    assert "hookId" not in fixture
    created_at = fixture["createdAt"]
    assert created_at.endswith("Z") and len(created_at) == len("2026-08-21T09:15:42.123Z")
    datetime.fromisoformat(created_at)
    if name in LOGTO_INTERACTION_EVENTS:
        assert fixture["interactionEvent"] in ("SignIn", "Register", "ForgotPassword")
        assert {"sessionId", "userIp", "userId", "user"} <= set(fixture)
        assert "ip" not in fixture
        return
    assert "userIp" not in fixture  # data and exception payloads name it `ip` (optional)
    required = {
        "Identifier.Lockout": {"type", "value"},
        "Message.RateLimited": {"action", "recipient"},
        "Grant.LimitExceeded": {"userId", "revokedGrantIds", "maxAllowedGrants"},
        "Organization.Membership.Updated": {"organizationId"},
    }.get(name, set())
    assert required <= set(fixture)
    # `data` is the changed entity; a Management API call that answered 204 may leave it out,
    # and events with members of their own (membership, exceptions) carry those instead.
    management_api = {"path", "method", "status", "matchedRoute"} <= set(fixture)
    assert "data" in fixture or management_api or required
