"""``tracing.DeliveryTracer`` on the OpenTelemetry SDK: spans exported over OTLP/HTTP.

Imported only when ``tracing.enabled`` (the ``tracing`` extra provides its packages). Spans
end on the event loop, which only queues them; a ``BatchSpanProcessor`` thread encodes and
posts them in batches (512 spans, or every 5 s; ``OTEL_BSP_*`` change that). When the
collector is unreachable the exporter retries within its timeout, then drops the batch, and
a full queue drops new spans: deliveries never wait for the collector. The SDK says so in
a few log lines, each at most once per 30 s (``logs.RepeatFilter``), never one per span.

What spans record (OpenTelemetry semantic conventions, HTTP client and messaging spans):

- ``deliver <hook id>`` (kind CONSUMER), child of the record's ``traceparent`` (else a
  root): ``messaging.system`` (``kafka``), ``messaging.operation.type`` (``process``),
  ``messaging.destination.name`` and ``.partition.id`` and ``messaging.kafka.offset`` (the
  event record's, also for a delivery back from a retry topic),
  ``messaging.consumer.group.name``; ``hookrelay.hook.id``, ``hookrelay.event.name``,
  ``hookrelay.delivery.id`` (the ``webhook-id``); when it settles
  ``hookrelay.delivery.outcome`` (``delivered``, ``parked``, ``dead_lettered``, ``dropped``,
  ``duplicate``, ``abandoned``), ``hookrelay.delivery.attempts``,
  ``hookrelay.delivery.parks`` and ``hookrelay.dead_letter.reason``; status ERROR when it
  was dead-lettered or dropped.
- ``POST`` (kind CLIENT), one per attempt: ``http.request.method``, ``server.address``,
  ``server.port``, ``url.scheme``, ``http.response.status_code`` (when the endpoint
  answered), ``error.type`` (the status code, or ``timeout``, ``connection_error``,
  ``refused``); ``hookrelay.hook.id``, ``hookrelay.event.name``, ``hookrelay.delivery.id``,
  ``hookrelay.attempt`` (which attempt of the retry schedule this is),
  ``hookrelay.attempt.outcome`` (``delivered``, ``failed_retryable``,
  ``failed_permanent``); status ERROR, with the short error, when it failed.

Never recorded: the URL itself (``url.full`` is left out on purpose, against the HTTP
conventions: webhook URLs carry tokens in paths and query strings), request or response
bodies, headers, signing keys, the record key (often a user id) and the payload's members.
"""

from __future__ import annotations

import os
from typing import Final
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.util.types import AttributeValue

from hookrelay import __version__
from hookrelay.config import Hook, TracingSettings
from hookrelay.events.model import AttemptResult, Delivery
from hookrelay.events.tracecontext import TraceContext
from hookrelay.ops.logs import redacted_url, register_secrets, url_secrets

DEFAULT_ENDPOINT: Final = "http://localhost:4318/v1/traces"
"""Where spans go when neither the file nor the environment says (the OTLP default)."""
_FAILED: Final = frozenset({"dead_lettered", "dropped"})
"""Delivery outcomes that mark the delivery span as an error."""
_ERROR_TEXT_MAX: Final = 200

Attributes = dict[str, AttributeValue]


def resolve_endpoint(settings: TracingSettings) -> str:
    """The traces URL: ``tracing.endpoint``, else ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
    else ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``, else ``DEFAULT_ENDPOINT`` (the
    order of the OTLP exporter specification)."""
    if settings.endpoint is not None:
        return settings.endpoint
    if traces := os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return traces
    if base := os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return f"{base.removesuffix('/')}/v1/traces"
    return DEFAULT_ENDPOINT


