"""Per-record glue between the source and the lanes.

For a record of an event topic: decode → route → register with the ack tracker → one
delivery per matching hook (or, for an invalid record, a dead letter). For a record of a
retry topic (already due; the source holds back the rest): rebuild the delivery with its
attempt history and hand it back to its hook's lane.

``handle`` is synchronous and never raises on bad input: whatever a producer writes ends as
deliveries or as a dead letter with its reason.
"""

from __future__ import annotations

from typing import Any

from aiokafka import ConsumerRecord

from hookrelay.catalogue import KNOWN_EVENTS
from hookrelay.config import Settings
from hookrelay.deadletter import invalid_record
from hookrelay.decode import decode
from hookrelay.dispatcher import Dispatcher
from hookrelay.errors import InvalidEventError
from hookrelay.logs import get_logger
from hookrelay.metrics import Metrics
from hookrelay.model import Event, Origin
from hookrelay.offsets import AckTracker, TopicPartition
from hookrelay.retries import RetryRecord
from hookrelay.router import Router
from hookrelay.writer import DurableWriter

log = get_logger("hookrelay.pipeline")


class Pipeline:
    """Routes consumed records; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        tracker: AckTracker,
        dispatcher: Dispatcher,
        writer: DurableWriter,
        metrics: Metrics,
    ) -> None:
        self.router = Router(settings.hooks)
        self._settings = settings
        self._retry_topics = frozenset(settings.retry_topics)
        self._max_bytes = settings.delivery.max_event_bytes
        self._tracker = tracker
        self._dispatcher = dispatcher
        self._writer = writer
        self._metrics = metrics
        self._matched: dict[tuple[str, bool], Any] = {}

    def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Take one consumed record all the way to its lanes or the dead-letter topic."""
        if record.topic in self._retry_topics:
            self._handle_retry(record)
            return
        origin = Origin(record.topic, record.partition, record.offset, record.timestamp)
        try:
            event = self._decode(record, origin)
        except InvalidEventError as e:
            self._dead_letter_invalid(record, origin, e)
            return
        hooks = self.router.match(event.name)
        # Event names come from untrusted records: only catalogue names and names a hook
        # lists exactly become label values (a wildcard would let producers add series).
        label = (
            event.name if event.name in KNOWN_EVENTS or self.router.names(event.name) else "other"
        )
        self._matched_child(label, bool(hooks)).inc()
        tp = TopicPartition(record.topic, record.partition)
        ticket = self._tracker.register(tp, record.offset, len(hooks))
        if hooks:
            self._dispatcher.submit(event, hooks, ticket)

    def _decode(self, record: ConsumerRecord[bytes, bytes], origin: Origin) -> Event:
        """``decode`` the record; raises ``InvalidEventError``, also (reason ``decode_error``)
        for a bug in the decoder: a record that trips one is dead-lettered, because a daemon
        that crashed on it would crash again on every restart, at the same offset."""
        try:
            return decode(record.value, record.key, origin, self._max_bytes)
        except InvalidEventError:
            raise
        except Exception as e:
            log.exception("decoder_failed", topic=origin.topic, partition=origin.partition,
                          offset=origin.offset)  # fmt: skip
            raise InvalidEventError(
                "decode_error", f"internal decoder error ({type(e).__name__}); please report"
            ) from e

    def _matched_child(self, label: str, matched: bool) -> Any:
        """``hookrelay_events_matched_total`` child, looked up once per (label, matched)."""
        child = self._matched.get((label, matched))
        if child is None:
            child = self._metrics.events_matched.labels(label, "true" if matched else "false")
            self._matched[(label, matched)] = child
        return child

    def _handle_retry(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self._metrics.retries_consumed.labels(record.topic).inc()
        origin = Origin(record.topic, record.partition, record.offset, record.timestamp)
        try:
            retry = RetryRecord.from_headers(record.headers)
        except ValueError as e:
            self._dead_letter_invalid(record, origin, InvalidEventError("bad_retry_record", str(e)))
            return
        first = Origin(
            retry.origin_topic, retry.origin_partition, retry.origin_offset,
            retry.origin_timestamp_ms,
        )  # fmt: skip
        try:
            event = self._decode(record, first)
        except InvalidEventError as e:
            self._dead_letter_invalid(record, origin, e)
            return
        ticket = self._tracker.register(
            TopicPartition(record.topic, record.partition), record.offset, 1
        )
        self._dispatcher.resubmit(event, retry, ticket)

    def _dead_letter_invalid(
        self, record: ConsumerRecord[bytes, bytes], origin: Origin, error: InvalidEventError
    ) -> None:
        self._metrics.events_invalid.labels(error.reason).inc()
        log.warning(
            "event_invalid", reason=error.reason, detail=error.detail,
            topic=origin.topic, partition=origin.partition, offset=origin.offset,
        )  # fmt: skip
        ticket = self._tracker.register(
            TopicPartition(record.topic, record.partition), record.offset, 1
        )
        letter = invalid_record(
            self._settings.dead_letter_topic, error.reason, error.detail,
            value=record.value, key=record.key, origin=origin,
        )  # fmt: skip

        def written() -> None:
            self._metrics.dead_lettered.labels(error.reason).inc()
            ticket.settle()

        self._writer.submit(letter, written)
