"""Section ingest: the ``hookrelay ingest`` process, which turns Logto's webhooks (one route per
source) and batches of events (``POST /v1/events``) into records of the event topics.

Only ``hookrelay ingest`` reads this section (and ``check`` validates it): the daemon, which
needs none of its keys, loads the same file without it, so the two processes can share one
file while each holds only its own secrets.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, Field, SecretStr, StrictStr, field_validator, model_validator

from hookrelay.config.fields import (
    FrozenModel,
    Integer,
    NonEmptyText,
    Number,
    TopicName,
    check_admin_token,
    check_listen,
    check_signing_key,
    refuse,
    split_host_port,
)
from hookrelay.net.tls import TlsFilesError, server_ssl_context

BATCH_PATH: Final = "/v1/events"
"""The batch API's route on the ingest listener."""
PROBE_PATHS: Final = frozenset({"/metrics", "/healthz", "/readyz"})
"""Routes of the ingest process's metrics listener; a source path may not shadow them on a
listener that serves both."""

_SOURCE_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PATH: Final = re.compile(r"(?:/[A-Za-z0-9._~-]+)+")
_MEMBER_PATH: Final = re.compile(r"[A-Za-z0-9_$-]+(?:\.[A-Za-z0-9_$-]+)*")


def _check_source_id(source_id: str) -> str:
    if _SOURCE_ID.fullmatch(source_id) is None:
        raise refuse("expected 1-64 characters of A-Z a-z 0-9 _ - (it is a metric label)")
    return source_id


def _check_path(path: str) -> str:
    if _PATH.fullmatch(path) is None:
        raise refuse(
            "expected an absolute URL path of segments made of A-Z a-z 0-9 . _ ~ -, "
            "e.g. /logto/production (no query, no trailing slash)"
        )
    if any(segment in (".", "..") for segment in path.split("/")):
        raise refuse(
            "expected a path without . or .. segments (clients and proxies resolve them, "
            "and the request would miss the route)"
        )
    if path == BATCH_PATH:
        raise refuse(f"{BATCH_PATH} is the batch API's path; choose another")
    return path


def _check_key_rule(rule: str) -> str:
    if rule in ("auto", "none") or _MEMBER_PATH.fullmatch(rule) is not None:
        return rule
    raise refuse("expected auto, none, or a member path of the event such as data.id")


SourceId = Annotated[StrictStr, AfterValidator(_check_source_id)]
KeyRule = Annotated[StrictStr, AfterValidator(_check_key_rule)]
"""``auto`` (the entity the event is about, ``ingest.records``), ``none`` (no key: the
producer spreads records over partitions), or a member path such as ``data.id``."""


class IngestTls(FrozenModel):
    """TLS on the ingest listener, for a deployment with no TLS-terminating proxy in front."""

    cert_file: NonEmptyText
    """PEM certificate chain the listener presents."""
    key_file: NonEmptyText | None = None
    """PEM private key (unencrypted) of cert_file; omit it when cert_file holds the key."""

    @model_validator(mode="after")
    def _files_load(self) -> IngestTls:
        try:
            server_ssl_context(self.cert_file, self.key_file)
        except TlsFilesError as e:
            raise refuse(str(e), at=(e.key,)) from None
        return self


class IngestSource(FrozenModel):
    """One Logto tenant or instance whose webhook posts to hookrelay."""

    id: SourceId
    """Names the source in logs and metrics."""
    path: Annotated[StrictStr, AfterValidator(_check_path)] | None = None
    """URL path Logto's webhook posts to; default /logto/<id>."""
    signing_key: Annotated[SecretStr, AfterValidator(check_signing_key)]
    """The signing key Logto shows for this webhook (its details page, "Signing key"). Write
    ${VAR}, or use signing_key_file, to keep it out of the file."""
    topic: TopicName | None = None
    """Topic its events are written to; default the first of kafka.topics."""
    key: KeyRule = "auto"
    """Record key: auto (the user or organization the event is about: README "Connect Logto"),
    none, or a member path of the event such as data.id."""

    @property
    def route(self) -> str:
        """The path actually served."""
        return self.path or f"/logto/{self.id}"


