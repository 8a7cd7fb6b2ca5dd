"""The supervisor: ``daemon`` (construction, tasks, signals, reload), ``shutdown`` (the order
and its bounds), ``admin_view`` (the admin API's answers) and ``systemd`` (readiness and
watchdog reporting).
"""

from __future__ import annotations

from hookrelay.app.daemon import (
    EXIT_ADMIN_LISTEN,
    EXIT_HARD_DEADLINE,
    EXIT_SECOND_SIGNAL,
    Daemon,
    register_settings_secrets,
)
from hookrelay.app.shutdown import cancel_until_done

__all__ = [
    "EXIT_ADMIN_LISTEN",
    "EXIT_HARD_DEADLINE",
    "EXIT_SECOND_SIGNAL",
    "Daemon",
    "cancel_until_done",
    "register_settings_secrets",
]
