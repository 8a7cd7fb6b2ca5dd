"""Configuration: two YAML files in, one frozen, validated ``Settings`` snapshot out.

* The main file (``config/hookrelay.yaml``) holds the daemon's sections: ``kafka``,
  ``dead_letter_topic``, ``http``, ``delivery``, ``admin``, ``logging``, ``shutdown``, and either
  ``hooks_file`` (a path relative to the main file) or an inline ``hooks`` list. Every section is
  optional; an empty file gives the defaults.
* The hooks file (``config/hooks.yaml``) is a mapping with one key, ``hooks``.

How a load goes::

    text ─▶ ruamel round-trip tree ─▶ plain dicts/lists ─▶ pydantic models ─▶ Settings
            (YAML 1.2, line numbers,    (${VAR} expanded,     (frozen, unknown keys
             duplicate keys reported)    key path → line map)  refused)

Every problem met on the way becomes a :class:`~hookrelay.errors.ConfigIssue` (file, line, key
path such as ``hooks[2].rate_limit.per_second``, what was expected); :func:`load_settings` raises
one :class:`~hookrelay.errors.ConfigError` with all of them, in file order. Messages never echo a
value: values may be secrets, or come from the environment.

YAML 1.2 means ``yes``/``no``/``on``/``off`` are text. Where text is expected, a YAML number or
boolean is refused rather than converted (``0777`` is not silently ``"777"``); where a boolean is
expected only ``true``/``false`` are accepted. ``${NAME}`` in any string value is replaced by the
environment variable (an unset one is an error); ``$${`` writes a literal ``${``.

The JSON Schemas under ``config/`` are generated from these models by :func:`json_schemas`;
regenerate them with ``python -c "from hookrelay.config import write_json_schemas;
write_json_schemas('config')"``. A unit test keeps the checked-in copies equal to the models.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    PlainSerializer,
    PrivateAttr,
    SecretStr,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import WithJsonSchema
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scalarbool import ScalarBoolean

from hookrelay import __version__
from hookrelay.errors import ConfigError, ConfigIssue
from hookrelay.events.catalogue import KNOWN_EVENTS
from hookrelay.events.signing import standard_webhooks_key
from hookrelay.kafka.clients import SslFilesError, build_ssl_context
from hookrelay.kafka.retries import due_horizon_s, tier_label, tier_topics
from hookrelay.net.guard import (
    METADATA_ADDRESSES,
    NetworkPolicy,
    TlsFilesError,
    client_ssl_context,
)

__all__ = [
    "RESERVED_HEADERS",
    "RETIRED_KEYS",
    "AdminSettings",
    "DeliverySettings",
    "Hook",
    "HookTls",
    "HttpSettings",
    "KafkaSettings",
    "LoggingSettings",
    "RateLimit",
    "Settings",
    "ShutdownSettings",
    "config_warnings",
    "json_schemas",
    "load_settings",
    "write_json_schemas",
]

KeyPath = tuple[str | int, ...]
"""A place in the configuration: mapping keys and list indexes, e.g. ``("hooks", 2, "url")``."""

RESERVED_HEADERS: Final = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "transfer-encoding",
        "logto-signature-sha-256",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
"""Header names (lowercase) that hookrelay sets itself; a hook's ``headers`` may not override them.
``transfer-encoding`` is here with ``content-length`` because both decide the body's framing."""

RETIRED_KEYS: Final[Mapping[KeyPath, str]] = {
    ("delivery", "circuit_failure_threshold"): (
        "replaced by circuit_failure_rate, circuit_window and circuit_min_attempts (the circuit "
        "now opens on a failure rate, not on consecutive failures); ignored, remove it"
    ),
}
"""Keys an earlier version knew, with what replaced them. A file that still sets one loads
(an upgrade must not refuse a working configuration): the value is dropped unread, and
:func:`config_warnings` says what replaced it."""


# ── Position bookkeeping ─────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class _Where:
    """A position in a YAML file; ``line`` and ``column`` are 1-based."""

    file: str
    line: int
    column: int


def _key_path_text(path: KeyPath) -> str:
    """``("hooks", 2, "url")`` → ``"hooks[2].url"``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


class _SourceMap:
    """Where each key path of one loaded configuration came from.

    It travels with ``Settings`` as a private attribute so that :func:`config_warnings` can name
    lines. It is not part of the settings' value: it compares equal to any other source map, so
    two loads of the same content are equal even when comments moved the lines.
    """

    def __init__(self) -> None:
        self.files: list[str] = []
        self.positions: dict[KeyPath, _Where] = {}
        self.from_environment: set[KeyPath] = set()
        self.inline_secrets: set[KeyPath] = set()
        self.retired: list[KeyPath] = []  # keys of RETIRED_KEYS the file still sets

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _SourceMap)

    def __hash__(self) -> int:
        return 0

    def locate(self, path: KeyPath) -> _Where | None:
        """Position of ``path``, else of its nearest ancestor that has one, else ``None``."""
        for end in range(len(path), -1, -1):
            where = self.positions.get(path[:end])
            if where is not None:
                return where
        return None

    def issue(self, path: KeyPath, message: str, where: _Where | None = None) -> ConfigIssue:
        """A ``ConfigIssue`` at ``where`` (default: the position of ``path``)."""
        where = where or self.locate(path)
        if where is None:
            return ConfigIssue("", 0, 0, _key_path_text(path), message)
        return ConfigIssue(where.file, where.line, where.column, _key_path_text(path), message)


# ── Validation building blocks ───────────────────────────────────────────────────────────────────


def _refuse(message: str, *, at: KeyPath = (), see: KeyPath | None = None) -> PydanticCustomError:
    """A validation error carrying our own message.

    ``at`` extends pydantic's location (relative to the value being validated) so the issue lands
    on the right YAML line; ``see`` is a second place, relative the same way, whose file and line
    are appended to the message (duplicates name both lines). The message must not contain
    ``{at}`` or ``{see}``: pydantic fills those in from the context.
    """
    context: dict[str, Any] = {"at": at}
    if see is not None:
        context["see"] = see
    return PydanticCustomError("hookrelay", message, context)


def _no_bool(value: object) -> object:
    """Refuse ``true``/``false`` where a number is expected (pydantic would read 1 and 0)."""
    if isinstance(value, bool):
        raise _refuse("expected a number, not true/false")
    return value


def _bool_from_text(value: object) -> object:
    """Also accept the texts ``true``/``false``, so a boolean can come from ``${VAR}``."""
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    return value


_HEADER_VALUE_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""What RFC 9110 §5.5 keeps out of a field value (controls but HTAB); aiohttp refuses to send
it, so a value holding one would fail every delivery."""


def _check_header_value(text: str) -> str:
    found = _HEADER_VALUE_CONTROL.search(text)
    if found is not None:
        raise _refuse(
            f"expected a header value without control characters; found {found.group()!r} at "
            f"position {found.start()} (only tab is allowed)"
        )
    return text


_HOST: Final = re.compile(r"[A-Za-z0-9._-]+")
_PORT: Final = re.compile(r"[0-9]{1,5}")


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _split_host_port(address: str) -> tuple[str, int] | None:
    """``"host:port"`` or ``"[IPv6]:port"`` → ``(host, port)``, brackets removed; ``None`` if
    malformed. Ports run 0-65535."""
    if address.startswith("["):
        host, _, port = address[1:].partition("]:")
        valid_host = _is_ipv6(host)
    else:
        host, _, port = address.rpartition(":")
        valid_host = _HOST.fullmatch(host) is not None
    if not valid_host or _PORT.fullmatch(port) is None or int(port) > 65535:
        return None
    return host, int(port)


def _check_listen(address: str) -> str:
    if _split_host_port(address) is None:
        raise _refuse("expected host:port, e.g. 127.0.0.1:9464 or [::1]:9464")
    return address


def _check_broker(address: str) -> str:
    parsed = _split_host_port(address)
    if parsed is None or parsed[1] == 0:
        raise _refuse("expected host:port of a Kafka broker, e.g. 127.0.0.1:9092")
    return address