class OtelTracer:
    """``tracing.DeliveryTracer`` with a private ``TracerProvider`` (never the global one,
    which belongs to the application embedding it), a parent-based ratio sampler and one
    ``BatchSpanProcessor`` exporting over OTLP/HTTP (or to ``exporter``, for tests).
    ``endpoint`` (shown with query and user info masked) and ``service_name`` say where and
    as what spans go."""

    def __init__(
        self, settings: TracingSettings, *, group: str, exporter: SpanExporter | None = None
    ) -> None:
        endpoint = resolve_endpoint(settings)
        register_secrets(url_secrets(endpoint))  # a token in the URL stays out of the logs
        self.endpoint = redacted_url(endpoint)
        self.service_name = (
            settings.service_name or os.environ.get("OTEL_SERVICE_NAME") or "hookrelay"
        )
        resource = Resource.create(
            {"service.name": self.service_name, "service.version": __version__}
        )
        sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
        self._provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
        if exporter is None:
            exporter = OTLPSpanExporter(
                endpoint=endpoint, headers=dict(settings.headers) or None,
                timeout=settings.timeout_s,
            )  # fmt: skip
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("hookrelay", __version__)
        self._group = group
        self._servers: dict[str, tuple[Hook, Attributes]] = {}

    def delivery_started(self, delivery: Delivery) -> None:
        """See ``tracing.DeliveryTracer``."""
        event = delivery.event
        origin = event.origin
        attributes: Attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": origin.topic,
            "messaging.destination.partition.id": str(origin.partition),
            "messaging.kafka.offset": origin.offset,
            "messaging.consumer.group.name": self._group,
            "hookrelay.hook.id": delivery.hook.id,
            "hookrelay.event.name": event.name,
            "hookrelay.delivery.id": delivery.delivery_id,
        }
        delivery.span = self._tracer.start_span(
            f"deliver {delivery.hook.id}", context=_parent(event.trace), kind=SpanKind.CONSUMER,
            attributes=attributes,
        )  # fmt: skip

    def attempt_started(self, delivery: Delivery) -> tuple[Span, TraceContext]:
        """See ``tracing.DeliveryTracer``."""
        assert delivery.span is not None, "delivery_started opens it"
        attributes: Attributes = {
            **self._server(delivery.hook),
            "http.request.method": "POST",
            "hookrelay.hook.id": delivery.hook.id,
            "hookrelay.event.name": delivery.event.name,
            "hookrelay.delivery.id": delivery.delivery_id,
            "hookrelay.attempt": delivery.attempts + 1,
        }
        span = self._tracer.start_span(
            "POST", context=set_span_in_context(delivery.span, Context()), kind=SpanKind.CLIENT,
            attributes=attributes,
        )  # fmt: skip
        return span, _context_of(span)

    def attempt_ended(self, attempt: Span, delivery: Delivery, result: AttemptResult) -> None:
        """See ``tracing.DeliveryTracer``."""
        if attempt.is_recording():
            if result.status is not None:
                attempt.set_attribute("http.response.status_code", result.status)
            if result.ok:
                attempt.set_attribute("hookrelay.attempt.outcome", "delivered")
            else:
                retryable = "failed_retryable" if result.retryable else "failed_permanent"
                attempt.set_attribute("hookrelay.attempt.outcome", retryable)
                kind = str(result.status) if result.status is not None else result.status_class
                attempt.set_attribute("error.type", kind)
                attempt.set_status(Status(StatusCode.ERROR, (result.error or "")[:_ERROR_TEXT_MAX]))
        attempt.end()

    def delivery_ended(self, delivery: Delivery, outcome: str, reason: str | None) -> None:
        """See ``tracing.DeliveryTracer``."""
        span, delivery.span = delivery.span, None
        if span is None:
            return
        if span.is_recording():
            span.set_attributes(
                {
                    "hookrelay.delivery.outcome": outcome,
                    "hookrelay.delivery.attempts": delivery.attempts,
                    "hookrelay.delivery.parks": delivery.parks,
                }
            )
            if reason is not None:
                span.set_attribute("hookrelay.dead_letter.reason", reason)
            if outcome in _FAILED:
                span.set_status(Status(StatusCode.ERROR, reason or outcome))
        span.end()

    def shutdown(self, timeout_s: float) -> None:
        """Export what is queued, then stop the exporter. The SDK bounds this by the export
        timeout and its own 30 s; ``tracing.stop_tracing`` stops waiting after ``timeout_s``."""
        del timeout_s  # the SDK's shutdown takes no bound; the caller enforces it
        self._provider.shutdown()

    def _server(self, hook: Hook) -> Attributes:
        """The endpoint attributes of ``hook``, worked out once per hook object: host, port
        and scheme only, never the path or query (they may hold a token)."""
        cached = self._servers.get(hook.id)
        if cached is None or cached[0] is not hook:
            parts = urlsplit(hook.url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            attributes: Attributes = {
                "server.address": parts.hostname or "",
                "server.port": port,
                "url.scheme": parts.scheme,
            }
            cached = self._servers[hook.id] = (hook, attributes)
        return cached[1]


def _parent(trace: TraceContext | None) -> Context:
    """The context a delivery span starts in: the record's remote span, or none (a root)."""
    if trace is None:
        return Context()
    state = TraceState.from_header([trace.tracestate]) if trace.tracestate else None
    remote = SpanContext(
        int(trace.trace_id, 16), int(trace.parent_id, 16), is_remote=True,
        trace_flags=TraceFlags(trace.flags), trace_state=state,
    )  # fmt: skip
    return set_span_in_context(NonRecordingSpan(remote), Context())


def _context_of(span: Span) -> TraceContext:
    """The W3C trace context that makes a request a child of ``span``."""
    context = span.get_span_context()
    traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    return TraceContext(traceparent, context.trace_state.to_header() or None)