class BatchSettings(FrozenModel):
    """The batch API: POST /v1/events with a JSON array or JSON lines of events, for producers
    that cannot run a Kafka client."""

    token: Annotated[SecretStr, AfterValidator(check_admin_token)]
    """Bearer token the API requires (Authorization: Bearer <token>). Write ${VAR}, or use
    token_file, to keep it out of the file."""
    topic: TopicName | None = None
    """Topic the events are written to; default the first of kafka.topics."""
    key: KeyRule = "auto"
    """Record key of each event, as for a source."""
    max_events: Integer = Field(1000, ge=1, le=100_000)
    """Events one request may carry."""
    max_request_bytes: Integer = Field(10_485_760, ge=1024)
    """Largest request body, in bytes (each event is also held to delivery.max_event_bytes)."""


class IngestSettings(FrozenModel):
    """Section ingest: the ``hookrelay ingest`` process (README "Connect Logto")."""

    listen: Annotated[StrictStr, AfterValidator(check_listen)] = "127.0.0.1:8088"
    """host:port the source routes and the batch API listen on (0.0.0.0:8088 to serve beyond
    this machine)."""
    metrics_listen: Annotated[StrictStr, AfterValidator(check_listen)] = "127.0.0.1:9465"
    """host:port of /metrics, /healthz and /readyz of the ingest process."""
    tls: IngestTls | None = None
    """Serve HTTPS on listen; without it, plain HTTP (TLS then ends at a proxy in front)."""
    sources: tuple[IngestSource, ...] = ()
    """Logto webhooks accepted, each on its own path with its own signing key."""
    batch: BatchSettings | None = None
    """The batch API; off without this section."""
    write_timeout_s: Number = Field(5.0, gt=0, le=300)
    """Seconds a request waits for the broker's acknowledgement before it is answered 503
    not_confirmed (the record stays queued and is written once the cluster answers). Keep it
    under Logto's own 10 s request timeout, so that Logto records the 503."""
    request_timeout_s: Number = Field(15.0, gt=0, le=300)
    """Seconds a client may take to send a whole request (headers and body); a slower one is
    disconnected."""
    idle_timeout_s: Number = Field(15.0, gt=0, le=3600)
    """Seconds a connection may stay open without a request in progress."""
    max_connections: Integer = Field(1024, ge=1, le=65_536)
    """Open connections at most; beyond it the one idle longest is closed, or the new one
    when every connection is busy."""

    @field_validator("sources")
    @classmethod
    def _sources_are_distinct(cls, sources: tuple[IngestSource, ...]) -> tuple[IngestSource, ...]:
        ids: dict[str, int] = {}
        routes: dict[str, int] = {}
        for index, source in enumerate(sources):
            if source.id in ids:
                raise refuse(
                    f"duplicate source id; already used by sources[{ids[source.id]}]",
                    at=(index, "id"),
                    see=(ids[source.id], "id"),
                )
            if source.route in routes:
                raise refuse(
                    f"duplicate path {source.route}; already served for "
                    f"sources[{routes[source.route]}]",
                    at=(index, "path" if source.path else "id"),
                )
            ids[source.id] = routes[source.route] = index
        return sources

    @model_validator(mode="after")
    def _listeners_differ(self) -> IngestSettings:
        listen, metrics = split_host_port(self.listen), split_host_port(self.metrics_listen)
        assert listen is not None and metrics is not None, "validated above"
        if listen[1] != 0 and listen[1] == metrics[1]:
            raise refuse(
                "expected a port other than listen's: the probes and metrics have their own "
                "listener, off the internet-facing one",
                at=("metrics_listen",),
            )
        return self

    @property
    def serves_anything(self) -> bool:
        """Whether a source or the batch API is configured."""
        return bool(self.sources) or self.batch is not None