def _split_commas(value: object) -> object:
    """``"a:9092, b:9092"`` → ``["a:9092", "b:9092"]``; any other value unchanged."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


_TOPIC: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _check_topic(name: str) -> str:
    if _TOPIC.fullmatch(name) is None or name in (".", ".."):
        raise _refuse("expected a Kafka topic name: 1-249 characters of A-Z a-z 0-9 . _ -")
    return name


def _check_instance_id(name: str) -> str:
    # Kafka's own rule for group.instance.id (JoinGroupRequest.validateGroupInstanceId).
    if _TOPIC.fullmatch(name) is None or name in (".", ".."):
        raise _refuse("expected a group instance id: 1-249 characters of A-Z a-z 0-9 . _ -")
    return name


def _check_client_error(status: int) -> int:
    if not 400 <= status <= 499:
        raise _refuse("expected a 4xx status code (5xx are always retried)")
    return status


_HOOK_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,21}")


def _check_hook_id(hook_id: str) -> str:
    if _HOOK_ID.fullmatch(hook_id) is None:
        raise _refuse("expected 1-21 characters of A-Z a-z 0-9 _ - (it is sent as hookId)")
    return hook_id


_EVENT_PATTERN: Final = re.compile(r"\*|[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*(?:\.\*)?")
"""An exact name, a prefix wildcard (``Organization.*``) or ``*``; also in the JSON Schema."""


def _check_event_pattern(pattern: str) -> str:
    if _EVENT_PATTERN.fullmatch(pattern) is None:
        raise _refuse(
            "expected an event name like User.Created, a prefix wildcard like Organization.* or *"
        )
    return pattern


def _check_url(url: str) -> str:
    """Accept an absolute http(s) URL with a host and without userinfo; never echo it."""
    if any(char.isspace() or not char.isprintable() for char in url):
        raise _refuse("expected a URL without spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise _refuse("expected an http:// or https:// URL")
    if "@" in parts.netloc:
        raise _refuse(
            "credentials in the URL are refused: URLs end up in logs and proxies; "
            "send them in headers (e.g. Authorization) instead"
        )
    if not parts.hostname:
        raise _refuse("expected a URL with a host")
    _check_url_port(parts)
    return url


def _check_url_port(parts: SplitResult) -> None:
    try:
        _ = parts.port
    except ValueError:
        raise _refuse("expected a port from 0 to 65535 after the host") from None


def _check_sasl_password(password: SecretStr) -> SecretStr:
    if not password.get_secret_value():
        raise _refuse("expected a non-empty password")
    return password


def _check_signing_key(key: SecretStr) -> SecretStr:
    text = key.get_secret_value()
    if not text:
        raise _refuse("expected a non-empty signing key")
    problem = _invisible_in_key(text)
    if problem is not None:
        raise _refuse(f"the signing key {problem}; it would become part of the key, and no "
                      "receiver could verify the signatures")  # fmt: skip
    return key


def _invisible_in_key(text: str) -> str | None:
    """What in a key is invisible yet would be signed with (never quoting the key): a byte
    order mark (Windows editors save one), a control character, surrounding whitespace."""
    if "\ufeff" in text:
        return "holds a byte order mark (U+FEFF; save the file as UTF-8 without BOM)"
    control = _KEY_CONTROL.search(text)
    if control is not None:
        code = ord(control.group())
        return f"holds a control character (U+{code:04X}) at position {control.start()}"
    if text != text.strip():
        return "starts or ends with whitespace"
    return None


_KEY_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _distinct_keys(keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
    """Refuse a key listed twice: it would sign twice and hide that a rotation went wrong."""
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        earlier = first.setdefault(key.get_secret_value(), index)
        if earlier != index:
            message = f"duplicate signing key; the same key as signing_keys[{earlier}]"
            raise _refuse(message, at=(index,), see=(earlier,))
    return keys


def _check_standard_webhooks_key(key: SecretStr, at: KeyPath) -> None:
    try:
        standard_webhooks_key(key.get_secret_value())
    except ValueError as e:
        raise _refuse(f"{e} (standard_webhooks is true)", at=at) from None


_B64TOKEN: Final = re.compile(r"[A-Za-z0-9._~+/-]+=*")
"""RFC 6750 ``b64token``: the characters a bearer token may hold in an Authorization header."""

ADMIN_TOKEN_MIN_LENGTH: Final = 16
"""Shortest admin token accepted: 16 characters of ``openssl rand -hex`` output are 64 bits."""


def _check_admin_token(token: SecretStr) -> SecretStr:
    text = token.get_secret_value()
    if len(text) < ADMIN_TOKEN_MIN_LENGTH or _B64TOKEN.fullmatch(text) is None:
        raise _refuse(
            f"expected a bearer token of at least {ADMIN_TOKEN_MIN_LENGTH} characters of "
            "A-Z a-z 0-9 - . _ ~ + / (then optional =), e.g. from `openssl rand -hex 32`"
        )
    return token


_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _check_header_name(name: str) -> str:
    if _TOKEN.fullmatch(name) is None:
        raise _refuse("expected an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)")
    if name.lower() in RESERVED_HEADERS:
        raise _refuse("this header is set by hookrelay and cannot be overridden")
    return name


def _pairs_as_mapping(value: object) -> object:
    """Let code pass headers as the stored tuple of pairs; YAML gives a mapping."""
    if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return dict(value)
    return value


def _mapping_as_pairs(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    seen: set[str] = set()
    for name in headers:
        if name.lower() in seen:
            raise _refuse("header given twice (names are case-insensitive)", at=(name,))
        seen.add(name.lower())
    return tuple(headers.items())


MAX_RETRY_DELAY_S: Final = 30 * 86_400.0
DEFAULT_RETENTION_S: Final = 7 * 86_400.0
"""Longest delay of a retry tier: 30 days."""


def _derived_default(schema: dict[str, Any]) -> None:
    """JSON Schema of a name derived from ``kafka.group_id`` when omitted: no default shown
    (the empty text that stands for "derive it" is not a valid value to write)."""
    schema.pop("default", None)


Number = Annotated[float, BeforeValidator(_no_bool)]
Integer = Annotated[int, BeforeValidator(_no_bool)]
Flag = Annotated[StrictBool, BeforeValidator(_bool_from_text)]
NonEmptyText = Annotated[StrictStr, Field(min_length=1)]
HeaderName = Annotated[StrictStr, AfterValidator(_check_header_name)]
HeaderValue = Annotated[StrictStr, AfterValidator(_check_header_value)]
TopicName = Annotated[
    StrictStr,
    AfterValidator(_check_topic),
    WithJsonSchema({"type": "string", "pattern": f"^(?:{_TOPIC.pattern})$"}),
]
BrokerAddress = Annotated[StrictStr, AfterValidator(_check_broker)]
RetryableStatus = Annotated[int, BeforeValidator(_no_bool), AfterValidator(_check_client_error)]
EventPattern = Annotated[
    StrictStr,
    AfterValidator(_check_event_pattern),
    WithJsonSchema({"type": "string", "pattern": f"^(?:{_EVENT_PATTERN.pattern})$"}),
]
HookId = Annotated[
    StrictStr,
    AfterValidator(_check_hook_id),
    WithJsonSchema({"type": "string", "pattern": f"^(?:{_HOOK_ID.pattern})$"}),
]


def _header_pairs_schema(_source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    """Validate headers as a ``{name: value}`` mapping (errors per header, an object in the JSON
    Schema) and keep them as an ordered, hashable tuple of ``(name, value)`` pairs."""
    mapping = handler(dict[HeaderName, HeaderValue])
    return core_schema.no_info_before_validator_function(
        _pairs_as_mapping,
        core_schema.no_info_after_validator_function(_mapping_as_pairs, mapping),
        serialization=core_schema.plain_serializer_function_ser_schema(dict),
    )


HeaderPairs = Annotated[tuple[tuple[str, str], ...], GetPydanticSchema(_header_pairs_schema)]


def _network(value: object) -> object:
    """``"10.0.0.0/8"`` or a single address (``"10.0.0.5"`` is ``10.0.0.5/32``) → a network;
    host bits set (``10.0.0.1/8``) are refused: the writer meant another range."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value  # settings built in code
    if not isinstance(value, str):  # pydantic would read a number as an IPv4 address
        raise _refuse("expected a string such as 10.0.0.0/8")
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        pass
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise _refuse(
            "expected a network in CIDR notation (10.0.0.0/8, fd00::/8) or one address"
        ) from None
    raise _refuse("host bits set: expected the network's first address, as in 10.0.0.0/8")


AllowNetwork = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network,
    BeforeValidator(_network),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "description": "CIDR network or single IP address"}),
]
"""A network the SSRF guard lets webhooks reach (see ``hookrelay.net.guard``)."""


def _check_tls_files(ca_file: str | None, cert_file: str | None, key_file: str | None) -> None:
    """Refuse TLS files that do not load into a client context, on the key naming the file."""
    if key_file is not None and cert_file is None:
        raise _refuse("expected cert_file with it (the key's certificate)", at=("key_file",))
    try:
        client_ssl_context(ca_file, cert_file, key_file)
    except TlsFilesError as e:
        raise _refuse(str(e), at=(e.key,)) from None


# ── Models ───────────────────────────────────────────────────────────────────────────────────────


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True
    )


class KafkaSettings(_Model):
    """Section kafka: where identity events are consumed from."""

    bootstrap_servers: Annotated[tuple[BrokerAddress, ...], BeforeValidator(_split_commas)] = Field(
        ("127.0.0.1:9092",), min_length=1
    )
    """Brokers to contact first, as host:port; a list or one comma-separated string."""
    topics: tuple[TopicName, ...] = Field(("identity.events",), min_length=1)
    """Topics carrying identity events (one JSON event per record)."""
    group_id: NonEmptyText = "hookrelay"
    """Consumer group; replicas with the same group share the partitions."""
    group_instance_id: (
        Annotated[
            StrictStr,
            AfterValidator(_check_instance_id),
            WithJsonSchema({"type": "string", "pattern": f"^(?:{_TOPIC.pattern})$"}),
        ]
        | None
    ) = None
    """Static membership (Kafka's group.instance.id, KIP-345): a name unique to this replica
    and stable across its restarts, e.g. ${POD_NAME} of a StatefulSet or the host name. A
    replica restarted within session_timeout_s gets its partitions back without a
    rebalance; one that stops leaves them idle until session_timeout_s. Two replicas with
    the same id fence each other: the daemon reports it and is not ready."""
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a group without committed offsets starts reading."""
    client_id: NonEmptyText = "hookrelay"
    """Client id shown in broker logs and metrics."""
    max_poll_records: Integer = Field(500, ge=1)
    """Most records taken from the broker per fetch."""
    max_partition_fetch_bytes: Integer = Field(262_144, ge=1024)
    """Most bytes fetched per partition per request (a larger first record still comes
    whole). Buffered fetches are most of the daemon's memory under a backlog: with the retry
    topics it subscribes to two dozen partitions, so the client's 1 MiB default would let
    fetches alone hold tens of MiB."""
    fetch_max_bytes: Integer = Field(8_388_608, ge=1024)
    """Most bytes per fetch response, over all partitions."""
    metadata_max_age_s: Number = Field(30.0, gt=0, le=3600)
    """Seconds between metadata refreshes: a topic created, or a partition added to an event
    topic, is picked up within this bound."""
    commit_interval_s: Number = Field(1.0, gt=0)
    """Seconds between offset commits of settled records."""
    session_timeout_s: Number = Field(15.0, gt=0)
    """Seconds without heartbeat before the broker gives this member's partitions away."""
    max_poll_interval_s: Number = Field(300.0, gt=0)
    """Seconds allowed between fetches before the member is considered stuck."""
    request_timeout_s: Number = Field(30.0, gt=0)
    """Seconds to wait for a broker answer."""
    create_topics: StrictBool = True
    """Create the dead-letter and retry topics at start-up when they are missing; false makes
    a missing topic a start-up error that names it."""
    topic_partitions: Integer = Field(3, ge=1)
    """Partitions of the topics hookrelay creates (dead-letter and retry topics)."""
    topic_replication_factor: Integer = Field(1, ge=1)
    """Replication factor of the topics hookrelay creates; use 3 on a production cluster."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How connections to the brokers are secured (Kafka's security.protocol): PLAINTEXT
    (neither), SSL (TLS), SASL_PLAINTEXT (SASL authentication without TLS), SASL_SSL (both)."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism, required by the SASL_* protocols. PLAIN sends the password itself (use
    it over SASL_SSL only); SCRAM proves knowing it without sending it."""
    sasl_username: NonEmptyText | None = None
    """SASL user name, required by the SASL_* protocols."""
    sasl_password: Annotated[SecretStr, AfterValidator(_check_sasl_password)] | None = None
    """SASL password, required by the SASL_* protocols. Write ${VAR}, or use
    sasl_password_file, to keep it out of the file."""
    ssl_ca_file: NonEmptyText | None = None
    """PEM file of the CA certificates that sign the brokers' certificates (SSL, SASL_SSL),
    relative to this file; default: the system's CAs. Host names are always verified."""
    ssl_cert_file: NonEmptyText | None = None
    """PEM certificate chain hookrelay presents to brokers that require client certificates
    (mutual TLS), relative to this file."""
    ssl_key_file: NonEmptyText | None = None
    """PEM unencrypted private key of ssl_cert_file, relative to this file; omit it when
    ssl_cert_file holds the key too."""

    @model_validator(mode="after")
    def _security_fits_the_protocol(self) -> KafkaSettings:
        protocol = self.security_protocol
        _check_group(self, _SASL_KEYS, protocol, needed=protocol.startswith("SASL_"))
        tls = protocol in ("SSL", "SASL_SSL")
        _check_group(self, _TLS_KEYS, protocol, needed=None if tls else False)
        if self.ssl_key_file is not None and self.ssl_cert_file is None:
            raise _refuse(
                "expected ssl_cert_file with it (the key's certificate)", at=("ssl_key_file",)
            )
        if tls:
            try:
                build_ssl_context(self.ssl_ca_file, self.ssl_cert_file, self.ssl_key_file)
            except SslFilesError as e:
                raise _refuse(str(e), at=(e.key,)) from None
        return self


