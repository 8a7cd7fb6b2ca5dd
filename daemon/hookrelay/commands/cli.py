"""The ``hookrelay`` command line.

::

    hookrelay run       -c FILE                  the daemon (foreground, logs to stdout)
    hookrelay ingest    -c FILE                  Logto's webhooks and the batch API into Kafka
    hookrelay check     -c FILE                  validate configuration (exit 0/1/2)
    hookrelay produce   -c FILE [--topic T] [--validate] FILE|-   publish JSON / JSON-lines events
    hookrelay send-test -c FILE HOOK_ID [--event NAME]   one Logto-style test POST
    hookrelay match     -c FILE [--key K] [--topic T --partition N --offset N]
                        [--show-signatures] [--json] EVENT.json|-
                                                 which hooks an event reaches, which bytes
    hookrelay replay    -c FILE [--hook-id H] [--event E] [--since T] [--group G]
                        [--dead-letter-topic T] [--dry-run]
                                                 re-drive this deployment's dead letters
    hookrelay deliveries -c FILE outcomes|pending|dead-letters [--hook-id H] [--event E]
                        [--delivery-id ID] [--status S] [--reason R] [--since T] [--until T]
                        [--limit N] [--json]
                                                 past outcomes, waiting retries, dead letters
    hookrelay pause     -c FILE HOOK_ID [--reason TEXT]   park a hook's deliveries (all replicas)
    hookrelay resume    -c FILE HOOK_ID [--keep-parked]   deliver again (and release what parked)
    hookrelay release   -c FILE HOOK_ID [--dry-run]       send a hook's parked deliveries now
    hookrelay unblock   -c FILE HOOK_ID [--key KEY]       unblock keys an ordered hook blocked
    hookrelay backfill  -c FILE HOOK_ID --since T [--until T] [--dry-run]
                                                 past events of a window to one hook
    hookrelay import-logto FILE|- [--out F] [--env-out F] [--force]
                                                 Logto's GET /api/hooks JSON → hooks.yaml

Exit codes: 0 success; 1 invalid configuration, failed delivery or runtime error;
2 usage error (argparse's convention).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import orjson

from hookrelay import __version__
from hookrelay.commands import operate
from hookrelay.commands.args import (
    non_negative_int,
    positive_int,
    record_header,
    timestamp_ms,
    write_stdout,
)
from hookrelay.config import (
    Hook,
    Settings,
    Skippable,
    config_warnings,
    load_settings,
    resolve_workers,
)
from hookrelay.errors import ConfigError, TopicsMissingError
from hookrelay.events.catalogue import KNOWN_EVENTS
from hookrelay.kafka.deadletter import REASONS as DEAD_LETTER_REASONS
from hookrelay.ops.logs import LevelFilter, PublicFormatter

DEFAULT_CONFIG = "config/hookrelay.yaml"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookrelay",
        description=(
            "Consume Logto identity events from Kafka and deliver them as Logto-compatible, "
            "signed webhooks with rate limits, retries and a dead-letter topic."
        ),
        epilog="Configuration reference: config/hookrelay.yaml and config/hooks.yaml.",
    )
    parser.add_argument("--version", action="version", version=f"hookrelay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "-c", "--config", default=os.environ.get("HOOKRELAY_CONFIG", DEFAULT_CONFIG),
            help="daemon settings file (default: $HOOKRELAY_CONFIG or %(default)s)",
        )  # fmt: skip
        return p

    add("run", "Run the daemon in the foreground until SIGTERM/SIGINT.")
    add(
        "ingest",
        "Serve the ingest endpoint (section ingest): Logto's webhooks and POST /v1/events "
        "into Kafka, answered 2xx once the broker acknowledged; foreground, logs to stdout.",
    )
    add("check", "Validate the configuration; print problems with file, line and key.")
    produce = add(
        "produce", "Publish events (a JSON object, a JSON array, or JSON lines) to Kafka."
    )
    produce.add_argument("file", help="events file, or - for standard input")
    produce.add_argument("--topic", help="topic to publish to (default: the first kafka.topics)")
    produce.add_argument(
        "--key-field", default=None,
        help="use this top-level member of each event as the record key (e.g. userId)",
    )  # fmt: skip
    produce.add_argument(
        "--header", action="append", default=[], type=record_header, metavar="NAME=VALUE",
        help="add this header to every record, e.g. traceparent=00-<trace id>-<span id>-01 "
        "(repeatable)",
    )  # fmt: skip
    produce.add_argument(
        "--raw", action="store_true",
        help="send records as read, even those the daemon would refuse (to try the "
        "dead-letter path); by default such an event stops the command, naming it",
    )  # fmt: skip
    produce.add_argument(
        "--validate", action="store_true",
        help="also check each event against the published event contract "
        "(config/event.schema.json: the types of Logto's payload members); needs the "
        "'validate' extra: pip install 'hookrelay[validate]'",
    )  # fmt: skip
    replay = add(
        "replay",
        "Re-drive dead-lettered deliveries through the normal path (the retry topic of "
        "deliveries due now); "
        "the running daemon delivers them with the same webhook-id.",
    )
    replay.add_argument(
        "--hook-id", action="append", default=[], help="only this hook (repeatable)"
    )
    replay.add_argument("--event", action="append", default=[], help="only this event (repeatable)")
    replay.add_argument(
        "--reason", action="append", default=[], choices=DEAD_LETTER_REASONS,
        help="only this dead-letter reason, e.g. retries_exhausted (repeatable)",
    )  # fmt: skip
    replay.add_argument(
        "--since",
        type=timestamp_ms,
        help="dead-lettered at or after (ISO-8601, or ago: 15m, 2h, 1d)",
    )
    replay.add_argument(
        "--until", type=timestamp_ms, help="dead-lettered before (ISO-8601, or ago: 15m, 2h, 1d)"
    )
    replay.add_argument("--limit", type=positive_int, help="replay at most this many")
    replay.add_argument(
        "--group", action="append", default=[],
        help="also replay letters written by this consumer group, e.g. this deployment's "
        "former group id (repeatable; by default only kafka.group_id's letters)",
    )  # fmt: skip
    replay.add_argument(
        "--dead-letter-topic", metavar="TOPIC",
        help="read this dead-letter topic instead of the configured one (e.g. hookrelay.dlq "
        "before the names derived from kafka.group_id)",
    )  # fmt: skip
    replay.add_argument(
        "--dry-run", action="store_true",
        help="count what would be replayed and show a sample (--verbose: all); write nothing",
    )  # fmt: skip
    replay.add_argument(
        "--again", action="store_true",
        help="also re-drive letters an earlier replay re-drove (by default they are left alone)",
    )  # fmt: skip
    replay.add_argument("--verbose", action="store_true", help="list every letter selected")
    test = add("send-test", "POST one Logto-style test payload to a hook and print the answer.")
    test.add_argument("hook_id", metavar="HOOK_ID", help="the hook's id from hooks.yaml")
    test.add_argument("--event", default="PostRegister", help="event name (default: %(default)s)")
    _add_match(add("match", "Dry run: which hooks one event would reach, with the exact body "
                   "and headers each would get; sends nothing."))  # fmt: skip
    operate.add_deliveries(add("deliveries", "What happened to past deliveries and what waits now: "
                        "outcomes (the outcome topic), pending (the retry topics), "
                        "dead-letters; read-only."))  # fmt: skip
    operate.add_control(add)
    operate.add_backfill(add)
    _add_import_logto(sub)
    return parser


def _add_match(p: argparse.ArgumentParser) -> None:
    p.add_argument("event", metavar="EVENT.json", help="one event (a record value), or - for stdin")
    p.add_argument("--key", help="the record key (default: none)")
    p.add_argument("--header", action="append", default=[], type=record_header,
                   metavar="NAME=VALUE",
                   help="a header of the record, e.g. its traceparent, which requests carry "
                   "(repeatable)")  # fmt: skip
    p.add_argument(
        "--topic", help="origin topic, for the webhook-id (default: the first kafka.topics)"
    )
    p.add_argument("--partition", type=non_negative_int, default=0,
                   help="origin partition, for the webhook-id (default: %(default)s)")  # fmt: skip
    p.add_argument("--offset", type=non_negative_int, default=0,
                   help="origin offset, for the webhook-id (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--show-signatures", action="store_true",
        help="show logto-signature-sha-256 and webhook-signature instead of *** (credential "
        "headers such as Authorization stay masked)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON document, for scripts")


def _add_import_logto(sub: Any) -> None:
    help_text = (
        "Convert the JSON of Logto's Management API GET /api/hooks into hooks.yaml, with the "
        "signing keys in a separate environment file (mode 0600), never inline."
    )
    p = sub.add_parser("import-logto", help=help_text, description=help_text)
    p.add_argument("file", help="Logto's hooks JSON, or - for standard input")
    p.add_argument("--out", default="hooks.yaml", help="hooks file to write (default: %(default)s)")
    p.add_argument(
        "--env-out", default="hookrelay.env",
        help="environment file for the signing keys (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace existing output files")


def _import_logto(args: argparse.Namespace) -> int:
    from hookrelay.commands.import_logto import convert, parse, write_new  # noqa: PLC0415
    from hookrelay.errors import LogtoImportError  # noqa: PLC0415

    out, env_out = Path(args.out), Path(args.env_out)
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        conversion = convert(parse(raw), env_out.name)
        existing = [path for path in (env_out, out) if path.exists()]
        if existing and not args.force:  # refuse before writing either: no half import
            raise FileExistsError(17, "exists", str(existing[0]))
        for note in conversion.notes:
            print(f"note: {note}", file=sys.stderr)
        if conversion.env_text:
            write_new(env_out, conversion.env_text, mode=0o600, force=args.force)
        write_new(out, conversion.hooks_yaml, mode=0o644, force=args.force)
    except FileExistsError as e:
        print(f"hookrelay: {e.filename} exists; pass --force to replace it", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, LogtoImportError) as e:
        print(f"hookrelay: import-logto: {e}", file=sys.stderr)
        return EXIT_FAILED
    keys = f", signing keys in {env_out} (mode 0600)" if conversion.env_text else ""
    print(f"wrote {conversion.hook_count} hooks to {out}{keys}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hookrelay`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "import-logto":  # reads Logto's JSON, not hookrelay's configuration
        return _import_logto(args)
    # produce and replay sign nothing and serve no API: hooks' keys and the admin token need
    # not be set for them (replay still needs the hook ids).
    skip: tuple[Skippable, ...] = _SKIPPED.get(args.command, ())
    try:
        settings = _worker_snapshot(args) or load_settings(args.config, skip=skip)
    except ConfigError as e:
        print(f"hookrelay: invalid configuration ({len(e.issues)} problem(s)):", file=sys.stderr)
        for issue in e.issues:
            print(f"  {issue}", file=sys.stderr)
        if e.warnings and args.command == "check":
            print("and in the parts that are valid:", file=sys.stderr)
            for warning in e.warnings:
                print(f"  warning: {warning}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as e:  # a worker's environment set by hand
        print(f"hookrelay: {e}", file=sys.stderr)
        return EXIT_FAILED
    handler = {
        "run": _run, "ingest": _ingest, "check": _check, "produce": _produce,
        "send-test": _send_test, "replay": _replay, "match": _match,
        **operate.HANDLERS,
    }  # fmt: skip
    if args.command not in ("run", "ingest"):
        _library_errors_only()
    try:
        return handler[args.command](settings, args)
    except KeyboardInterrupt:  # Ctrl-C of a one-shot command: its cleanup ran, no traceback
        print(f"hookrelay: {args.command} interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _worker_snapshot(args: argparse.Namespace) -> Settings | None:
    """For a worker process of ``run`` (``workers`` > 1), the configuration its supervisor
    accepted and runs (``app.worker.SettingsSnapshot``), instead of the files; else None.
    Raises ``ValueError`` for a worker's environment without a snapshot (see
    ``WorkerRole.from_environment``)."""
    if args.command != "run" or not os.environ.get("HOOKRELAY_WORKER"):
        return None
    from hookrelay.app.worker import WorkerRole, read_snapshot  # noqa: PLC0415

    role = WorkerRole.from_environment()
    return None if role is None else read_snapshot(role.snapshot)


def _library_errors_only() -> None:
    """One-shot commands report their own failures; of the libraries' log lines (aiokafka's,
    aiohttp's) only errors reach stderr, each on its own line. Python would otherwise print
    every warning raw, and aiokafka logs "Topic … not found in cluster metadata" at ERROR
    while the broker creates a new topic: printed beside ``produced 1 events``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(LevelFilter())  # aiokafka's "not found" is no error here either
    handler.addFilter(lambda record: record.levelno >= logging.ERROR)
    handler.setFormatter(PublicFormatter("hookrelay: %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


_SKIPPED: dict[str, tuple[Skippable, ...]] = {
    "run": ("ingest",),
    "ingest": ("hooks", "admin", "tracing"),
    "produce": ("hooks", "admin", "ingest", "tracing"),
    "replay": ("admin", "signing_keys", "headers", "ingest", "tracing"),
    "send-test": ("ingest", "tracing"),
    # builds signed requests: the keys and headers are needed
    "match": ("admin", "ingest", "tracing"),
    "deliveries": ("admin", "signing_keys", "headers", "ingest", "tracing"),
    "pause": ("admin", "signing_keys", "headers", "ingest", "tracing"),
    "resume": ("admin", "signing_keys", "headers", "ingest", "tracing"),
    "release": ("admin", "signing_keys", "headers", "ingest", "tracing"),
    "unblock": ("admin", "signing_keys", "headers", "ingest", "tracing"),
    "backfill": ("admin", "signing_keys", "headers", "ingest", "tracing"),
}
"""What each command leaves out of the configuration: the daemon and the ingest process
share a file but not secrets (each environment holds only its own), and only the daemon
traces (so only it needs the tracing extra when tracing is enabled)."""


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from hookrelay.commands.replay import ReplayFilter, replay  # noqa: PLC0415

    known = [hook.id for hook in settings.hooks]
    for hook_id in args.hook_id:
        if hook_id not in known:
            print(f"warning: --hook-id {hook_id!r} names no configured hook (known: "
                  f"{', '.join(known) or 'none'}); dead letters of a hook that is not "
                  "configured are never replayed", file=sys.stderr)  # fmt: skip
    selection = ReplayFilter(
        tuple(args.hook_id), tuple(args.event), tuple(args.reason), args.since, args.until
    )
    try:
        summary = asyncio.run(
            replay(
                settings, selection, dry_run=args.dry_run, limit=args.limit,
                groups=tuple(args.group), topic=args.dead_letter_topic, again=args.again,
            )
        )  # fmt: skip
    except Exception as e:
        print(f"hookrelay: replay failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    shown = summary.lines if args.verbose else summary.lines[:REPLAY_SAMPLE]
    for line in shown:
        print(line)
    if len(shown) < len(summary.lines):
        print(f"... and {len(summary.lines) - len(shown)} more (--verbose lists them all)")
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"{verb} {summary.selected} of {summary.read} dead letters from "
        f"{args.dead_letter_topic or settings.dead_letter_topic} "
        f"({_replayed_before(summary.already_replayed, args.again)}; not replayable: "
        f"{summary.not_replayable} invalid records; {summary.unknown_hook} for hooks not "
        f"configured; {summary.damaged} damaged; {summary.other_group} of other deployments "
        f"(see --group); "
        f"{summary.foreign_origin} from topics not in kafka.topics)"
    )
    if summary.unblocked:
        verb = "would unblock" if args.dry_run else "unblocked"
        print(f"{verb} {summary.unblocked} keys their hooks blocked after a dead letter")
    return EXIT_OK


def _replayed_before(count: int, again: bool) -> str:
    """How many letters an earlier replay re-drove: left alone, or (--again) sent again."""
    if again:
        return f"{count} of them replayed before, sent again (--again)"
    return f"already replayed: {count}, left alone (--again re-sends them)"


REPLAY_SAMPLE = 10
"""Letters listed by replay without --verbose: a sample, then a count."""


def _check(settings: Settings, _args: argparse.Namespace) -> int:
    for warning in config_warnings(settings):
        print(f"warning: {warning}")
    enabled = sum(1 for h in settings.hooks if h.enabled)
    ingest = ""
    if settings.ingest is not None:
        sources = len(settings.ingest.sources)
        batch = "on" if settings.ingest.batch is not None else "off"
        ingest = f"; ingest: {sources} source{'s' * (sources != 1)}, batch API {batch}"
    print(f"{settings.source_file}: ok ({len(settings.hooks)} hooks, {enabled} enabled{ingest})")
    print(f"  workers: {_workers_note(settings)}")
    for hook in settings.hooks:
        for line in _hook_notes(hook, others=len(settings.hooks) - 1):
            print(f"  hook {hook.id}: {line}")
    return EXIT_OK


def _workers_note(settings: Settings) -> str:
    """The resolved worker count, and what it means (README: Worker processes)."""
    workers = resolve_workers(settings.workers)
    source = " (auto: the CPUs this process may use)" if settings.workers == "auto" else ""
    if workers == 1:
        return f"1{source}: one process"
    return (f"{workers}{source}: a supervisor and {workers} worker processes in group "
            f"{settings.group_id}; each worker sends 1/{workers} of every rate limit")  # fmt: skip


def _hook_notes(hook: Hook, others: int) -> list[str]:
    """What ``check`` says about a hook beyond its validity: filter, rate limit, ordering."""
    notes = []
    if hook.filter is not None:
        notes.append(f"filter: {hook.filter}")
    limit = hook.rate_limit
    if limit is not None and limit.adaptive is not None:
        floor = limit.adaptive.effective_floor(limit.per_second)
        notes.append(f"rate_limit: adaptive, between {floor:g} and {limit.per_second:g} "
                     "requests/s (README: Adaptive rate limit)")  # fmt: skip
    if hook.ordering == "key":
        shared = ""
        if others:
            shared = (f"; its held deliveries count towards the backpressure of {others} other"
                      f" hook{'s' * (others != 1)} (README: Ordered delivery)")  # fmt: skip
        notes.append("ordering: key (one delivery per record key at a time, in offset "
                     f"order{shared})")  # fmt: skip
    if hook.ordering_after_dead_letter == "block":
        notes.append("ordering_after_dead_letter: block (a dead-lettered delivery blocks its "
                     f"key until hookrelay unblock {hook.id} or a replay)")  # fmt: skip
    return notes


def _event_loop_policy() -> None:
    try:
        import uvloop  # noqa: PLC0415  (optional speed-up, installed with the 'fast' extra)
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    """The daemon: one process (``workers`` 1), the supervisor of N worker processes, or, in
    a process the supervisor started (``HOOKRELAY_WORKER`` set), one of those workers."""
    # Imported here: keeps `check` free of aiokafka start-up.
    from hookrelay.app import Daemon, Supervisor, WorkerRole  # noqa: PLC0415
    from hookrelay.app.worker import supervisor_watched  # noqa: PLC0415
    from hookrelay.ops.logs import bind_process  # noqa: PLC0415

    role = WorkerRole.from_environment()
    if role is not None:
        bind_process(worker=role.index)

        async def work() -> int:
            daemon = Daemon(
                role.settings(settings), load=role.load,
                on_listening=lambda port: role.report(admin_port=port),
            )  # fmt: skip
            daemon.install_signal_handlers()

            def supervisor_gone() -> None:
                role.forget_snapshot()  # its keys must not outlive a supervisor's kill -9
                daemon.request_stop()

            async with supervisor_watched(supervisor_gone):
                return await daemon.run()

        return _serve(settings, work, "daemon_failed", on_failure=role.report)
    workers = resolve_workers(settings.workers)

    async def run() -> int:
        process = Daemon(settings) if workers == 1 else Supervisor(settings, workers)
        process.install_signal_handlers()
        return await process.run()

    return _serve(settings, run, "daemon_failed")


def _ingest(settings: Settings, _args: argparse.Namespace) -> int:
    from hookrelay.app import IngestProcess  # noqa: PLC0415

    if settings.ingest is None or not settings.ingest.serves_anything:
        print(
            f"hookrelay: {settings.source_file}: the ingest section configures no source and "
            'no batch API; nothing to serve (README "Connect Logto")',
            file=sys.stderr,
        )
        return EXIT_FAILED

    async def run() -> int:
        process = IngestProcess(settings)
        process.install_signal_handlers()
        return await process.run()

    return _serve(settings, run, "ingest_failed")


def _serve(
    settings: Settings,
    run: Callable[[], Coroutine[Any, Any, int]],
    failed: str,
    on_failure: Callable[..., None] | None = None,
) -> int:
    """Run a long-lived process (``run``) in the foreground, logging as configured; its exit
    status, or 1 with the ``failed`` event logged (the causes, and a hint when one is known;
    also told to ``on_failure`` as ``failed=`` and ``hint=``: a worker's supervisor)."""
    from hookrelay.app import register_settings_secrets  # noqa: PLC0415
    from hookrelay.ops.logs import configure_logging, get_logger  # noqa: PLC0415

    configure_logging(settings.logging.level, settings.logging.format)
    register_settings_secrets(settings)
    _event_loop_policy()
    try:
        return asyncio.run(run())
    except TopicsMissingError as e:
        print(f"hookrelay: {e}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:
        causes = _leaves(e)
        details = {"hint": hint} if (hint := _hint(causes)) else {}
        error = "; ".join(f"{type(c).__name__}: {c}" for c in causes)
        get_logger("hookrelay.cli").exception(failed, error=error, **details)
        if on_failure is not None:
            on_failure(failed=error, hint=hint)
        return EXIT_FAILED


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions behind ``error``: a TaskGroup wraps its tasks' in an ExceptionGroup,
    whose own text ("unhandled errors in a TaskGroup") says nothing of the cause."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _hint(causes: list[BaseException]) -> str | None:
    """What to change for a failure the configuration caused but could not foresee (the
    broker's own limits)."""
    names = {type(cause).__name__ for cause in causes}
    if "InvalidSessionTimeoutError" in names:
        return (
            "the broker refused kafka.session_timeout_s: it must lie between the broker's "
            "group.min.session.timeout.ms and group.max.session.timeout.ms (6 s and 30 min "
            "by default)"
        )
    return None


def _produce(settings: Settings, args: argparse.Namespace) -> int:
    from hookrelay.commands.produce import (  # noqa: PLC0415
        contract_problems,
        invalid_events,
        publish,
        read_events,
    )

    try:
        events = read_events(args.file)
    except (OSError, orjson.JSONDecodeError) as e:
        print(f"hookrelay: cannot read events from {args.file}: {e}", file=sys.stderr)
        return EXIT_FAILED
    problems = [] if args.raw else invalid_events(events, settings.delivery.max_event_bytes)
    if args.validate and not args.raw and not problems:
        try:
            problems = contract_problems(events)
        except ModuleNotFoundError:
            print("hookrelay: --validate needs the jsonschema library: "
                  "pip install 'hookrelay[validate]'", file=sys.stderr)  # fmt: skip
            return EXIT_FAILED
    if problems:
        print(f"hookrelay: {args.file}: {len(problems)} invalid event(s), nothing produced "
              "(--raw sends them anyway, to the dead-letter path):", file=sys.stderr)  # fmt: skip
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_FAILED
    values = [value for _, value in events]
    topic = args.topic or settings.kafka.topics[0]

    try:
        asyncio.run(publish(settings.kafka, topic, values, args.key_field, args.header))
    except Exception as e:
        print(f"hookrelay: producing to {topic} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"produced {len(values)} events to {topic}")
    return EXIT_OK


def _send_test(settings: Settings, args: argparse.Namespace) -> int:
    from hookrelay.app import register_settings_secrets  # noqa: PLC0415
    from hookrelay.delivery.sender import HttpSender  # noqa: PLC0415
    from hookrelay.events.test_payload import test_request  # noqa: PLC0415
    from hookrelay.ops.logs import masked, redacted_url  # noqa: PLC0415

    if not args.event.strip():
        print("hookrelay: --event needs an event name, e.g. User.Created", file=sys.stderr)
        return EXIT_USAGE
    hook = next((h for h in settings.hooks if h.id == args.hook_id), None)
    if hook is None:
        known = ", ".join(h.id for h in settings.hooks) or "none"
        print(f"hookrelay: no hook with id {args.hook_id!r} (known: {known})", file=sys.stderr)
        return EXIT_USAGE
    if args.event not in KNOWN_EVENTS:
        print(f"warning: {args.event!r} is not a known Logto hook event", file=sys.stderr)
    if not hook.enabled:
        print(f"note: hook {hook.id!r} is disabled; sending the test anyway", file=sys.stderr)
    did, body = test_request(hook.id, args.event, int(time.time() * 1000))

    async def send() -> Any:
        sender = HttpSender(settings.http, settings.delivery)
        try:  # start inside: a client whose start failed is closed too
            await sender.start()
            return await sender.attempt(hook, did, body)
        finally:
            await sender.close()

    result = asyncio.run(send())
    signed = "signed" if hook.active_signing_keys else "unsigned"
    print(f"POST {redacted_url(hook.url)}  event={args.event}  webhook-id={did}  ({signed})")
    if result.status is not None:
        print(f"status: {result.status}  ({result.duration_s * 1000:.0f} ms)")
        register_settings_secrets(settings)  # an endpoint may echo the key or a credential
        print(masked(result.response_head[:1024].decode("utf-8", "replace")))
    if not result.ok:
        print(f"hookrelay: test delivery failed: {result.error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _match(settings: Settings, args: argparse.Namespace) -> int:
    from hookrelay.commands import match  # noqa: PLC0415
    from hookrelay.errors import InvalidEventError  # noqa: PLC0415

    try:
        value = match.read_value(args.event)
    except OSError as e:
        print(f"hookrelay: cannot read the event from {args.event}: {e}", file=sys.stderr)
        return EXIT_FAILED
    topic = args.topic or settings.kafka.topics[0]
    if topic not in settings.kafka.topics:
        print(f"note: topic {topic!r} is not in kafka.topics; the daemon does not consume it",
              file=sys.stderr)  # fmt: skip
    key = None if args.key is None else args.key.encode("utf-8")
    origin = match.origin_of(topic, args.partition, args.offset)
    try:
        report = match.match_event(
            settings, value, key, origin, show_signatures=args.show_signatures,
            headers=args.header,
        )  # fmt: skip
    except InvalidEventError as e:
        if args.json:
            write_stdout(match.invalid_json(e))
        print(f"hookrelay: {match.invalid_text(e)}", file=sys.stderr)
        return EXIT_FAILED
    if report.event.name not in KNOWN_EVENTS:
        print(f"warning: {report.event.name!r} is not a known Logto hook event", file=sys.stderr)
    write_stdout(match.report_json(report) if args.json else match.render_text(report).encode())
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
