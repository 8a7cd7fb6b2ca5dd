"""The building blocks of the settings models: the value types every section uses (``Number``,
``TopicName``, ``HookId``, ...), the checks behind them, and ``FrozenModel``, the base of every
section. A check raises :func:`refuse`'s error, whose ``at`` places the message on the right
key (and so on the right YAML line)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Final
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
    SecretStr,
    StrictBool,
    StrictStr,
)
from pydantic.json_schema import WithJsonSchema
from pydantic_core import PydanticCustomError, core_schema

from hookrelay.config.source_map import KeyPath
from hookrelay.errors import FilterError
from hookrelay.events.filter import MAX_FILTER_CHARS, PayloadFilter
from hookrelay.events.signing import standard_webhooks_key
from hookrelay.net.tls import TlsFilesError, client_ssl_context

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
        "traceparent",
        "tracestate",
    }
)
"""Header names (lowercase) that hookrelay sets itself; a hook's ``headers`` may not override them.
``transfer-encoding`` is here with ``content-length`` because both decide the body's framing.
``traceparent``/``tracestate`` carry each event's own W3C trace context: a fixed value would
put every request of the hook into one trace, or break the trace the producer started."""

TRANSPORT_HEADERS: Final = frozenset(
    {"connection", "keep-alive", "te", "trailer", "upgrade", "expect", "http2-settings"}
)
"""Hop-by-hop and transport headers (RFC 9110 §7.6.1, §10.1.1), refused in a hook's ``headers``
with every ``proxy-*``: ``Expect: 100-continue`` made every delivery to a receiver that does
not answer 100 time out (a breaker's trial)."""


# ── Validation building blocks ───────────────────────────────────────────────────────────────────


def refuse(message: str, *, at: KeyPath = (), see: KeyPath | None = None) -> PydanticCustomError:
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
        raise refuse("expected a number, not true/false")
    return value


def _bool_from_text(value: object) -> object:
    """Also accept the texts ``true``/``false``, so a boolean can come from ``${VAR}``."""
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    return value


CREDENTIAL_HEADER_NAME: Final = re.compile(
    r"authorization|cookie|token|secret|api[-_]?key|password|session", re.IGNORECASE
)
"""Header names whose values are credentials (``Authorization``, ``X-API-Key``, ...)."""
_HEADER_VALUE_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""What RFC 9110 §5.5 keeps out of a field value (controls but HTAB); aiohttp refuses to send
it, so a value holding one would fail every delivery."""


def _check_header_value(text: str) -> str:
    found = _HEADER_VALUE_CONTROL.search(text)
    if found is not None:
        raise refuse(
            f"expected a header value without control characters; found {found.group()!r} at "
            f"position {found.start()} (only tab is allowed)"
        )
    return text


_HOST: Final = re.compile(r"[A-Za-z0-9._-]+")
_PORT: Final = re.compile(r"[0-9]{1,5}")


def _is_ip_address(text: str, version: int | None = None) -> bool:
    """True for an IP address in its canonical form (of ``version`` 4 or 6, when given)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version


def split_host_port(address: str) -> tuple[str, int] | None:
    """``"host:port"`` or ``"[IPv6]:port"`` → ``(host, port)``, brackets removed; ``None`` if
    malformed. Ports run 0-65535."""
    if address.startswith("["):
        host, _, port = address[1:].partition("]:")
        valid_host = _is_ip_address(host, 6)
    else:
        host, _, port = address.rpartition(":")
        valid_host = _HOST.fullmatch(host) is not None
    if not valid_host or _PORT.fullmatch(port) is None or int(port) > 65535:
        return None
    return host, int(port)


def check_listen(address: str) -> str:
    if split_host_port(address) is None:
        raise refuse("expected host:port, e.g. 127.0.0.1:9464 or [::1]:9464")
    return address


def _check_broker(address: str) -> str:
    parsed = split_host_port(address)
    if parsed is None or parsed[1] == 0:
        raise refuse("expected host:port of a Kafka broker, e.g. 127.0.0.1:9092")
    return address


def split_commas(value: object) -> object:
    """``"a:9092, b:9092"`` → ``["a:9092", "b:9092"]``; any other value unchanged."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


TOPIC: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _check_topic(name: str) -> str:
    if TOPIC.fullmatch(name) is None or name in (".", ".."):
        raise refuse("expected a Kafka topic name: 1-249 characters of A-Z a-z 0-9 . _ -")
    return name


def check_instance_id(name: str) -> str:
    # Kafka's own rule for group.instance.id (JoinGroupRequest.validateGroupInstanceId).
    if TOPIC.fullmatch(name) is None or name in (".", ".."):
        raise refuse("expected a group instance id: 1-249 characters of A-Z a-z 0-9 . _ -")
    return name


def _check_client_error(status: int) -> int:
    if not 400 <= status <= 499:
        raise refuse("expected a 4xx status code (5xx are always retried)")
    return status


_HOOK_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,21}")


def _check_hook_id(hook_id: str) -> str:
    if _HOOK_ID.fullmatch(hook_id) is None:
        raise refuse("expected 1-21 characters of A-Z a-z 0-9 _ - (it is sent as hookId)")
    return hook_id


_EVENT_PATTERN: Final = re.compile(r"\*|[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*(?:\.\*)?")
"""An exact name, a prefix wildcard (``Organization.*``) or ``*``; also in the JSON Schema."""


def _check_event_pattern(pattern: str) -> str:
    if _EVENT_PATTERN.fullmatch(pattern) is None:
        raise refuse(
            "expected an event name like User.Created, a prefix wildcard like Organization.* or *"
        )
    return pattern


def check_url(url: str) -> str:
    """Accept an absolute http(s) URL with a host and without userinfo; never echo it."""
    if any(char.isspace() or not char.isprintable() for char in url):
        raise refuse("expected a URL without spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": an unbalanced [ or ]
        raise refuse("expected a URL; brackets hold an IPv6 address: http://[::1]:8080/") from None
    if parts.scheme not in ("http", "https"):
        raise refuse("expected an http:// or https:// URL")
    if "@" in parts.netloc:
        raise refuse(
            "credentials in the URL are refused: URLs end up in logs and proxies; "
            "send them in headers (e.g. Authorization) instead"
        )
    if not parts.hostname:
        raise refuse("expected a URL with a host")
    if _NUMERIC_HOST.fullmatch(parts.hostname) and not _is_ip_address(parts.hostname):
        # aiohttp takes 127.1, 0177.0.0.1 or 2130706433 for an address, and the SSRF guard
        # refuses every such form at each delivery: refused here, once.
        raise refuse(
            "the host is an IP address in a non-canonical form; write it as a dotted quad "
            "(e.g. 127.0.0.1)"
        )
    _check_url_port(parts)
    return url


_NUMERIC_HOST: Final = re.compile(r"[0-9.]+")


def _check_url_port(parts: SplitResult) -> None:
    try:
        _ = parts.port
    except ValueError:
        raise refuse("expected a port from 0 to 65535 after the host") from None


def check_sasl_password(password: SecretStr) -> SecretStr:
    if not password.get_secret_value():
        raise refuse("expected a non-empty password")
    return password


def check_signing_key(key: SecretStr) -> SecretStr:
    text = key.get_secret_value()
    if not text:
        raise refuse("expected a non-empty signing key")
    problem = _invisible_in_key(text)
    if problem is not None:
        raise refuse(f"the signing key {problem}; it would become part of the key, and no "
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


def distinct_keys(keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
    """Refuse a key listed twice: it would sign twice and hide that a rotation went wrong."""
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        earlier = first.setdefault(key.get_secret_value(), index)
        if earlier != index:
            message = f"duplicate signing key; the same key as signing_keys[{earlier}]"
            raise refuse(message, at=(index,), see=(earlier,))
    return keys


def check_standard_webhooks_key(key: SecretStr, at: KeyPath) -> None:
    try:
        standard_webhooks_key(key.get_secret_value())
    except ValueError as e:
        raise refuse(f"{e} (standard_webhooks is true)", at=at) from None


_B64TOKEN: Final = re.compile(r"[A-Za-z0-9._~+/-]+=*")
"""RFC 6750 ``b64token``: the characters a bearer token may hold in an Authorization header."""

ADMIN_TOKEN_MIN_LENGTH: Final = 16
"""Shortest admin token accepted: 16 characters of ``openssl rand -hex`` output are 64 bits."""


def check_admin_token(token: SecretStr) -> SecretStr:
    text = token.get_secret_value()
    if len(text) < ADMIN_TOKEN_MIN_LENGTH or _B64TOKEN.fullmatch(text) is None:
        raise refuse(
            f"expected a bearer token of at least {ADMIN_TOKEN_MIN_LENGTH} characters of "
            "A-Z a-z 0-9 - . _ ~ + / (then optional =), e.g. from `openssl rand -hex 32`"
        )
    return token


_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def is_transport_header(name: str) -> bool:
    """True for a header that changes how a request travels: ``TRANSPORT_HEADERS`` and every
    ``proxy-*``, in any case."""
    lowered = name.lower()
    return lowered in TRANSPORT_HEADERS or lowered.startswith("proxy-")


def _check_header_name(name: str) -> str:
    if _TOKEN.fullmatch(name) is None:
        raise refuse("expected an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)")
    if name.lower() in RESERVED_HEADERS:
        raise refuse("this header is set by hookrelay and cannot be overridden")
    if is_transport_header(name):
        raise refuse(
            "this header changes how the request travels (connection handling, expectations, "
            "upgrades), not what it says; hookrelay's HTTP client manages it"
        )
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
            raise refuse("header given twice (names are case-insensitive)", at=(name,))
        seen.add(name.lower())
    return tuple(headers.items())


MAX_RETRY_DELAY_S: Final = 30 * 86_400.0
DEFAULT_RETENTION_S: Final = 7 * 86_400.0
"""Longest delay of a retry tier: 30 days."""


def derived_default(schema: dict[str, Any]) -> None:
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
    WithJsonSchema({"type": "string", "pattern": f"^(?:{TOPIC.pattern})$"}),
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


def _compile_filter(text: str) -> PayloadFilter:
    try:
        return PayloadFilter.compile(text)
    except FilterError as e:
        raise refuse(str(e)) from None


def _filter_text(value: object) -> object:
    """Let code pass a compiled ``PayloadFilter``; YAML gives text."""
    return value.text if isinstance(value, PayloadFilter) else value


def _filter_schema(_source: Any, _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    """Validate a filter as text (YAML numbers and booleans refused) compiled into a
    ``PayloadFilter``, serialised back as its text."""
    return core_schema.no_info_before_validator_function(
        _filter_text,
        core_schema.no_info_after_validator_function(
            _compile_filter, core_schema.str_schema(strict=True)
        ),
        serialization=core_schema.plain_serializer_function_ser_schema(str),
    )


HookFilter = Annotated[
    PayloadFilter,
    GetPydanticSchema(_filter_schema),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_FILTER_CHARS}),
]
"""A hook's payload filter: a JMESPath expression (``events.filter``), checked at load."""


def _network(value: object) -> object:
    """``"10.0.0.0/8"`` or a single address (``"10.0.0.5"`` is ``10.0.0.5/32``) → a network;
    host bits set (``10.0.0.1/8``) are refused: the writer meant another range."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value  # settings built in code
    if not isinstance(value, str):  # pydantic would read a number as an IPv4 address
        raise refuse("expected a string such as 10.0.0.0/8")
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        pass
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise refuse(
            "expected a network in CIDR notation (10.0.0.0/8, fd00::/8) or one address"
        ) from None
    raise refuse("host bits set: expected the network's first address, as in 10.0.0.0/8")


AllowNetwork = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network,
    BeforeValidator(_network),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "description": "CIDR network or single IP address"}),
]
"""A network the SSRF guard lets webhooks reach (see ``hookrelay.net.guard``)."""


def check_tls_files(ca_file: str | None, cert_file: str | None, key_file: str | None) -> None:
    """Refuse TLS files that do not load into a client context, on the key naming the file."""
    if key_file is not None and cert_file is None:
        raise refuse("expected cert_file with it (the key's certificate)", at=("key_file",))
    try:
        client_ssl_context(ca_file, cert_file, key_file)
    except TlsFilesError as e:
        raise refuse(str(e), at=(e.key,)) from None


class FrozenModel(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True
    )
