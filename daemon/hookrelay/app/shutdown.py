"""The shutdown order, and the bounds that keep it finite.

SIGTERM or SIGINT set a flag and nothing else; then:
1. stop fetching; 2. drain queued and in-flight deliveries for up to ``shutdown.grace_s``;
3. abandon what is left (unsettled, so consumed again after restart); 4. commit settled
offsets; 5. close the HTTP session; 6. stop the producer (flushes acknowledged dead letters)
and the consumer (leaves the group); 7. with tracing on, export the spans still queued (at
most ``TRACE_FLUSH_S``: an unreachable collector loses them, never holds the exit); 8. stop
the admin server. A second signal, or
``shutdown.hard_deadline_s`` after the first, exits the process at once (``daemon``).
Steps 1 to 3 end ``Daemon._run_tasks``; the rest is :meth:`ShutdownOrder._close`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Coroutine, Iterable
from typing import Any

from aiokafka import AIOKafkaProducer

from hookrelay.config import Settings
from hookrelay.delivery.dispatcher import Dispatcher
from hookrelay.delivery.sender import HttpSender, close_quietly
from hookrelay.kafka.clients import closed
from hookrelay.kafka.control import ControlFollower
from hookrelay.kafka.source import Source
from hookrelay.ops.admin import AdminServer
from hookrelay.ops.logs import get_logger
from hookrelay.ops.sdnotify import Notifier
from hookrelay.ops.tracing import DeliveryTracer, stop_tracing

log = get_logger("hookrelay.app")

EXIT_HARD_DEADLINE = 70
EXIT_SECOND_SIGNAL = 130


def note_stop_signal(signum: int, count: int) -> None:
    """Log the ``count``-th stop signal; from the second on, exit at once with
    ``EXIT_SECOND_SIGNAL`` (the operator asked twice: they want out now, drain or not)."""
    name = signal.Signals(signum).name
    if count > 1:
        log.error("second_signal_exiting_now", signal=name)
        os._exit(EXIT_SECOND_SIGNAL)
    log.info("signal_received", signal=name)


def arm_hard_deadline(deadline_s: float) -> threading.Timer:
    """Exit with ``EXIT_HARD_DEADLINE`` ``deadline_s`` from now, from a thread of its own (so
    a blocked event loop cannot hold the process)."""
    timer = threading.Timer(deadline_s, _hard_exit)
    timer.daemon = True
    timer.start()
    return timer


def _hard_exit() -> None:
    log.error("hard_deadline_exceeded_exiting")
    os._exit(EXIT_HARD_DEADLINE)


TRACE_FLUSH_S = 5.0
"""Longest wait for the last spans to reach the collector at shutdown."""
CANCEL_AGAIN_S = 1.0
"""Seconds a cancelled task may run on before the shutdown cancels it again."""


async def bounded(
    step: str, work: Coroutine[Any, Any, Any], end: float, cap_s: float = 30.0
) -> None:
    """Run one shutdown step until ``end`` (monotonic) or ``cap_s``; log, never raise."""
    timeout = max(0.5, min(cap_s, end - time.monotonic()))
    try:
        async with asyncio.timeout(timeout):
            await work
    except TimeoutError:
        log.warning("shutdown_step_timed_out", step=step, timeout_s=round(timeout, 1))
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled ourselves: let it through
        # aiokafka's stop() can surface the cancellation of its own internal tasks.
        log.warning("shutdown_step_cancelled", step=step)
    except Exception as e:
        log.warning("shutdown_step_failed", step=step, error=f"{type(e).__name__}: {e}")


async def cancel_until_done(
    tasks: Iterable[asyncio.Task[Any]], again_after_s: float = CANCEL_AGAIN_S
) -> None:
    """Cancel ``tasks`` and return once every one has ended, cancelling again each
    ``again_after_s`` seconds one that outlived its cancellation (logged as
    ``task_cancelled_again``). On Python 3.11 ``asyncio.wait_for`` drops a cancellation that
    arrives as its inner future completes (CPython gh-86296); hookrelay's own code uses
    ``asyncio.timeout`` instead, but a loop in a library can still swallow one, and the
    TaskGroup around the tasks would then wait for it forever."""
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=again_after_s)
        for task in pending:
            log.warning("task_cancelled_again", task=task.get_name())
            task.cancel()


class ShutdownOrder:
    """Steps 2 to 8 of the shutdown order, mixed into ``Daemon`` (which provides the parts
    named below)."""

    settings: Settings
    stopping: asyncio.Event
    systemd: Notifier
    dispatcher: Dispatcher
    source: Source
    producer: AIOKafkaProducer
    admin: AdminServer
    control: ControlFollower
    tracer: DeliveryTracer | None
    _http: HttpSender
    _kafka_error: str
    _producer_started: bool

    async def _drain(self) -> None:
        grace = self.settings.shutdown.grace_s
        drained = await self.dispatcher.drain(grace)
        abandoned = await self.dispatcher.close()
        log.info("deliveries_drained", complete=drained, abandoned=abandoned)

    async def _close(self) -> None:
        """Steps 4-8 of the shutdown order. Each step runs even if an earlier one failed, and
        each is bounded so the whole sequence ends before ``shutdown.hard_deadline_s`` even
        with the cluster away (then nothing can be committed: the records stay unsettled
        and are consumed again, which is what at-least-once asks)."""
        if not self.stopping.is_set():
            self.systemd.stopping("stopping")
        self.stopping.set()
        s = self.settings.shutdown
        end = time.monotonic() + max(5.0, s.hard_deadline_s - s.grace_s - 2.0)
        kafka_away = self.source.probe_failing or bool(self._kafka_error)
        await bounded("close_lanes", self.dispatcher.close(), end)
        if self.source.started and not kafka_away:
            await bounded("final_commit", self.source.commit(), end, cap_s=10.0)
        elif self.source.started:
            log.warning("final_commit_skipped", reason="kafka unreachable",
                        hint="unsettled records are consumed again after restart")  # fmt: skip
        await close_quietly(self._http)
        # Stopped even when start() failed half-way, so no connection or task is left open.
        cap = 2.0 if kafka_away else 10.0
        await bounded("producer_stop", closed(self.producer.stop()), end, cap_s=cap)
        self._producer_started = False
        await bounded("consumer_stop", self.source.stop(), end, cap_s=cap)
        await bounded("control_stop", self.control.close(), end, cap_s=cap)
        if self.tracer is not None:
            await stop_tracing(self.tracer, max(0.5, min(TRACE_FLUSH_S, end - time.monotonic())))
        await self.admin.stop()
