"""The operating commands: ``deliveries`` (what happened, what waits), ``pause``, ``resume``,
``release`` and ``unblock`` (decisions every replica follows, through the control topic, see
``kafka.control``). ``cli`` wires their parsers and handlers; each handler takes the loaded
settings and the parsed arguments and returns the exit status (0 done, 1 failed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hookrelay.commands.args import positive_int, timestamp_ms, write_stdout
from hookrelay.config import Settings
from hookrelay.events.outcome import STATUSES

if TYPE_CHECKING:
    from hookrelay.kafka.control import Release

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_deliveries(p: argparse.ArgumentParser) -> None:
    p.add_argument("view", choices=("outcomes", "pending", "dead-letters"),
                   help="outcomes: how deliveries ended (needs outcomes.enabled); pending: "
                   "retries waiting, with due times; dead-letters: the dead-letter topic, "
                   "invalid records included")  # fmt: skip
    p.add_argument("--hook-id", action="append", default=[], help="only this hook (repeatable)")
    p.add_argument("--event", action="append", default=[], help="only this event (repeatable)")
    p.add_argument("--key", action="append", default=[],
                   help="only events whose Kafka record key is this, e.g. a user id "
                   "(repeatable)")  # fmt: skip
    p.add_argument(
        "--delivery-id",
        action="append",
        default=[],
        help="only this delivery: the webhook-id its receiver got (repeatable)",
    )
    p.add_argument("--status", action="append", default=[], choices=STATUSES,
                   help="outcomes: only this status (repeatable)")  # fmt: skip
    p.add_argument("--reason", action="append", default=[],
                   help="dead-letters: only this reason, e.g. not_json (repeatable)")  # fmt: skip
    p.add_argument("--since", type=timestamp_ms,
                   help="written at or after (ISO-8601, or ago: 15m, 2h, 1d; outcomes: settled, "
                   "dead-letters: "
                   "dead-lettered, pending: parked)")  # fmt: skip
    p.add_argument("--until", type=timestamp_ms, help="written before (ISO-8601, or ago)")
    p.add_argument(
        "--limit",
        type=positive_int,
        default=100,
        help="show the newest N matches (default: %(default)s; --json shows all)",
    )
    p.add_argument("--json", action="store_true", help="one JSON document, for scripts")


def add_control(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    pause = add("pause", "Pause a hook for every replica, kept across restarts: its deliveries "
                "are parked in the retry topics, never attempted nor dead-lettered.")  # fmt: skip
    pause.add_argument("--reason", default="", help="why (shown by the admin API and logs)")
    resume = add("resume", "Resume a paused hook, and release the deliveries it parked "
                 "meanwhile so they are sent now.")  # fmt: skip
    resume.add_argument("--keep-parked", action="store_true",
                        help="leave parked deliveries to come back when due")  # fmt: skip
    release = add("release", "Send a hook's parked deliveries now (the retries it is owed), "
                  "with their webhook-id and attempt history.")  # fmt: skip
    release.add_argument("--dry-run", action="store_true",
                         help="count and list what would be released; write nothing")  # fmt: skip
    unblock = add("unblock", "Unblock the record keys an ordered hook blocked after a dead "
                  "letter (ordering_after_dead_letter: block), for every replica: their later "
                  "events are delivered again.")  # fmt: skip
    unblock.add_argument("--key", action="append", default=[],
                         help="only this record key, as UTF-8 text (repeatable); default: "
                         "every key the hook blocks now")  # fmt: skip
    for p in (pause, resume, release, unblock):
        p.add_argument("hook_id", metavar="HOOK_ID", help="a hook id of the configuration")
        p.add_argument("--force", action="store_true",
                       help="act on a hook id the configuration does not have (yet): one a "
                       "rolling update is adding, or one another file configures")  # fmt: skip


def show_deliveries(settings: Settings, args: argparse.Namespace) -> int:
    from hookrelay.commands import deliveries  # noqa: PLC0415

    selection = deliveries.Selection(
        tuple(args.hook_id), tuple(args.event), tuple(args.delivery_id), tuple(args.status),
        args.since, args.until, tuple(args.key),
    )  # fmt: skip
    if args.since is not None and args.until is not None and args.until <= args.since:
        print("hookrelay: --until must be later than --since", file=sys.stderr)
        return EXIT_USAGE
    if args.view == "outcomes" and not settings.outcomes.enabled:
        print(f"note: outcomes.enabled is off; reading {settings.outcomes.topic} anyway (what "
              "an earlier configuration wrote)", file=sys.stderr)  # fmt: skip
    try:
        if args.view == "outcomes":
            found = asyncio.run(deliveries.outcomes(settings, selection))
        elif args.view == "pending":
            found = asyncio.run(deliveries.pending(settings, selection))
        else:
            found = asyncio.run(deliveries.dead_letters(settings, selection, args.reason))
    except Exception as e:
        print(f"hookrelay: deliveries failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        write_stdout(deliveries.render_json(args.view, found, None))
    else:
        deliveries.render_tables(args.view, found, args.limit, deliveries.console())
    return EXIT_OK


def pause(settings: Settings, args: argparse.Namespace) -> int:
    from hookrelay.kafka.control import set_paused  # noqa: PLC0415

    if _unknown_hook(settings, args):
        return EXIT_FAILED
    where = "held in memory, in order," if settings.ordered(args.hook_id) else "parked"
    return _control(lambda: set_paused(settings, args.hook_id, True, args.reason),
                    f"paused {args.hook_id}: its deliveries are {where} until "
                    f"hookrelay resume {args.hook_id}")  # fmt: skip


def resume(settings: Settings, args: argparse.Namespace) -> int:
    from hookrelay.kafka.control import resume as resume_hook  # noqa: PLC0415

    if _unknown_hook(settings, args):
        return EXIT_FAILED
    try:
        result = asyncio.run(
            resume_hook(settings, args.hook_id, release_parked=not args.keep_parked)
        )
    except Exception as e:
        print(f"hookrelay: resume failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"resumed {args.hook_id}")
    if result is not None:
        _print_release(settings, result, dry_run=False)
    return EXIT_OK


def release_parked(settings: Settings, args: argparse.Namespace) -> int:
    from hookrelay.kafka.control import release  # noqa: PLC0415

    if _unknown_hook(settings, args):
        return EXIT_FAILED
    try:
        result = asyncio.run(release(settings, args.hook_id, dry_run=args.dry_run))
    except Exception as e:
        print(f"hookrelay: release failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    _print_release(settings, result, dry_run=args.dry_run)
    return EXIT_OK


def unblock(settings: Settings, args: argparse.Namespace) -> int:
    from hookrelay.kafka.control import unblock as unblock_keys  # noqa: PLC0415

    if _unknown_hook(settings, args):
        return EXIT_FAILED
    wanted = [key.encode() for key in args.key] or None
    try:
        found = asyncio.run(unblock_keys(settings, args.hook_id, wanted))
    except Exception as e:
        print(f"hookrelay: unblock failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    for key in found[:20]:
        print(f"  {key.decode('utf-8', 'replace')}")
    if len(found) > 20:
        print(f"  ... and {len(found) - 20} more")
    for key in sorted(set(wanted or ()) - set(found)):
        print(f"note: {key.decode()!r} was not blocked", file=sys.stderr)
    print(f"unblocked {len(found)} keys of {args.hook_id}")
    return EXIT_OK


def _print_release(settings: Settings, result: Release, *, dry_run: bool) -> None:
    for retry in sorted(result.waiting, key=lambda r: r.due_at_ms)[:20]:
        due = datetime.fromtimestamp(retry.due_at_ms / 1000, UTC).isoformat(timespec="seconds")
        print(f"  {retry.delivery_id} event={retry.event} attempts={retry.attempts} due={due}")
    if len(result.waiting) > 20:
        print(f"  ... and {len(result.waiting) - 20} more")
    verb = "would release" if dry_run else "released"
    where = "" if dry_run or not result.waiting else f": due now in {settings.now_topic}"
    print(f"{verb} {len(result.waiting)} parked deliveries of {result.hook_id}{where}")
    if settings.ordered(result.hook_id):
        held = "would be attempted" if dry_run else "are attempted"
        print(f"{result.hook_id} is ordered: the retries its replicas hold in memory {held} "
              "now (GET /v1/hooks/<id> lists its blocked keys)")  # fmt: skip


def _control(write: Callable[[], Coroutine[Any, Any, None]], done: str) -> int:
    try:
        asyncio.run(write())
    except Exception as e:
        print(f"hookrelay: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(done)
    return EXIT_OK


def _unknown_hook(settings: Settings, args: argparse.Namespace) -> bool:
    """True (said on stderr) when ``args.hook_id`` is not configured and not ``--force``d: a
    typo must not pause nothing, or a hook added later under that id."""
    known = [hook.id for hook in settings.hooks]
    if args.hook_id in known:
        return False
    where = f"names no configured hook (known: {', '.join(known) or 'none'})"
    if args.force:
        print(f"warning: {args.hook_id!r} {where}; going on (--force)", file=sys.stderr)
        return False
    print(f"hookrelay: {args.hook_id!r} {where}; nothing done (--force acts on it anyway)",
          file=sys.stderr)  # fmt: skip
    return True


def add_backfill(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("backfill", "Deliver the past events of a time window to one hook (a hook added "
            "later), through the running daemon with the hook's rate limit and the events' "
            "own webhook-ids.")  # fmt: skip
    p.add_argument("hook_id", metavar="HOOK_ID", help="a configured, enabled hook")
    p.add_argument("--since", type=timestamp_ms, required=True,
                   help="first event time (ISO-8601, or ago: 15m, 2h, 1d; the Kafka record's "
                   "timestamp)")  # fmt: skip
    p.add_argument("--until", type=timestamp_ms,
                   help="events before (ISO-8601, or ago; default: up to now)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true",
                   help="count the events the hook would get; write nothing")  # fmt: skip


def run_backfill(settings: Settings, args: argparse.Namespace) -> int:
    from rich.progress import Progress  # noqa: PLC0415

    from hookrelay.commands.backfill import backfill, window_size  # noqa: PLC0415
    from hookrelay.commands.deliveries import console  # noqa: PLC0415

    hook = next((h for h in settings.hooks if h.id == args.hook_id), None)
    if hook is None or not hook.enabled:
        state = "is disabled" if hook is not None else "is not configured"
        print(f"hookrelay: hook {args.hook_id!r} {state}; backfill delivers through the "
              "running daemon, which serves only enabled hooks", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    if args.until is not None and args.until <= args.since:
        print("hookrelay: --until must be later than --since", file=sys.stderr)
        return EXIT_USAGE
    try:
        size = asyncio.run(window_size(settings, args.since, args.until))
        print(f"{size} records in {', '.join(settings.kafka.topics)} from {_when(args.since)} "
              f"to {_when(args.until) if args.until else 'now'}")  # fmt: skip
        out = console()
        with Progress(console=out, disable=not out.is_terminal, transient=True) as bar:
            task = bar.add_task("reading", total=size)
            summary = asyncio.run(
                backfill(settings, hook, args.since, args.until, dry_run=args.dry_run,
                         progress=lambda n: bar.advance(task, n))
            )  # fmt: skip
    except Exception as e:
        print(f"hookrelay: backfill failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    skipped = f" ({summary.invalid} invalid records skipped)" if summary.invalid else ""
    if args.dry_run:
        print(f"would send {summary.matched} events of {summary.read} records to {hook.id}"
              f"{skipped}")  # fmt: skip
    else:
        print(f"sent {summary.written} events of {summary.read} records to {hook.id}{skipped}: "
              f"queued in {settings.now_topic}, the running daemon delivers them")  # fmt: skip
    return EXIT_OK


def _when(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="seconds")


HANDLERS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "deliveries": show_deliveries, "pause": pause, "resume": resume, "release": release_parked,
    "unblock": unblock, "backfill": run_backfill,
}  # fmt: skip
"""Command name → handler."""
