"""What a refused value's message says: pydantic's error types turned into short, value-free
texts (a value may be a secret, or come from the environment).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from typing import Any, Final, get_args

from pydantic import (
    BaseModel,
)
from pydantic_core import ErrorDetails

from hookrelay.config.models import AdminSettings, Hook, KafkaSettings, Settings
from hookrelay.config.source_map import KeyPath

# ── Messages ─────────────────────────────────────────────────────────────────────────────────────

_FIXED_MESSAGES: Final = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "string_too_short": "expected a non-empty string",
}

_LIST_MESSAGES: Final[dict[KeyPath, str]] = {
    ("kafka", "bootstrap_servers"): "expected a list of host:port, or one comma-separated "
    'string ("kafka-1:9092,kafka-2:9092"); a port alone names no host',
}
"""Keys that take a list in more than one shape: say every shape."""

_BOUNDS: Final = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _number_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _string_message(error: ErrorDetails, _path: KeyPath) -> str:
    value = error.get("input")
    if isinstance(value, dict | list):
        return "expected a string, not a mapping or list"
    if value is None:
        return "expected a string, found no value"
    return "expected a string; quote the value"


def _bool_message(error: ErrorDetails, _path: KeyPath) -> str:
    if isinstance(error.get("input"), str):
        return "expected true or false (YAML 1.2 reads yes/no/on/off as text)"
    return "expected true or false"


def _literal_message(error: ErrorDetails, _path: KeyPath) -> str:
    choices = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
    return f"expected one of: {', '.join(choices)}"


def _value_error_message(error: ErrorDetails, _path: KeyPath) -> str:
    """A ``ValueError`` a check did not word itself (the standard library's, such as
    urlsplit's "Invalid IPv6 URL"): its text without pydantic's "Value error, " prefix."""
    return error["msg"].removeprefix("Value error, ")


def _too_short_message(error: ErrorDetails, _path: KeyPath) -> str:
    least = error.get("ctx", {}).get("min_length", 1)
    return "expected a non-empty list" if least == 1 else f"expected at least {least} items"


def _missing_message(_error: ErrorDetails, path: KeyPath) -> str:
    return f"missing required key '{path[-1]}'"


def _extra_message(_error: ErrorDetails, path: KeyPath) -> str:
    return unknown_key_message(str(path[-1]), file_keys(model_at(path[:-1])))


_SPECIAL_MESSAGES: Final[dict[str, Callable[[ErrorDetails, KeyPath], str]]] = {
    "string_type": _string_message,
    "bool_type": _bool_message,
    "bool_parsing": _bool_message,
    "literal_error": _literal_message,
    "too_short": _too_short_message,
    "value_error": _value_error_message,
    "missing": _missing_message,
    "extra_forbidden": _extra_message,
}


def refusal_message(error: ErrorDetails, path: KeyPath) -> str:
    """What was expected, from the error's type and context; never from its input."""
    kind = error["type"]
    if kind in ("tuple_type", "list_type") and path in _LIST_MESSAGES:
        return _LIST_MESSAGES[path]
    if kind in _FIXED_MESSAGES:
        return _FIXED_MESSAGES[kind]
    if kind in _BOUNDS:
        name, sign = _BOUNDS[kind]
        return f"expected a number {sign} {_number_text(error.get('ctx', {}).get(name))}"
    special = _SPECIAL_MESSAGES.get(kind)
    if special is not None:
        return special(error, path)
    return error["msg"]  # our own messages ("hookrelay"), or pydantic's, which omit the input


def unknown_key_message(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown key '{key}'; did you mean '{close[0]}'?"
    return f"unknown key '{key}'; expected one of: {', '.join(known)}"


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation such as ``tuple[Hook, ...]`` or ``RateLimit | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _inner_model(argument)
        if found is not None:
            return found
    return None


def model_at(path: KeyPath) -> type[BaseModel] | None:
    """The model validating the mapping at ``path`` (list indexes skipped), if any."""
    model: type[BaseModel] | None = Settings
    for part in path:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _inner_model(field.annotation) if field is not None else None
    return model


def file_keys(model: type[BaseModel] | None) -> tuple[str, ...]:
    """Keys a YAML mapping for ``model`` may hold (the file shape, not the loaded shape)."""
    if model is None:
        return ()
    keys = tuple(name for name in model.model_fields if name != "source_file")
    if model is Hook:
        return (*keys, "signing_key_file", "signing_key_files")
    if model is KafkaSettings:
        return (*keys, "sasl_password_file")
    return (*keys, "token_file") if model is AdminSettings else keys
