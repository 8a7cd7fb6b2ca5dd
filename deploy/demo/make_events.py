"""Generate ``deploy/demo/events.jsonl``: a morning of identity events at a fictional company.

    python deploy/demo/make_events.py            # rewrite deploy/demo/events.jsonl
    python deploy/demo/make_events.py --check    # exit 1 if the file differs from the output

One compact JSON object per line (``orjson.dumps``: no spaces, UTF-8, no escapes for non-ASCII,
like JavaScript's ``JSON.stringify``), each exactly the body Logto would send minus ``hookId``
(DESIGN §1.2). Every name in ``hookrelay.events.catalogue.HOOK_EVENTS`` appears at least once;
the run fails otherwise. Output is deterministic: a fixed seed, a fixed start time, no wall clock.

Payload shapes and key order follow Logto's source (logto-io/logto):

- interaction events: ``triggerInteractionHooks`` in
  ``packages/core/src/libraries/hook/index.ts``; ``user`` is picked with ``userInfoSelectFields``
  (``packages/schemas/src/types/user.ts``). ``PostSignInAdaptiveMfaTriggered`` carries
  ``adaptiveMfaResult`` as its *first* member, because Logto spreads that extra payload first.
- data and exception events: ``buildWebhooks`` in the same file. From a Management API call
  (``koa-management-api-hooks.ts``) the order is ``event, createdAt, userAgent, ip, path,
  method, status, params, matchedRoute``, then the extra members and ``data``; DELETE routes
  answer 204 with no body, so their payloads have no ``data``. From a sign-in flow
  (``koa-experience-interaction-hooks.ts``) the order is ``event, createdAt, interactionEvent,
  userAgent, applicationId, sessionId, ip, application``, then the extra members.
- ``User.Deleted`` puts ``data`` before the Management API members (``routes/admin-user/
  basics.ts`` appends the user first); ``TrustedDevice.*`` leave out ``ip`` on purpose
  (``includeRequestIp: false``); ``Grant.LimitExceeded`` has ``ip`` before ``userAgent``
  (``event-listeners/authorization-success.ts``).

Entity timestamps are epoch milliseconds; ``createdAt`` is ISO-8601 UTC with milliseconds.
Ids look like Logto's: 12 lowercase alphanumerics for users, 21 for other entities, 21
URL-safe characters for OIDC session and grant ids. Addresses and domains are the
documentation ranges (RFC 5737, RFC 3849, RFC 2606).
"""

from __future__ import annotations

import argparse
import random
import string
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from hookrelay.events.catalogue import HOOK_EVENTS

SEED = 20260821
START = datetime(2026, 8, 21, 8, 58, 0, tzinfo=UTC)
OUTPUT = Path(__file__).with_name("events.jsonl")

_LOWER_ALNUM = string.ascii_lowercase + string.digits
_URL_SAFE = string.ascii_letters + string.digits + "-_"

Payload = dict[str, Any]

UA_CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/139.0.0.0 Safari/537.36"
)
UA_SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.6 Mobile/15E148 Safari/604.1"
)
UA_FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:142.0) Gecko/20100101 Firefox/142.0"
UA_EDGE_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/139.0.0.0 Safari/537.36 Edg/139.0.0.0"
)
UA_PROVISIONER = "acme-provisioner/2.4.1 python-httpx/0.28.1"


