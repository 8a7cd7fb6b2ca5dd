"""Per-record glue between the source and the lanes.

For a record of an event topic: decode → route → register with the ack tracker → one
delivery per matching hook (or, for an invalid record, a dead letter). For a record of a
retry topic (already due; the source holds back the rest): check that this deployment owns
it, rebuild the delivery with its attempt history and hand it back to its hook's lane,
unless an operator's release re-drove a copy of it (``kafka.control``).

Ownership (DESIGN §1.8): a retry record written by another consumer group (its
``hookrelay-group`` header), or whose origin topic is not one of ``kafka.topics``, belongs to
another deployment sharing the topic. It is left alone — never signed, sent or
dead-lettered here — counted in ``hookrelay_retry_records_skipped_total`` and logged once per
source. Records from before the group header existed are judged by their origin topic.

``handle`` is synchronous and never raises on bad input: whatever a producer writes ends as
deliveries or as a dead letter with its reason (``bad_retry_record`` for anything wrong in a
retry record this deployment owns).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from aiokafka import ConsumerRecord

from hookrelay.config import Settings
from hookrelay.delivery.dispatcher import Dispatcher
from hookrelay.delivery.router import Router
from hookrelay.errors import InvalidEventError
from hookrelay.events.catalogue import KNOWN_EVENTS
from hookrelay.events.decode import decode
from hookrelay.events.model import Event, Origin
from hookrelay.events.tracecontext import TraceContext, trace_context
from hookrelay.kafka.control import ControlState
from hookrelay.kafka.deadletter import invalid_record
from hookrelay.kafka.offsets import EVERY_HOOK, AckTicket, AckTracker, TopicPartition
from hookrelay.kafka.outcomes import OutcomeLog
from hookrelay.kafka.retries import RetryRecord, claimed_elsewhere, latest_due_s
from hookrelay.kafka.writer import DurableWriter
from hookrelay.ops.logs import get_logger
from hookrelay.ops.metrics import Metrics

log = get_logger("hookrelay.pipeline")

_SOURCES_LOGGED_MAX: Final = 1000
"""Foreign sources remembered for log-once; past this, new ones are counted, not logged."""


class Pipeline:
    """Routes consumed records; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        tracker: AckTracker,
        dispatcher: Dispatcher,
        writer: DurableWriter,
        metrics: Metrics,
        *,
        retry_topics: Iterable[str] | None = None,
        outcomes: OutcomeLog | None = None,
        control: ControlState | None = None,
    ) -> None:
        self.router = Router(settings.hooks)
        self._settings = settings
        self._group = settings.group_id
        self._event_topics = frozenset(settings.kafka.topics)
        self._retry_topics = frozenset(
            settings.consumed_retry_topics if retry_topics is None else retry_topics
        )
        self._foreign_logged: set[tuple[str, str, str]] = set()
        self._due_horizon_s = settings.delivery.due_horizon_s
        self._max_bytes = settings.delivery.max_event_bytes
        self._tracker = tracker
        self._dispatcher = dispatcher
        self._writer = writer
        self._outcomes = outcomes
        self._control = control
        self._metrics = metrics
        self._matched: dict[tuple[str, bool], Any] = {}

    def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Take one consumed record all the way to its lanes or the dead-letter topic; a
        record the partition's previous owner settled (its committed offset map, see
        ``offsets``) is skipped."""
        tp = TopicPartition(record.topic, record.partition)
        done = self._tracker.done_before(tp, record.offset)
        if done is EVERY_HOOK:
            self._metrics.settled_skipped.labels("record").inc()
            return
        if record.topic in self._retry_topics:
            self._handle_retry(record, tp)
            return
        origin = Origin(record.topic, record.partition, record.offset, record.timestamp)
        # Read once per record, and only for a record with headers: most have none.
        trace = trace_context(record.headers) if record.headers else None
        try:
            event = self._decode(record, origin, trace)
        except InvalidEventError as e:
            self._dead_letter_invalid(record, origin, e)
            return
        hooks = self.router.match(event.name)
        if done:  # a previous owner of the partition served these hooks already
            served = len(hooks)
            hooks = tuple(hook for hook in hooks if hook.id not in done)
            self._metrics.settled_skipped.labels("delivery").inc(served - len(hooks))
        # Event names come from untrusted records: only catalogue names and names a hook
        # lists exactly become label values (a wildcard would let producers add series).
        label = (
            event.name if event.name in KNOWN_EVENTS or self.router.names(event.name) else "other"
        )
        self._matched_child(label, bool(hooks)).inc()
        ticket = self._tracker.register(tp, record.offset, len(hooks), done)
        if hooks:
            self._dispatcher.submit(event, hooks, ticket)

    def _decode(
        self,
        record: ConsumerRecord[bytes, bytes],
        origin: Origin,
        trace: TraceContext | None = None,
    ) -> Event:
        """``decode`` the record, carrying its ``trace`` context; raises ``InvalidEventError``,
        also (reason ``decode_error``) for a bug in the decoder: a record that trips one is
        dead-lettered, because a daemon that crashed on it would crash again on every
        restart, at the same offset."""
        try:
            return decode(record.value, record.key, origin, self._max_bytes, trace)
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

    def add_retry_topics(self, topics: Iterable[str]) -> None:
        """Also treat ``topics`` as retry tiers (tiers of an earlier schedule or prefix)."""
        self._retry_topics = self._retry_topics | frozenset(topics)

    def _handle_retry(self, record: ConsumerRecord[bytes, bytes], tp: TopicPartition) -> None:
        origin = Origin(record.topic, record.partition, record.offset, record.timestamp)
        foreign = claimed_elsewhere(record.headers, self._group, self._event_topics)
        if foreign is not None:
            self._skip_foreign(record, tp, *foreign)
            return
        self._metrics.retries_consumed.labels(record.topic).inc()
        try:
            retry = RetryRecord.from_headers(record.headers)
            if retry.due_at_ms / 1000 > latest_due_s(
                record.topic, record.timestamp, self._due_horizon_s
            ):
                raise ValueError("header hookrelay-due-at is later than its tier ever waits")
        except ValueError as e:
            self._dead_letter_invalid(record, origin, InvalidEventError("bad_retry_record", str(e)))
            return
        control = self._control
        if control is not None and control.superseded(
            retry.hook_id, record.topic, record.partition, record.offset
        ):
            self._tracker.register(tp, record.offset, 0)  # a release re-drove its copy
            self._metrics.retries_superseded.inc()
            return
        first = Origin(
            retry.origin_topic, retry.origin_partition, retry.origin_offset,
            retry.origin_timestamp_ms,
        )  # fmt: skip
        try:
            event = self._decode(record, first, retry.trace)
        except InvalidEventError as e:
            self._dead_letter_invalid(record, origin, e)
            return
        ticket = self._tracker.register(tp, record.offset, 1)
        try:
            self._dispatcher.resubmit(event, retry, ticket, (tp.topic, tp.partition, record.offset))
        except Exception as e:  # a bug: the record must not crash every replica, forever
            log.exception("retry_record_failed", topic=origin.topic,
                          partition=origin.partition, offset=origin.offset)  # fmt: skip
            error = InvalidEventError(
                "bad_retry_record", f"internal error ({type(e).__name__}); please report"
            )
            self._dead_letter_invalid(record, origin, error, ticket)

    def _skip_foreign(
        self, record: ConsumerRecord[bytes, bytes], tp: TopicPartition, reason: str,
        group: str, origin_topic: str,
    ) -> None:  # fmt: skip
        self._tracker.register(tp, record.offset, 0)  # settled at once: left alone
        self._metrics.retry_records_skipped.labels(reason).inc()
        source = (reason, group[:100], origin_topic[:100])
        if source not in self._foreign_logged and len(self._foreign_logged) < _SOURCES_LOGGED_MAX:
            self._foreign_logged.add(source)
            log.warning(
                "retry_records_of_another_deployment", reason=reason, group=source[1],
                origin_topic=source[2], retry_topic=record.topic,
                hint="another deployment shares this retry topic; give each deployment its "
                "own (the default names derive from kafka.group_id)",
            )  # fmt: skip

    def _dead_letter_invalid(
        self,
        record: ConsumerRecord[bytes, bytes],
        origin: Origin,
        error: InvalidEventError,
        ticket: AckTicket | None = None,
    ) -> None:
        self._metrics.events_invalid.labels(error.reason).inc()
        log.warning(
            "event_invalid", reason=error.reason, detail=error.detail,
            topic=origin.topic, partition=origin.partition, offset=origin.offset,
        )  # fmt: skip
        if ticket is None:
            ticket = self._tracker.register(
                TopicPartition(record.topic, record.partition), record.offset, 1
            )
        letter = invalid_record(
            self._settings.dead_letter_topic, error.reason, error.detail,
            value=record.value, key=record.key, origin=origin, group=self._group,
        )  # fmt: skip
        settle = ticket.settle
        outcomes = self._outcomes

        def written() -> None:
            self._metrics.dead_lettered.labels(error.reason).inc()
            if outcomes is None:
                settle()
            else:
                outcomes.invalid(origin, record.key, error.reason, error.detail, settle)

        self._writer.submit(letter, written)
