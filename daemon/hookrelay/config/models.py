"""The settings models: every section and key of ``hookrelay.yaml`` and ``hooks.yaml``, with the
checks a value must pass at load time (so that a value accepted here never fails later, on
every delivery). Frozen pydantic models; unknown keys are refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic.json_schema import WithJsonSchema

from hookrelay import __version__
from hookrelay.config.adaptive import AdaptiveRate
from hookrelay.config.fields import (
    CREDENTIAL_HEADER_NAME,
    MAX_RETRY_DELAY_S,
    TOPIC,
    AllowNetwork,
    BrokerAddress,
    EventPattern,
    Flag,
    FrozenModel,
    HeaderPairs,
    HeaderValue,
    HookFilter,
    HookId,
    Integer,
    NonEmptyText,
    Number,
    RetryableStatus,
    TopicName,
    check_admin_token,
    check_instance_id,
    check_listen,
    check_sasl_password,
    check_signing_key,
    check_standard_webhooks_key,
    check_tls_files,
    check_url,
    derived_default,
    distinct_keys,
    refuse,
    split_commas,
    split_host_port,
)
from hookrelay.config.ingest import IngestSettings
from hookrelay.config.naming import due_horizon_s, tier_label, tier_topics
from hookrelay.config.source_map import KeyPath, SourceMap
from hookrelay.config.tracing import TracingSettings
from hookrelay.net.tls import TlsFilesError, kafka_ssl_context

RETIRED_KEYS: Final[Mapping[KeyPath, str]] = {
    ("delivery", "circuit_failure_threshold"): (
        "replaced by circuit_failure_rate, circuit_window and circuit_min_attempts (the circuit "
        "now opens on a failure rate, not on consecutive failures); ignored, remove it"
    ),
}
"""Keys an earlier version knew, with what replaced them. A file that still sets one loads
(an upgrade must not refuse a working configuration): the value is dropped unread, and
:func:`config_warnings` says what replaced it."""


class KafkaSettings(FrozenModel):
    """Section kafka: where identity events are consumed from."""

    bootstrap_servers: Annotated[tuple[BrokerAddress, ...], BeforeValidator(split_commas)] = Field(
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
            AfterValidator(check_instance_id),
            WithJsonSchema({"type": "string", "pattern": f"^(?:{TOPIC.pattern})$"}),
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
    fetches alone hold tens of MiB. Every consumer of the daemon keeps to it (and to
    ``fetch_max_bytes``): the group's, and those reading the control topic, counting the
    retry backlog and looking for former retry tiers."""
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
    sasl_password: Annotated[SecretStr, AfterValidator(check_sasl_password)] | None = None
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
        _check_group(self, KAFKA_TLS_FILE_KEYS, protocol, needed=None if tls else False)
        if self.ssl_key_file is not None and self.ssl_cert_file is None:
            raise refuse(
                "expected ssl_cert_file with it (the key's certificate)", at=("ssl_key_file",)
            )
        if tls:
            try:
                kafka_ssl_context(self.ssl_ca_file, self.ssl_cert_file, self.ssl_key_file)
            except TlsFilesError as e:
                raise refuse(str(e), at=(e.key,)) from None
        return self


_SASL_KEYS: Final = ("sasl_mechanism", "sasl_username", "sasl_password")
KAFKA_TLS_FILE_KEYS: Final = ("ssl_ca_file", "ssl_cert_file", "ssl_key_file")


def _check_group(
    kafka: KafkaSettings, keys: tuple[str, ...], protocol: str, *, needed: bool | None
) -> None:
    """Refuse a key of ``keys`` that is missing when ``needed``, or given when ``needed`` is
    False (it would be ignored: a password thought to protect nothing); None allows either."""
    for key in keys:
        given = getattr(kafka, key) is not None
        if needed and not given:
            also = " or sasl_password_file" if key == "sasl_password" else ""
            raise refuse(f"expected {key}{also} with security_protocol {protocol}", at=(key,))
        if needed is False and given:
            raise refuse(
                f"not used with security_protocol {protocol}; remove it or choose a protocol "
                "that uses it",
                at=(key,),
            )