def iso_millis(when: datetime) -> str:
    """``2026-08-21T09:15:42.123Z``, as JavaScript's ``Date.prototype.toISOString()``."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def epoch_millis(when: datetime) -> int:
    """Epoch milliseconds, computed in integers so no float rounding can creep in."""
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class Story:
    """Seeded randomness and the story clock; every generated value comes from here."""

    def __init__(self, seed: int, start: datetime) -> None:
        self.rng = random.Random(seed)
        self.now = start
        self.lines: list[bytes] = []
        self.names: list[str] = []

    def tick(self, low_s: float = 4.0, high_s: float = 95.0) -> datetime:
        """Advance the clock by a random whole number of milliseconds in [low_s, high_s]."""
        millis = self.rng.randint(int(low_s * 1000), int(high_s * 1000))
        self.now += timedelta(milliseconds=millis)
        return self.now

    def short_id(self) -> str:
        return "".join(self.rng.choices(_LOWER_ALNUM, k=12))

    def standard_id(self) -> str:
        return "".join(self.rng.choices(_LOWER_ALNUM, k=21))

    def nanoid(self) -> str:
        return "".join(self.rng.choices(_URL_SAFE, k=21))

    def emit(self, payload: Payload) -> None:
        """Serialise ``payload`` now: later scenes mutate the entities it refers to."""
        self.lines.append(orjson.dumps(payload))
        self.names.append(payload["event"])


# --- entities ----------------------------------------------------------------------------


@dataclass
class App:
    id: str
    type: str
    name: str
    description: str | None

    def summary(self) -> Payload:
        """The ``application`` member: ``{id, type, name, description}``."""
        return {
            "id": self.id,
            "type": self.type,
            "name": self.name,
            "description": self.description,
        }


@dataclass
class User:
    """A Logto user; :meth:`info` is the ``userInfoSelectFields`` projection."""

    id: str
    username: str | None
    primary_email: str | None
    primary_phone: str | None
    name: str | None
    avatar: str | None
    created_at: int
    application_id: str | None
    custom_data: Payload = field(default_factory=dict)
    identities: Payload = field(default_factory=dict)
    profile: Payload = field(default_factory=dict)
    last_sign_in_at: int | None = None
    updated_at: int = 0
    is_suspended: bool = False
    has_password: bool = True

    def info(self) -> Payload:
        return {
            "id": self.id,
            "username": self.username,
            "primaryEmail": self.primary_email,
            "primaryPhone": self.primary_phone,
            "name": self.name,
            "avatar": self.avatar,
            "customData": self.custom_data,
            "identities": self.identities,
            "lastSignInAt": self.last_sign_in_at,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at or self.created_at,
            "profile": self.profile,
            "applicationId": self.application_id,
            "cimdClientId": None,
            "isSuspended": self.is_suspended,
        }

    def admin_response(self) -> Payload:
        """What the Management API answers for a user: the projection plus ``hasPassword``."""
        return {**self.info(), "hasPassword": self.has_password}


@dataclass
class Flow:
    """One sign-in-experience session (an OIDC interaction) of one client."""

    interaction_event: str
    session_id: str
    user_agent: str
    ip: str
    app: App


@dataclass
class Caller:
    """A Management API or Account API client."""

    user_agent: str
    ip: str


# --- payload builders --------------------------------------------------------------------


def interaction(
    story: Story, event: str, flow: Flow, user: User, first: Payload | None = None
) -> Payload:
    """An interaction event; ``first`` holds members Logto places before ``event``."""
    return {
        **(first or {}),
        "event": event,
        "interactionEvent": flow.interaction_event,
        "createdAt": iso_millis(story.now),
        "sessionId": flow.session_id,
        "userAgent": flow.user_agent,
        "userId": user.id,
        "userIp": flow.ip,
        "user": user.info(),
        "application": flow.app.summary(),
    }


def in_flow(story: Story, event: str, flow: Flow, *, with_ip: bool = True, **rest: Any) -> Payload:
    """A data or exception event raised inside a sign-in flow."""
    payload: Payload = {
        "event": event,
        "createdAt": iso_millis(story.now),
        "interactionEvent": flow.interaction_event,
        "userAgent": flow.user_agent,
        "applicationId": flow.app.id,
        "sessionId": flow.session_id,
    }
    if with_ip:
        payload["ip"] = flow.ip
    payload["application"] = flow.app.summary()
    return payload | rest


def api_context(method: str, route: str, params: dict[str, str], status: int) -> Payload:
    """Logto's ``ManagementApiContext``: ``path, method, status, params, matchedRoute``."""
    path = route
    for name, value in params.items():
        path = path.replace(f":{name}", value)
    return {
        "path": path,
        "method": method,
        "status": status,
        "params": params,
        "matchedRoute": route,
    }


