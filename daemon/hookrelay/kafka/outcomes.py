"""Write outcome records (``events.outcome``) to the deployment's outcome topic.

A delivery's source record is settled only once its outcome record is acknowledged, through
the same ``writer.DurableWriter`` (``acks=all``, idempotent) that writes retries and dead
letters, and only after what the outcome states is true: a ``delivered`` record follows the
endpoint's 2xx, a ``dead_lettered`` one follows the dead letter's acknowledgement. So a crash
never leaves a settled delivery without its outcome, and an outcome never claims what did not
happen; a crash between the two writes makes the delivery again, and a second outcome then
says so (at-least-once, like the webhook itself).

The daemon builds an ``OutcomeLog`` only with ``outcomes.enabled`` on; without one, the
dispatcher and the pipeline settle at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from hookrelay.config import OutcomeSettings
from hookrelay.events.model import Delivery, Origin, OutboundRecord
from hookrelay.events.outcome import VERSION, OutcomeRecord
from hookrelay.kafka.retries import HEADER_PREFIX
from hookrelay.kafka.writer import DurableWriter
from hookrelay.ops.metrics import Metrics

KIND: Final = "outcome"
VERSION_HEADER: Final = HEADER_PREFIX + "outcome-version"
GROUP_HEADER: Final = HEADER_PREFIX + "group"


class OutcomeLog:
    """Writes one outcome record per settled delivery and per invalid record; see the module
    docstring. ``then`` callbacks run once the broker acknowledged the record."""

    def __init__(
        self,
        writer: DurableWriter,
        metrics: Metrics,
        settings: OutcomeSettings,
        group: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._topic = settings.topic
        self._writer = writer
        self._metrics = metrics
        self._group = group
        self._clock = clock
        self._headers = (
            (VERSION_HEADER, str(VERSION).encode()),
            (GROUP_HEADER, group.encode("utf-8")),
        )

    def delivery(
        self, delivery: Delivery, status: str, reason: str | None, then: Callable[[], None]
    ) -> None:
        """Record that ``delivery`` ended with ``status`` (``events.outcome.STATUSES``) and
        dead-letter ``reason`` (or None), then call ``then``."""
        record = OutcomeRecord.of_delivery(delivery, status, reason, self._group, self._clock())
        self._write(record, delivery.delivery_id.encode("ascii"), then)

    def invalid(
        self, origin: Origin, key: bytes | None, reason: str, detail: str,
        then: Callable[[], None],
    ) -> None:  # fmt: skip
        """Record that the record at ``origin`` (with ``key``) was dead-lettered as invalid
        (``reason``, ``detail`` from ``InvalidEventError``), then call ``then``."""
        record = OutcomeRecord.of_invalid(
            origin, reason, detail, self._group, self._clock(), key=key
        )
        self._write(record, None, then)

    def _write(self, record: OutcomeRecord, key: bytes | None, then: Callable[[], None]) -> None:
        counter = self._metrics.outcomes_written.labels(record.status)

        def written() -> None:
            counter.inc()
            then()

        outbound = OutboundRecord(self._topic, record.to_json(), key, self._headers, KIND)
        self._writer.submit(outbound, written)
