"""``hookrelay check``'s warnings: things worth a look that do not stop the daemon (an open SSRF
guard, a placeholder secret, plain http to a remote host, an admin listener without a token).
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Collection
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    SecretStr,
)

from hookrelay.config.fields import CREDENTIAL_HEADER_NAME, DEFAULT_RETENTION_S
from hookrelay.config.models import (
    RETIRED_KEYS,
    AdminSettings,
    Hook,
    HttpSettings,
    KafkaSettings,
    Settings,
)
from hookrelay.config.source_map import KeyPath, SourceMap
from hookrelay.errors import ConfigIssue
from hookrelay.events.catalogue import KNOWN_EVENTS
from hookrelay.net.guard import (
    METADATA_ADDRESSES,
    NetworkPolicy,
)

# ── Warnings ─────────────────────────────────────────────────────────────────────────────────────


def config_warnings(settings: Settings, sections: Collection[str] | None = None) -> list[str]:
    """Things worth a look that do not stop hookrelay, one line each, in file order; with
    ``sections``, only those about keys of these top-level sections (``hookrelay ingest``
    logs those of ``ingest`` and ``kafka``).

    Lines read ``file:line: key.path: message`` (``key.path: message`` for settings built in
    code). Warns about: no enabled hook; keys an earlier version knew (``RETIRED_KEYS``,
    ignored); a circuit cool-down longer than the retry schedule; a session timeout outside
    the broker's defaults;
    event names not in Logto's catalogue (still routed); prefix wildcards matching no known
    event; signing keys written inline in YAML instead of
    ``${VAR}`` or ``signing_key_file``; signed webhooks sent over plain http to a host that is
    not loopback; an admin listener beyond loopback without a token (the /v1 API is then
    off); an admin token written inline instead of ``${VAR}`` or ``token_file``; SSRF guard
    allow-lists that are very broad or include link-local ranges or metadata endpoints; a Kafka
    SASL password written inline instead of ``${VAR}`` or ``sasl_password_file``; SASL PLAIN
    over SASL_PLAINTEXT (the password crosses the network in clear); a group instance id
    written as a fixed value (every replica would share it), or with a session timeout too
    short to cover a restart; ingest signing keys or batch token written inline; an ingest
    source writing to a topic this file's daemon does not consume; an adaptive rate limit's
    latency target at or beyond its hook's timeout.
    """
    source = settings._source
    found: list[tuple[KeyPath, str]] = []
    if not any(hook.enabled for hook in settings.hooks):
        message = "no enabled hooks: events are consumed and committed without any delivery"
        if settings.ingest is not None and not settings.hooks:
            message += " (fine for a file only hookrelay ingest reads)"
        found.append((("hooks",), message))
    found.extend(_ingest_warnings(settings, source))
    found.extend((path, RETIRED_KEYS[path]) for path in source.retired)
    window = sum(settings.delivery.retry_schedule_s)
    if settings.delivery.circuit_cooldown_s > window / 2:
        message = (
            f"more than half the whole retry schedule ({window:g} s): a short outage may "
            "dead-letter deliveries that failed once, behind an open circuit, before a probe "
            "finds the endpoint back"
        )
        found.append((("delivery", "circuit_cooldown_s"), message))
    if not 6.0 <= settings.kafka.session_timeout_s <= 1800.0:
        message = (
            "outside the broker's default group.min/max.session.timeout.ms (6 s to 30 min); "
            "the broker will refuse to let hookrelay join unless it was reconfigured"
        )
        found.append((("kafka", "session_timeout_s"), message))
    found.extend(_kafka_warnings(settings.kafka, source))
    found.extend(_owned_topic_warnings(settings))
    if max(settings.delivery.retry_schedule_s) > DEFAULT_RETENTION_S:
        message = (
            "a delay longer than Kafka's default retention (7 days): give the retry topics a "
            "retention.ms above it, or retries are deleted before they are due"
        )
        found.append((("delivery", "retry_schedule_s"), message))
    found.extend(_admin_warnings(settings.admin, source))
    found.extend(_allow_warnings(settings.http.allow_networks, ("http", "allow_networks")))
    for index, hook in enumerate(settings.hooks):
        found.extend(_hook_warnings(hook, ("hooks", index), source))
        found.extend(_allow_warnings(hook.allow_networks, ("hooks", index, "allow_networks")))
        found.extend(_guard_warnings(hook, settings.http, ("hooks", index, "url")))
        found.extend(_adaptive_warnings(hook, settings.http, ("hooks", index, "rate_limit")))
    found.extend(_placeholder_warnings(settings))
    if sections is not None:
        found = [(path, message) for path, message in found if path and path[0] in sections]
    return [_warning_text(source.issue(path, message)) for path, message in found]


def _adaptive_warnings(hook: Hook, http: HttpSettings, path: KeyPath) -> list[tuple[KeyPath, str]]:
    """An adaptive rate limit whose latency target is at or beyond the hook's timeout: an
    answer can never be that slow (it times out first), so latency never lowers the rate."""
    adaptive = hook.rate_limit.adaptive if hook.rate_limit is not None else None
    if adaptive is None or adaptive.latency_target_ms is None:
        return []
    timeout_s = hook.effective_timeout_s(http)
    if adaptive.latency_target_ms / 1000 < timeout_s:
        return []
    message = (
        f"at or beyond the hook's timeout ({timeout_s:g} s): an answer times out before it "
        "is that slow, so latency never lowers the rate (timeouts still count as slow)"
    )
    return [((*path, "adaptive", "latency_target_ms"), message)]


def _guard_warnings(hook: Hook, http: HttpSettings, path: KeyPath) -> list[tuple[KeyPath, str]]:
    """A hook whose URL names an address (or ``localhost``) the SSRF guard refuses: every
    delivery to it would fail as ``refused`` (the daemon does the same check per request)."""
    host = (urlsplit(hook.url).hostname or "").lower()
    address = "127.0.0.1" if host == "localhost" or host.endswith(".localhost") else host
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return []  # a name: resolved, and vetted, only when delivering
    try:
        refusal = NetworkPolicy((*http.allow_networks, *hook.allow_networks)).refusal(address)
    except ValueError:
        refusal = f"{host} is not a canonical IP address"
    if refusal is None:
        return []
    try:
        example = f", e.g. allow_networks: [{ipaddress.ip_network(address).with_prefixlen}]"
    except ValueError:
        example = ""
    return [(path, f"every delivery will be refused: {refusal} (allow it with "
             f"http.allow_networks or the hook's allow_networks{example})")]  # fmt: skip


_LEGACY_OWNED_NAMES: Final = {
    ("dead_letter_topic",): "hookrelay.dlq",
    ("delivery", "retry_topic_prefix"): "hookrelay.retry.",
}
"""Every deployment's names before they derived from ``kafka.group_id``."""