def via_api(
    story: Story,
    event: str,
    caller: Caller,
    call: tuple[str, str, dict[str, str], int],
    *,
    with_ip: bool = True,
    **rest: Any,
) -> Payload:
    """A data event raised by a Management API call ``(method, route, params, status)``."""
    payload: Payload = {
        "event": event,
        "createdAt": iso_millis(story.now),
        "userAgent": caller.user_agent,
    }
    if with_ip:
        payload["ip"] = caller.ip
    return payload | api_context(*call) | rest


# --- the cast ----------------------------------------------------------------------------


@dataclass
class Cast:
    web: App
    ios: App
    billing: App
    partner: App
    crm_worker: App
    zoe: User
    lilei: User
    sofia: User
    bjorn: User
    northwind_id: str
    api_resource_id: str
    console: Caller
    provisioner: Caller


def make_cast(story: Story) -> Cast:
    past = epoch_millis(START)
    day = 86_400_000
    return Cast(
        web=App(story.standard_id(), "SPA", "Acme Web", "Customer portal (React)"),
        ios=App(story.standard_id(), "Native", "Acme iOS", "iPhone and iPad app"),
        billing=App(story.standard_id(), "Traditional", "Billing Portal", None),
        partner=App(
            story.standard_id(), "Traditional", "Partner Dashboard", "Reseller self-service"
        ),
        crm_worker=App(story.standard_id(), "MachineToMachine", "CRM Sync Worker", None),
        zoe=User(
            story.short_id(),
            None,
            "zoe.mueller@example.com",
            None,
            "Zoë Müller",
            None,
            created_at=0,
            application_id=None,
            profile={"givenName": "Zoë", "familyName": "Müller", "locale": "de-DE"},
        ),
        lilei=User(
            story.short_id(),
            "lilei",
            "li.lei@example.org",
            "8613812345678",
            "李雷",
            "https://avatars.example.com/u/lilei.png",
            created_at=past - 412 * day + 7_345_112,
            application_id=None,
            custom_data={"plan": "enterprise", "seats": 250, "department": "研发部"},
            last_sign_in_at=past - 2 * day + 3_600_512,
            updated_at=past - 30 * day + 1_002,
        ),
        sofia=User(
            story.short_id(),
            "sofia.ramirez",
            "sofia.ramirez@example.net",
            "34612345678",
            "Sofía Ramírez",
            None,
            created_at=past - 198 * day + 55_019_447,
            application_id=None,
            profile={"locale": "es-ES", "zoneinfo": "Europe/Madrid"},
            last_sign_in_at=past - 3 * 3_600_000 - 41_208,
            updated_at=past - 3 * 3_600_000 - 41_208,
        ),
        bjorn=User(
            story.short_id(),
            "bjorn",
            "bjorn.lindqvist@example.com",
            None,
            "Björn Lindqvist",
            None,
            created_at=past - 730 * day + 12_000_321,
            application_id=None,
            custom_data={"employeeNo": 40211, "costCenter": "SE-OPS"},
            last_sign_in_at=past - 9 * day + 77_777,
            updated_at=past - 9 * day + 77_777,
        ),
        northwind_id=story.standard_id(),
        api_resource_id=story.standard_id(),
        console=Caller(UA_FIREFOX_LINUX, "198.51.100.23"),
        provisioner=Caller(UA_PROVISIONER, "2001:db8:4006:80a::2004"),
    )


def new_flow(story: Story, interaction_event: str, user_agent: str, ip: str, app: App) -> Flow:
    return Flow(interaction_event, story.nanoid(), user_agent, ip, app)


# --- scenes ------------------------------------------------------------------------------