class HttpSettings(FrozenModel):
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
        check_tls_files(self.ca_file, None, None)
        return self


class HookTls(FrozenModel):
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
        check_tls_files(self.ca_file, self.cert_file, self.key_file)
        return self


class DeliverySettings(FrozenModel):
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
    ordering_max_held_bytes: Integer = Field(64 * 1024 * 1024, ge=1024)
    """Bytes of webhook bodies ordered hooks (ordering: key) may hold in memory behind their
    keys' heads before the consumer pauses (backpressure), whatever their count: 64 MiB.
    Deliveries an ordered hook holds also count towards max_in_flight."""
    max_event_bytes: Integer = Field(1_000_000, ge=1)
    """Largest record value accepted as an event; larger ones go to the dead-letter topic.
    The default leaves room under the broker's default message.max.bytes (1048588) for the
    headers a retry or dead letter adds, so an accepted event always fits a retry topic."""
    retry_on_status: tuple[RetryableStatus, ...] = (408, 425, 429)
    """4xx answers that are retried; 5xx are always retried, other 4xx are permanent failures."""
    retry_topic_prefix: TopicName = Field("", json_schema_extra=derived_default)
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
                raise refuse("expected delays in non-decreasing order", at=(index,))
        return delays

    @model_validator(mode="after")
    def _resume_below_the_bound(self) -> DeliverySettings:
        if self.resume_in_flight is not None and self.resume_in_flight >= self.max_in_flight:
            raise refuse("expected a number below max_in_flight", at=("resume_in_flight",))
        return self

    @model_validator(mode="after")
    def _min_attempts_fit_the_window(self) -> DeliverySettings:
        if self.circuit_min_attempts > self.circuit_window:
            raise refuse(
                "expected at most circuit_window: the circuit could never open",
                at=("circuit_min_attempts",),
            )
        return self

    @property
    def due_horizon_s(self) -> float:
        """``naming.due_horizon_s`` of this schedule: how long after its write a retry
        record of a tier whose name gives no delay may still be due."""
        return due_horizon_s(self.retry_schedule_s, self.retry_jitter, self.max_retry_after_s)

    @property
    def resume_below(self) -> int:
        """Effective low-water mark (≥ 1): resume fetching when in-flight deliveries < this."""
        if self.resume_in_flight is not None:
            return self.resume_in_flight
        return max(1, self.max_in_flight * 4 // 5)


class AdminSettings(FrozenModel):
    """Section admin: the HTTP listener for /metrics, /healthz, /readyz and the /v1 admin API."""

    listen: Annotated[StrictStr, AfterValidator(check_listen)] = "127.0.0.1:9464"
    """host:port to listen on; IPv6 in brackets ([::1]:9464); port 0 picks a free port."""
    token: Annotated[SecretStr, AfterValidator(check_admin_token)] | None = None
    """Bearer token the /v1 admin API requires (Authorization: Bearer <token>); without one
    the /v1 API is disabled. /metrics, /healthz and /readyz never need it. Write ${VAR}, or
    use token_file, to keep it out of the file."""
    recent_attempts: Integer = Field(1000, ge=0)
    """Attempts kept in memory for GET /v1/deliveries (newest first; 0 keeps none)."""
    retry_backlog_interval_s: Number = Field(30.0, ge=0)
    """Seconds between two counts of hookrelay_retry_backlog (the retries waiting in this
    replica's retry partitions, by hook and tier: at most 100,000 records read per count);
    0 turns the count off, and otherwise at least 1."""

    @field_validator("retry_backlog_interval_s")
    @classmethod
    def _a_count_is_not_a_loop(cls, value: float) -> float:
        if 0 < value < 1:
            raise refuse("expected 0 (off) or at least 1 second: a count reads the retry topics")
        return value

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
        parsed = split_host_port(self.listen)
        assert parsed is not None, "validated at construction"
        return parsed


class LoggingSettings(FrozenModel):
    """Section logging: structured logs on stdout."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written."""
    format: Literal["json", "console"] = "json"
    """json: one JSON object per line (for collectors); console: coloured text for people."""


class ShutdownSettings(FrozenModel):
    """Section shutdown: how a SIGTERM drains."""

    grace_s: Number = Field(10.0, ge=0)
    """Seconds to let in-flight deliveries finish before parking the rest."""
    hard_deadline_s: Number = Field(30.0, gt=0)
    """Seconds after which the process exits whatever is left; must exceed grace_s."""

    @model_validator(mode="after")
    def _deadline_after_grace(self) -> ShutdownSettings:
        if self.hard_deadline_s <= self.grace_s:
            raise refuse("expected a number greater than grace_s", at=("hard_deadline_s",))
        return self


class OutcomeSettings(FrozenModel):
    """Section outcomes: one record per settled delivery in a topic of the deployment's own
    (see ``kafka.outcomes``), so "did event X reach hook Y?" has a durable answer."""

    enabled: StrictBool = False
    """Write an outcome record for every delivery that ends delivered, dead-lettered or
    dropped, and for every invalid record. Off by default: one more write per delivery."""
    topic: TopicName = Field("", json_schema_extra=derived_default)
    """The outcome topic; when omitted, "<kafka.group_id>.outcomes". Created at start-up
    like the dead-letter topic, with the cluster's default retention."""


MAX_WORKERS: Final = 64
"""Most worker processes ``workers`` accepts."""


def _worker_count(value: object) -> object:
    """``workers``: a whole number from 1 to ``MAX_WORKERS``, or ``auto``. One message for
    anything else: as a plain union, pydantic reported each branch with its internals in
    the key path (``workers.function-after[functools.partial(...)]``), twice for one
    mistake."""
    if value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS:
        return value
    raise refuse(f"expected a whole number from 1 to {MAX_WORKERS}, or auto")


WorkerCount = Annotated[
    int | Literal["auto"],
    BeforeValidator(_worker_count),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_WORKERS}, {"const": "auto"}]}
    ),
]

