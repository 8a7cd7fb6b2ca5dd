"""The supervisor: ``daemon`` (construction, tasks, signals, reload), ``shutdown`` (the order
and its bounds), ``admin_view`` (the admin API's answers), ``systemd`` (readiness and
watchdog reporting), ``ingest_process`` (the ``hookrelay ingest`` process), and for
``workers`` > 1: ``supervisor`` (the parent), ``worker_slot`` (one worker as the parent sees
it), ``deployment_view`` (the admin API for them all) and ``worker`` (a worker's side).
"""

from __future__ import annotations

from hookrelay.app.daemon import EXIT_ADMIN_LISTEN, Daemon, register_settings_secrets
from hookrelay.app.ingest_process import IngestProcess
from hookrelay.app.shutdown import EXIT_HARD_DEADLINE, EXIT_SECOND_SIGNAL, cancel_until_done
from hookrelay.app.supervisor import Supervisor
from hookrelay.app.worker import WorkerRole

__all__ = [
    "EXIT_ADMIN_LISTEN",
    "EXIT_HARD_DEADLINE",
    "EXIT_SECOND_SIGNAL",
    "Daemon",
    "IngestProcess",
    "Supervisor",
    "WorkerRole",
    "cancel_until_done",
    "register_settings_secrets",
]
