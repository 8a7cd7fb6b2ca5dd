"""Hold SIGHUP from the first line of the process until the daemon's own handler is in place.

SIGHUP's default action ends a process. ``systemctl reload`` (or a config tool's
``kill -HUP``) right after a start would otherwise kill the daemon while it is still
importing its modules and connecting to Kafka (seen: exit 129 within the first 0.3 s). The
entry points call :func:`hold_sighup` before importing anything heavy; a SIGHUP that arrives
meanwhile is remembered, and the supervisor reloads once it runs (the configuration may have
changed after it was read). Standard library only, so importing this costs nothing. The
interpreter's own start-up, before any of this runs (some tens of milliseconds), stays a
window where SIGHUP has its default effect.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType

_pending = False


def _remember(_signum: int, _frame: FrameType | None) -> None:
    global _pending  # noqa: PLW0603  # set from a signal handler; read once by the supervisor
    _pending = True


def hold_sighup() -> None:
    """Remember SIGHUP instead of dying of it (main thread only; a no-op where the platform
    has no SIGHUP)."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _remember)


def take_held_sighup() -> bool:
    """True once if a SIGHUP arrived while held; clears the memory."""
    global _pending
    pending, _pending = _pending, False
    return pending


def handle_stop_and_reload(on_stop: Callable[[int], None], on_reload: Callable[[], None]) -> None:
    """On the running loop: SIGTERM and SIGINT call ``on_stop(signum)``, SIGHUP (systemd's
    ExecReload) ``on_reload()``, which also runs now for a SIGHUP held during start-up."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop, sig)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    if take_held_sighup():
        on_reload()
