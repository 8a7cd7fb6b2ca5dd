"""Route an event name to the enabled hooks subscribed to it.

A hook's ``events`` holds exact names (``User.Created``), prefix wildcards
(``Organization.*`` matches ``Organization.Created`` but not ``OrganizationRole.Created``)
or ``*`` (everything). The index is built once per configuration snapshot; reload builds a
new ``Router`` and swaps the reference, so ``match`` never sees a half-built index.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from hookrelay.config import Hook

_CACHE_LIMIT: Final = 4096
"""Distinct event names remembered; bounded because names come from untrusted records."""


class Router:
    """Precomputed index from event name to hooks, in configuration order.

    ``match`` is pure and synchronous: a dict lookup for names seen before, otherwise an
    exact-name lookup plus a scan of the (few) prefix patterns.
    """

    def __init__(self, hooks: Iterable[Hook]) -> None:
        self._order: dict[str, int] = {}
        self._exact: dict[str, list[Hook]] = {}
        self._prefixes: list[tuple[str, Hook]] = []
        self._everything: list[Hook] = []
        self._cache: dict[str, tuple[Hook, ...]] = {}
        for position, hook in enumerate(h for h in hooks if h.enabled):
            self._order[hook.id] = position
            for pattern in hook.events:
                self._index(pattern, hook)

    def _index(self, pattern: str, hook: Hook) -> None:
        if pattern == "*":
            self._everything.append(hook)
        elif pattern.endswith(".*"):
            self._prefixes.append((pattern[:-1], hook))  # keep the dot: "Organization."
        else:
            self._exact.setdefault(pattern, []).append(hook)

    def match(self, event_name: str) -> tuple[Hook, ...]:
        """Return the enabled hooks subscribed to ``event_name``, each once, in config order."""
        hit = self._cache.get(event_name)
        if hit is not None:
            return hit
        found = {h.id: h for h in self._exact.get(event_name, ())}
        for prefix, hook in self._prefixes:
            if event_name.startswith(prefix):
                found[hook.id] = hook
        for hook in self._everything:
            found[hook.id] = hook
        result = tuple(sorted(found.values(), key=lambda h: self._order[h.id]))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[event_name] = result
        return result

    def names(self, event_name: str) -> bool:
        """True when some enabled hook subscribes to ``event_name`` by its exact name (so
        the name is configuration, not producer input, and may become a metric label)."""
        return event_name in self._exact

    def routes(self, event_name: str) -> bool:
        """True when at least one enabled hook subscribes to ``event_name``."""
        return bool(self.match(event_name))
