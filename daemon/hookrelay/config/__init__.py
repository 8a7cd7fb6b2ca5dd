"""Configuration: two YAML files in, one frozen, validated ``Settings`` snapshot out.

* The main file (``config/hookrelay.yaml``) holds the daemon's sections: ``kafka``,
  ``dead_letter_topic``, ``http``, ``delivery``, ``admin``, ``logging``, ``shutdown``,
  ``outcomes``, ``tracing``, and either ``hooks_file`` (a path relative to the main file) or an
  inline ``hooks`` list. Every section is optional; an empty file gives the defaults.
* The hooks file (``config/hooks.yaml``) is a mapping with one key, ``hooks``.

How a load goes::

    text ─▶ ruamel round-trip tree ─▶ plain dicts/lists ─▶ pydantic models ─▶ Settings
            (YAML 1.2, line numbers,    (${VAR} expanded,     (frozen, unknown keys
             duplicate keys reported)    key path → line map)  refused)

Every problem met on the way becomes a :class:`~hookrelay.errors.ConfigIssue` (file, line, key
path such as ``hooks[2].rate_limit.per_second``, what was expected); :func:`load_settings` raises
one :class:`~hookrelay.errors.ConfigError` with all of them, in file order. Messages never echo a
value: values may be secrets, or come from the environment.

YAML 1.2 means ``yes``/``no``/``on``/``off`` are text. Where text is expected, a YAML number or
boolean is refused rather than converted (``0777`` is not silently ``"777"``); where a boolean is
expected only ``true``/``false`` are accepted. ``${NAME}`` in any string value is replaced by the
environment variable (an unset one is an error); ``$${`` writes a literal ``${``.

The package's modules, in the order a load goes: ``source_map`` (positions), ``loader`` (YAML,
``${VAR}``, the hooks file), ``secrets`` (key, token and password files), ``models`` (the
settings and their checks; ``ingest`` and ``tracing`` hold a section each), ``messages``
(refusal texts), ``checks`` (``hookrelay check``'s warnings), ``schema`` (JSON Schemas),
``naming`` (names of the topics a deployment owns), ``workers`` (the worker count, and each
worker's share of the rate limits).

The JSON Schemas under ``config/`` are generated from these models by :func:`json_schemas`;
regenerate them with ``python -c "from hookrelay.config import write_json_schemas;
write_json_schemas('config')"``. A unit test keeps the checked-in copies equal to the models.
"""

from __future__ import annotations

from hookrelay.config.adaptive import AdaptiveRate
from hookrelay.config.checks import config_warnings
from hookrelay.config.fields import RESERVED_HEADERS
from hookrelay.config.loader import Skippable, load_settings
from hookrelay.config.models import (
    RETIRED_KEYS,
    AdminSettings,
    DeliverySettings,
    Hook,
    HookTls,
    HttpSettings,
    KafkaSettings,
    LoggingSettings,
    OutcomeSettings,
    RateLimit,
    Settings,
    ShutdownSettings,
)
from hookrelay.config.schema import json_schemas, write_json_schemas
from hookrelay.config.tracing import TracingSettings
from hookrelay.config.workers import resolve_workers, worker_share

__all__ = [
    "RESERVED_HEADERS",
    "RETIRED_KEYS",
    "AdaptiveRate",
    "AdminSettings",
    "DeliverySettings",
    "Hook",
    "HookTls",
    "HttpSettings",
    "KafkaSettings",
    "LoggingSettings",
    "OutcomeSettings",
    "RateLimit",
    "Settings",
    "ShutdownSettings",
    "Skippable",
    "TracingSettings",
    "config_warnings",
    "json_schemas",
    "load_settings",
    "resolve_workers",
    "worker_share",
    "write_json_schemas",
]
