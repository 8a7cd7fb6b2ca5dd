"""Payload filters on the delivery path: which (event, hook) pairs a hook's ``filter`` keeps
from its lane, and how those pairs settle.

The dispatcher asks only for hooks that have a filter, so an event whose matched hooks have
none costs nothing here. The first question about an event parses its JSON (the record
value as produced); the other filtered hooks of the same event share that parse
(``EventScreen``). A filter is evaluated when the event is routed, never again for a retry:
the pair was let through then, and a retry (or a replayed dead letter) is sent as it is.

A pair the filter keeps out is **skipped**: settled at once without a request, counted in
``hookrelay_deliveries_skipped_total{hook_id, reason="filtered"}``, and, with
``outcomes.enabled``, settled only once its ``skipped`` outcome record is acknowledged.

A filter that cannot be evaluated on one payload (``length(data.name)`` where ``name`` is a
number: see ``events.filter``) loses nothing: the pair is dead-lettered with reason
``filter_error`` and the error in the dead letter's ``error`` header, counted like every
dead letter, and can be replayed once the filter is fixed (a replay is sent unfiltered).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from hookrelay.events.filter import FilterVerdict, PayloadFilter
from hookrelay.events.model import Delivery, Outcome
from hookrelay.ops.logs import debug_enabled, get_logger
from hookrelay.ops.metrics import Metrics

if TYPE_CHECKING:
    from hookrelay.delivery.lane import Lane, OnFinished

log = get_logger("hookrelay.dispatcher")

SKIPPED_REASON = "filtered"
"""``reason`` of a pair a filter kept out: the metric label and the outcome record's."""
FILTER_ERROR_REASON = "filter_error"
"""Dead-letter reason of a pair whose filter could not be evaluated."""

_UNPARSED: Any = object()


class EventScreen:
    """One event's JSON as its hooks' filters see it: parsed on the first ``verdict``, at
    most once."""

    __slots__ = ("_document", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._document: Any = _UNPARSED

    def verdict(self, payload_filter: PayloadFilter) -> FilterVerdict:
        """``payload_filter``'s verdict over the event."""
        if self._document is _UNPARSED:
            try:
                self._document = orjson.loads(self._raw)
            except orjson.JSONDecodeError:  # the decoder accepted these bytes: not expected
                return FilterVerdict(False, None, "the event is not JSON")
        return payload_filter.evaluate(self._document)


class FilterGate:
    """Settles the pairs a filter keeps from their lane (see the module docstring);
    ``on_finished`` is the dispatcher's settlement (outcome record, then the ack ticket)."""

    def __init__(self, metrics: Metrics, on_finished: OnFinished) -> None:
        self._metrics = metrics
        self._on_finished = on_finished
        self._skipped: dict[str, Any] = {}  # hook id -> its counter child, looked up once

    def admits(self, screen: EventScreen, lane: Lane, delivery: Delivery) -> bool:
        """True when ``delivery``'s hook filter lets it into ``lane``; otherwise it is
        settled here (skipped, or dead-lettered by ``lane`` on an evaluation error)."""
        payload_filter = delivery.hook.filter
        assert payload_filter is not None  # the dispatcher asks for filtered hooks only
        verdict = screen.verdict(payload_filter)
        if verdict.passed:
            return True
        if verdict.error is not None:
            delivery.last_error = f"filter: {verdict.error}"
            lane.reject(delivery, FILTER_ERROR_REASON)
            return False
        hook_id = delivery.hook.id
        counter = self._skipped.get(hook_id)
        if counter is None:
            counter = self._skipped[hook_id] = self._metrics.deliveries_skipped.labels(
                hook_id, SKIPPED_REASON
            )
        counter.inc()
        if debug_enabled():
            log.debug("delivery_skipped", hook_id=hook_id, delivery_id=delivery.delivery_id,
                      event_name=delivery.event.name, reason=SKIPPED_REASON)  # fmt: skip
        self._on_finished(delivery, Outcome.SKIPPED, SKIPPED_REASON)
        return False
