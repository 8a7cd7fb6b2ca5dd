"""structlog set-up: JSON lines (or a console renderer) on stdout.

Event names are stable snake_case (``delivery_failed``, ``offsets_committed``); context is
bound as keys (``hook_id``, ``delivery_id``, ``event``, ``attempt``, ``status``). Payload
bodies are never logged. Signing keys never reach a log call, and ``redact_secrets`` replaces
any known secret value that slips into an event dict anyway.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson
import structlog

_SECRETS: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values (signing keys) so the log redactor can mask them."""
    _SECRETS.update(v for v in values if len(v) >= 4)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace any registered secret inside string values with ``***``."""
    if not _SECRETS:
        return event_dict
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = _redact(value)
    return event_dict


def _redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode("utf-8")


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog (and stdlib logging, for aiokafka/aiohttp) to write to stdout.

    ``level`` is ``debug|info|warning|error``; ``fmt`` is ``json|console``.
    """
    numeric = logging.getLevelName(level.upper())
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries log through stdlib logging; send their warnings through the same renderer.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_secrets,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # aiokafka and aiohttp are chatty at INFO; their warnings and errors are what operators need.
    root.setLevel(max(numeric, logging.WARNING))


def get_logger(name: str) -> Any:
    """A lazy structlog logger bound with ``component=name``."""
    # Stay a lazy proxy: binding here would freeze structlog's default configuration into
    # module-level loggers created at import time, before configure_logging() runs.
    return structlog.get_logger(component=name)
