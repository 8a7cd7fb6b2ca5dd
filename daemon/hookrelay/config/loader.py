"""Reading the YAML files: YAML 1.2 through ruamel's round-trip loader (line numbers, duplicate
keys), ``${VAR}`` expansion, the hooks file, and validation into ``Settings``; every problem
becomes a ``ConfigIssue`` naming file, line and key path.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    ValidationError,
)
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scalarbool import ScalarBoolean

from hookrelay.config.checks import config_warnings
from hookrelay.config.messages import file_keys, refusal_message, unknown_key_message
from hookrelay.config.models import RETIRED_KEYS, Settings
from hookrelay.config.secrets import SecretFiles, hook_mappings
from hookrelay.config.source_map import KeyPath, SourceMap, Where, key_path_text
from hookrelay.errors import ConfigError, ConfigIssue

# ── Reading YAML ─────────────────────────────────────────────────────────────────────────────────

_BROKEN: Final = object()
"""Marks a file that could not be read or parsed (its issue is already recorded)."""

_OLD_YAML_DIRECTIVE: Final = re.compile(r"^%YAML[ \t]+1\.[01]\b", re.MULTILINE)
_REFERENCE: Final = re.compile(r"\$\$\{|\$\{(?P<name>[^}]*)(?P<close>\})?")
_VARIABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_TEXT: Final = re.compile("[\ud800-\udfff]")
"""Lone surrogates: how Python's ``os.environ`` holds bytes that do not decode as UTF-8."""


def _expand(text: str, env: Mapping[str, str]) -> tuple[str, list[str], bool]:
    """Replace ``${NAME}`` by ``env[NAME]`` and ``$${`` by ``${``, in one pass.

    Returns ``(text, problems, substituted)``: problems name the variable, never its value;
    ``substituted`` says whether any variable was used.
    """
    problems: list[str] = []
    used: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name = match.group("name")
        if name is None:
            return "${"
        if match.group("close") is None or _VARIABLE_NAME.fullmatch(name) is None:
            problems.append("malformed ${...}; expected ${NAME}, or $${ for a literal ${")
        elif name not in env:
            problems.append(f"environment variable {name} is not set")
        elif _NOT_TEXT.search(env[name]):
            # os.environ holds bytes that are not UTF-8 as lone surrogates: a key or header
            # made of them would fail (or be cut) on every delivery.
            problems.append(f"environment variable {name} holds bytes that are not UTF-8 text")
        else:
            used.append(name)
            return env[name]
        return ""

    return _REFERENCE.sub(substitute, text), problems, bool(used)


def _key_where(node: CommentedMap, key: Any, file: str) -> Where:
    try:
        line, column = node.lc.key(key)
    except KeyError:  # a key merged in with `<<: *anchor` has no position of its own
        line, column = node.lc.line, node.lc.col
    return Where(file, line + 1, column + 1)


def _item_where(node: CommentedSeq, index: int, file: str) -> Where:
    try:
        line, column = node.lc.item(index)
    except KeyError:
        line, column = node.lc.line, node.lc.col
    return Where(file, line + 1, column + 1)


def _first_line(tree: Any) -> int:
    if isinstance(tree, CommentedMap | CommentedSeq):
        return int(tree.lc.line) + 1
    return 1