def zoe_registers(story: Story, cast: Cast) -> None:
    """Zoë signs up on the web; an email-domain rule adds her to Northwind (JIT provisioning)."""
    zoe = cast.zoe
    flow = new_flow(story, "Register", UA_CHROME_MAC, "203.0.113.57", cast.web)
    at = epoch_millis(story.tick())
    zoe.created_at = zoe.updated_at = at - 143
    zoe.last_sign_in_at = at - 141
    zoe.application_id = cast.web.id
    story.emit(interaction(story, "PostRegister", flow, zoe))
    story.tick(0.001, 0.004)
    story.emit(in_flow(story, "User.Created", flow, data=zoe.info()))
    story.tick(0.001, 0.004)
    story.emit(
        in_flow(
            story,
            "Organization.Membership.Updated",
            flow,
            organizationId=cast.northwind_id,
            addedUserIds=[zoe.id],
        )
    )


def morning_sign_ins(story: Story, cast: Cast) -> None:
    """Li Lei on his phone, Björn on the billing portal, Zoë again the next time she visits."""
    sign_ins = (
        (cast.lilei, UA_SAFARI_IOS, "2001:db8:85a3::8a2e:370:7334", cast.ios),
        (cast.bjorn, UA_EDGE_WINDOWS, "192.0.2.146", cast.billing),
        (cast.zoe, UA_CHROME_MAC, "203.0.113.57", cast.web),
    )
    for user, user_agent, ip, app in sign_ins:
        flow = new_flow(story, "SignIn", user_agent, ip, app)
        user.last_sign_in_at = epoch_millis(story.tick()) - 96
        story.emit(interaction(story, "PostSignIn", flow, user))


def adaptive_mfa_for_sofia(story: Story, cast: Cast) -> None:
    """Sofía signs in from Tokyo three hours after Madrid: adaptive MFA, then a trusted device."""
    sofia = cast.sofia
    flow = new_flow(story, "SignIn", UA_SAFARI_IOS, "203.0.113.201", cast.ios)
    story.tick()
    previous_ms = sofia.last_sign_in_at or 0
    previous_at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=previous_ms)
    result = {
        "requiresMfa": True,
        "triggeredRules": [
            {
                "rule": "geo_velocity",
                "details": {
                    "previous": {
                        "country": {"country": "ES", "lastSignInAt": previous_ms},
                        "at": iso_millis(previous_at),
                    },
                    "current": {"country": "JP", "city": "Tokyo", "at": iso_millis(story.now)},
                    "distanceKm": 10766.42,
                    "durationHours": 3.03,
                    "speedKmh": 3553.28,
                    "thresholdKmh": 1000,
                },
            },
            {
                "rule": "untrusted_ip",
                "details": {
                    "signals": {"botScore": 12, "botVerified": False},
                    "matchedSignals": ["botScore"],
                },
            },
        ],
    }
    story.emit(
        interaction(
            story,
            "PostSignInAdaptiveMfaTriggered",
            flow,
            sofia,
            first={"adaptiveMfaResult": result},
        )
    )
    # She passes the TOTP challenge and ticks "trust this device".
    device_at = story.tick(20, 45)
    device: Payload = {
        "id": story.standard_id(),
        "userId": sofia.id,
        "expiresAt": epoch_millis(device_at + timedelta(days=30)),
    }
    story.emit(in_flow(story, "TrustedDevice.Created", flow, with_ip=False, data=device))
    story.tick(0.002, 0.009)
    sofia.last_sign_in_at = epoch_millis(story.now) - 3
    sofia.updated_at = sofia.last_sign_in_at
    story.emit(interaction(story, "PostSignIn", flow, sofia))
    # Later the help desk revokes that device from the console.
    story.tick(300, 900)
    story.emit(
        via_api(
            story,
            "TrustedDevice.Deleted",
            cast.console,
            (
                "DELETE",
                "/users/:userId/trusted-devices/:trustedDeviceId",
                {"userId": sofia.id, "trustedDeviceId": device["id"]},
                204,
            ),
            with_ip=False,
            data=device,
        )
    )


