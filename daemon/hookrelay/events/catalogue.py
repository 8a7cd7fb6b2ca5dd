"""The hook event catalogue: the event names Logto emits as webhooks.

Source: Logto's ``hookEvents`` list (``packages/schemas/src/foundations/jsonb-types/hooks.ts``):
29 stable names plus two (``TrustedDevice.*``) still in development upstream. An event whose
name is not listed here is still routed to hooks that name it explicitly, because Logto keeps
adding events; ``hookrelay check`` only warns about unknown names.
"""

from __future__ import annotations

from typing import Final

INTERACTION_EVENTS: Final = (
    "PostRegister",
    "PostSignIn",
    "PostSignInAdaptiveMfaTriggered",
    "PostResetPassword",
)
"""Sent when a user flow finishes; payloads carry ``interactionEvent`` and ``userIp``."""

DATA_EVENTS: Final = (
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
)
"""Sent when an entity changes; payloads carry ``ip`` and ``data``. ``TrustedDevice.*`` are
in development upstream (Logto's ``devFeatureHookEvents``, spread in at this place)."""

EXCEPTION_EVENTS: Final = (
    "Identifier.Lockout",
    "Message.RateLimited",
    "Grant.LimitExceeded",
)
"""Sent when a protective limit trips."""

HOOK_EVENTS: Final[tuple[str, ...]] = INTERACTION_EVENTS + DATA_EVENTS + EXCEPTION_EVENTS
"""All 31 names, in Logto's order (its families are contiguous in ``hookEvents``)."""

KNOWN_EVENTS: Final[frozenset[str]] = frozenset(HOOK_EVENTS)


def event_family(name: str) -> str:
    """Return ``"interaction"``, ``"data"``, ``"exception"`` or ``"unknown"`` for an event name."""
    if name in INTERACTION_EVENTS:
        return "interaction"
    if name in DATA_EVENTS:
        return "data"
    if name in EXCEPTION_EVENTS:
        return "exception"
    return "unknown"
