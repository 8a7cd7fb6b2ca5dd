"""Keys ordering and ordering_after_dead_letter of a hook: defaults, and a block without
ordering refused at load time with the file, the line and the key path."""

from __future__ import annotations

from pathlib import Path

from hookrelay.config import load_settings
from tests.unit.config.test_config import HOOK, refusals, with_hooks


def test_a_dead_lettered_delivery_is_skipped_by_default(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + """
      ordering: key
    """)  # fmt: skip

    [hook] = load_settings(path, env={}).hooks

    assert (hook.ordering, hook.ordering_after_dead_letter) == ("key", "skip")


def test_an_ordered_hook_may_block_its_keys(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + """
      ordering: key
      ordering_after_dead_letter: block
    """)  # fmt: skip

    [hook] = load_settings(path, env={}).hooks

    assert hook.ordering_after_dead_letter == "block"


def test_block_without_ordering_is_refused_at_its_line(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + """
      ordering_after_dead_letter: block
    """)  # fmt: skip

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:6: hooks[0].ordering_after_dead_letter: expected "
        "ordering: key with ordering_after_dead_letter: block"
    ]


def test_an_unknown_choice_is_refused(tmp_path: Path) -> None:
    path = with_hooks(tmp_path, HOOK + """
      ordering: key
      ordering_after_dead_letter: hold
    """)  # fmt: skip

    assert refusals(path) == [
        f"{tmp_path / 'hooks.yaml'}:7: hooks[0].ordering_after_dead_letter: expected one of: "
        "skip, block"
    ]
