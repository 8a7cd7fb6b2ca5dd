"""JSON Schemas, generated (``config/*.schema.json``): the two YAML files' for editors, and the
event contract of ``events.contract``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from hookrelay.config.messages import model_at
from hookrelay.config.models import RETIRED_KEYS, HooksFile, Settings
from hookrelay.events.contract import event_schema
from hookrelay.events.outcome import outcome_schema

# ── JSON Schemas for editors ─────────────────────────────────────────────────────────────────────

_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas keyed by their file names under ``config/``: ``hookrelay.schema.json`` (main
    file) and ``hooks.schema.json`` (hooks file) for editors, ``event.schema.json``, the
    contract of the events producers write (``events.contract``), and ``outcome.schema.json``,
    the records of the outcome topic (``events.outcome``).

    Generated from the models, then adjusted where the file differs from the loaded shape:
    ``source_file`` is set by the loader; a hook's ``signing_key_file`` is read by the loader;
    ``hooks``/``hooks_file`` and ``signing_key``/``signing_key_file`` exclude each other;
    ``RETIRED_KEYS`` are accepted, marked ``deprecated``.
    """
    main = Settings.model_json_schema()
    del main["properties"]["source_file"]
    main["properties"]["hooks_file"] = {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "default": None,
        "title": "Hooks File",
        "description": "Path of the hooks file (a mapping with a hooks list), relative to this "
        "file. Use it or an inline hooks list, not both.",
    }
    main["not"] = {"required": ["hooks", "hooks_file"]}
    hooks = HooksFile.model_json_schema()
    for schema in (main, hooks):
        _add_secret_file(schema["$defs"]["Hook"], "signing_key", _SIGNING_KEY_FILE)
        _add_signing_key_files(schema["$defs"]["Hook"])
    _add_secret_file(main["$defs"]["AdminSettings"], "token", _TOKEN_FILE)
    for path, replaced in RETIRED_KEYS.items():
        # Accepted and ignored: editors mark it deprecated instead of refusing the file.
        model = model_at(path[:-1])
        assert model is not None, "a retired key belongs to a section"
        properties = main["$defs"][model.__name__]["properties"]
        properties[str(path[-1])] = {"deprecated": True, "description": replaced}
    _add_secret_file(main["$defs"]["KafkaSettings"], "sasl_password", _SASL_PASSWORD_FILE)
    _or_comma_separated(main["$defs"]["KafkaSettings"]["properties"], "bootstrap_servers")
    _add_secret_file(main["$defs"]["IngestSource"], "signing_key", _SIGNING_KEY_FILE)
    _add_secret_file(main["$defs"]["BatchSettings"], "token", _BATCH_TOKEN_FILE)
    return {
        "hookrelay.schema.json": {"$schema": _SCHEMA_DIALECT, **main, "title": "hookrelay.yaml"},
        "hooks.schema.json": {"$schema": _SCHEMA_DIALECT, **hooks, "title": "hooks.yaml"},
        "event.schema.json": event_schema(),
        "outcome.schema.json": outcome_schema(),
    }


_SIGNING_KEY_FILE: Final = {
    "type": "string",
    "title": "Signing Key File",
    "description": "File holding the signing key as UTF-8 text (one trailing newline "
    "is ignored), relative to this YAML file. Use it or signing_key, not both.",
}
_TOKEN_FILE: Final = {
    "type": "string",
    "title": "Token File",
    "description": "File holding the admin API's bearer token (one trailing newline is "
    "ignored), relative to this YAML file, e.g. a mounted secret. Use it or token, not both.",
}


_BATCH_TOKEN_FILE: Final = {
    "type": "string",
    "title": "Token File",
    "description": "File holding the batch API's bearer token (one trailing newline is "
    "ignored), relative to this YAML file, e.g. a mounted secret. Use it or token, not both.",
}
_SASL_PASSWORD_FILE: Final = {
    "type": "string",
    "title": "Sasl Password File",
    "description": "File holding the Kafka SASL password (one trailing newline is ignored), "
    "relative to this YAML file, e.g. a mounted secret. Use it or sasl_password, not both.",
}


_SIGNING_KEY_FILES: Final = {
    "type": "array",
    "items": {"type": "string"},
    "minItems": 1,
    "title": "Signing Key Files",
    "description": "Files holding the signing keys, primary first, each as UTF-8 text (one "
    "trailing newline is ignored), relative to this YAML file. Use it or signing_keys, not both.",
}
_ONE_KEY_FORM: Final = ("signing_key", "signing_key_file", "signing_keys", "signing_key_files")
"""The four ways of giving a hook its keys; a hook uses at most one."""


def _add_signing_key_files(hook: dict[str, Any]) -> None:
    """Insert ``signing_key_files`` (read by the loader) after ``signing_keys`` in the Hook
    schema, and allow at most one of the four key forms (``not`` already holds one pair)."""
    properties: dict[str, Any] = {}
    for name, schema in hook["properties"].items():
        properties[name] = schema
        if name == "signing_keys":
            properties["signing_key_files"] = dict(_SIGNING_KEY_FILES)
    hook["properties"] = properties
    pairs = [
        [first, second]
        for i, first in enumerate(_ONE_KEY_FORM)
        for second in _ONE_KEY_FORM[i + 1 :]
        if [first, second] != hook["not"]["required"]
    ]
    hook["allOf"] = [{"not": {"required": pair}} for pair in pairs]


def _or_comma_separated(properties: dict[str, Any], key: str) -> None:
    """A list the loader also takes as one comma-separated string (``split_commas``)."""
    listed = properties[key]
    items = {name: listed.pop(name) for name in ("type", "items", "minItems")}
    properties[key] = {**listed, "anyOf": [items, {"type": "string", "minLength": 1}]}


def _add_secret_file(model: dict[str, Any], key: str, file_schema: dict[str, Any]) -> None:
    """Insert ``<key>_file`` (read by the loader) right after ``key`` in a model's schema, and
    forbid giving both; where ``key`` is required, one of the two is."""
    properties: dict[str, Any] = {}
    for name, schema in model["properties"].items():
        properties[name] = schema
        if name == key:
            properties[f"{key}_file"] = dict(file_schema)
    model["properties"] = properties
    model["not"] = {"required": [key, f"{key}_file"]}
    if key in model.get("required", ()):
        model["required"] = [name for name in model["required"] if name != key]
        model["anyOf"] = [{"required": [key]}, {"required": [f"{key}_file"]}]


def write_json_schemas(directory: str | Path) -> list[Path]:
    """Write :func:`json_schemas` into ``directory`` (2-space JSON, trailing newline); returns
    the paths written."""
    written: list[Path] = []
    for name, schema in json_schemas().items():
        target = Path(directory) / name
        target.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", "utf-8")
        written.append(target)
    return written
