"""The tracer seam: what the dispatcher calls to trace deliveries and attempts.

With ``tracing.enabled`` (and the ``tracing`` extra installed), ``start_tracing`` returns an
OpenTelemetry tracer (``ops.otel``, imported only then); otherwise ``None``, and the
dispatcher makes no call at all: its one test per delivery and per attempt is
``delivery.span is None``. Either way a record's own W3C trace context reaches its requests
(``events.tracecontext``).

Spans, as ``DeliveryTracer`` makes them::

    producer's span (the record's traceparent; none: the delivery span is a root)
    └── deliver <hook id>      CONSUMER  taken by the dispatcher → settled (delivered,
        │                                parked, dead-lettered, dropped, duplicate, abandoned)
        ├── POST               CLIENT    one attempt; its context is the traceparent sent
        └── POST                         (a retry comes back as a new delivery span)

``stop_tracing`` flushes what is queued and stops the exporter within a bound, off the event
loop, on a thread of its own: a collector that does not answer never holds the shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Protocol

from hookrelay.config import TracingSettings
from hookrelay.events.model import AttemptResult, Delivery
from hookrelay.events.tracecontext import TraceContext
from hookrelay.ops.logs import get_logger

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = get_logger("hookrelay.tracing")


class DeliveryTracer(Protocol):
    """Spans of deliveries and their attempts. Every method is called on the event loop and
    returns at once (ending a span queues it for the exporter's thread); none raises."""

    def delivery_started(self, delivery: Delivery) -> None:
        """Open ``delivery.span``: the dispatcher has taken the delivery (from an event
        record, or back from a retry topic)."""
        ...

    def attempt_started(self, delivery: Delivery) -> tuple[Span, TraceContext]:
        """Open the span of one POST of ``delivery``; return it and the trace context the
        request carries (the attempt span's own, so the endpoint's spans are its children)."""
        ...

    def attempt_ended(self, attempt: Span, delivery: Delivery, result: AttemptResult) -> None:
        """Close ``attempt`` with what the POST produced."""
        ...

    def delivery_ended(self, delivery: Delivery, outcome: str, reason: str | None) -> None:
        """Close ``delivery.span``: it settled with ``outcome`` (``Outcome`` values), a dead
        letter's ``reason`` if any."""
        ...

    def shutdown(self, timeout_s: float) -> None:
        """Export what is queued and stop; blocking, for ``stop_tracing``'s thread."""
        ...


def start_tracing(settings: TracingSettings, *, group: str) -> DeliveryTracer | None:
    """The tracer ``settings`` ask for: ``None`` when tracing is disabled, else spans
    exported over OTLP/HTTP, tagged with consumer group ``group``. Loading the settings
    already refused ``enabled`` without the extra; a broken installation raises
    ``ImportError`` here, at start-up, never later."""
    if not settings.enabled:
        return None
    # Imported only when enabled: the daemon needs no OpenTelemetry package otherwise.
    from hookrelay.ops.otel import OtelTracer  # noqa: PLC0415

    tracer = OtelTracer(settings, group=group)
    log.info("tracing_enabled", endpoint=tracer.endpoint, service_name=tracer.service_name,
             sample_ratio=settings.sample_ratio)  # fmt: skip
    return tracer


async def stop_tracing(tracer: DeliveryTracer, timeout_s: float) -> bool:
    """Flush and stop ``tracer`` on a daemon thread, waiting at most ``timeout_s``; return
    True when it finished. A thread still exporting after that is left behind (a daemon
    thread never keeps the process alive), and what it held is lost."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    def run() -> None:
        try:
            tracer.shutdown(timeout_s)
        except Exception:  # a bug in the SDK must not go unseen, nor hold the shutdown
            log.exception("tracing_shutdown_failed")
        finally:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(finished)

    threading.Thread(target=run, name="tracing-shutdown", daemon=True).start()
    try:
        async with asyncio.timeout(timeout_s):
            await done
    except TimeoutError:
        log.warning(
            "tracing_flush_timed_out", timeout_s=timeout_s,
            hint="the collector did not take the last spans in time; they are lost",
        )  # fmt: skip
        return False
    return True
