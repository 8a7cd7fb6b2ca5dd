"""What a configuration reload may change live, and what it changed.

A reload (SIGHUP, ``systemctl reload``, ``POST /v1/reload``) re-reads the files and validates
them in full; an invalid file changes nothing. A valid one is applied in one synchronous
step, so no record is routed with the new hooks and dispatched with the old lanes:

- **live**: ``hooks`` (added, removed, changed: events, URL, signing key, headers, rate
  limit, concurrency, timeout, retry statuses, enabled), ``logging`` and the admin API's
  token (``admin.token`` or ``admin.token_file``) rotates without a restart;
- **at restart only**: every other section (``kafka``, ``delivery``, ``http``, ``admin``,
  ``shutdown``, ``dead_letter_topic``). The consumer group, subscriptions, retry tiers,
  connection pool and listener are built once; changing them under running work would break
  the delivery guarantees. A reload that changes them keeps the running values and names
  each changed key in ``ReloadPlan.restart_required`` (and in the log).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from hookrelay.config import Settings
from hookrelay.errors import ConfigError
from hookrelay.ops.logs import get_logger

log = get_logger("hookrelay.app")

LIVE_KEYS = frozenset({"hooks", "logging", "hooks_file", "source_file"})
"""Top-level settings a reload applies (the file paths only say where hooks came from)."""
LIVE_ADMIN_KEYS = ("token",)
"""The admin API's token (from admin.token or admin.token_file) rotates live; the rest of
the admin section needs a restart."""


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """The difference between the running and the new settings.

    ``settings``: what to run from now on (the new hooks and logging, the running values of
    everything else); ``added``/``removed``/``changed``: hook ids; ``restart_required``:
    dotted key paths whose new value waits for a restart.
    """

    settings: Settings
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    restart_required: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        """JSON-ready report (``AdminBackend.reload``'s answer)."""
        return {
            "hooks": len(self.settings.hooks),
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": list(self.changed),
            "restart_required": list(self.restart_required),
        }


def plan_reload(running: Settings, new: Settings) -> ReloadPlan:
    """Compare ``running`` with freshly loaded ``new`` settings; see the module docstring."""
    old_hooks = {hook.id: hook for hook in running.hooks}
    new_hooks = {hook.id: hook for hook in new.hooks}
    added = tuple(i for i in new_hooks if i not in old_hooks)
    removed = tuple(i for i in old_hooks if i not in new_hooks)
    changed = tuple(i for i in new_hooks if i in old_hooks and new_hooks[i] != old_hooks[i])
    restart: list[str] = []
    for name in type(running).model_fields:
        if name not in LIVE_KEYS:
            _diff(getattr(running, name), getattr(new, name), name, restart)
    live_admin = {key: getattr(new.admin, key) for key in LIVE_ADMIN_KEYS}
    live_paths = {f"admin.{key}" for key in LIVE_ADMIN_KEYS}
    restart = [path for path in restart if path not in live_paths]
    applied = running.model_copy(
        update={
            "hooks": new.hooks, "logging": new.logging, "hooks_file": new.hooks_file,
            "admin": running.admin.model_copy(update=live_admin),
        }
    )  # fmt: skip
    # model_copy keeps the running file's key-to-line map; warnings must cite the new files.
    applied._source = new._source
    return ReloadPlan(applied, added, removed, changed, tuple(restart))


def _diff(old: Any, new: Any, path: str, found: list[str]) -> None:
    """Append the dotted paths of the leaves that differ between two setting values."""
    if isinstance(old, BaseModel) and type(old) is type(new):
        for name in type(old).model_fields:
            _diff(getattr(old, name), getattr(new, name), f"{path}.{name}", found)
    elif old != new:
        found.append(path)


async def serve_reloads(
    requested: asyncio.Event, stopping: asyncio.Event, reload: Callable[[], Awaitable[Any]]
) -> None:
    """Serve SIGHUP for ever: one ``reload()`` per burst of ``requested``, none once
    ``stopping``; a refused file (``ConfigError``) is already logged by ``reload``."""
    while True:
        await requested.wait()
        requested.clear()
        if stopping.is_set():
            log.info("reload_skipped", reason="shutting down")
            continue
        with suppress(ConfigError):
            await reload()
