"""The supervisor: ``daemon`` (construction, tasks, signals, reload), ``shutdown`` (the order
and its bounds), ``admin_view`` (the admin API's answers), ``systemd`` (readiness and
watchdog reporting), and ``ingest_process`` (the ``hookrelay ingest`` process).
"""

from __future__ import annotations

from hookrelay.app.daemon import EXIT_ADMIN_LISTEN, Daemon, register_settings_secrets
from hookrelay.app.ingest_process import IngestProcess
from hookrelay.app.shutdown import EXIT_HARD_DEADLINE, EXIT_SECOND_SIGNAL, cancel_until_done

__all__ = [
    "EXIT_ADMIN_LISTEN",
    "EXIT_HARD_DEADLINE",
    "EXIT_SECOND_SIGNAL",
    "Daemon",
    "IngestProcess",
    "cancel_until_done",
    "register_settings_secrets",
]