def _yaml_issue(file: str, error: YAMLError, text: str = "") -> ConfigIssue:
    """A parse error as an issue. Built from the problem text only: ``str(error)`` quotes the
    offending source line, which may hold a secret (``text``, the file, is only looked at for
    a hint)."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or getattr(error, "context", None)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
    lines = text.splitlines()
    source_line = lines[line - 1] if 0 < line <= len(lines) else ""
    message = f"invalid YAML: {problem or 'cannot parse'}"
    hint = _yaml_hint(str(problem or ""), source_line)
    return ConfigIssue(file, line, column, "", f"{message}; {hint}" if hint else message)


def _yaml_hint(problem: str, source_line: str) -> str | None:
    """What usually causes a parse error, for the two a person meets most: a tab, and a
    bare ``*`` (YAML reads ``*name`` as an alias)."""
    if "'\\t'" in problem or "\t" in problem:
        return "YAML indents with spaces, not tabs"
    if re.search(r"(^|[\[,:\s])\*($|[\],\s])", source_line):
        return 'quote a bare * ("*"): YAML reads * as the start of an alias'
    return None


MAX_EXPANDED_VALUES: Final = 100_000
"""Most values a configuration file may hold once its aliases are expanded. A YAML alias
stands for a copy of its anchor, so nested ones grow exponentially (a breaker's 1 KB file
held billions: ``check`` took 17 s and 1.5 GB, a reload froze the daemon's event loop); a
real configuration holds a few thousand."""


def _expanded_size(node: Node | None, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for with every alias expanded, counted without
    expanding (``sizes``: per node already counted; a recursive alias counts once)."""
    if node is None:
        return 0
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a node that contains itself (a recursive alias) stops here
    if isinstance(node, MappingNode):
        total = 1 + sum(
            _expanded_size(key, sizes) + _expanded_size(value, sizes) for key, value in node.value
        )
    elif isinstance(node, SequenceNode):
        total = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    else:
        total = 1
    sizes[id(node)] = total
    return total


def _duplicate_keys(root: Node | None, file: str) -> list[ConfigIssue]:
    """Issues for repeated keys anywhere in a composed YAML node tree, naming both lines."""
    issues: list[ConfigIssue] = []
    pending: list[tuple[Node, KeyPath]] = [] if root is None else [(root, ())]
    seen: set[int] = set()
    while pending:
        node, path = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            pending.extend((item, (*path, index)) for index, item in enumerate(node.value))
        elif isinstance(node, MappingNode):
            pending.extend(_mapping_children(node, path, file, issues))
    return issues


def _mapping_children(
    node: MappingNode, path: KeyPath, file: str, issues: list[ConfigIssue]
) -> list[tuple[Node, KeyPath]]:
    first_line: dict[tuple[str, str], int] = {}
    children: list[tuple[Node, KeyPath]] = []
    for key, value in node.value:
        if not isinstance(key, ScalarNode):
            continue
        here = (*path, str(key.value))
        identity = (str(key.tag), str(key.value))
        if identity in first_line:
            mark = key.start_mark
            message = f"duplicate key '{key.value}' (first at line {first_line[identity]})"
            where = (file, mark.line + 1, mark.column + 1)
            issues.append(ConfigIssue(*where, key_path_text(here), message))
        else:
            first_line[identity] = key.start_mark.line + 1
        children.append((value, here))
    return children


# ── Loading ──────────────────────────────────────────────────────────────────────────────────────


Skippable = Literal["hooks", "admin", "ingest", "tracing", "signing_keys", "headers"]
"""What ``load_settings`` can leave out."""

_HOOK_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    # standard_webhooks goes with the keys: its check wants a key, and a command that never
    # signs has no use for either.
    "signing_keys": (
        "signing_key",
        "signing_keys",
        "signing_key_file",
        "signing_key_files",
        "standard_webhooks",
    ),
    "headers": ("headers",),
}
"""The fields of every hook that a skippable part stands for."""