def _owned_topic_warnings(settings: Settings) -> list[tuple[KeyPath, str]]:
    """Explicit dead-letter or retry names that another deployment may share: the old
    defaults, written out under another group id."""
    group = settings.kafka.group_id
    if group == "hookrelay":
        return []
    values = {
        ("dead_letter_topic",): settings.dead_letter_topic,
        ("delivery", "retry_topic_prefix"): settings.delivery.retry_topic_prefix,
    }
    found: list[tuple[KeyPath, str]] = []
    for path, value in values.items():
        if value == _LEGACY_OWNED_NAMES[path]:
            found.append((path, (
                "the default name of every deployment before names derived from "
                "kafka.group_id: if another deployment uses it too, each reads (and skips) "
                "the other's records; omit it to use the derived name (README: Upgrading)"
            )))  # fmt: skip
    return found


_PLACEHOLDER_PREFIXES: Final = ("replace-me", "replace-with", "changeme", "change-me")
"""How the example files' secrets begin (deploy/kubernetes, deploy/systemd): a deployment
that copied an example file without filling it in still starts, so check says so."""


def _placeholder_warnings(settings: Settings) -> list[tuple[KeyPath, str]]:
    secrets: list[tuple[KeyPath, SecretStr | None]] = [
        (("admin", "token"), settings.admin.token),
        (("kafka", "sasl_password"), settings.kafka.sasl_password),
    ]
    if settings.ingest is not None:
        secrets.extend(
            (("ingest", "sources", index, "signing_key"), source.signing_key)
            for index, source in enumerate(settings.ingest.sources)
        )
        if settings.ingest.batch is not None:
            secrets.append((("ingest", "batch", "token"), settings.ingest.batch.token))
    for index, hook in enumerate(settings.hooks):
        if hook.signing_key is not None:
            secrets.append((("hooks", index, "signing_key"), hook.signing_key))
        for number, key in enumerate(hook.signing_keys or ()):
            secrets.append((("hooks", index, "signing_keys", number), key))
        for name, value in hook.headers:
            if CREDENTIAL_HEADER_NAME.search(name):
                # The word that carries it: "Bearer replace-with-…" holds a placeholder too.
                word = (value.split() or [""])[-1]
                secrets.append((("hooks", index, "headers", name), SecretStr(word)))
    message = "still the placeholder from an example file; set a real secret"
    return [
        (path, message)
        for path, secret in secrets
        if secret is not None
        and secret.get_secret_value().lower().startswith(_PLACEHOLDER_PREFIXES)
    ]


