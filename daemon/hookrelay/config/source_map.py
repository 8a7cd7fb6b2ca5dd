"""Where each value of a loaded configuration came from: file, line, column and key path.

The loader records a position for every key path it reads; refusals (``ConfigIssue``) and
``hookrelay check`` warnings name them.
"""

from __future__ import annotations

from dataclasses import dataclass

from hookrelay.errors import ConfigIssue

KeyPath = tuple[str | int, ...]
"""A place in the configuration: mapping keys and list indexes, e.g. ``("hooks", 2, "url")``."""


@dataclass(frozen=True, slots=True)
class Where:
    """A position in a YAML file; ``line`` and ``column`` are 1-based."""

    file: str
    line: int
    column: int


def key_path_text(path: KeyPath) -> str:
    """``("hooks", 2, "url")`` → ``"hooks[2].url"``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


class SourceMap:
    """Where each key path of one loaded configuration came from.

    It travels with ``Settings`` as a private attribute so that :func:`config_warnings` can name
    lines. It is not part of the settings' value: it compares equal to any other source map, so
    two loads of the same content are equal even when comments moved the lines.
    """

    def __init__(self) -> None:
        self.files: list[str] = []
        self.positions: dict[KeyPath, Where] = {}
        self.from_environment: set[KeyPath] = set()
        self.inline_secrets: set[KeyPath] = set()
        self.retired: list[KeyPath] = []  # keys of RETIRED_KEYS the file still sets

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SourceMap)

    def __hash__(self) -> int:
        return 0

    def locate(self, path: KeyPath) -> Where | None:
        """Position of ``path``, else of its nearest ancestor that has one, else ``None``."""
        for end in range(len(path), -1, -1):
            where = self.positions.get(path[:end])
            if where is not None:
                return where
        return None

    def issue(self, path: KeyPath, message: str, where: Where | None = None) -> ConfigIssue:
        """A ``ConfigIssue`` at ``where`` (default: the position of ``path``)."""
        where = where or self.locate(path)
        if where is None:
            return ConfigIssue("", 0, 0, key_path_text(path), message)
        return ConfigIssue(where.file, where.line, where.column, key_path_text(path), message)