def provisioning_creates_aarav(story: Story, cast: Cast) -> User:
    """The HR provisioner creates a user, then updates him with CRM data."""
    at = epoch_millis(story.tick())
    aarav = User(
        story.short_id(),
        "aarav.sharma",
        "aarav.sharma@example.com",
        "919812345678",
        "Aarav Sharma",
        None,
        created_at=at - 37,
        application_id=None,
        custom_data={"employeeNo": 51877, "startDate": "2026-09-01"},
    )
    story.emit(
        via_api(
            story,
            "User.Created",
            cast.provisioner,
            ("POST", "/users", {}, 200),
            data=aarav.admin_response(),
        )
    )
    story.tick(0.4, 2.0)
    # Numbers that stress byte-faithfulness: 2**53 + 1 is not a safe JavaScript integer, and the
    # floats have no short exact binary form.
    aarav.custom_data = {
        "employeeNo": 51877,
        "startDate": "2026-09-01",
        "crmAccountId": 9007199254740993,
        "annualQuotaEur": 1249000.5,
        "riskScore": 0.30000000000000004,
        "office": {"lat": 52.520008, "lng": 13.404954},
    }
    aarav.updated_at = epoch_millis(story.now) - 12
    story.emit(
        via_api(
            story,
            "User.Data.Updated",
            cast.provisioner,
            ("PATCH", "/users/:userId/custom-data", {"userId": aarav.id}, 200),
            data=aarav.custom_data,
        )
    )
    return aarav


def lilei_edits_his_profile(story: Story, cast: Cast) -> None:
    """Li Lei changes his display name through the Account API (no Management API context)."""
    lilei = cast.lilei
    story.tick()
    lilei.name = "李雷 (Li Lei)"
    lilei.updated_at = epoch_millis(story.now) - 21
    story.emit(
        {
            "event": "User.Data.Updated",
            "createdAt": iso_millis(story.now),
            "userAgent": UA_SAFARI_IOS,
            "ip": "2001:db8:85a3::8a2e:370:7334",
            "data": lilei.info(),
        }
    )


def billing_roles_and_scopes(story: Story, cast: Cast) -> tuple[Payload, list[Payload]]:
    """An admin defines billing permissions on the API resource and a role that grants them."""
    console, resource = cast.console, cast.api_resource_id
    scopes: list[Payload] = []
    for name, description in (
        ("read:invoices", "Read invoices"),
        ("write:invoices", "Create and void invoices"),
    ):
        story.tick()
        scope: Payload = {
            "tenantId": "default",
            "id": story.standard_id(),
            "resourceId": resource,
            "name": name,
            "description": description,
            "createdAt": epoch_millis(story.now) - 8,
        }
        scopes.append(scope)
        call = ("POST", "/resources/:resourceId/scopes", {"resourceId": resource}, 201)
        story.emit(via_api(story, "Scope.Created", console, call, data=scope))
    story.tick()
    role: Payload = {
        "tenantId": "default",
        "id": story.standard_id(),
        "name": "billing-admin",
        "description": "Manages invoices and payment methods",
        "type": "User",
        "isDefault": False,
    }
    story.emit(via_api(story, "Role.Created", console, ("POST", "/roles", {}, 200), data=role))
    story.tick(3, 10)
    call = ("POST", "/roles/:id/scopes", {"id": role["id"]}, 201)
    story.emit(via_api(story, "Role.Scopes.Updated", console, call, data=scopes))
    story.tick()
    role = role | {"description": "Manages invoices, refunds and payment methods"}
    story.emit(
        via_api(
            story,
            "Role.Data.Updated",
            console,
            ("PATCH", "/roles/:id", {"id": role["id"]}, 200),
            data=role,
        )
    )
    story.tick()
    scopes[1] = scopes[1] | {"description": "Create, refund and void invoices"}
    params = {"resourceId": resource, "scopeId": scopes[1]["id"]}
    call = ("PATCH", "/resources/:resourceId/scopes/:scopeId", params, 200)
    story.emit(via_api(story, "Scope.Data.Updated", console, call, data=scopes[1]))
    return role, scopes