def _kafka_warnings(kafka: KafkaSettings, source: SourceMap) -> list[tuple[KeyPath, str]]:
    found: list[tuple[KeyPath, str]] = []
    if kafka.security_protocol == "SASL_PLAINTEXT" and kafka.sasl_mechanism == "PLAIN":
        message = (
            "SASL PLAIN over SASL_PLAINTEXT: the password crosses the network in clear; use "
            "SASL_SSL, or a SCRAM mechanism"
        )
        found.append((("kafka", "sasl_mechanism"), message))
    if ("kafka", "sasl_password") in source.inline_secrets:
        message = "SASL password written inline; use ${VAR} or sasl_password_file to keep it secret"
        found.append((("kafka", "sasl_password"), message))
    path = ("kafka", "group_instance_id")
    if kafka.group_instance_id is not None and path not in source.from_environment:
        message = (
            "a fixed value: every replica reading this file joins with the same instance id, "
            "and all but one stop consuming; use one per replica, e.g. ${POD_NAME} or "
            "${HOSTNAME} (one replica alone, with its workers, is fine)"
        )
        found.append((path, message))
    if kafka.group_instance_id is not None and kafka.session_timeout_s < 30.0:
        message = (
            "with kafka.group_instance_id, a member restarted within this timeout keeps its "
            "partitions without a rebalance; a worker process restarts in seconds, a "
            "replica (a deploy, a reboot) usually takes longer (e.g. 60)"
        )
        found.append((("kafka", "session_timeout_s"), message))
    return found


_LINK_LOCAL: Final = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


def _allow_warnings(
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], path: KeyPath
) -> list[tuple[KeyPath, str]]:
    """SSRF guard opt-outs worth a second look: every address, very broad ranges (shorter
    than /8 in IPv4, /16 in IPv6), link-local ranges and metadata endpoints."""
    found: list[tuple[KeyPath, str]] = []
    for index, network in enumerate(networks):
        if network.prefixlen < (8 if network.version == 4 else 16):
            message = (
                f"{network} is very broad: the SSRF guard lets webhooks reach almost any "
                "internal address (only metadata endpoints stay refused)"
            )
        elif network.num_addresses == 1 and network.network_address in METADATA_ADDRESSES:
            message = (
                f"{network} is a cloud metadata endpoint: whoever controls this hook's "
                "payload destination can read the host's cloud credentials"
            )
        elif any(network.overlaps(link) for link in _LINK_LOCAL if link.version == network.version):
            message = (
                f"{network} includes link-local addresses, where host-local services live "
                "(metadata endpoints stay refused unless named exactly)"
            )
        else:
            continue
        found.append(((*path, index), message))
    return found


def _admin_warnings(admin: AdminSettings, source: SourceMap) -> list[tuple[KeyPath, str]]:
    found: list[tuple[KeyPath, str]] = []
    if admin.token is None and not _is_loopback_host(admin.host):
        message = (
            "reachable beyond loopback without admin.token or admin.token_file: /metrics, "
            "/healthz and /readyz answer anyone who can connect, and the /v1 admin API is off"
        )
        found.append((("admin", "listen"), message))
    if ("admin", "token") in source.inline_secrets:
        message = "admin token written inline; use ${VAR} or token_file to keep it secret"
        found.append((("admin", "token"), message))
    return found