def load_settings(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    skip: Collection[Skippable] = (),
) -> Settings:
    """Load the main configuration file at ``path`` (and the hooks file it names).

    ``env`` supplies ``${VAR}`` values (default: ``os.environ``). Signing key files and the hooks
    file are read relative to the YAML file that names them. ``skip`` leaves parts out for a
    command that never uses them (``produce`` needs no hooks, ``replay`` only their ids;
    neither serves the admin API; only ``ingest`` reads its section; only ``run`` traces):
    ``hooks``, ``admin``, ``ingest``, ``tracing`` (they take their defaults),
    ``signing_keys`` (every hook's keys and key files) or ``headers`` (every hook's extra
    headers, credentials among them). Skipped files are not read and
    nothing in a skipped part is checked, so its secrets need not be set.

    Returns a frozen ``Settings`` whose ``source_file``/``hooks_file`` are absolute paths.
    Raises ``ConfigError`` listing every issue found, in file order (main file first); each names
    the file, line and key path, says what was expected, and never echoes a value.
    """
    loader = _Loader(os.environ if env is None else env, skip=frozenset(skip))
    settings = loader.load(Path(path))
    if settings is None or loader.issues:
        raise ConfigError(loader.sorted_issues(), _salvaged_warnings(loader.salvaged))
    return settings


def _salvaged_warnings(salvaged: tuple[Settings, list[str]] | None) -> list[str]:
    """``config_warnings`` of what validated, without those about what ``_salvage`` stood in
    for or dropped (a stand-in hook is disabled: "no enabled hooks" would mislead too)."""
    if salvaged is None:
        return []
    settings, hidden = salvaged
    keys = [f": {prefix}{tail}" for prefix in hidden for tail in (".", ":", "[")]
    if hidden:
        keys.append(": hooks: no enabled hooks")
    return [text for text in config_warnings(settings) if not any(k in text for k in keys)]


def _salvage(
    data: dict[str, Any], error: ValidationError, source: SourceMap
) -> tuple[Settings, list[str]] | None:
    """Settings from ``data`` without what failed validation, so that ``check`` can warn
    about the rest in the same run, and the key paths whose warnings would mislead (a hook
    stood in for). Each failing key is dropped first (it takes its default); if that is not
    enough, a failing hook is replaced by a disabled stand-in, then a failing section
    dropped. List items are never removed: later indices, and so the lines warnings name,
    must stay those of the files. None when nothing validates."""
    paths = {
        tuple(part for part in e["loc"] if part != "[key]") for e in error.errors(include_url=False)
    }
    for depth in (None, 2, 1):
        trimmed = copy.deepcopy(data)
        hidden: list[str] = []
        for path in paths:
            cut = path if depth is None else path[:depth]
            if len(cut) == 2 and cut[0] == "hooks" and isinstance(cut[1], int):
                _stand_in_for_hook(trimmed, cut[1])
                hidden.append(f"hooks[{cut[1]}]")
            elif cut:
                hidden += ["hooks"] if cut == ("hooks",) else []
                _drop(trimmed, cut)
        try:
            settings = Settings.model_validate(trimmed)
        except ValidationError:
            continue
        settings._source = source
        return settings, hidden
    return None


def _stand_in_for_hook(data: dict[str, Any], index: int) -> None:
    hooks = data.get("hooks")
    if isinstance(hooks, list) and 0 <= index < len(hooks):
        hooks[index] = {"id": f"invalid-{index}", "events": ["*"],
                        "url": "https://invalid.invalid/", "enabled": False}  # fmt: skip


def _drop(data: Any, path: tuple[Any, ...]) -> None:
    """Remove the mapping key at ``path`` (an item of a list is left alone)."""
    *parents, last = path
    node = data
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else _item(node, part)
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(last, None)


def _item(node: Any, part: Any) -> Any:
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _inside(key_path: str, skipped: Collection[str]) -> bool:
    """True when ``key_path`` (``hooks[2].url``, ``admin.token``) lies in a ``skipped`` part
    (``load_settings``)."""
    parts = re.split(r"[.\[\]]+", key_path)
    if parts[0] in skipped or (parts[0] == "hooks_file" and "hooks" in skipped):
        return True
    fields = {field for part in skipped for field in _HOOK_FIELDS.get(part, ())}
    return parts[0] == "hooks" and any(part in fields for part in parts[1:3])