def muller_organization(story: Story, cast: Cast, aarav: User) -> dict[str, str]:
    """A new customer organization with members, roles and scopes of its own."""
    console = cast.console
    story.tick()
    org: Payload = {
        "tenantId": "default",
        "id": story.standard_id(),
        "name": "Müller & Söhne GmbH",
        "description": "Familienbetrieb seit 1898 🥨",
        "customData": {"crmId": "ACC-00417", "seatsPurchased": 40},
        "isMfaRequired": False,
        "isTrustedDeviceAllowed": True,
        "color": {},
        "branding": {},
        "customCss": None,
        "createdAt": epoch_millis(story.now) - 11,
    }
    story.emit(
        via_api(
            story, "Organization.Created", console, ("POST", "/organizations", {}, 201), data=org
        )
    )
    story.tick(5, 20)
    members = [cast.zoe.id, cast.lilei.id, aarav.id]
    call = ("POST", "/organizations/:id/users", {"id": org["id"]}, 201)
    story.emit(
        via_api(
            story,
            "Organization.Membership.Updated",
            console,
            call,
            organizationId=org["id"],
            addedUserIds=members,
        )
    )
    story.tick()
    org = org | {
        "customData": {
            "crmId": "ACC-00417",
            "seatsPurchased": 55,
            "annualRevenueEur": 18250000.75,
            "vatId": "DE123456789",
        },
        "isMfaRequired": True,
    }
    story.emit(
        via_api(
            story,
            "Organization.Data.Updated",
            console,
            ("PATCH", "/organizations/:id", {"id": org["id"]}, 200),
            data=org,
        )
    )
    ids = {"organization": org["id"]}
    ids |= organization_template(story, cast)
    return ids


def organization_template(story: Story, cast: Cast) -> dict[str, str]:
    """Organization scopes and an organization role, created, wired and edited."""
    console = cast.console
    scope_ids: list[str] = []
    for name, description in (
        ("read:members", "See who is in the organization"),
        ("invite:members", None),
    ):
        story.tick()
        scope: Payload = {
            "tenantId": "default",
            "id": story.standard_id(),
            "name": name,
            "description": description,
        }
        scope_ids.append(scope["id"])
        story.emit(
            via_api(
                story,
                "OrganizationScope.Created",
                console,
                ("POST", "/organization-scopes", {}, 201),
                data=scope,
            )
        )
    story.tick()
    role: Payload = {
        "tenantId": "default",
        "id": story.standard_id(),
        "name": "org-admin",
        "description": "Administers one organization",
        "type": "User",
    }
    story.emit(
        via_api(
            story,
            "OrganizationRole.Created",
            console,
            ("POST", "/organization-roles", {}, 201),
            data=role,
        )
    )
    story.tick(2, 8)
    story.emit(
        via_api(
            story,
            "OrganizationRole.Scopes.Updated",
            console,
            ("PUT", "/organization-roles/:id/scopes", {"id": role["id"]}, 204),
        )
    )
    story.tick()
    role = role | {
        "name": "Organisationsadministrator:in",
        "description": "Verwaltet genau eine Organisation",
    }
    story.emit(
        via_api(
            story,
            "OrganizationRole.Data.Updated",
            console,
            ("PATCH", "/organization-roles/:id", {"id": role["id"]}, 200),
            data=role,
        )
    )
    story.tick()
    invite_scope: Payload = {
        "tenantId": "default",
        "id": scope_ids[1],
        "name": "invite:members",
        "description": "Invite people by email",
    }
    story.emit(
        via_api(
            story,
            "OrganizationScope.Data.Updated",
            console,
            ("PATCH", "/organization-scopes/:id", {"id": scope_ids[1]}, 200),
            data=invite_scope,
        )
    )
    story.tick()
    story.emit(
        via_api(
            story,
            "OrganizationRole.Scopes.Updated",
            console,
            ("POST", "/organization-roles/:id/scopes", {"id": role["id"]}, 201),
        )
    )
    return {"organization_role": role["id"], "organization_scope": scope_ids[0]}