_SASL_KEYS: Final = ("sasl_mechanism", "sasl_username", "sasl_password")
_TLS_KEYS: Final = ("ssl_ca_file", "ssl_cert_file", "ssl_key_file")


def _check_group(
    kafka: KafkaSettings, keys: tuple[str, ...], protocol: str, *, needed: bool | None
) -> None:
    """Refuse a key of ``keys`` that is missing when ``needed``, or given when ``needed`` is
    False (it would be ignored: a password thought to protect nothing); None allows either."""
    for key in keys:
        given = getattr(kafka, key) is not None
        if needed and not given:
            also = " or sasl_password_file" if key == "sasl_password" else ""
            raise _refuse(f"expected {key}{also} with security_protocol {protocol}", at=(key,))
        if needed is False and given:
            raise _refuse(
                f"not used with security_protocol {protocol}; remove it or choose a protocol "
                "that uses it",
                at=(key,),
            )


class HttpSettings(_Model):
    """Section http: the shared HTTP client that POSTs webhooks."""

    timeout_s: Number = Field(10.0, gt=0)
    """Seconds one delivery attempt may take in total (a hook's timeout_s overrides it)."""
    connect_timeout_s: Number = Field(5.0, gt=0)
    """Seconds to open a connection (part of timeout_s)."""
    max_connections: Integer = Field(512, ge=1)
    """Open connections across all endpoints."""
    user_agent: HeaderValue = Field(f"hookrelay/{__version__}", min_length=1)
    """user-agent header; "Logto (https://logto.io/)" makes requests look like Logto's own."""
    max_response_bytes: Integer = Field(65536, ge=0)
    """Most bytes of a response body read (kept for logs and the dead-letter topic)."""
    allow_networks: tuple[AllowNetwork, ...] = ()
    """Networks every hook may reach although the SSRF guard refuses them by default
    (loopback, private, link-local, CGNAT, ...), as CIDR. A cloud metadata endpoint is only
    allowed by an entry naming exactly its address. Production configurations should not
    need it."""
    ca_file: NonEmptyText | None = None
    """PEM file of the CA certificates that verify https endpoints, relative to this file;
    default: the system's CAs. A hook's tls.ca_file overrides it."""

    @model_validator(mode="after")
    def _ca_file_loads(self) -> HttpSettings:
        _check_tls_files(self.ca_file, None, None)
        return self


class HookTls(_Model):
    """A hook's TLS settings. Certificates and host names are always verified (there is no
    switch to turn that off); TLS 1.2 is the least version spoken."""

    ca_file: NonEmptyText | None = None
    """PEM file of the CA certificates that verify this endpoint (instead of http.ca_file or
    the system's CAs), relative to the YAML file naming it."""
    cert_file: NonEmptyText | None = None
    """PEM client certificate chain sent to an endpoint that asks for one (mutual TLS),
    relative to the YAML file naming it."""
    key_file: NonEmptyText | None = None
    """PEM unencrypted private key of cert_file, relative to the YAML file naming it; omit it
    when cert_file holds the key too."""

    @model_validator(mode="after")
    def _files_load(self) -> HookTls:
        _check_tls_files(self.ca_file, self.cert_file, self.key_file)
        return self