def _ingest_warnings(settings: Settings, source: SourceMap) -> list[tuple[KeyPath, str]]:
    found: list[tuple[KeyPath, str]] = []
    ingest = settings.ingest
    if ingest is None:
        return found
    if not ingest.serves_anything:
        message = "no sources and no batch API: hookrelay ingest refuses to start with it"
        found.append((("ingest",), message))
    for index, item in enumerate(ingest.sources):
        path: KeyPath = ("ingest", "sources", index)
        if (*path, "signing_key") in source.inline_secrets:
            message = "signing key written inline; use ${VAR} or signing_key_file to keep it secret"
            found.append(((*path, "signing_key"), message))
        if item.topic is not None and item.topic not in settings.kafka.topics:
            message = (
                "not one of kafka.topics: a daemon reading this file does not consume it "
                "(fine when another deployment does)"
            )
            found.append(((*path, "topic"), message))
    if ("ingest", "batch", "token") in source.inline_secrets:
        message = "batch token written inline; use ${VAR} or token_file to keep it secret"
        found.append((("ingest", "batch", "token"), message))
    return found


def _hook_warnings(hook: Hook, path: KeyPath, source: SourceMap) -> list[tuple[KeyPath, str]]:
    found: list[tuple[KeyPath, str]] = []
    for index, pattern in enumerate(hook.events):
        here = (*path, "events", index)
        shown = "this event name" if here in source.from_environment else repr(pattern)
        message = _event_warning(pattern, shown)
        if message is not None:
            found.append((here, message))
    found.extend(_signing_key_warnings(hook, path, source))
    if _is_plain_http_to_remote(hook.url):
        what = "signed events" if hook.active_signing_keys else "events (personal data)"
        message = f"{what} go over plain http to a host that is not loopback; use https"
        found.append(((*path, "url"), message))
    url_path = (*path, "url")
    credentials = [
        name for name, _ in parse_qsl(urlsplit(hook.url).query, keep_blank_values=True)
        if CREDENTIAL_HEADER_NAME.search(name) or name.lower() in _CREDENTIAL_PARAMETERS
    ]  # fmt: skip
    if credentials and url_path not in source.from_environment:
        message = (
            f"the query string carries a credential ({', '.join(credentials)}) written "
            "inline; take the whole url from ${VAR} to keep it out of the file"
        )
        found.append((url_path, message))
    return found


_CREDENTIAL_PARAMETERS: Final = frozenset({"key", "sig", "signature", "code", "auth", "pass"})
"""Query parameter names that carry a credential, beyond the credential header names."""


def _signing_key_warnings(
    hook: Hook, path: KeyPath, source: SourceMap
) -> list[tuple[KeyPath, str]]:
    found: list[tuple[KeyPath, str]] = []
    if (*path, "signing_key") in source.inline_secrets:
        message = "signing key written inline; use ${VAR} or signing_key_file to keep it secret"
        found.append(((*path, "signing_key"), message))
    for index in range(len(hook.signing_keys or ())):
        if (*path, "signing_keys", index) in source.inline_secrets:
            message = (
                "signing key written inline; use ${VAR} or signing_key_files to keep it secret"
            )
            found.append(((*path, "signing_keys", index), message))
    for name, _value in hook.headers:
        here = (*path, "headers", name)
        if CREDENTIAL_HEADER_NAME.search(name) and here not in source.from_environment:
            message = "credential header written inline; use ${VAR} to keep it out of the file"
            found.append((here, message))
    if hook.signing_keys is not None and len(hook.signing_keys) > 1 and not hook.standard_webhooks:
        message = (
            "only the first key signs (logto-signature-sha-256 carries one signature); the "
            "others sign only with standard_webhooks: true"
        )
        found.append(((*path, "signing_keys"), message))
    return found


def _event_warning(pattern: str, shown: str) -> str | None:
    if pattern == "*" or pattern in KNOWN_EVENTS:
        return None
    if pattern.endswith(".*"):
        if any(name.startswith(pattern[:-1]) for name in KNOWN_EVENTS):
            return None
        return f"{shown} matches no known Logto hook event (still routed if one is ever published)"
    message = f"{shown} is not a known Logto hook event (still routed if it is ever published)"
    close = difflib.get_close_matches(pattern, sorted(KNOWN_EVENTS), n=1)
    return f"{message}; did you mean '{close[0]}'?" if close else message


def _is_plain_http_to_remote(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and not _is_loopback_host(parts.hostname or "")


def _is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1); any other name may resolve to
    anything, and 0.0.0.0 or :: listen on every interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warning_text(issue: ConfigIssue) -> str:
    return str(issue) if issue.file else f"{issue.key_path}: {issue.message}"
