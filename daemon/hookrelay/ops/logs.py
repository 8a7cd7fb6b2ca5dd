"""structlog set-up: JSON lines (or a console renderer) on stdout.

Event names are stable snake_case (``delivery_failed``, ``offsets_committed``); context is
bound as keys (``hook_id``, ``delivery_id``, ``event``, ``attempt``, ``status``). Payload
bodies are never logged. Signing keys never reach a log call, and ``redact_secrets`` replaces
any known secret value that slips into an event dict anyway.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable, MutableMapping
from typing import Any, Final
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

import orjson
import structlog
from aiokafka.errors import LeaderNotAvailableError, NotLeaderForPartitionError

_SECRETS: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values (signing keys) so the log redactor can mask them."""
    _SECRETS.update(v for v in values if len(v) >= 4)


def redacted_url(url: str) -> str:
    """``url`` fit to show (admin API, logs): user info and query string, where endpoints
    often carry a token, become ``***``; scheme, host, port and path stay."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


_URL: Final = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]+")


def public_text(text: str) -> str:
    """``text`` (an error message, a traceback) fit for any output — logs, the admin API,
    dead-letter headers: every URL in it shown as ``redacted_url`` shows it (the admin API's
    ``/v1/hooks`` masks hook URLs the same way), every registered secret as ``***``."""

    def shown(match: re.Match[str]) -> str:
        try:
            return redacted_url(match.group())
        except ValueError:  # not a URL urlsplit can read (e.g. "http://[::1"): not a secret
            return match.group()

    # Secrets first: a URL's query may hold a character the URL pattern stops at (an
    # unquoted %27 is "'"), and the part after it must not survive the URL mask.
    return _URL.sub(shown, _redact(text))


def masked(text: str) -> str:
    """``text`` with every registered secret shown as ``***``: for what an endpoint answered
    (the admin API shows it), which may echo the request's signing key or credentials."""
    return _redact(text) if _SECRETS else text


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that ``redacted_url`` hides (user info, its password, the query
    string), to register with the log redactor wherever they may surface. Query values one
    by one are not: ``?format=json`` would mask every "json" in the log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found += [userinfo, userinfo.partition(":")[2]]
    # As written, and as HTTP libraries print it back: percent-decoded ("%27" → "'").
    found += [parts.query, unquote(parts.query), unquote_plus(parts.query)]
    return list(dict.fromkeys(text for text in found if text))


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace any registered secret inside string values with ``***``,
    also inside lists, tuples and dicts (an ``errors`` list, a nested context)."""
    if not _SECRETS:
        return event_dict
    for key, value in event_dict.items():
        event_dict[key] = _redact_value(value)
    return event_dict


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _redact(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(item) for item in value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    return value


def _redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class PublicFormatter(logging.Formatter):
    """A stdlib formatter whose lines, traceback included, pass through ``public_text``."""

    def format(self, record: logging.LogRecord) -> str:
        return public_text(super().format(record))


class RepeatFilter(logging.Filter):
    """Let the same library message (logger + format string) through once per ``window_s``.

    aiokafka logs every failed reconnect at ERROR, dozens per second while a broker is away;
    hookrelay's own ``kafka_unreachable`` line already says what matters. A message that
    comes back after its window carries ``suppressed``: how many repeats were dropped.
    """

    def __init__(self, window_s: float = 30.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self._window_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.suppressed = last[1]
        if len(self._seen) > 1024:
            self._seen.clear()  # bounded: messages are format strings, but stay safe
        self._seen[key] = (now, 0)
        return True


class LevelFilter(logging.Filter):
    """Lower library messages that are not errors for hookrelay to WARNING:

    - aiokafka logs "Topic %s not found in cluster metadata" at ERROR on every metadata
      refresh while an event topic does not exist yet, which the daemon expects and reports
      itself (``event_topics_missing``, and ``/readyz``);
    - "Failed fetch offsets from %s: %s" with a partition that has no leader yet
      (``NotLeaderForPartitionError``, ``LeaderNotAvailableError``): a deployment's first
      start creates its retry, dead-letter and control topics and reads them at once, and
      two of three first starts logged it at ERROR, for a reset aiokafka retries after its
      back-off. A leader that stays away is the broker's outage, which the daemon reports.
    """

    DEMOTED: Final = frozenset({("aiokafka.cluster", "Topic %s not found in cluster metadata")})
    LEADERLESS: Final = ("aiokafka.consumer.fetcher", "Failed fetch offsets from %s: %s")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING and (
            (record.name, record.msg) in self.DEMOTED or self._leaderless(record)
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True

    def _leaderless(self, record: logging.LogRecord) -> bool:
        args = record.args
        return (
            (record.name, record.msg) == self.LEADERLESS
            and isinstance(args, tuple)
            and len(args) == 2
            and isinstance(args[1], NotLeaderForPartitionError | LeaderNotAvailableError)
        )


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode("utf-8")


_level = logging.INFO
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "exception": logging.ERROR,
           "critical": logging.CRITICAL}  # fmt: skip


def debug_enabled() -> bool:
    """True when ``configure_logging`` set level ``debug``: lets a hot path skip building the
    fields of a debug event that would be dropped anyway."""
    return _level <= logging.DEBUG


def _drop_below_level(
    _logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: drop events below the level set last by ``configure_logging``."""
    if _LEVELS.get(method, logging.INFO) < _level:
        raise structlog.DropEvent
    return event_dict