class DeliverySettings(_Model):
    """Section delivery: retries, backpressure and which answers are retried."""

    retry_schedule_s: tuple[Annotated[Number, Field(ge=0.01, le=MAX_RETRY_DELAY_S)], ...] = Field(
        (5.0, 30.0, 120.0, 600.0, 3600.0, 18000.0, 36000.0), min_length=1
    )
    """Seconds to wait before each retry, non-decreasing, each at most 30 days (a retry topic
    must keep its records longer than its delay: Kafka's default retention is 7 days); after
    the last one the delivery goes to the dead-letter topic."""
    retry_jitter: Number = Field(0.2, ge=0, le=1)
    """Random spread of each retry delay, as a fraction (0.2 = ±20 %)."""
    max_retry_after_s: Number = Field(3600.0, gt=0)
    """Cap, in seconds, on an endpoint's Retry-After."""
    max_in_flight: Integer = Field(10000, ge=1)
    """Deliveries held by healthy lanes (queued or being sent) and Kafka writes waiting for
    their acknowledgement before the consumer pauses (backpressure)."""
    resume_in_flight: Integer | None = Field(None, ge=1)
    """The paused consumer resumes once fewer than this many deliveries are in flight; null means
    80 % of max_in_flight. Must be below max_in_flight."""
    max_event_bytes: Integer = Field(1_000_000, ge=1)
    """Largest record value accepted as an event; larger ones go to the dead-letter topic.
    The default leaves room under the broker's default message.max.bytes (1048588) for the
    headers a retry or dead letter adds, so an accepted event always fits a retry topic."""
    retry_on_status: tuple[RetryableStatus, ...] = (408, 425, 429)
    """4xx answers that are retried; 5xx are always retried, other 4xx are permanent failures."""
    retry_topic_prefix: TopicName = Field("", json_schema_extra=_derived_default)
    """Retry topics are this prefix plus each delay of retry_schedule_s; when omitted,
    "<kafka.group_id>.retry." (hookrelay.retry.5s, hookrelay.retry.2m, ... for the default
    group), so each deployment writes retry topics of its own."""
    unknown_hook_grace_s: Number = Field(600.0, ge=0)
    """Seconds a retry for a hook this replica does not know (or has disabled) is parked
    again before it is dead-lettered as hook_removed: during a rolling update another replica
    of the group may know the hook."""
    lane_max_pending: Integer = Field(1000, ge=1)
    """Deliveries a healthy hook's lane queues in memory; when one lane reaches it, fetching
    pauses until it drains (backpressure). Beyond this plus one fetch batch
    (kafka.max_poll_records), the excess is parked in the first retry topic."""
    lane_max_wait_s: Number = Field(2.0, gt=0)
    """Seconds the oldest queued delivery of a lane may wait before the lane counts as slow:
    its new deliveries are then parked in the retry topics instead of queued, and it no
    longer holds back fetching for the other hooks."""
    circuit_failure_rate: Number = Field(0.5, gt=0, le=1)
    """Share of failed attempts, among a hook's recent attempts (circuit_window), that opens
    its circuit: its deliveries are then parked in the retry topics without being attempted
    until the cool-down ends. Only real failures count (5xx other than a 503 with
    Retry-After, 408, 425, timeouts, connection and TLS errors); 429, a 503 with
    Retry-After and parks never do, and other 4xx answers count as successes."""
    circuit_window: Integer = Field(100, ge=1, le=10000)
    """How many of a hook's most recent attempt outcomes the failure rate is taken over."""
    circuit_min_attempts: Integer = Field(20, ge=1)
    """Outcomes the window must hold before the circuit may open (at most circuit_window), so
    a few failures at low traffic never open it."""
    circuit_window_max_age_s: Number = Field(60.0, gt=0)
    """Seconds an outcome stays in the window: older ones leave it even when fewer than
    circuit_window came since, so a quiet hook is never judged on old failures."""
    circuit_cooldown_s: Number = Field(30.0, gt=0)
    """Seconds an open circuit waits before letting one probe delivery through."""

    @field_validator("retry_schedule_s")
    @classmethod
    def _delays_never_shrink(cls, delays: tuple[float, ...]) -> tuple[float, ...]:
        for index in range(1, len(delays)):
            if delays[index] < delays[index - 1]:
                raise _refuse("expected delays in non-decreasing order", at=(index,))
        return delays

    @model_validator(mode="after")
    def _resume_below_the_bound(self) -> DeliverySettings:
        if self.resume_in_flight is not None and self.resume_in_flight >= self.max_in_flight:
            raise _refuse("expected a number below max_in_flight", at=("resume_in_flight",))
        return self

    @model_validator(mode="after")
    def _min_attempts_fit_the_window(self) -> DeliverySettings:
        if self.circuit_min_attempts > self.circuit_window:
            raise _refuse(
                "expected at most circuit_window: the circuit could never open",
                at=("circuit_min_attempts",),
            )
        return self

    @property
    def due_horizon_s(self) -> float:
        """``retries.due_horizon_s`` of this schedule: how long after its write a retry
        record of a tier whose name gives no delay may still be due."""
        return due_horizon_s(self.retry_schedule_s, self.retry_jitter, self.max_retry_after_s)

    @property
    def resume_below(self) -> int:
        """Effective low-water mark (≥ 1): resume fetching when in-flight deliveries < this."""
        if self.resume_in_flight is not None:
            return self.resume_in_flight
        return max(1, self.max_in_flight * 4 // 5)


class AdminSettings(_Model):
    """Section admin: the HTTP listener for /metrics, /healthz, /readyz and the /v1 admin API."""

    listen: Annotated[StrictStr, AfterValidator(_check_listen)] = "127.0.0.1:9464"
    """host:port to listen on; IPv6 in brackets ([::1]:9464); port 0 picks a free port."""
    token: Annotated[SecretStr, AfterValidator(_check_admin_token)] | None = None
    """Bearer token the /v1 admin API requires (Authorization: Bearer <token>); without one
    the /v1 API is disabled. /metrics, /healthz and /readyz never need it. Write ${VAR}, or
    use token_file, to keep it out of the file."""
    recent_attempts: Integer = Field(1000, ge=0)
    """Attempts kept in memory for GET /v1/deliveries (newest first; 0 keeps none)."""
    keep_response_bodies: StrictBool = False
    """Keep the first KiB of each endpoint answer in that log. Off by default: an endpoint
    may echo personal data from the payload."""

    @property
    def host(self) -> str:
        """The host part, without IPv6 brackets."""
        return self._parsed[0]

    @property
    def port(self) -> int:
        return self._parsed[1]

    @property
    def _parsed(self) -> tuple[str, int]:
        parsed = _split_host_port(self.listen)
        assert parsed is not None, "validated at construction"
        return parsed


class LoggingSettings(_Model):
    """Section logging: structured logs on stdout."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written."""
    format: Literal["json", "console"] = "json"
    """json: one JSON object per line (for collectors); console: coloured text for people."""


class ShutdownSettings(_Model):
    """Section shutdown: how a SIGTERM drains."""

    grace_s: Number = Field(10.0, ge=0)
    """Seconds to let in-flight deliveries finish before parking the rest."""
    hard_deadline_s: Number = Field(30.0, gt=0)
    """Seconds after which the process exits whatever is left; must exceed grace_s."""

    @model_validator(mode="after")
    def _deadline_after_grace(self) -> ShutdownSettings:
        if self.hard_deadline_s <= self.grace_s:
            raise _refuse("expected a number greater than grace_s", at=("hard_deadline_s",))
        return self


JITTER_ALLOWANCE_S: Final = 0.02
"""Seconds of the rate a token bucket keeps back from its burst (see ``RateLimit.capacity``)."""


class RateLimit(_Model):
    """A token bucket: per_second tokens flow in, at most capacity are stored."""

    per_second: Number = Field(gt=0)
    """Deliveries per second allowed on average."""
    burst: Integer | None = Field(None, ge=1)
    """Deliveries allowed at once after a quiet period; null means ceil(per_second)."""

    @property
    def effective_burst(self) -> int:
        """``burst``, or ``max(1, ceil(per_second))`` when unset: the configured burst."""
        return self.burst if self.burst is not None else max(1, math.ceil(self.per_second))

    @property
    def capacity(self) -> int:
        """Token bucket size: ``effective_burst`` less the jitter allowance (the rate's
        ``JITTER_ALLOWANCE_S`` worth of tokens, rounded, at least one), never below 1.

        The allowance is why an endpoint never sees more than ``per_second + burst``
        requests in any second: a bucket lets exactly that many *leave* in a second, but
        the first requests of a burst are slowed by connection set-up, so without a reserve
        a receiver's 1-second window could catch a few more (seen: +7 at 500/s, +1 at
        20/s)."""
        allowance = max(1, int(self.per_second * JITTER_ALLOWANCE_S + 0.5))
        return max(1, self.effective_burst - allowance)


class Hook(_Model):
    """A hook subscription: which events go to which endpoint, and how."""

    id: HookId
    """1-21 characters of A-Z a-z 0-9 _ -, unique; sent as hookId in every body."""
    name: StrictStr = ""
    """Free text for people."""
    events: tuple[EventPattern, ...] = Field(min_length=1)
    """Event names (User.Created), prefix wildcards (Organization.*) or "*" for every event."""
    url: Annotated[StrictStr, AfterValidator(_check_url)]
    """Endpoint receiving the POSTs: http or https, no user:password@ part."""
    signing_key: Annotated[SecretStr, AfterValidator(_check_signing_key)] | None = None
    """Key for the logto-signature-sha-256 header (HMAC-SHA256 of the body); no key, no header.
    Write ${VAR}, or use signing_key_file, to keep it out of the file."""
    signing_keys: (
        Annotated[
            tuple[Annotated[SecretStr, AfterValidator(_check_signing_key)], ...],
            Field(min_length=1),
            AfterValidator(_distinct_keys),
        ]
        | None
    ) = None
    """Several keys during a key rotation, instead of signing_key: the first is the primary
    (it alone signs logto-signature-sha-256); with standard_webhooks every key adds a signature
    to webhook-signature. Or signing_key_files."""
    standard_webhooks: Flag = False
    """Also sign the Standard Webhooks way: webhook-timestamp and webhook-signature (one
    v1,<base64> per key); every key must then be whsec_ followed by 24-64 bytes in base64."""
    headers: HeaderPairs = Field((), json_schema_extra={"default": {}})
    """Extra request headers, name: value; hookrelay's own headers cannot be overridden."""
    enabled: Flag = True
    """false keeps the hook configured but sends it nothing."""
    rate_limit: RateLimit | None = None
    """Token bucket for this endpoint; null means unlimited."""
    max_concurrency: Integer = Field(8, ge=1, le=1024)
    """Requests in flight to this endpoint at once."""
    timeout_s: Number | None = Field(None, gt=0)
    """Seconds per attempt; null means http.timeout_s."""
    allow_networks: tuple[AllowNetwork, ...] = ()
    """Networks this hook may reach although the SSRF guard refuses them by default, added to
    http.allow_networks (CIDR; a metadata endpoint needs an entry naming its exact address)."""
    tls: HookTls | None = None
    """CA bundle and client certificate for this https endpoint."""
    retry_on_status: tuple[RetryableStatus, ...] | None = None
    """4xx answers retried for this hook; null means delivery.retry_on_status."""

    @model_validator(mode="after")
    def _keys_fit_the_schemes(self) -> Hook:
        if self.signing_key is not None and self.signing_keys is not None:
            raise _refuse(
                "use either signing_key (one key) or signing_keys (a list), not both",
                at=("signing_keys",),
            )
        if self.standard_webhooks:
            if self.signing_key is not None:
                _check_standard_webhooks_key(self.signing_key, ("signing_key",))
            for index, key in enumerate(self.signing_keys or ()):
                _check_standard_webhooks_key(key, ("signing_keys", index))
            if not self.active_signing_keys:
                message = "expected signing_key or signing_keys with standard_webhooks: true"
                raise _refuse(message, at=("standard_webhooks",))
        return self

    @property
    def active_signing_keys(self) -> tuple[SecretStr, ...]:
        """The keys in force, primary first: ``signing_keys``, else ``(signing_key,)``, else
        ``()`` (an unsigned hook). Every one of them is a secret for the log redactor."""
        if self.signing_keys is not None:
            return self.signing_keys
        return (self.signing_key,) if self.signing_key is not None else ()

    def effective_timeout_s(self, http: HttpSettings) -> float:
        """Seconds one attempt may take: the hook's ``timeout_s``, else ``http.timeout_s``."""
        return self.timeout_s if self.timeout_s is not None else http.timeout_s

    def effective_retry_on_status(self, delivery: DeliverySettings) -> tuple[int, ...]:
        """4xx statuses retried for this hook: its own list, else ``delivery.retry_on_status``."""
        if self.retry_on_status is not None:
            return self.retry_on_status
        return delivery.retry_on_status

    def is_retryable_status(self, status: int, delivery: DeliverySettings) -> bool:
        """Whether an HTTP answer with ``status`` is retried: every 5xx, and the 4xx listed in
        :meth:`effective_retry_on_status`. 2xx is success; 3xx and other 4xx are permanent."""
        return 500 <= status <= 599 or status in self.effective_retry_on_status(delivery)


class Settings(_Model):
    """hookrelay's configuration: daemon settings and hook subscriptions."""

    kafka: KafkaSettings = KafkaSettings()
    """Where events are consumed from."""
    dead_letter_topic: TopicName = Field("", json_schema_extra=_derived_default)
    """Topic receiving invalid records and deliveries that used up their retries; when
    omitted, "<kafka.group_id>.dlq" (hookrelay.dlq for the default group)."""
    http: HttpSettings = HttpSettings()
    """The HTTP client."""
    delivery: DeliverySettings = DeliverySettings()
    """Retries and backpressure."""
    admin: AdminSettings = AdminSettings()
    """The admin listener: /metrics, /healthz, /readyz and the /v1 admin API."""
    logging: LoggingSettings = LoggingSettings()
    """Structured logs on stdout."""
    shutdown: ShutdownSettings = ShutdownSettings()
    """Draining on SIGTERM."""
    hooks: tuple[Hook, ...] = ()
    """Hook subscriptions written inline (or loaded from hooks_file)."""
    source_file: StrictStr = ""
    """Absolute path of the main file loaded; empty for settings built in code."""
    hooks_file: StrictStr | None = None
    """In the file: the hooks file, relative to the main file. Loaded: its absolute path."""

    _source: _SourceMap = PrivateAttr(default_factory=_SourceMap)

    @field_validator("hooks")
    @classmethod
    def _hook_ids_are_unique(cls, hooks: tuple[Hook, ...]) -> tuple[Hook, ...]:
        first: dict[str, int] = {}
        for index, hook in enumerate(hooks):
            if hook.id in first:
                earlier = first[hook.id]
                raise _refuse(
                    f"duplicate hook id; already used by hooks[{earlier}]",
                    at=(index, "id"),
                    see=(earlier, "id"),
                )
            first[hook.id] = index
        return hooks

    @model_validator(mode="after")
    def _dead_letters_are_not_consumed(self) -> Settings:
        self._derive_owned_topic_names()
        if self.dead_letter_topic in self.kafka.topics:
            raise _refuse(
                "expected a topic not listed in kafka.topics (hookrelay would consume its own "
                "dead letters)",
                at=("dead_letter_topic",),
            )
        if any(_TOPIC.fullmatch(topic) is None for topic in self.retry_topics):
            raise _refuse(
                "expected a shorter prefix: with the delays of retry_schedule_s the retry topic "
                "names exceed Kafka's 249 characters",
                at=("delivery", "retry_topic_prefix"),
            )
        clash = set(self.retry_topics) & {*self.kafka.topics, self.dead_letter_topic}
        if clash:
            raise _refuse(
                "expected a prefix whose retry topics differ from kafka.topics and "
                "dead_letter_topic",
                at=("delivery", "retry_topic_prefix"),
            )
        return self

    def _derive_owned_topic_names(self) -> None:
        """Fill in the topic names left out from ``kafka.group_id`` (DESIGN §1.8: what a
        deployment writes is its own). Runs once, while the model is being built, which is
        why it may set fields of a frozen model."""
        group = self.kafka.group_id
        derived = {"dead_letter_topic": f"{group}.dlq", "retry_topic_prefix": f"{group}.retry."}
        if self.dead_letter_topic and self.delivery.retry_topic_prefix:
            return
        longest = f"{group}.retry.{tier_label(max(self.delivery.retry_schedule_s))}"
        if _TOPIC.fullmatch(longest) is None:
            raise _refuse(
                "expected a group id made of A-Z a-z 0-9 . _ - (at most 230 characters), "
                "because the dead-letter and retry topic names derive from it; or set "
                "dead_letter_topic and delivery.retry_topic_prefix explicitly",
                at=("kafka", "group_id"),
            )
        if not self.dead_letter_topic:
            object.__setattr__(self, "dead_letter_topic", derived["dead_letter_topic"])
        if not self.delivery.retry_topic_prefix:
            delivery = self.delivery.model_copy(
                update={"retry_topic_prefix": derived["retry_topic_prefix"]}
            )
            object.__setattr__(self, "delivery", delivery)

    @property
    def group_id(self) -> str:
        """The deployment's identity: ``kafka.group_id``, written into every retry record
        and dead letter it produces."""
        return self.kafka.group_id

    @property
    def retry_topics(self) -> tuple[str, ...]:
        """The retry topic of each tier, in ``delivery.retry_schedule_s`` order."""
        return tier_topics(self.delivery.retry_topic_prefix, self.delivery.retry_schedule_s)


class _HooksFile(_Model):
    """hooks.yaml: hookrelay's hook subscriptions."""

    hooks: tuple[Hook, ...]
    """Hook subscriptions."""


# ── Reading YAML ─────────────────────────────────────────────────────────────────────────────────

_BROKEN: Final = object()
"""Marks a file that could not be read or parsed (its issue is already recorded)."""

_OLD_YAML_DIRECTIVE: Final = re.compile(r"^%YAML[ \t]+1\.[01]\b", re.MULTILINE)
_REFERENCE: Final = re.compile(r"\$\$\{|\$\{(?P<name>[^}]*)(?P<close>\})?")
_VARIABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand(text: str, env: Mapping[str, str]) -> tuple[str, list[str], bool]:
    """Replace ``${NAME}`` by ``env[NAME]`` and ``$${`` by ``${``, in one pass.

    Returns ``(text, problems, substituted)``: problems name the variable, never its value;
    ``substituted`` says whether any variable was used.
    """
    problems: list[str] = []
    used: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name = match.group("name")
        if name is None:
            return "${"
        if match.group("close") is None or _VARIABLE_NAME.fullmatch(name) is None:
            problems.append("malformed ${...}; expected ${NAME}, or $${ for a literal ${")
        elif name not in env:
            problems.append(f"environment variable {name} is not set")
        else:
            used.append(name)
            return env[name]
        return ""

    return _REFERENCE.sub(substitute, text), problems, bool(used)


def _key_where(node: CommentedMap, key: Any, file: str) -> _Where:
    try:
        line, column = node.lc.key(key)
    except KeyError:  # a key merged in with `<<: *anchor` has no position of its own
        line, column = node.lc.line, node.lc.col
    return _Where(file, line + 1, column + 1)


def _item_where(node: CommentedSeq, index: int, file: str) -> _Where:
    try:
        line, column = node.lc.item(index)
    except KeyError:
        line, column = node.lc.line, node.lc.col
    return _Where(file, line + 1, column + 1)


def _first_line(tree: Any) -> int:
    if isinstance(tree, CommentedMap | CommentedSeq):
        return int(tree.lc.line) + 1
    return 1


def _yaml_issue(file: str, error: YAMLError, text: str = "") -> ConfigIssue:
    """A parse error as an issue. Built from the problem text only: ``str(error)`` quotes the
    offending source line, which may hold a secret (``text``, the file, is only looked at for
    a hint)."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or getattr(error, "context", None)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
    lines = text.splitlines()
    source_line = lines[line - 1] if 0 < line <= len(lines) else ""
    message = f"invalid YAML: {problem or 'cannot parse'}"
    hint = _yaml_hint(str(problem or ""), source_line)
    return ConfigIssue(file, line, column, "", f"{message}; {hint}" if hint else message)


def _yaml_hint(problem: str, source_line: str) -> str | None:
    """What usually causes a parse error, for the two a person meets most: a tab, and a
    bare ``*`` (YAML reads ``*name`` as an alias)."""
    if "'\\t'" in problem or "\t" in problem:
        return "YAML indents with spaces, not tabs"
    if re.search(r"(^|[\[,:\s])\*($|[\],\s])", source_line):
        return 'quote a bare * ("*"): YAML reads * as the start of an alias'
    return None


def _duplicate_keys(root: Node | None, file: str) -> list[ConfigIssue]:
    """Issues for repeated keys anywhere in a composed YAML node tree, naming both lines."""
    issues: list[ConfigIssue] = []
    pending: list[tuple[Node, KeyPath]] = [] if root is None else [(root, ())]
    seen: set[int] = set()
    while pending:
        node, path = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            pending.extend((item, (*path, index)) for index, item in enumerate(node.value))
        elif isinstance(node, MappingNode):
            pending.extend(_mapping_children(node, path, file, issues))
    return issues


def _mapping_children(
    node: MappingNode, path: KeyPath, file: str, issues: list[ConfigIssue]
) -> list[tuple[Node, KeyPath]]:
    first_line: dict[tuple[str, str], int] = {}
    children: list[tuple[Node, KeyPath]] = []
    for key, value in node.value:
        if not isinstance(key, ScalarNode):
            continue
        here = (*path, str(key.value))
        identity = (str(key.tag), str(key.value))
        if identity in first_line:
            mark = key.start_mark
            message = f"duplicate key '{key.value}' (first at line {first_line[identity]})"
            where = (file, mark.line + 1, mark.column + 1)
            issues.append(ConfigIssue(*where, _key_path_text(here), message))
        else:
            first_line[identity] = key.start_mark.line + 1
        children.append((value, here))
    return children


# ── Loading ──────────────────────────────────────────────────────────────────────────────────────


Skippable = Literal["hooks", "admin", "signing_keys"]
"""What ``load_settings`` can leave out."""

_SIGNING_KEY_FIELDS: Final = (
    "signing_key",
    "signing_keys",
    "signing_key_file",
    "signing_key_files",
)


def load_settings(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    skip: Collection[Skippable] = (),
) -> Settings:
    """Load the main configuration file at ``path`` (and the hooks file it names).

    ``env`` supplies ``${VAR}`` values (default: ``os.environ``). Signing key files and the hooks
    file are read relative to the YAML file that names them. ``skip`` leaves parts out for a
    command that never uses them (``produce`` needs no hooks, ``replay`` only their ids;
    neither serves the admin API): ``hooks``, ``admin`` (they take their defaults) or
    ``signing_keys`` (every hook's keys and key files). Skipped files are not read and
    nothing in a skipped part is checked, so its secrets need not be set.

    Returns a frozen ``Settings`` whose ``source_file``/``hooks_file`` are absolute paths.
    Raises ``ConfigError`` listing every issue found, in file order (main file first); each names
    the file, line and key path, says what was expected, and never echoes a value.
    """
    loader = _Loader(os.environ if env is None else env, skip=frozenset(skip))
    settings = loader.load(Path(path))
    if settings is None or loader.issues:
        raise ConfigError(loader.sorted_issues(), _salvaged_warnings(loader.salvaged))
    return settings


def _salvaged_warnings(salvaged: tuple[Settings, list[str]] | None) -> list[str]:
    """``config_warnings`` of what validated, without those about what ``_salvage`` stood in
    for or dropped (a stand-in hook is disabled: "no enabled hooks" would mislead too)."""
    if salvaged is None:
        return []
    settings, hidden = salvaged
    keys = [f": {prefix}{tail}" for prefix in hidden for tail in (".", ":", "[")]
    if hidden:
        keys.append(": hooks: no enabled hooks")
    return [text for text in config_warnings(settings) if not any(k in text for k in keys)]


def _strip_one_newline(text: str) -> str:
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def _read_key_file(file: Path, what: str = "signing key") -> tuple[str | None, str | None]:
    """``(secret, None)`` or ``(None, problem)``; the problem names the file (as the ``what``
    file, e.g. "signing key file"), never its content."""
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as e:
        return None, f"cannot read {what} file {file}: {e.strerror or type(e).__name__}"
    except UnicodeDecodeError:
        return None, f"{what} file {file} is not UTF-8 text"
    key = _strip_one_newline(text)
    if not key:
        return None, f"{what} file {file} is empty"
    return key, None


def _salvage(
    data: dict[str, Any], error: ValidationError, source: _SourceMap
) -> tuple[Settings, list[str]] | None:
    """Settings from ``data`` without what failed validation, so that ``check`` can warn
    about the rest in the same run, and the key paths whose warnings would mislead (a hook
    stood in for). Each failing key is dropped first (it takes its default); if that is not
    enough, a failing hook is replaced by a disabled stand-in, then a failing section
    dropped. List items are never removed: later indices, and so the lines warnings name,
    must stay those of the files. None when nothing validates."""
    paths = {
        tuple(part for part in e["loc"] if part != "[key]") for e in error.errors(include_url=False)
    }
    for depth in (None, 2, 1):
        trimmed = copy.deepcopy(data)
        hidden: list[str] = []
        for path in paths:
            cut = path if depth is None else path[:depth]
            if len(cut) == 2 and cut[0] == "hooks" and isinstance(cut[1], int):
                _stand_in_for_hook(trimmed, cut[1])
                hidden.append(f"hooks[{cut[1]}]")
            elif cut:
                hidden += ["hooks"] if cut == ("hooks",) else []
                _drop(trimmed, cut)
        try:
            settings = Settings.model_validate(trimmed)
        except ValidationError:
            continue
        settings._source = source
        return settings, hidden
    return None


def _stand_in_for_hook(data: dict[str, Any], index: int) -> None:
    hooks = data.get("hooks")
    if isinstance(hooks, list) and 0 <= index < len(hooks):
        hooks[index] = {"id": f"invalid-{index}", "events": ["*"],
                        "url": "https://invalid.invalid/", "enabled": False}  # fmt: skip


def _drop(data: Any, path: tuple[Any, ...]) -> None:
    """Remove the mapping key at ``path`` (an item of a list is left alone)."""
    *parents, last = path
    node = data
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else _item(node, part)
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(last, None)


def _item(node: Any, part: Any) -> Any:
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _inside(key_path: str, skipped: Collection[str]) -> bool:
    """True when ``key_path`` (``hooks[2].url``, ``admin.token``) lies in a ``skipped`` part
    (``load_settings``)."""
    parts = re.split(r"[.\[\]]+", key_path)
    if parts[0] in skipped or (parts[0] == "hooks_file" and "hooks" in skipped):
        return True
    return (
        "signing_keys" in skipped
        and parts[0] == "hooks"
        and any(part in _SIGNING_KEY_FIELDS for part in parts[1:])
    )


def _hook_mappings(data: Mapping[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    hooks = data.get("hooks")
    if isinstance(hooks, list):
        for index, hook in enumerate(hooks):
            if isinstance(hook, dict):
                yield index, hook


class _Loader:
    """State of one :func:`load_settings` call: the environment, where every key came from,
    and the issues found so far."""

    def __init__(self, env: Mapping[str, str], skip: frozenset[str] = frozenset()) -> None:
        self.env = env
        self.skip = skip
        self.salvaged: tuple[Settings, list[str]] | None = None  # see _salvage
        self.source = _SourceMap()
        self.issues: list[ConfigIssue] = []
        self.failed: set[KeyPath] = set()  # already reported; validation errors there are noise

    def load(self, main_file: Path) -> Settings | None:
        tree = self._read_tree(main_file, cited_at=None)
        if tree is _BROKEN:
            return None
        data = self._main_data(tree, str(main_file))
        self._skip_sections(data)
        self._drop_retired_keys(data)
        self._attach_hooks(data, main_file)
        self._duplicate_hook_ids(data)
        self._skip_signing_keys(data)
        self.issues = [i for i in self.issues if not _inside(i.key_path, self.skip)]
        self._note_inline_secrets(data)
        self._tls_paths(data)
        for index, hook in _hook_mappings(data):
            if "signing_key_file" in hook:
                self._read_secret_file(hook, ("hooks", index), "signing_key", "signing key")
            if "signing_key_files" in hook:
                self._read_signing_key_files(hook, ("hooks", index))
        admin = data.get("admin")
        if isinstance(admin, dict) and "token_file" in admin:
            self._read_secret_file(admin, ("admin",), "token", "admin token")
        self._kafka_files(data, main_file)
        data["source_file"] = os.path.abspath(main_file)
        return self._validate(data)

    def _duplicate_hook_ids(self, data: dict[str, Any]) -> None:
        """Report a repeated hook id from the raw hooks, so that it shows in the same run as
        the field errors of any hook (the model's own check only runs on valid hooks; the
        same issue from both is reported once)."""
        first: dict[str, int] = {}
        for index, hook in _hook_mappings(data):
            hook_id = hook.get("id")
            if not isinstance(hook_id, str):
                continue
            earlier = first.setdefault(hook_id, index)
            if earlier != index:
                where = self.source.locate(("hooks", earlier, "id"))
                at = f" at {where.file}:{where.line}" if where else ""
                message = f"duplicate hook id; already used by hooks[{earlier}]{at}"
                self.report(("hooks", index, "id"), message)

    def _skip_sections(self, data: dict[str, Any]) -> None:
        """Drop the sections ``load_settings`` was asked to skip, and what was already
        reported inside them (an unset ``${VAR}``)."""
        sections = {"hooks": ("hooks", "hooks_file"), "admin": ("admin",)}
        for section in self.skip & sections.keys():
            for key in sections[section]:
                data.pop(key, None)
        self.issues = [i for i in self.issues if not _inside(i.key_path, self.skip)]

    def _skip_signing_keys(self, data: dict[str, Any]) -> None:
        if "signing_keys" not in self.skip:
            return
        for _, hook in _hook_mappings(data):
            for key in _SIGNING_KEY_FIELDS:
                hook.pop(key, None)

    def sorted_issues(self) -> list[ConfigIssue]:
        """Every issue once, in file order (main file first), then line and column."""
        rank = {name: index for index, name in enumerate(self.source.files)}
        unique = list(dict.fromkeys(self.issues))
        return sorted(unique, key=lambda i: (rank.get(i.file, len(rank)), i.line, i.column))

    def report(self, path: KeyPath, message: str, where: _Where | None = None) -> None:
        self.issues.append(self.source.issue(path, message, where))

    # Files and YAML

    def _read_tree(self, file: Path, cited_at: KeyPath | None) -> Any:
        """``file`` as a ruamel round-trip tree (``None`` when empty), or ``_BROKEN`` after
        recording why it could not be read. ``cited_at`` is where another file names it."""
        name = str(file)
        self.source.files.append(name)
        try:
            text = file.read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            reason = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else e.strerror
            if cited_at is None:
                self.issues.append(ConfigIssue(name, 0, 0, "", f"cannot read this file: {reason}"))
            else:
                self.report(cited_at, f"cannot read {name}: {reason}")
                self.failed.add(cited_at)
            return _BROKEN
        return self._parse(name, text)

    def _parse(self, name: str, text: str) -> Any:
        directive = _OLD_YAML_DIRECTIVE.search(text)
        if directive is not None:
            line = text.count("\n", 0, directive.start()) + 1
            message = "hookrelay reads YAML 1.2 only (1.1 turns yes/no/on/off into booleans)"
            self.issues.append(ConfigIssue(name, line, 1, "", message))
            return _BROKEN
        yaml = YAML(typ="rt")
        yaml.allow_duplicate_keys = True  # reported below, with both lines, and not fatal
        try:
            self.issues.extend(_duplicate_keys(yaml.compose(text), name))
            return yaml.load(text)
        except YAMLError as e:
            self.issues.append(_yaml_issue(name, e, text))
            return _BROKEN

    def _plain(self, node: Any, path: KeyPath, file: str) -> Any:
        """A ruamel value as plain dicts, lists, str, int, float, bool and None, with string
        values ``${VAR}``-expanded and every key's position recorded. Other values (dates,
        tagged scalars) are passed on for validation to refuse. (ruamel already turns a
        recursive alias into ``None``, so this walk always ends.)"""
        if isinstance(node, CommentedMap):
            return self._mapping(node, path, file)
        if isinstance(node, CommentedSeq):
            return self._sequence(node, path, file)
        if isinstance(node, str):
            return self._expand(str(node), path)
        if isinstance(node, bool | ScalarBoolean):
            return bool(node)
        if isinstance(node, int | float):
            return int(node) if isinstance(node, int) else float(node)
        return self._other_scalar(node, path)

    def _other_scalar(self, node: Any, path: KeyPath) -> Any:
        if isinstance(node, bytes | bytearray):
            # !!binary would silently base64-decode a signing key; Logto uses key text as is.
            self.report(path, "expected text, not a !!binary value; write the text itself")
            return None
        return node

    def _mapping(self, node: CommentedMap, path: KeyPath, file: str) -> dict[str, Any]:
        plain: dict[str, Any] = {}
        for key, value in node.items():
            where = _key_where(node, key, file)
            if not isinstance(key, str):
                self.report(path, "expected text keys; quote this key", where)
                continue
            child = (*path, str(key))
            self.source.positions[child] = where
            plain[str(key)] = self._plain(value, child, file)
        return plain

    def _sequence(self, node: CommentedSeq, path: KeyPath, file: str) -> list[Any]:
        plain: list[Any] = []
        for index, value in enumerate(node):
            child = (*path, index)
            self.source.positions[child] = _item_where(node, index, file)
            plain.append(self._plain(value, child, file))
        return plain

    def _expand(self, text: str, path: KeyPath) -> str:
        if "${" not in text:
            return text
        expanded, problems, substituted = _expand(text, self.env)
        for problem in problems:
            self.report(path, problem)
            self.failed.add(path)
        if substituted:
            self.source.from_environment.add(path)
        return expanded

    # The two files' shapes

    def _main_data(self, tree: Any, file: str) -> dict[str, Any]:
        self.source.positions[()] = _Where(file, _first_line(tree), 1)
        if tree is None:
            return {}
        if not isinstance(tree, CommentedMap):
            self.report((), "expected a mapping of sections (kafka, http, delivery, ...)")
            return {}
        data: dict[str, Any] = self._plain(tree, (), file)
        if "source_file" in data:  # a Settings field, but set by the loader, not by the file
            del data["source_file"]
            self.report(("source_file",), _unknown_key_message("source_file", _file_keys(Settings)))
        return data

    def _drop_retired_keys(self, data: dict[str, Any]) -> None:
        """Remove the ``RETIRED_KEYS`` the main file sets, whatever their value, and note them
        for :func:`config_warnings`."""
        for path in RETIRED_KEYS:
            mapping: Any = data
            for key in path[:-1]:
                mapping = mapping.get(key) if isinstance(mapping, dict) else None
            if isinstance(mapping, dict) and path[-1] in mapping:
                del mapping[path[-1]]
                self.source.retired.append(path)

    def _attach_hooks(self, data: dict[str, Any], main_file: Path) -> None:
        """Load the hooks file named by ``hooks_file`` into ``data["hooks"]``, and record its
        absolute path in ``data["hooks_file"]``."""
        relative = data.get("hooks_file")
        if relative is None:
            return
        if "hooks" in data:
            self.report(("hooks_file",), "use either hooks_file or an inline hooks list, not both")
            data["hooks_file"] = None
            return
        if not isinstance(relative, str):
            return  # validation refuses it with "expected a string"
        hooks_path = main_file.parent / relative
        data["hooks_file"] = os.path.abspath(hooks_path)
        hooks = self._hooks_document(hooks_path)
        if hooks is not _BROKEN:
            data["hooks"] = hooks

    def _hooks_document(self, hooks_path: Path) -> Any:
        """The ``hooks`` value of the hooks file as plain data, or ``_BROKEN``."""
        tree = self._read_tree(hooks_path, cited_at=("hooks_file",))
        file = str(hooks_path)
        if tree is _BROKEN:
            return _BROKEN
        if not isinstance(tree, CommentedMap):
            message = "expected a mapping with a 'hooks' list"
            self.issues.append(ConfigIssue(file, _first_line(tree), 1, "", message))
            return _BROKEN
        for key in tree:
            if key != "hooks":
                where = _key_where(tree, key, file)
                message = _unknown_key_message(str(key), ("hooks",))
                self.issues.append(ConfigIssue(file, where.line, where.column, str(key), message))
        if "hooks" not in tree:
            message = "missing required key 'hooks'"
            self.issues.append(ConfigIssue(file, _first_line(tree), 1, "", message))
            return _BROKEN
        self.source.positions[("hooks",)] = _key_where(tree, "hooks", file)
        return self._plain(tree["hooks"], ("hooks",), file)

    def _tls_paths(self, data: dict[str, Any]) -> None:
        """Make ``http.ca_file`` and each hook's ``tls`` files absolute, relative to the YAML
        file naming them (the hooks file may live elsewhere than the main file)."""
        places: list[tuple[Any, KeyPath]] = [(data.get("http"), ("http",))]
        places.extend((hook.get("tls"), ("hooks", i, "tls")) for i, hook in _hook_mappings(data))
        for mapping, path in places:
            if not isinstance(mapping, dict):
                continue
            for key in ("ca_file", "cert_file", "key_file"):
                relative = mapping.get(key)
                if isinstance(relative, str) and relative:
                    where = self.source.positions[(*path, key)]
                    mapping[key] = os.path.abspath(Path(where.file).parent / relative)

    def _note_inline_secrets(self, data: dict[str, Any]) -> None:
        secrets: list[tuple[Any, KeyPath]] = [
            (hook, ("hooks", index, "signing_key")) for index, hook in _hook_mappings(data)
        ]
        for index, hook in _hook_mappings(data):
            keys = hook.get("signing_keys")
            if isinstance(keys, list):
                # Each listed key is looked up in an index → key mapping, like a named one.
                keys_path: KeyPath = ("hooks", index, "signing_keys")
                listed = dict(enumerate(keys))
                secrets.extend((listed, (*keys_path, i)) for i in listed)
        secrets.append((data.get("admin"), ("admin", "token")))
        secrets.append((data.get("kafka"), ("kafka", "sasl_password")))
        for mapping, path in secrets:
            if (
                isinstance(mapping, dict)
                and isinstance(mapping.get(path[-1]), str)
                and path not in self.source.from_environment
            ):
                self.source.inline_secrets.add(path)

    def _kafka_files(self, data: dict[str, Any], main_file: Path) -> None:
        """Read ``kafka.sasl_password_file``; make the ``kafka.ssl_*_file`` paths absolute,
        relative to the main file (the client loads them at each connection set-up)."""
        kafka = data.get("kafka")
        if not isinstance(kafka, dict):
            return
        if "sasl_password_file" in kafka:
            self._read_secret_file(kafka, ("kafka",), "sasl_password", "SASL password")
            if "sasl_password" not in kafka:  # reported; "password missing" would be noise
                self.failed.add(("kafka", "sasl_password"))
        for key in _TLS_KEYS:
            relative = kafka.get(key)
            if isinstance(relative, str) and relative:
                kafka[key] = os.path.abspath(main_file.parent / relative)

    def _read_signing_key_files(self, hook: dict[str, Any], path: KeyPath) -> None:
        """Replace a hook's ``signing_key_files`` list by ``signing_keys`` read from those files
        (relative to the YAML file naming them), or report why not, naming the file and never
        its content. Each key's position is its file's item, so later issues (a duplicate, a
        key that is no Standard Webhooks secret) point at the right line."""
        files_path = (*path, "signing_key_files")
        relatives = hook.pop("signing_key_files")
        if "signing_keys" in hook:
            self.report(files_path, "use either signing_keys or signing_key_files, not both")
            return
        if not isinstance(relatives, list) or not relatives:
            self.report(files_path, "expected a non-empty list of file paths")
            return
        keys: list[str] = []
        for index, relative in enumerate(relatives):
            item = (*files_path, index)
            where = self.source.positions[item]
            if not isinstance(relative, str):
                self.report(item, "expected a string; quote the value")
                continue
            if item in self.failed:
                continue
            key, problem = _read_key_file(Path(where.file).parent / relative, "signing key")
            if problem is not None or key is None:
                self.report(item, problem or "")
                continue
            self.source.positions[(*path, "signing_keys", len(keys))] = where
            keys.append(key)
        if len(keys) == len(relatives):
            self.source.positions[(*path, "signing_keys")] = self.source.positions[files_path]
            hook["signing_keys"] = keys

    def _read_secret_file(
        self, mapping: dict[str, Any], path: KeyPath, key: str, what: str
    ) -> None:
        """Replace ``<key>_file`` in ``mapping`` (at ``path``) by ``key`` read from that file
        (relative to the YAML file naming it), or report why not; problems call the file the
        ``what`` file and never quote its content."""
        file_key = f"{key}_file"
        file_path = (*path, file_key)
        relative = mapping.pop(file_key)
        where = self.source.positions[file_path]
        if key in mapping:
            self.report(file_path, f"use either {key} or {file_key}, not both")
        elif not isinstance(relative, str):
            self.report(file_path, "expected a string; quote the value")
        elif file_path not in self.failed:
            secret, problem = _read_key_file(Path(where.file).parent / relative, what)
            if problem is not None:
                self.report(file_path, problem)
                return
            mapping[key] = secret
            self.source.positions[(*path, key)] = where

    # Validation

    def _validate(self, data: dict[str, Any]) -> Settings | None:
        try:
            settings = Settings.model_validate(data)
        except ValidationError as e:
            for error in _without_echoes(e.errors(include_url=False)):
                self._report_validation_error(error)
            self.salvaged = _salvage(data, e, self.source)
            return None
        settings._source = self.source
        return settings

    def _report_validation_error(self, error: ErrorDetails) -> None:
        context = error.get("ctx", {})
        loc = tuple(part for part in error["loc"] if part != "[key]")
        path = (*loc, *context.get("at", ()))
        if any(path[:end] in self.failed for end in range(len(path) + 1)):
            return
        message = _message(error, path)
        see = context.get("see")
        if see is not None:
            where = self.source.locate((*loc, *see))
            message += f" at {where.file}:{where.line}" if where else ""
        self.report(path[:-1] if error["type"] == "missing" else path, message)


def _without_echoes(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """Drop a list's "too short" error when its items have errors of their own: pydantic counts
    only the valid items, so one bad event would also read as an empty ``events`` list."""
    with_item_errors = {error["loc"][:-1] for error in errors if error["loc"]}
    return [e for e in errors if e["type"] != "too_short" or e["loc"] not in with_item_errors]


# ── Messages ─────────────────────────────────────────────────────────────────────────────────────

_FIXED_MESSAGES: Final = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "string_too_short": "expected a non-empty string",
}

_LIST_MESSAGES: Final[dict[KeyPath, str]] = {
    ("kafka", "bootstrap_servers"): "expected a list of host:port, or one comma-separated "
    'string ("kafka-1:9092,kafka-2:9092"); a port alone names no host',
}
"""Keys that take a list in more than one shape: say every shape."""

_BOUNDS: Final = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _number_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _string_message(error: ErrorDetails, _path: KeyPath) -> str:
    value = error.get("input")
    if isinstance(value, dict | list):
        return "expected a string, not a mapping or list"
    if value is None:
        return "expected a string, found no value"
    return "expected a string; quote the value"


def _bool_message(error: ErrorDetails, _path: KeyPath) -> str:
    if isinstance(error.get("input"), str):
        return "expected true or false (YAML 1.2 reads yes/no/on/off as text)"
    return "expected true or false"


def _literal_message(error: ErrorDetails, _path: KeyPath) -> str:
    choices = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
    return f"expected one of: {', '.join(choices)}"


def _too_short_message(error: ErrorDetails, _path: KeyPath) -> str:
    least = error.get("ctx", {}).get("min_length", 1)
    return "expected a non-empty list" if least == 1 else f"expected at least {least} items"


def _missing_message(_error: ErrorDetails, path: KeyPath) -> str:
    return f"missing required key '{path[-1]}'"


def _extra_message(_error: ErrorDetails, path: KeyPath) -> str:
    return _unknown_key_message(str(path[-1]), _file_keys(_model_at(path[:-1])))


_SPECIAL_MESSAGES: Final[dict[str, Callable[[ErrorDetails, KeyPath], str]]] = {
    "string_type": _string_message,
    "bool_type": _bool_message,
    "bool_parsing": _bool_message,
    "literal_error": _literal_message,
    "too_short": _too_short_message,
    "missing": _missing_message,
    "extra_forbidden": _extra_message,
}


def _message(error: ErrorDetails, path: KeyPath) -> str:
    """What was expected, from the error's type and context; never from its input."""
    kind = error["type"]
    if kind in ("tuple_type", "list_type") and path in _LIST_MESSAGES:
        return _LIST_MESSAGES[path]
    if kind in _FIXED_MESSAGES:
        return _FIXED_MESSAGES[kind]
    if kind in _BOUNDS:
        name, sign = _BOUNDS[kind]
        return f"expected a number {sign} {_number_text(error.get('ctx', {}).get(name))}"
    special = _SPECIAL_MESSAGES.get(kind)
    if special is not None:
        return special(error, path)
    return error["msg"]  # our own messages ("hookrelay"), or pydantic's, which omit the input


def _unknown_key_message(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown key '{key}'; did you mean '{close[0]}'?"
    return f"unknown key '{key}'; expected one of: {', '.join(known)}"


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation such as ``tuple[Hook, ...]`` or ``RateLimit | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _inner_model(argument)
        if found is not None:
            return found
    return None


def _model_at(path: KeyPath) -> type[BaseModel] | None:
    """The model validating the mapping at ``path`` (list indexes skipped), if any."""
    model: type[BaseModel] | None = Settings
    for part in path:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _inner_model(field.annotation) if field is not None else None
    return model


def _file_keys(model: type[BaseModel] | None) -> tuple[str, ...]:
    """Keys a YAML mapping for ``model`` may hold (the file shape, not the loaded shape)."""
    if model is None:
        return ()
    keys = tuple(name for name in model.model_fields if name != "source_file")
    if model is Hook:
        return (*keys, "signing_key_file", "signing_key_files")
    if model is KafkaSettings:
        return (*keys, "sasl_password_file")
    return (*keys, "token_file") if model is AdminSettings else keys


# ── Warnings ─────────────────────────────────────────────────────────────────────────────────────


def config_warnings(settings: Settings) -> list[str]:
    """Things worth a look that do not stop hookrelay, one line each, in file order.

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
    short to cover a restart.
    """
    source = settings._source
    found: list[tuple[KeyPath, str]] = []
    if not any(hook.enabled for hook in settings.hooks):
        message = "no enabled hooks: events are consumed and committed without any delivery"
        found.append((("hooks",), message))
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
    found.extend(_placeholder_warnings(settings))
    return [_warning_text(source.issue(path, message)) for path, message in found]


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
    return [(path, f"every delivery will be refused: {refusal} (allow it with "
             "http.allow_networks or the hook's allow_networks, e.g. 127.0.0.0/8)")]  # fmt: skip


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
    for index, hook in enumerate(settings.hooks):
        if hook.signing_key is not None:
            secrets.append((("hooks", index, "signing_key"), hook.signing_key))
        for number, key in enumerate(hook.signing_keys or ()):
            secrets.append((("hooks", index, "signing_keys", number), key))
    message = "still the placeholder from an example file; set a real secret"
    return [
        (path, message)
        for path, secret in secrets
        if secret is not None
        and secret.get_secret_value().lower().startswith(_PLACEHOLDER_PREFIXES)
    ]


def _kafka_warnings(kafka: KafkaSettings, source: _SourceMap) -> list[tuple[KeyPath, str]]:
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
            "${HOSTNAME}"
        )
        found.append((path, message))
    if kafka.group_instance_id is not None and kafka.session_timeout_s < 30.0:
        message = (
            "with kafka.group_instance_id, a replica restarted within this timeout keeps its "
            "partitions without a rebalance; a restart usually takes longer (e.g. 60)"
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


def _admin_warnings(admin: AdminSettings, source: _SourceMap) -> list[tuple[KeyPath, str]]:
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


def _hook_warnings(hook: Hook, path: KeyPath, source: _SourceMap) -> list[tuple[KeyPath, str]]:
    found: list[tuple[KeyPath, str]] = []
    for index, pattern in enumerate(hook.events):
        here = (*path, "events", index)
        shown = "this event name" if here in source.from_environment else repr(pattern)
        message = _event_warning(pattern, shown)
        if message is not None:
            found.append((here, message))
    found.extend(_signing_key_warnings(hook, path, source))
    if _is_plain_http_to_remote(hook.url):
        message = "signed events go over plain http to a host that is not loopback; use https"
        found.append(((*path, "url"), message))
    return found


_CREDENTIAL_HEADER_NAME: Final = re.compile(
    r"authorization|cookie|token|secret|api[-_]?key|password|session", re.IGNORECASE
)
"""Header names whose values are credentials (``Authorization``, ``X-API-Key``, ...)."""


def _signing_key_warnings(
    hook: Hook, path: KeyPath, source: _SourceMap
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
        if _CREDENTIAL_HEADER_NAME.search(name) and here not in source.from_environment:
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


# ── JSON Schemas for editors ─────────────────────────────────────────────────────────────────────

_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the two YAML files, keyed by their file names under ``config/``:
    ``hookrelay.schema.json`` (main file) and ``hooks.schema.json`` (hooks file).

    Generated from the models, then adjusted where the file differs from the loaded shape:
    ``source_file`` is set by the loader; a hook's ``signing_key_file`` is read by the loader;
    ``hooks``/``hooks_file`` and ``signing_key``/``signing_key_file`` exclude each other;
    ``RETIRED_KEYS`` are accepted, marked ``deprecated``.
    """
    main = Settings.model_json_schema()
    del main["properties"]["source_file"]
    main["properties"]["hooks_file"] = {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "default": None,
        "title": "Hooks File",
        "description": "Path of the hooks file (a mapping with a hooks list), relative to this "
        "file. Use it or an inline hooks list, not both.",
    }
    main["not"] = {"required": ["hooks", "hooks_file"]}
    hooks = _HooksFile.model_json_schema()
    for schema in (main, hooks):
        _add_secret_file(schema["$defs"]["Hook"], "signing_key", _SIGNING_KEY_FILE)
        _add_signing_key_files(schema["$defs"]["Hook"])
    _add_secret_file(main["$defs"]["AdminSettings"], "token", _TOKEN_FILE)
    for path, replaced in RETIRED_KEYS.items():
        # Accepted and ignored: editors mark it deprecated instead of refusing the file.
        model = _model_at(path[:-1])
        assert model is not None, "a retired key belongs to a section"
        properties = main["$defs"][model.__name__]["properties"]
        properties[str(path[-1])] = {"deprecated": True, "description": replaced}
    _add_secret_file(main["$defs"]["KafkaSettings"], "sasl_password", _SASL_PASSWORD_FILE)
    return {
        "hookrelay.schema.json": {"$schema": _SCHEMA_DIALECT, **main, "title": "hookrelay.yaml"},
        "hooks.schema.json": {"$schema": _SCHEMA_DIALECT, **hooks, "title": "hooks.yaml"},
    }


_SIGNING_KEY_FILE: Final = {
    "type": "string",
    "title": "Signing Key File",
    "description": "File holding the signing key as UTF-8 text (one trailing newline "
    "is ignored), relative to this YAML file. Use it or signing_key, not both.",
}
_TOKEN_FILE: Final = {
    "type": "string",
    "title": "Token File",
    "description": "File holding the admin API's bearer token (one trailing newline is "
    "ignored), relative to this YAML file, e.g. a mounted secret. Use it or token, not both.",
}


_SASL_PASSWORD_FILE: Final = {
    "type": "string",
    "title": "Sasl Password File",
    "description": "File holding the Kafka SASL password (one trailing newline is ignored), "
    "relative to this YAML file, e.g. a mounted secret. Use it or sasl_password, not both.",
}


_SIGNING_KEY_FILES: Final = {
    "type": "array",
    "items": {"type": "string"},
    "minItems": 1,
    "title": "Signing Key Files",
    "description": "Files holding the signing keys, primary first, each as UTF-8 text (one "
    "trailing newline is ignored), relative to this YAML file. Use it or signing_keys, not both.",
}
_ONE_KEY_FORM: Final = ("signing_key", "signing_key_file", "signing_keys", "signing_key_files")
"""The four ways of giving a hook its keys; a hook uses at most one."""


def _add_signing_key_files(hook: dict[str, Any]) -> None:
    """Insert ``signing_key_files`` (read by the loader) after ``signing_keys`` in the Hook
    schema, and allow at most one of the four key forms (``not`` already holds one pair)."""
    properties: dict[str, Any] = {}
    for name, schema in hook["properties"].items():
        properties[name] = schema
        if name == "signing_keys":
            properties["signing_key_files"] = dict(_SIGNING_KEY_FILES)
    hook["properties"] = properties
    pairs = [
        [first, second]
        for i, first in enumerate(_ONE_KEY_FORM)
        for second in _ONE_KEY_FORM[i + 1 :]
        if [first, second] != hook["not"]["required"]
    ]
    hook["allOf"] = [{"not": {"required": pair}} for pair in pairs]


def _add_secret_file(model: dict[str, Any], key: str, file_schema: dict[str, Any]) -> None:
    """Insert ``<key>_file`` (read by the loader) right after ``key`` in a model's schema, and
    forbid giving both."""
    properties: dict[str, Any] = {}
    for name, schema in model["properties"].items():
        properties[name] = schema
        if name == key:
            properties[f"{key}_file"] = dict(file_schema)
    model["properties"] = properties
    model["not"] = {"required": [key, f"{key}_file"]}


def write_json_schemas(directory: str | Path) -> list[Path]:
    """Write :func:`json_schemas` into ``directory`` (2-space JSON, trailing newline); returns
    the paths written."""
    written: list[Path] = []
    for name, schema in json_schemas().items():
        target = Path(directory) / name
        target.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", "utf-8")
        written.append(target)
    return written