JITTER_ALLOWANCE_S: Final = 0.02
"""Seconds of the rate a token bucket keeps back from its burst (see ``RateLimit.capacity``)."""


class RateLimit(FrozenModel):
    """A token bucket: per_second tokens flow in, at most capacity are stored."""

    per_second: Number = Field(gt=0)
    """Deliveries per second allowed on average."""
    burst: Integer | None = Field(None, ge=1)
    """Deliveries allowed at once after a quiet period; null means ceil(per_second)."""
    adaptive: AdaptiveRate | None = None
    """Adapt the rate to the endpoint's answers, with per_second as the ceiling; null keeps
    the rate at per_second."""

    @model_validator(mode="after")
    def _floor_under_ceiling(self) -> RateLimit:
        refusal = None if self.adaptive is None else self.adaptive.refusal(self.per_second)
        if refusal is not None:
            raise refusal
        return self

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


class Hook(FrozenModel):
    """A hook subscription: which events go to which endpoint, and how."""

    id: HookId
    """1-21 characters of A-Z a-z 0-9 _ -, unique; sent as hookId in every body."""
    name: StrictStr = ""
    """Free text for people."""
    events: tuple[EventPattern, ...] = Field(min_length=1)
    """Event names (User.Created), prefix wildcards (Organization.*) or "*" for every event."""
    url: Annotated[StrictStr, AfterValidator(check_url)]
    """Endpoint receiving the POSTs: http or https, no user:password@ part."""
    signing_key: Annotated[SecretStr, AfterValidator(check_signing_key)] | None = None
    """Key for the logto-signature-sha-256 header (HMAC-SHA256 of the body); no key, no header.
    Write ${VAR}, or use signing_key_file, to keep it out of the file."""
    signing_keys: (
        Annotated[
            tuple[Annotated[SecretStr, AfterValidator(check_signing_key)], ...],
            Field(min_length=1),
            AfterValidator(distinct_keys),
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
    filter: HookFilter | None = None
    """JMESPath expression over the event's JSON: only events for which it is truthy (not
    false, null, "", [] or {}) are sent; the others are skipped (README "Payload filters")."""
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
    ordering: Literal["none", "key"] = "none"
    """none: deliveries are made concurrently, in any order. key: deliveries of events with
    the same Kafka record key (read from the same partition) reach the endpoint one at a
    time, in offset order, other keys concurrently up to max_concurrency; a failing delivery
    is retried in memory and holds only its own key's later deliveries (README "Ordered
    delivery"). Events without a key are delivered unordered."""
    ordering_after_dead_letter: Literal["skip", "block"] = "skip"
    """With ordering: key, what a dead-lettered delivery does to its key. skip: the key's
    later deliveries go on. block: the key stays blocked for this hook, across restarts and
    for every replica (the control topic), and its later events are dead-lettered at once,
    reason key_blocked, in order, until hookrelay unblock or a replay of its dead letters
    (README "When the blocking delivery is dead-lettered"). Refused without ordering: key."""

    @model_validator(mode="after")
    def _block_needs_ordering(self) -> Hook:
        if self.ordering_after_dead_letter == "block" and self.ordering != "key":
            message = "expected ordering: key with ordering_after_dead_letter: block"
            raise refuse(message, at=("ordering_after_dead_letter",))
        return self

    @model_validator(mode="after")
    def _keys_fit_the_schemes(self) -> Hook:
        if self.signing_key is not None and self.signing_keys is not None:
            raise refuse(
                "use either signing_key (one key) or signing_keys (a list), not both",
                at=("signing_keys",),
            )
        if self.standard_webhooks:
            if self.signing_key is not None:
                check_standard_webhooks_key(self.signing_key, ("signing_key",))
            for index, key in enumerate(self.signing_keys or ()):
                check_standard_webhooks_key(key, ("signing_keys", index))
            if not self.active_signing_keys:
                message = (
                    "expected signing_key or signing_keys (or signing_key_file, "
                    "signing_key_files) with standard_webhooks: true"
                )
                raise refuse(message, at=("standard_webhooks",))
        return self

    @property
    def active_signing_keys(self) -> tuple[SecretStr, ...]:
        """The keys in force, primary first: ``signing_keys``, else ``(signing_key,)``, else
        ``()`` (an unsigned hook). Every one of them is a secret for the log redactor."""
        if self.signing_keys is not None:
            return self.signing_keys
        return (self.signing_key,) if self.signing_key is not None else ()

    @property
    def credentials(self) -> tuple[str, ...]:
        """Secrets this hook's headers carry: the value of every header whose name says it is
        a credential (``CREDENTIAL_HEADER_NAME``), and its last word too (the token of
        ``Bearer <token>``, which an endpoint may echo alone)."""
        found: list[str] = []
        for name, value in self.headers:
            if CREDENTIAL_HEADER_NAME.search(name):
                found.append(value)
                last = value.rsplit(None, 1)[-1] if value.strip() else ""
                if len(last) >= 8 and last != value:
                    found.append(last)
        return tuple(found)

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


class Settings(FrozenModel):
    """hookrelay's configuration: daemon settings and hook subscriptions."""

    kafka: KafkaSettings = KafkaSettings()
    """Where events are consumed from."""
    dead_letter_topic: TopicName = Field("", json_schema_extra=derived_default)
    """Topic receiving invalid records and deliveries that used up their retries; when
    omitted, "<kafka.group_id>.dlq" (hookrelay.dlq for the default group)."""
    control_topic: TopicName = Field("", json_schema_extra=derived_default)
    """Compacted topic holding operators' decisions every replica follows (a hook paused,
    its parked deliveries released: hookrelay pause/resume/release); when omitted,
    "<kafka.group_id>.control" (characters a topic name cannot hold become _). Created at
    start-up, compacted, with one partition."""
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
    outcomes: OutcomeSettings = OutcomeSettings()
    """The outcome topic: a durable record of how each delivery ended (opt-in)."""
    tracing: TracingSettings = TracingSettings()
    """OpenTelemetry spans of deliveries and attempts over OTLP (opt-in; the tracing extra)."""
    ingest: IngestSettings | None = None
    """The ``hookrelay ingest`` process: Logto's webhooks and the batch API into Kafka."""
    workers: WorkerCount = 1
    """Worker processes of hookrelay run, each a member of the consumer group: 1 (one
    process, no supervisor), a number up to 64, or "auto" (the CPUs this process may use:
    its CPU affinity and cgroup CPU quota). Each worker gets 1/N of every hook's rate limit
    (README: Worker processes). Applies at restart."""
    hooks: tuple[Hook, ...] = ()
    """Hook subscriptions written inline (or loaded from hooks_file)."""
    source_file: StrictStr = ""
    """Absolute path of the main file loaded; empty for settings built in code."""
    hooks_file: StrictStr | None = None
    """In the file: the hooks file, relative to the main file. Loaded: its absolute path."""

    _source: SourceMap = PrivateAttr(default_factory=SourceMap)

    @field_validator("hooks")
    @classmethod
    def _hook_ids_are_unique(cls, hooks: tuple[Hook, ...]) -> tuple[Hook, ...]:
        first: dict[str, int] = {}
        for index, hook in enumerate(hooks):
            if hook.id in first:
                earlier = first[hook.id]
                raise refuse(
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
            raise refuse(
                "expected a topic not listed in kafka.topics (hookrelay would consume its own "
                "dead letters)",
                at=("dead_letter_topic",),
            )
        if any(TOPIC.fullmatch(topic) is None for topic in self.consumed_retry_topics):
            raise refuse(
                "expected a shorter prefix: with the delays of retry_schedule_s the retry topic "
                "names exceed Kafka's 249 characters",
                at=("delivery", "retry_topic_prefix"),
            )
        self._ingest_writes_events_only()
        clash = set(self.consumed_retry_topics) & {*self.kafka.topics, self.dead_letter_topic}
        if clash:
            raise refuse(
                "expected a prefix whose retry topics differ from kafka.topics and "
                "dead_letter_topic",
                at=("delivery", "retry_topic_prefix"),
            )
        owned = {*self.kafka.topics, self.dead_letter_topic, *self.consumed_retry_topics}
        if self.control_topic in owned:
            raise refuse(
                "expected a topic of its own, not an event, dead-letter or retry topic",
                at=("control_topic",),
            )
        owned.add(self.control_topic)
        if self.outcomes.enabled and self.outcomes.topic in owned:
            raise refuse(
                "expected a topic of its own, not an event, dead-letter or retry topic",
                at=("outcomes", "topic"),
            )
        return self

    def _ingest_writes_events_only(self) -> None:
        """Refuse an ingest topic that is this deployment's dead-letter or retry topic: the
        daemon would read those records as letters or retries, not as events."""
        if self.ingest is None:
            return
        owned = {self.dead_letter_topic, *self.consumed_retry_topics, self.control_topic}
        if self.outcomes.enabled:
            owned.add(self.outcomes.topic)
        places: list[tuple[KeyPath, str | None]] = [
            (("ingest", "sources", i, "topic"), s.topic) for i, s in enumerate(self.ingest.sources)
        ]
        if self.ingest.batch is not None:
            places.append((("ingest", "batch", "topic"), self.ingest.batch.topic))
        for at, topic in places:
            if topic in owned:
                raise refuse(
                    "expected an event topic: this is one the deployment writes (dead-letter, "
                    "retry, control or outcome topic), which the daemon does not read as events",
                    at=at,
                )

    def event_topic(self, topic: str | None) -> str:
        """``topic``, or the first of ``kafka.topics`` when None (an ingest default)."""
        return topic if topic is not None else self.kafka.topics[0]

    def _derive_owned_topic_names(self) -> None:
        """Fill in the topic names left out from ``kafka.group_id`` (DESIGN §1.8: what a
        deployment writes is its own). Runs once, while the model is being built, which is
        why it may set fields of a frozen model."""
        group = self.kafka.group_id
        self._derive_outcome_topic(group)
        if not self.control_topic:
            # Every deployment has one, so a group id that cannot name a topic (allowed so
            # far with explicit dead-letter and retry names) is made into one: its records
            # name their group, and a replica ignores another group's.
            name = re.sub(r"[^A-Za-z0-9._-]", "_", group)[:230] + ".control"
            object.__setattr__(self, "control_topic", name)
        if self.dead_letter_topic and self.delivery.retry_topic_prefix:
            return
        longest = f"{group}.retry.{tier_label(max(self.delivery.retry_schedule_s))}"
        if TOPIC.fullmatch(longest) is None:
            raise refuse(
                "expected a group id made of A-Z a-z 0-9 . _ - (at most 230 characters), "
                "because the dead-letter and retry topic names derive from it; or set "
                "dead_letter_topic and delivery.retry_topic_prefix explicitly",
                at=("kafka", "group_id"),
            )
        if not self.dead_letter_topic:
            object.__setattr__(self, "dead_letter_topic", f"{group}.dlq")
        if not self.delivery.retry_topic_prefix:
            delivery = self.delivery.model_copy(update={"retry_topic_prefix": f"{group}.retry."})
            object.__setattr__(self, "delivery", delivery)

    def _derive_outcome_topic(self, group: str) -> None:
        if self.outcomes.topic:
            return
        topic = f"{group}.outcomes"
        if TOPIC.fullmatch(topic) is not None:
            object.__setattr__(self, "outcomes", self.outcomes.model_copy(update={"topic": topic}))
        elif self.outcomes.enabled:
            raise refuse(
                "expected a group id made of A-Z a-z 0-9 . _ - (at most 230 characters), "
                "because the outcome topic's name derives from it; or set outcomes.topic",
                at=("kafka", "group_id"),
            )
        # Disabled, with a group id that only explicit dead-letter and retry names allowed
        # so far: the name stays empty and nothing is written.

    def hook(self, hook_id: str) -> Hook | None:
        """The configured hook with id ``hook_id`` (enabled or not), or None."""
        return next((h for h in self.hooks if h.id == hook_id), None)

    def ordered(self, hook_id: str) -> bool:
        """True when ``hook_id`` is configured with ``ordering: key``."""
        hook = self.hook(hook_id)
        return hook is not None and hook.ordering == "key"

    @property
    def group_id(self) -> str:
        """The deployment's identity: ``kafka.group_id``, written into every retry record
        and dead letter it produces."""
        return self.kafka.group_id

    @property
    def retry_topics(self) -> tuple[str, ...]:
        """The retry topic of each tier, in ``delivery.retry_schedule_s`` order."""
        return tier_topics(self.delivery.retry_topic_prefix, self.delivery.retry_schedule_s)

    @property
    def now_topic(self) -> str:
        """The retry topic of deliveries due at once (released by an operator, replayed from
        the dead-letter topic): ``<retry_topic_prefix>now``. Records in a tier wait behind
        its head until due; here nothing waits."""
        return f"{self.delivery.retry_topic_prefix}now"

    @property
    def consumed_retry_topics(self) -> tuple[str, ...]:
        """Every retry topic the daemon consumes: the tiers, then ``now_topic``."""
        return (*self.retry_topics, self.now_topic)


class HooksFile(FrozenModel):
    """hooks.yaml: hookrelay's hook subscriptions."""

    hooks: tuple[Hook, ...]
    """Hook subscriptions."""
