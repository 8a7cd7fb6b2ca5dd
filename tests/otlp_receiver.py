"""A real OTLP/HTTP trace receiver for tests: an aiohttp server on 127.0.0.1 that accepts
``POST /v1/traces`` (protobuf ``ExportTraceServiceRequest``, optionally gzip), the way an
OpenTelemetry Collector's ``otlphttp`` receiver does, and keeps every span it was sent::

    async with OtlpReceiver() as collector:
        ...point tracing.endpoint at collector.url...
        await collector.wait_for(4)
        [span] = collector.named("deliver crm")

Messages are decoded with ``opentelemetry-proto`` (what the exporter encodes with), so the
test reads the wire format, not the SDK's objects. The answer is an empty
``ExportTraceServiceResponse`` (full success), as OTLP/HTTP specifies.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDictProxy
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

PROTOBUF = "application/x-protobuf"
SPAN_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived: ids in lowercase hex (``parent_span_id`` empty for a root),
    ``kind`` and ``status`` by name, attribute and resource values as Python values."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    attributes: dict[str, Any]
    status: str
    status_message: str
    resource: dict[str, Any]
    flags: int


class OtlpReceiver:
    """Listens on a free port of 127.0.0.1; ``url`` is its traces endpoint. ``requests``
    keeps each export's headers."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests: list[CIMultiDictProxy[str]] = []
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def named(self, name: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.name == name]

    async def wait_for(self, count: int, timeout_s: float = 20.0) -> list[ReceivedSpan]:
        """Wait until at least ``count`` spans arrived; return them all."""
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.spans) >= count)
        return self.spans

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if request.content_type != PROTOBUF:
            return web.Response(status=415)
        message = ExportTraceServiceRequest.FromString(body)
        self.requests.append(request.headers)
        for resource_spans in message.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(_span(span, resource) for span in scope_spans.spans)
        async with self._arrived:
            self._arrived.notify_all()
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type=PROTOBUF)


def _span(span: Any, resource: dict[str, Any]) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(), name=span.name,
        kind=SPAN_KINDS.get(span.kind, str(span.kind)), attributes=_attributes(span.attributes),
        status=STATUS_CODES[span.status.code], status_message=span.status.message,
        resource=resource, flags=span.flags,
    )  # fmt: skip


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None
