"""Section tracing: OpenTelemetry spans of deliveries and attempts, exported over OTLP/HTTP.

The spans need the optional extra (``pip install 'hookrelay[tracing]'``: opentelemetry-sdk
and opentelemetry-exporter-otlp-proto-http). ``enabled: true`` without it is refused here,
at load time, so ``hookrelay run`` never starts without it and ``hookrelay check`` says so,
with the file and line. Propagating a record's own ``traceparent`` needs neither the extra
nor this section (``events.tracecontext``).

The standard OpenTelemetry environment variables fill in what the file leaves out, and the
file wins where it says something: ``endpoint`` over ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
(then ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``), each of ``headers`` over the same
header of ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``/``OTEL_EXPORTER_OTLP_HEADERS``,
``timeout_s`` over ``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT``, ``service_name`` over
``OTEL_SERVICE_NAME``. The rest of the exporter's and batch processor's variables
(``OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE``, ``..._COMPRESSION``, ``OTEL_BSP_*``,
``OTEL_RESOURCE_ATTRIBUTES``) apply as the OpenTelemetry SDK reads them; the sampler is
``sample_ratio``'s (``OTEL_TRACES_SAMPLER`` is not read).
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Annotated, Final

from pydantic import AfterValidator, Field, StrictBool, StrictStr, model_validator

from hookrelay.config.fields import (
    FrozenModel,
    HeaderPairs,
    NonEmptyText,
    Number,
    check_url,
    refuse,
)

TRACING_MODULES: Final = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)
"""What ``enabled: true`` needs installed (the ``tracing`` extra)."""
TRACING_EXTRA_HINT: Final = "pip install 'hookrelay[tracing]'"


def missing_tracing_modules() -> list[str]:
    """The modules of ``TRACING_MODULES`` that cannot be imported here (nothing imported)."""
    return [name for name in TRACING_MODULES if not _importable(name)]


def _importable(name: str) -> bool:
    try:
        return find_spec(name) is not None
    except ImportError:  # a parent package is missing
        return False


class TracingSettings(FrozenModel):
    """Section tracing: OpenTelemetry spans of each delivery and attempt, exported in batches
    over OTLP/HTTP (protobuf) to an OpenTelemetry Collector, Jaeger, Tempo or any OTLP
    backend. Needs the tracing extra: pip install 'hookrelay[tracing]'."""

    enabled: StrictBool = False
    """Record and export spans. Off by default; a record's own traceparent is sent on to its
    endpoints either way."""
    endpoint: Annotated[StrictStr, AfterValidator(check_url)] | None = None
    """OTLP/HTTP traces URL, path included, e.g. http://otel-collector:4318/v1/traces; null:
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT plus /v1/traces, else
    http://localhost:4318/v1/traces."""
    headers: HeaderPairs = Field((), json_schema_extra={"default": {}})
    """Headers of every export request, name: value (e.g. a hosted backend's API key); they
    override the same names in OTEL_EXPORTER_OTLP_HEADERS. Values are masked in logs."""
    service_name: NonEmptyText | None = None
    """service.name of the spans; null: OTEL_SERVICE_NAME, else hookrelay."""
    sample_ratio: Number = Field(1.0, ge=0, le=1)
    """Share of traces started here that are recorded (1.0: all). A record whose traceparent
    says whether its producer sampled it keeps that decision (parent-based sampling)."""
    timeout_s: Number | None = Field(None, gt=0)
    """Seconds one export may take, retries included; null:
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT (or OTEL_EXPORTER_OTLP_TIMEOUT), else 10."""

    @model_validator(mode="after")
    def _extra_installed(self) -> TracingSettings:
        if self.enabled:
            missing = missing_tracing_modules()
            if missing:
                raise refuse(
                    f"expected the tracing extra with enabled: true; install it with "
                    f"{TRACING_EXTRA_HINT} ({', '.join(missing)} not found), or set "
                    f"enabled: false",
                    at=("enabled",),
                )
        return self