def northwind_apps(story: Story, cast: Cast) -> None:
    """Northwind's app list is replaced: billing in, partner dashboard out."""
    story.tick()
    call = ("PUT", "/organizations/:id/applications", {"id": cast.northwind_id}, 204)
    story.emit(
        via_api(
            story,
            "Organization.Membership.Updated",
            cast.provisioner,
            call,
            organizationId=cast.northwind_id,
            addedApplicationIds=[cast.billing.id],
            removedApplicationIds=[cast.partner.id],
        )
    )


def trouble(story: Story, cast: Cast) -> None:
    """Protective limits trip: a code-sending loop, a password guesser, too many grants."""
    flow = new_flow(story, "SignIn", UA_FIREFOX_LINUX, "192.0.2.77", cast.web)
    story.tick()
    story.emit(
        in_flow(
            story,
            "Message.RateLimited",
            flow,
            action="VerificationCodeSend",
            recipient="zoe.mueller@example.com",
        )
    )
    flow = new_flow(story, "SignIn", UA_EDGE_WINDOWS, "198.51.100.199", cast.billing)
    story.tick()
    story.emit(
        in_flow(story, "Identifier.Lockout", flow, type="username", value=cast.bjorn.username)
    )
    story.tick()
    story.emit(
        {
            "event": "Grant.LimitExceeded",
            "createdAt": iso_millis(story.now),
            "ip": "2001:db8:85a3::8a2e:370:7334",
            "userAgent": UA_SAFARI_IOS,
            "application": cast.ios.summary(),
            "userId": cast.lilei.id,
            "applicationId": cast.ios.id,
            "revokedGrantIds": [story.nanoid()],
            "maxAllowedGrants": 3,
            "preRevocationActiveGrantCount": 4,
        }
    )


def bjorn_resets_his_password(story: Story, cast: Cast) -> None:
    """Locked out by the password guesser, Björn resets his password on the billing portal."""
    bjorn = cast.bjorn
    flow = new_flow(story, "ForgotPassword", UA_EDGE_WINDOWS, "192.0.2.146", cast.billing)
    story.tick(120, 400)
    bjorn.updated_at = epoch_millis(story.now) - 55
    story.emit(interaction(story, "PostResetPassword", flow, bjorn))


def offboarding(story: Story, cast: Cast, aarav: User) -> None:
    """Aarav's contract is cancelled: the help desk suspends him (cleanup deletes him)."""
    console = cast.console
    story.tick()
    aarav.is_suspended = True
    aarav.updated_at = epoch_millis(story.now) - 19
    call = ("PATCH", "/users/:userId/is-suspended", {"userId": aarav.id}, 200)
    story.emit(
        via_api(story, "User.SuspensionStatus.Updated", console, call, data=aarav.admin_response())
    )


@dataclass
class Trial:
    """What the morning created and the cleanup deletes."""

    aarav: User
    role: Payload
    scopes: list[Payload]
    org: dict[str, str]


def cleanup(story: Story, cast: Cast, trial: Trial) -> None:
    """End of the trial: everything created for it is deleted again (DELETE answers 204)."""
    console, provisioner = cast.console, cast.provisioner
    aarav, role, scopes, org = trial.aarav, trial.role, trial.scopes, trial.org
    org_id = org["organization"]
    story.tick()
    call = ("DELETE", "/organizations/:id/users/:userId", {"id": org_id, "userId": aarav.id}, 204)
    story.emit(
        via_api(
            story,
            "Organization.Membership.Updated",
            console,
            call,
            organizationId=org_id,
            removedUserIds=[aarav.id],
        )
    )
    story.tick()
    story.emit(
        via_api(
            story,
            "OrganizationRole.Deleted",
            console,
            ("DELETE", "/organization-roles/:id", {"id": org["organization_role"]}, 204),
        )
    )
    story.tick()
    story.emit(
        via_api(
            story,
            "OrganizationScope.Deleted",
            console,
            ("DELETE", "/organization-scopes/:id", {"id": org["organization_scope"]}, 204),
        )
    )
    story.tick()
    story.emit(
        via_api(
            story,
            "Organization.Deleted",
            console,
            ("DELETE", "/organizations/:id", {"id": org_id}, 204),
        )
    )
    story.tick()
    call = (
        "DELETE",
        "/roles/:id/scopes/:scopeId",
        {"id": role["id"], "scopeId": scopes[1]["id"]},
        204,
    )
    story.emit(via_api(story, "Role.Scopes.Updated", console, call))
    story.tick()
    call = (
        "DELETE",
        "/resources/:resourceId/scopes/:scopeId",
        {"resourceId": cast.api_resource_id, "scopeId": scopes[1]["id"]},
        204,
    )
    story.emit(via_api(story, "Scope.Deleted", console, call))
    story.tick()
    story.emit(
        via_api(story, "Role.Deleted", console, ("DELETE", "/roles/:id", {"id": role["id"]}, 204))
    )
    story.tick()
    # Logto appends the deleted user first, so `data` precedes the Management API members here.
    story.emit(
        {
            "event": "User.Deleted",
            "createdAt": iso_millis(story.now),
            "userAgent": provisioner.user_agent,
            "ip": provisioner.ip,
            "data": aarav.info(),
            **api_context("DELETE", "/users/:userId", {"userId": aarav.id}, 204),
        }
    )


