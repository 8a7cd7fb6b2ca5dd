"""CPU cost of payload filters, against the CPU cost of one delivery, measured in one run.

    .venv/bin/python -m tests.bench.filter_cost                      # about 1 minute
    .venv/bin/python -m tests.bench.filter_cost --against 2b2cab2    # also the unfiltered path

Issue 16's target: filters cost no measurable throughput for hooks without a filter, and a
filtered hook evaluates its expression in well under the cost of one delivery. Every figure
is this process's CPU time (``time.process_time``) per operation, the median over rounds:

- ``verdict``: ``delivery.filtering.EventScreen`` as the dispatcher uses it, for the bench's
  ~600-byte ``PostSignIn`` event (``tests.bench.events``): the first filtered hook of an event
  (parse + evaluate), a second one (evaluate only: the parse is shared), and the README's
  one-organization filter on a membership event (parse + evaluate);
- ``skip``: ``Dispatcher.submit`` of an event to one hook whose filter keeps it out: the
  verdict plus the skipped pair's settlement (counter, ack ticket; no outcome topic);
- ``delivery``: one ``HttpSender.attempt`` to the bench receiver in its own process
  (``sender_attempt.cpu_per_attempt``: signing, aiohttp, the event loop). Only part of what
  a delivery costs (Kafka, routing, the lane and the offsets come on top), so the ratios
  below overstate what a filter costs relative to a delivery;
- ``unfiltered submit`` (with ``--against``): ``Dispatcher.submit`` of an event to one hook
  without a filter, the working tree against ``delivery/dispatcher.py`` as committed at the
  revision (before filters), alternating within every round; the ratio is the median of the
  per-round ratios (``noise_floor``: the revision again, what chance alone moves).
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from hookrelay.config import DeliverySettings, Hook, HttpSettings
from hookrelay.delivery import dispatcher as current_dispatcher
from hookrelay.delivery.filtering import EventScreen
from hookrelay.delivery.sender import HttpSender
from hookrelay.events.decode import decode
from hookrelay.events.filter import PayloadFilter
from hookrelay.events.model import AttemptResult, Event, Origin
from hookrelay.kafka.offsets import AckTracker, TopicPartition
from hookrelay.kafka.writer import DurableWriter
from hookrelay.ops.metrics import Metrics
from tests.bench.events import event_value
from tests.bench.loops import run_loop
from tests.bench.receiver import Receiver
from tests.bench.sender_attempt import cpu_per_attempt, module_at

PLAN = PayloadFilter.compile("user.customData.plan == 'enterprise'")
APPLICATION = PayloadFilter.compile("application.type == 'Native' && !user.isSuspended")
ONE_ORG = PayloadFilter.compile("not_null(organizationId, params.id, data.id) == 'org_1'")
MEMBERSHIP = (
    b'{"event":"Organization.Membership.Updated","createdAt":"2026-08-21T08:58:54.144Z",'
    b'"interactionEvent":"Register","userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X '
    b'10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/139.0.0.0 Safari/537.36",'
    b'"applicationId":"9c9kqkjgj0g19pr4l6qw2","sessionId":"8rvfJM5y8isUkkZwoimRj",'
    b'"ip":"203.0.113.57","application":{"id":"9c9kqkjgj0g19pr4l6qw2","type":"SPA",'
    b'"name":"Acme Web","description":"Customer portal (React)"},'
    b'"organizationId":"3fxu00gcoajet3j023yvy","addedUserIds":["rwa21o6fobbv"]}'
)
TP = TopicPartition("bench", 0)


def cpu_us(work: Callable[[], object], count: int) -> float:
    """µs of this process's CPU per call of ``work``, ``count`` calls."""
    started = time.process_time()
    for _ in range(count):
        work()
    return (time.process_time() - started) / count * 1e6


def verdicts(count: int) -> dict[str, float]:
    """µs per verdict: a fresh screen each time (parse + evaluate), or a shared one."""
    value = event_value(1)
    shared = EventScreen(value)
    shared.verdict(PLAN)
    return {
        "first_filtered_hook": cpu_us(lambda: EventScreen(value).verdict(PLAN), count),
        "second_filtered_hook": cpu_us(lambda: shared.verdict(APPLICATION), count),
        "one_org_membership": cpu_us(lambda: EventScreen(MEMBERSHIP).verdict(ONE_ORG), count),
    }


