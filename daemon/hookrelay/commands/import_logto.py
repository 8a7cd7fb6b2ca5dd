"""Convert Logto's hooks, as its Management API lists them, into hookrelay's ``hooks.yaml``.

Input: the JSON answer of ``GET /api/hooks`` (an array; ``GET /api/hooks/{id}`` gives one
object, also accepted), with or without ``?includeExecutionStats=true``. Each hook has the
shape of Logto's ``hooks`` table (``packages/schemas/tables/hooks.sql``, guarded by
``Hooks.guard``; ``executionStats`` from ``packages/schemas/src/types/hook.ts``)::

    {"tenantId": "default", "id": "<21 chars of a-z0-9>", "name": "CRM sync",
     "event": null | "PostRegister",            # legacy single event, still returned
     "events": ["User.Created", ...],
     "config": {"url": "https://…", "headers": {"X-Source": "logto"}, "retries": 3},
     "signingKey": "<32 chars of A-Za-z0-9>", "enabled": true, "createdAt": 1755767742123,
     "executionStats": {"successCount": 12, "requestCount": 13}}

Output: the text of a ``hooks.yaml`` whose hooks each validate with hookrelay's ``Hook``
model, and the text of an environment file holding the signing keys
(``HOOKRELAY_KEY_<ID>=<key>``, one a line, for systemd's ``EnvironmentFile=`` or a shell's
``set -a; . file``): the YAML names each key as ``${HOOKRELAY_KEY_<ID>}``, never inline.

Field mapping: ``id`` (Logto's ids already fit hookrelay's 1-21 characters of
``[A-Za-z0-9_-]``; any other id is mapped to one that fits, and a note says so, because
receivers see it as ``hookId``), ``name``, ``events`` with the legacy ``event`` folded in,
``config.url``, ``config.headers`` (hookrelay's own headers dropped, with a note),
``enabled``, ``signingKey`` (empty means unsigned, as in Logto). Credential headers
(``Authorization``, ``X-API-Key``, ``Cookie``…) go to the environment file too, as
``${HOOKRELAY_HEADER_<ID>_<NAME>}``, and so does a URL with a query string, where endpoints
often take a token (``${HOOKRELAY_URL_<ID>}``). Not carried over, each with a
note: ``tenantId``, ``createdAt``, ``executionStats``, ``config.retries`` (hookrelay retries
on ``delivery.retry_schedule_s``), and any field this converter does not know.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
from pydantic import ValidationError
from ruamel.yaml import YAML

from hookrelay.config import RESERVED_HEADERS, Hook
from hookrelay.config.fields import is_transport_header
from hookrelay.errors import LogtoImportError

KEY_VARIABLE_PREFIX: Final = "HOOKRELAY_KEY_"
"""Environment variables holding the imported signing keys: the prefix, then the hook id in
upper case with ``-`` as ``_``."""
URL_VARIABLE_PREFIX: Final = "HOOKRELAY_URL_"
"""Environment variables holding hook URLs with a query string (where endpoints often take a
token): the prefix, then the hook id as for keys."""
HEADER_VARIABLE_PREFIX: Final = "HOOKRELAY_HEADER_"
"""Environment variables holding credential header values: the prefix, the hook id, ``_``
and the header name, in upper case with other characters as ``_``."""
_CREDENTIAL_HEADER: Final = re.compile(r"auth|cookie|token|secret|key|password|session", re.I)
"""Header names whose values are moved to the environment file like signing keys
(``Authorization``, ``X-API-Key``, ``Cookie``…): hooks.yaml is not a place for credentials."""
_NOT_ENV_CHAR: Final = re.compile(r"[^A-Z0-9_]")

_HOOK_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,21}")
_NOT_ID_CHAR: Final = re.compile(r"[^A-Za-z0-9_-]+")
_ENV_SAFE: Final = re.compile(r"[A-Za-z0-9._~+/=:@%^,-]+")
_ENV_QUOTABLE: Final = re.compile(r"[\x21-\x7e ]+")

_CARRIED: Final = frozenset({"id", "name", "event", "events", "config", "signingKey", "enabled"})
_BOOKKEEPING: Final = {
    "tenantId": "hookrelay has no tenants",
    "createdAt": "Logto's bookkeeping",
    "executionStats": "Logto's own delivery counts; hookrelay counts in its metrics",
}
_CONFIG_CARRIED: Final = frozenset({"url", "headers"})


@dataclass
class Conversion:
    """What ``convert`` produced: ``hooks_yaml`` and ``env_text`` to write, and ``notes``
    (one line each) about what was mapped, dropped or not carried over."""

    hooks_yaml: str
    env_text: str
    notes: list[str] = field(default_factory=list)
    hook_count: int = 0


def parse(raw: bytes) -> list[dict[str, Any]]:
    """The hooks in ``raw`` (a JSON array of hook objects, or one hook object).

    Raises ``LogtoImportError`` when it is not JSON or not hook objects.
    """
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise LogtoImportError(f"not JSON: {e}") from e
    hooks = [document] if isinstance(document, dict) else document
    if not isinstance(hooks, list) or not all(isinstance(h, dict) for h in hooks):
        raise LogtoImportError(
            "expected the JSON of GET /api/hooks: an array of hook objects (or one hook object)"
        )
    return hooks


def convert(hooks: list[dict[str, Any]], env_file_name: str = "hookrelay.env") -> Conversion:
    """Turn Logto hooks (from ``parse``) into ``hooks.yaml`` and environment-file text.

    Every hook is checked with hookrelay's ``Hook`` model before anything is returned.
    Raises ``LogtoImportError`` naming the hook and field of the first problem.
    """
    notes: list[str] = []
    converted: list[dict[str, Any]] = []
    secrets: dict[str, str] = {}
    used_ids: set[str] = set()
    bookkeeping: dict[str, int] = {}
    for index, logto in enumerate(hooks):
        where = f"hook {index} ({_text(logto.get('id'))})"
        hook_id = _hook_id(logto.get("id"), used_ids, where, notes)
        used_ids.add(hook_id)
        where = f"hook {hook_id}"
        for name in _BOOKKEEPING:
            bookkeeping[name] = bookkeeping.get(name, 0) + (name in logto)
        notes.extend(f"{where}: {note}" for note in _dropped_fields(logto))
        entry, key = _hook_entry(logto, hook_id, where, notes)
        _move_credential_headers(entry, secrets)
        if urlsplit(_unescaped(entry["url"])).query:
            variable = _variable(URL_VARIABLE_PREFIX + hook_id, secrets)
            secrets[variable] = _unescaped(entry["url"])
            entry["url"] = f"${{{variable}}}"
            notes.append(f"{where}: url has a query string (often a token): it is in the "
                         f"environment file as {variable}")  # fmt: skip
        if key:
            variable = _variable(KEY_VARIABLE_PREFIX + hook_id, secrets)
            secrets[variable] = key
            entry["signing_key"] = f"${{{variable}}}"
        _validate(entry, secrets, where)
        converted.append(entry)
    notes.extend(
        f"{name} ({count} hooks) not carried over: {_BOOKKEEPING[name]}"
        for name, count in bookkeeping.items()
        if count
    )
    header = (
        "# hooks.yaml converted by `hookrelay import-logto` from Logto's GET /api/hooks.\n"
        f"# Signing keys are not in this file: they are in {env_file_name} (load it into the\n"
        "# environment, e.g. systemd EnvironmentFile=, before `hookrelay check` or `run`).\n"
    )
    env_text = "".join(_env_line(name, value) for name, value in secrets.items())
    return Conversion(header + _yaml_text({"hooks": converted}), env_text, notes, len(converted))


def _text(value: object) -> str:
    return value if isinstance(value, str) else repr(value)


def _hook_id(value: object, used: set[str], where: str, notes: list[str]) -> str:
    """Logto's id when it fits hookrelay's rule and is free, else a mapped id (noted)."""
    if isinstance(value, str) and _HOOK_ID.fullmatch(value) and value not in used:
        return value
    if not isinstance(value, str) or not value:
        raise LogtoImportError(f"{where}: id: expected a non-empty string")
    fitted = _NOT_ID_CHAR.sub("-", value).strip("-") or "hook"
    candidate, n = fitted[:21], 1
    while candidate in used:
        n += 1
        candidate = f"{fitted[:18]}-{n}"
    notes.append(
        f"{where}: id mapped to {candidate!r} (hookrelay ids are 1-21 characters of "
        "A-Z a-z 0-9 _ -, unique); receivers will see this hookId instead of Logto's"
    )
    return candidate


def _dropped_fields(logto: Mapping[str, Any]) -> Iterator[str]:
    for name in logto:
        if name not in _CARRIED and name not in _BOOKKEEPING:
            yield f"unknown field {name!r} not carried over"
    config = logto.get("config")
    if isinstance(config, dict):
        for name in config:
            if name == "retries":
                yield (
                    "config.retries not carried over (deprecated in Logto; hookrelay retries "
                    "on delivery.retry_schedule_s)"
                )
            elif name not in _CONFIG_CARRIED:
                yield f"unknown field 'config.{name}' not carried over"


def _hook_entry(
    logto: Mapping[str, Any], hook_id: str, where: str, notes: list[str]
) -> tuple[dict[str, Any], str]:
    """The hooks.yaml mapping for one Logto hook (without ``signing_key``) and its key."""
    config = logto.get("config")
    if not isinstance(config, dict):
        raise LogtoImportError(f"{where}: config: expected an object with url and headers")
    entry: dict[str, Any] = {"id": hook_id}
    name = logto.get("name")
    if isinstance(name, str) and name:
        entry["name"] = _literal(name)
    entry["events"] = _events(logto, where)
    entry["url"] = _literal(_string(config.get("url"), f"{where}: config.url"))
    headers = _headers(config.get("headers"), where, notes)
    if headers:
        entry["headers"] = headers
    enabled = logto.get("enabled", True)
    if not isinstance(enabled, bool):
        raise LogtoImportError(f"{where}: enabled: expected true or false")
    entry["enabled"] = enabled
    key = logto.get("signingKey") or ""
    if not isinstance(key, str):
        raise LogtoImportError(f"{where}: signingKey: expected a string")
    return entry, key


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise LogtoImportError(f"{what}: expected a string")
    return value


def _events(logto: Mapping[str, Any], where: str) -> list[str]:
    """``events`` with the legacy ``event`` appended when not already listed (Logto sends a
    hook that has either to both)."""
    events = logto.get("events") or []
    legacy = logto.get("event")
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise LogtoImportError(f"{where}: events: expected an array of event names")
    if legacy is not None and not isinstance(legacy, str):
        raise LogtoImportError(f"{where}: event: expected an event name or null")
    merged = list(dict.fromkeys([*events, *([legacy] if legacy else [])]))
    if not merged:
        raise LogtoImportError(f"{where}: neither events nor event names an event")
    return merged


def _headers(value: object, where: str, notes: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise LogtoImportError(f"{where}: config.headers: expected an object of strings")
    kept: dict[str, str] = {}
    for name, text in value.items():
        if name.lower() in RESERVED_HEADERS:
            notes.append(f"{where}: header {name!r} dropped (hookrelay sets it itself)")
        elif is_transport_header(name):
            notes.append(f"{where}: header {name!r} dropped (the HTTP client manages it)")
        else:
            kept[_literal(name)] = _literal(text)
    return kept


def _unescaped(text: str) -> str:
    """The value ``_literal`` escaped, as an environment file holds it (never expanded)."""
    return text.replace("$${", "${")


def _literal(text: str) -> str:
    """``text`` as hookrelay's loader must read it back: it expands ``${NAME}`` in every
    string, and reads ``$${`` as a literal ``${``."""
    return text.replace("${", "$${")


def _move_credential_headers(entry: dict[str, Any], secrets: dict[str, str]) -> None:
    """Replace the value of each credential header of ``entry`` by ``${VAR}``, the value
    going to ``secrets`` (the environment file)."""
    headers: dict[str, str] = entry.get("headers", {})
    for name, value in headers.items():
        if _CREDENTIAL_HEADER.search(name):
            variable = _variable(f"{HEADER_VARIABLE_PREFIX}{entry['id']}_{name}", secrets)
            # The env file holds the value as Logto had it: the loader never expands what a
            # variable holds, so a "${" in it needs no escaping there (the file single-quotes
            # it for shells).
            secrets[variable] = _unescaped(value)
            headers[name] = f"${{{variable}}}"


def _variable(text: str, taken: Mapping[str, str]) -> str:
    """An environment variable name for ``text`` not in ``taken``."""
    base = _NOT_ENV_CHAR.sub("_", text.upper())
    name, n = base, 1
    while name in taken:  # ids differing only in case or - and _ share a base name
        n += 1
        name = f"{base}_{n}"
    return name


def _env_line(name: str, value: str) -> str:
    """``NAME=value``, single-quoted when the value holds characters a shell or systemd
    would read otherwise. Raises ``LogtoImportError`` for a key no env file can hold."""
    if _ENV_SAFE.fullmatch(value):
        return f"{name}={value}\n"
    if _ENV_QUOTABLE.fullmatch(value) and "'" not in value and "\\" not in value:
        return f"{name}='{value}'\n"
    raise LogtoImportError(
        f"{name}: the value holds characters an environment file cannot carry "
        "(quotes, backslashes or control characters); change it in Logto first"
    )


def _validate(entry: dict[str, Any], secrets: Mapping[str, str], where: str) -> None:
    """Check ``entry`` with hookrelay's ``Hook`` model, as the loader will read it with the
    environment file loaded; problems name the field, never the value."""
    try:
        Hook.model_validate(_expanded(entry, secrets))
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(_shown(p) for p in error['loc'])}: {error['msg']}" for error in e.errors()
        )
        raise LogtoImportError(f"{where}: hookrelay would refuse it: {problems}") from None


def _shown(part: object) -> str:
    """A key path part fit for a terminal: a header name with CR, LF or another control
    character is quoted with its escapes, never printed raw."""
    text = str(part)
    return text if text.isprintable() else repr(text)


_WRITTEN_REFERENCE: Final = re.compile(r"\$\$\{|\$\{([A-Z0-9_]+)\}")


def _expanded(value: Any, secrets: Mapping[str, str]) -> Any:
    """``value`` as the loader reads it: ``${VAR}`` from ``secrets``, ``$${`` as ``${``."""
    if isinstance(value, str):
        return _WRITTEN_REFERENCE.sub(lambda m: secrets[m.group(1)] if m.group(1) else "${", value)
    if isinstance(value, dict):
        return {_expanded(k, secrets): _expanded(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_expanded(v, secrets) for v in value]
    return value


def _yaml_text(document: dict[str, Any]) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.width = 4096
    stream = io.StringIO()
    yaml.dump(document, stream)
    return stream.getvalue()


def write_new(path: Path, text: str, *, mode: int, force: bool) -> None:
    """Write ``text`` to ``path`` created with permission bits ``mode`` (e.g. ``0o600``).

    Refuses (``FileExistsError``) to replace an existing file unless ``force``; a replaced
    file gets ``mode`` too, before anything is written into it.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    descriptor = os.open(path, flags, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), mode)
        file.write(text)