def olamide_registers_with_google(story: Story, cast: Cast) -> None:
    """A social sign-up on iOS with Google; the provider's numeric user id is a string."""
    flow = new_flow(story, "Register", UA_SAFARI_IOS, "203.0.113.9", cast.ios)
    at = epoch_millis(story.tick())
    google_id = "1" + "".join(story.rng.choices(string.digits, k=20))
    olamide = User(
        story.short_id(),
        None,
        "olamide.adeyemi@example.com",
        None,
        "Olamide Adeyemi",
        "https://lh3.googleusercontent.example.com/a/olamide=s96-c",
        created_at=at - 207,
        application_id=cast.ios.id,
        identities={
            "google": {
                "userId": google_id,
                "details": {
                    "id": google_id,
                    "name": "Olamide Adeyemi",
                    "email": "olamide.adeyemi@example.com",
                    "avatar": "https://lh3.googleusercontent.example.com/a/olamide=s96-c",
                    "rawData": {"email_verified": True, "locale": "en-GB", "hd": None},
                },
            }
        },
        last_sign_in_at=at - 205,
        has_password=False,
    )
    story.emit(interaction(story, "PostRegister", flow, olamide))
    story.tick(0.001, 0.004)
    story.emit(in_flow(story, "User.Created", flow, data=olamide.info()))


def build_story(seed: int = SEED) -> Story:
    """Play the whole story; its ``lines`` are the events in order."""
    story = Story(seed, START)
    cast = make_cast(story)
    zoe_registers(story, cast)
    morning_sign_ins(story, cast)
    adaptive_mfa_for_sofia(story, cast)
    aarav = provisioning_creates_aarav(story, cast)
    lilei_edits_his_profile(story, cast)
    role, scopes = billing_roles_and_scopes(story, cast)
    org = muller_organization(story, cast, aarav)
    northwind_apps(story, cast)
    olamide_registers_with_google(story, cast)
    trouble(story, cast)
    bjorn_resets_his_password(story, cast)
    offboarding(story, cast, aarav)
    cleanup(story, cast, Trial(aarav, role, scopes, org))
    return story


def render(story: Story) -> bytes:
    """The JSON-lines file; refuses a story that misses a catalogue name."""
    missing = sorted(set(HOOK_EVENTS) - set(story.names))
    if missing:
        raise SystemExit(f"events miss catalogue names: {', '.join(missing)}")
    return b"".join(line + b"\n" for line in story.lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the demo's identity events.")
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"output file (default {OUTPUT})")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    content = render(build_story())
    if args.check:
        current = args.out.read_bytes() if args.out.exists() else b""
        if current != content:
            print(f"{args.out} is stale; run {Path(__file__).name} to regenerate", file=sys.stderr)
            return 1
        return 0
    args.out.write_bytes(content)
    lines = content.count(b"\n")
    print(f"wrote {lines} events to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