async def submit_us(module: Any, hook: Hook, count: int) -> float:
    """µs of CPU per ``Dispatcher.submit`` (of ``module``) of one event to ``hook``; the
    lane queues everything (workers never get to run), so only the submit is measured."""
    metrics = Metrics()
    settings = DeliverySettings(lane_max_pending=count * 2)
    writer = DurableWriter(object(), metrics, dead_letter_topic="dlq")  # type: ignore[arg-type]
    dispatcher = module.Dispatcher(
        _IdleSender(), writer, metrics, settings, retry_topics=("r.1s",), dead_letter_topic="dlq"
    )
    dispatcher.set_hooks([hook])
    tracker = AckTracker()
    tracker.assign([TP])
    events = [_event(n) for n in range(count)]
    tickets = [tracker.register(TP, n, 1) for n in range(count)]
    hooks = (hook,)
    started = time.process_time()
    for event, ticket in zip(events, tickets, strict=True):
        dispatcher.submit(event, hooks, ticket)
    spent = time.process_time() - started
    await dispatcher.close()
    return spent / count * 1e6


class _IdleSender:
    """Answers 200 at once: the lanes' workers get to run only once the timing is over."""

    async def attempt(self, *_args: object) -> AttemptResult:
        return AttemptResult(200, None, False, None, 0.0)


def _event(n: int) -> Event:
    return decode(event_value(n), None, Origin(TP.topic, 0, n, 0), 1 << 20)


async def run(args: argparse.Namespace) -> dict[str, list[float]]:
    plain = Hook.model_validate({"id": "bench", "events": ["*"], "url": "http://127.0.0.1:9/"})
    skipping = plain.model_copy(update={"filter": PayloadFilter.compile("user.isSuspended")})
    old = module_at(args.against, "delivery/dispatcher.py") if args.against else None
    http = HttpSettings(allow_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    receiver = Receiver()
    receiver.start()
    figures: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    try:
        url = receiver.url("/hooks/bench")
        for round_number in range(args.rounds):
            for name, value in verdicts(args.evaluations).items():
                note(f"verdict {name}", value)
            note("skip", await submit_us(current_dispatcher, skipping, args.evaluations))
            note("delivery", await cpu_per_attempt(
                lambda: HttpSender(http, DeliverySettings()), url, args.requests, 8
            ))  # fmt: skip
            if old is not None:
                # Alternate which goes first, so that neither always follows the other.
                order = [old, current_dispatcher] if round_number % 2 else [current_dispatcher, old]
                for module in order:
                    label = "current" if module is current_dispatcher else "against"
                    note(f"unfiltered submit {label}", await submit_us(module, plain, args.submits))
                note("unfiltered submit noise_floor", await submit_us(old, plain, args.submits))
            print(f"round {round_number + 1}/{args.rounds}: "
                  + ", ".join(f"{n} {v[-1]:.2f}" for n, v in figures.items()),
                  file=sys.stderr)  # fmt: skip
    finally:
        receiver.stop()
    return figures


def report(figures: dict[str, list[float]], against: str | None) -> str:
    delivery = statistics.median(figures["delivery"])
    lines = [f"µs of CPU per operation, median of {len(figures['delivery'])} rounds "
             "(ratio: to one delivery's HttpSender.attempt):"]  # fmt: skip
    for name, values in figures.items():
        if name.startswith("unfiltered"):
            continue
        median = statistics.median(values)
        ratio = "" if name == "delivery" else f"  = {median / delivery:.3f} of a delivery"
        lines.append(f"  {name:<34} {median:8.2f}{ratio}")
    if against is not None:
        reference = figures["unfiltered submit against"]
        lines.append(f"Dispatcher.submit, one hook without a filter, ratio to {against} "
                     "(median of per-round ratios):")  # fmt: skip
        for label in ("current", "noise_floor"):
            values = figures[f"unfiltered submit {label}"]
            ratios = [v / r for v, r in zip(values, reference, strict=True)]
            lines.append(f"  {label:<12} {statistics.median(values):6.2f} µs"
                         f"  ratio {statistics.median(ratios):.3f}")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", help="git revision whose dispatcher.py is the reference")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--evaluations", type=int, default=20_000, help="per verdict figure")
    parser.add_argument("--submits", type=int, default=20_000, help="per submit figure")
    parser.add_argument("--requests", type=int, default=5_000, help="timed requests per round")
    args = parser.parse_args()
    print(report(run_loop(run(args)), args.against))
    return 0


if __name__ == "__main__":
    sys.exit(main())