class _Loader(SecretFiles):
    """State of one :func:`load_settings` call: the environment, where every key came from,
    and the issues found so far."""

    def __init__(self, env: Mapping[str, str], skip: frozenset[str] = frozenset()) -> None:
        self.env = env
        self.skip = skip
        self.salvaged: tuple[Settings, list[str]] | None = None  # see _salvage
        self.source = SourceMap()
        self.issues: list[ConfigIssue] = []
        self.failed: set[KeyPath] = set()  # already reported; validation errors there are noise

    def load(self, main_file: Path) -> Settings | None:
        tree = self._read_tree(main_file, cited_at=None)
        if tree is _BROKEN:
            return None
        data = self._main_data(tree, str(main_file))
        self._skip_sections(data)
        self._drop_retired_keys(data)
        self._attach_hooks(data, main_file)
        self._duplicate_hook_ids(data)
        self._skip_hook_fields(data)
        self.issues = [i for i in self.issues if not _inside(i.key_path, self.skip)]
        self.note_inline_secrets(data)
        self.absolute_tls_paths(data)
        for index, hook in hook_mappings(data):
            if "signing_key_file" in hook:
                self.read_secret_file(hook, ("hooks", index), "signing_key", "signing key")
            if "signing_key_files" in hook:
                self.read_signing_key_files(hook, ("hooks", index))
        admin = data.get("admin")
        if isinstance(admin, dict) and "token_file" in admin:
            self.read_secret_file(admin, ("admin",), "token", "admin token")
        self.ingest_files(data)
        self.kafka_files(data, main_file)
        data["source_file"] = os.path.abspath(main_file)
        return self._validate(data)

    def _duplicate_hook_ids(self, data: dict[str, Any]) -> None:
        """Report a repeated hook id from the raw hooks, so that it shows in the same run as
        the field errors of any hook (the model's own check only runs on valid hooks; the
        same issue from both is reported once)."""
        first: dict[str, int] = {}
        for index, hook in hook_mappings(data):
            hook_id = hook.get("id")
            if not isinstance(hook_id, str):
                continue
            earlier = first.setdefault(hook_id, index)
            if earlier != index:
                where = self.source.locate(("hooks", earlier, "id"))
                at = f" at {where.file}:{where.line}" if where else ""
                message = f"duplicate hook id; already used by hooks[{earlier}]{at}"
                self.report(("hooks", index, "id"), message)

    def _skip_sections(self, data: dict[str, Any]) -> None:
        """Drop the sections ``load_settings`` was asked to skip, and what was already
        reported inside them (an unset ``${VAR}``)."""
        sections = {
            "hooks": ("hooks", "hooks_file"), "admin": ("admin",), "ingest": ("ingest",),
            "tracing": ("tracing",),
        }  # fmt: skip
        for section in self.skip & sections.keys():
            for key in sections[section]:
                data.pop(key, None)
        self.issues = [i for i in self.issues if not _inside(i.key_path, self.skip)]

    def _skip_hook_fields(self, data: dict[str, Any]) -> None:
        fields = [field for part in self.skip for field in _HOOK_FIELDS.get(part, ())]
        for _, hook in hook_mappings(data):
            for key in fields:
                hook.pop(key, None)

    def sorted_issues(self) -> list[ConfigIssue]:
        """Every issue once, in file order (main file first), then line and column."""
        rank = {name: index for index, name in enumerate(self.source.files)}
        unique = list(dict.fromkeys(self.issues))
        return sorted(unique, key=lambda i: (rank.get(i.file, len(rank)), i.line, i.column))

    def report(self, path: KeyPath, message: str, where: Where | None = None) -> None:
        self.issues.append(self.source.issue(path, message, where))

    # Files and YAML

    def _read_tree(self, file: Path, cited_at: KeyPath | None) -> Any:
        """``file`` as a ruamel round-trip tree (``None`` when empty), or ``_BROKEN`` after
        recording why it could not be read. ``cited_at`` is where another file names it."""
        name = str(file)
        self.source.files.append(name)
        try:
            text = file.read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            reason = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else e.strerror
            if cited_at is None:
                self.issues.append(ConfigIssue(name, 0, 0, "", f"cannot read this file: {reason}"))
            else:
                self.report(cited_at, f"cannot read {name}: {reason}")
                self.failed.add(cited_at)
            return _BROKEN
        return self._parse(name, text)

    def _parse(self, name: str, text: str) -> Any:
        directive = _OLD_YAML_DIRECTIVE.search(text)
        if directive is not None:
            line = text.count("\n", 0, directive.start()) + 1
            message = "hookrelay reads YAML 1.2 only (1.1 turns yes/no/on/off into booleans)"
            self.issues.append(ConfigIssue(name, line, 1, "", message))
            return _BROKEN
        yaml = YAML(typ="rt")
        yaml.allow_duplicate_keys = True  # reported below, with both lines, and not fatal
        try:
            root = yaml.compose(text)
            if _expanded_size(root, {}) > MAX_EXPANDED_VALUES:
                message = (
                    f"the aliases (*name) expand this file to over {MAX_EXPANDED_VALUES:,} "
                    "values; write the repeated parts out, or alias fewer nested ones"
                )
                self.issues.append(ConfigIssue(name, 1, 1, "", message))
                return _BROKEN
            self.issues.extend(_duplicate_keys(root, name))
            return yaml.load(text)
        except YAMLError as e:
            self.issues.append(_yaml_issue(name, e, text))
            return _BROKEN

    def _plain(self, node: Any, path: KeyPath, file: str) -> Any:
        """A ruamel value as plain dicts, lists, str, int, float, bool and None, with string
        values ``${VAR}``-expanded and every key's position recorded. Other values (dates,
        tagged scalars) are passed on for validation to refuse. (ruamel already turns a
        recursive alias into ``None``, so this walk always ends.)"""
        if isinstance(node, CommentedMap):
            return self._mapping(node, path, file)
        if isinstance(node, CommentedSeq):
            return self._sequence(node, path, file)
        if isinstance(node, str):
            return self._expand(str(node), path)
        if isinstance(node, bool | ScalarBoolean):
            return bool(node)
        if isinstance(node, int | float):
            return int(node) if isinstance(node, int) else float(node)
        return self._other_scalar(node, path)

    def _other_scalar(self, node: Any, path: KeyPath) -> Any:
        if isinstance(node, bytes | bytearray):
            # !!binary would silently base64-decode a signing key; Logto uses key text as is.
            self.report(path, "expected text, not a !!binary value; write the text itself")
            return None
        return node

    def _mapping(self, node: CommentedMap, path: KeyPath, file: str) -> dict[str, Any]:
        plain: dict[str, Any] = {}
        for key, value in node.items():
            where = _key_where(node, key, file)
            if not isinstance(key, str):
                self.report(path, "expected text keys; quote this key", where)
                continue
            child = (*path, str(key))
            self.source.positions[child] = where
            plain[str(key)] = self._plain(value, child, file)
        return plain

    def _sequence(self, node: CommentedSeq, path: KeyPath, file: str) -> list[Any]:
        plain: list[Any] = []
        for index, value in enumerate(node):
            child = (*path, index)
            self.source.positions[child] = _item_where(node, index, file)
            plain.append(self._plain(value, child, file))
        return plain

    def _expand(self, text: str, path: KeyPath) -> str:
        if "${" not in text:
            return text
        expanded, problems, substituted = _expand(text, self.env)
        for problem in problems:
            self.report(path, problem)
            self.failed.add(path)
        if substituted or problems:
            # A reference, even to an unset variable, keeps the value out of the file: the
            # "written inline" warnings must not claim otherwise.
            self.source.from_environment.add(path)
        return expanded

    # The two files' shapes

    def _main_data(self, tree: Any, file: str) -> dict[str, Any]:
        self.source.positions[()] = Where(file, _first_line(tree), 1)
        if tree is None:
            return {}
        if not isinstance(tree, CommentedMap):
            self.report((), "expected a mapping of sections (kafka, http, delivery, ...)")
            return {}
        data: dict[str, Any] = self._plain(tree, (), file)
        if "source_file" in data:  # a Settings field, but set by the loader, not by the file
            del data["source_file"]
            self.report(("source_file",), unknown_key_message("source_file", file_keys(Settings)))
        return data

    def _drop_retired_keys(self, data: dict[str, Any]) -> None:
        """Remove the ``RETIRED_KEYS`` the main file sets, whatever their value, and note them
        for :func:`config_warnings`."""
        for path in RETIRED_KEYS:
            mapping: Any = data
            for key in path[:-1]:
                mapping = mapping.get(key) if isinstance(mapping, dict) else None
            if isinstance(mapping, dict) and path[-1] in mapping:
                del mapping[path[-1]]
                self.source.retired.append(path)

    def _attach_hooks(self, data: dict[str, Any], main_file: Path) -> None:
        """Load the hooks file named by ``hooks_file`` into ``data["hooks"]``, and record its
        absolute path in ``data["hooks_file"]``."""
        relative = data.get("hooks_file")
        if relative is None:
            return
        if "hooks" in data:
            self.report(("hooks_file",), "use either hooks_file or an inline hooks list, not both")
            data["hooks_file"] = None
            return
        if not isinstance(relative, str):
            return  # validation refuses it with "expected a string"
        hooks_path = main_file.parent / relative
        data["hooks_file"] = os.path.abspath(hooks_path)
        hooks = self._hooks_document(hooks_path)
        if hooks is not _BROKEN:
            data["hooks"] = hooks

    def _hooks_document(self, hooks_path: Path) -> Any:
        """The ``hooks`` value of the hooks file as plain data, or ``_BROKEN``."""
        tree = self._read_tree(hooks_path, cited_at=("hooks_file",))
        file = str(hooks_path)
        if tree is _BROKEN:
            return _BROKEN
        if not isinstance(tree, CommentedMap):
            message = "expected a mapping with a 'hooks' list"
            self.issues.append(ConfigIssue(file, _first_line(tree), 1, "", message))
            return _BROKEN
        for key in tree:
            if key != "hooks":
                where = _key_where(tree, key, file)
                message = unknown_key_message(str(key), ("hooks",))
                self.issues.append(ConfigIssue(file, where.line, where.column, str(key), message))
        if "hooks" not in tree:
            message = "missing required key 'hooks'"
            self.issues.append(ConfigIssue(file, _first_line(tree), 1, "", message))
            return _BROKEN
        self.source.positions[("hooks",)] = _key_where(tree, "hooks", file)
        return self._plain(tree["hooks"], ("hooks",), file)

    # Validation

    def _validate(self, data: dict[str, Any]) -> Settings | None:
        try:
            settings = Settings.model_validate(data)
        except ValidationError as e:
            for error in _without_echoes(e.errors(include_url=False)):
                self._report_validation_error(error)
            self.salvaged = _salvage(data, e, self.source)
            return None
        settings._source = self.source
        return settings

    def _report_validation_error(self, error: ErrorDetails) -> None:
        context = error.get("ctx", {})
        loc = tuple(part for part in error["loc"] if part != "[key]")
        path = (*loc, *context.get("at", ()))
        if any(path[:end] in self.failed for end in range(len(path) + 1)):
            return
        message = refusal_message(error, path)
        see = context.get("see")
        if see is not None:
            where = self.source.locate((*loc, *see))
            message += f" at {where.file}:{where.line}" if where else ""
        self.report(path[:-1] if error["type"] == "missing" else path, message)


def _without_echoes(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """Drop a list's "too short" error when its items have errors of their own: pydantic counts
    only the valid items, so one bad event would also read as an empty ``events`` list."""
    with_item_errors = {error["loc"][:-1] for error in errors if error["loc"]}
    return [e for e in errors if e["type"] != "too_short" or e["loc"] not in with_item_errors]