class _Renderer:
    """The last renderer ``configure_logging`` chose (JSON or console), behind a stable
    object: module loggers are cached with their processor chain, so a reload that changes
    the format must change what this object calls, not the chain."""

    def __init__(self) -> None:
        self.current: Any = structlog.processors.JSONRenderer(serializer=_orjson_dumps)

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        rendered = self.current(logger, method, event_dict)
        # Redacted again once rendered: a library's exc_info becomes text only in the
        # renderer's chain, and JSON escaping may split a secret the dict pass saw whole.
        return _redact(rendered) if _SECRETS and isinstance(rendered, str) else rendered


_RENDERER = _Renderer()
_PROCESS_FIELDS: dict[str, Any] = {}


def bind_process(**fields: Any) -> None:
    """Add ``fields`` to every line this process logs from now on, from any thread (a worker
    process's ``worker`` index)."""
    _PROCESS_FIELDS.update(fields)


def _add_process_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for name, value in _PROCESS_FIELDS.items():
        event_dict.setdefault(name, value)
    return event_dict


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    _add_process_fields,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog (and stdlib logging, for aiokafka/aiohttp) to write to stdout.

    ``level`` is ``debug|info|warning|error``; ``fmt`` is ``json|console``. Calling it again
    (a configuration reload) changes level and format at once, loggers already in use
    included.
    """
    global _level  # noqa: PLW0603  # one process-wide level, read on the hot path
    _level = logging.getLevelName(level.upper())
    if fmt == "console":
        _RENDERER.current = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    else:
        _RENDERER.current = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    structlog.configure(
        processors=[
            _drop_below_level, *_SHARED, structlog.processors.format_exc_info,
            redact_secrets, _RENDERER,
        ],
        # Every level reaches the chain; _drop_below_level filters by the current level, so a
        # reload can lower or raise it for loggers that are already cached.
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        # One write per line (message and newline together): worker processes share the
        # supervisor's stdout, and with PYTHONUNBUFFERED (the systemd unit's) print() wrote
        # the newline apart, so another process's line could land between the two.
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        # Module loggers are lazy proxies; caching binds each once, after this configuration,
        # instead of rebuilding the processor chain on every call (a hot-path cost).
        cache_logger_on_first_use=True,
    )  # fmt: skip
    # Libraries log through stdlib logging; send their warnings through the same renderer.
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(LevelFilter())
    handler.addFilter(RepeatFilter())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *_SHARED,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=("suppressed",)),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # A library's exc_info (aiohttp.server's "Error handling request") becomes
                # text here, so the redactor below sees it.
                structlog.processors.format_exc_info,
                redact_secrets,
                _RENDERER,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # aiokafka and aiohttp are chatty at INFO; their warnings and errors are what operators need.
    root.setLevel(max(_level, logging.WARNING))


def get_logger(name: str) -> Any:
    """A lazy structlog logger bound with ``component=name``."""
    # Stay a lazy proxy: binding here would freeze structlog's default configuration into
    # module-level loggers created at import time, before configure_logging() runs.
    return structlog.get_logger(component=name)
