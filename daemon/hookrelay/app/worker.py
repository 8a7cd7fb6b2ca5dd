"""One worker process of a deployment with ``workers`` > 1, as the supervisor
(``app.supervisor``) starts it: the same ``hookrelay run -c FILE`` command, marked by the
environment.

- ``HOOKRELAY_WORKER=<index>/<count>`` marks a worker (index from 0) and says how many there
  are; ``HOOKRELAY_WORKER_TOKEN`` is the admin token of its private listener, and
  ``HOOKRELAY_WORKER_REPORT_FD`` a pipe to the supervisor.
- The worker runs the ordinary ``Daemon`` with its share of the settings
  (``config.workers.worker_share``: every hook's rate limit divided by the count), its admin
  listener on 127.0.0.1 at a free port with that token (only the supervisor knows either),
  its own static member name when ``kafka.group_instance_id`` is set, and ``worker=<index>``
  on every log line. Reloads apply the same (:meth:`WorkerRole.settings`).
- To the supervisor it reports, one JSON object a line on the report pipe, its listener's
  port (``{"admin_port": N}``) and, when it fails, the cause (``{"failed": "...",
  "hint": "..."}``).
- ``HOOKRELAY_WORKER_SETTINGS`` names the configuration the supervisor accepted and runs
  (``SettingsSnapshot``): a worker starts and reloads from it and never reads the
  configuration files itself, so every worker, a restarted one included, runs what the
  supervisor validated.
- Its standard input is a pipe from the supervisor, which writes nothing: end of file means
  the supervisor asks it to stop, or died (kill -9 included, since the kernel closes the
  pipe then), and the worker drains and exits as on SIGTERM. No worker outlives its
  supervisor by more than ``shutdown.hard_deadline_s``.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from pydantic import SecretStr

from hookrelay.config import Settings, worker_share
from hookrelay.ops.logs import get_logger

log = get_logger("hookrelay.worker")

WORKER_ENV: Final = "HOOKRELAY_WORKER"
TOKEN_ENV: Final = "HOOKRELAY_WORKER_TOKEN"
REPORT_FD_ENV: Final = "HOOKRELAY_WORKER_REPORT_FD"
SETTINGS_ENV: Final = "HOOKRELAY_WORKER_SETTINGS"


SNAPSHOT_PREFIX: Final = "hookrelay-settings-"
SNAPSHOT_NAME: Final = "settings.pickle"
STAGED_NAME: Final = "settings.pickle.new"


class SettingsSnapshot:
    """The configuration a supervisor accepted and runs, for its workers: written when it
    starts and at every accepted reload (after ``plan_reload``: restart-only keys keep their
    running values), before any worker is asked to reload; replaced atomically.

    Workers read this, never the files: trials restarted a worker after an edit nobody had
    reloaded and saw it sign with another key and join another ``group_id`` than the
    others (every event sent twice), and, after a refused reload, fail three starts on the
    invalid files and take the healthy worker down with it. The snapshot is a pickle (the
    validated ``Settings``, resolved secrets included) in a directory of its own, mode
    0700, under ``$TMPDIR`` (systemd's ``PrivateTmp``, the pod's ``/tmp`` volume), removed
    when the supervisor exits, and by its workers when they see it gone (a supervisor
    killed with ``kill -9`` removes nothing); it is read only by the supervisor's own
    workers. The directory is named after the supervisor's pid, and a supervisor starting
    removes the snapshots of supervisors no longer running (``remove_orphans``): an OOM
    kill or ``systemctl kill -s KILL`` ends the workers with their supervisor, and a trial
    found a snapshot, keys and admin token in clear, left behind by each of four."""

    def __init__(self) -> None:
        remove_orphans(Path(tempfile.gettempdir()))
        prefix = f"{SNAPSHOT_PREFIX}{os.getpid()}-"
        self.directory = Path(tempfile.mkdtemp(prefix=prefix))
        self.path = self.directory / SNAPSHOT_NAME

    def write(self, settings: Settings) -> None:
        """Make ``settings`` what workers start and reload with (mode 0600: it holds the
        signing keys)."""
        staged = self.directory / STAGED_NAME
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pickle.dumps(settings))
        os.replace(staged, self.path)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def remove_orphans(directory: Path) -> list[Path]:
    """Remove the snapshot directories in ``directory`` of supervisors that are gone
    (``hookrelay-settings-<pid>-*``, this user's, whose pid runs no process); return them.
    Only the snapshot's own files are removed, and a directory holding anything else stays.
    One of a pid that runs again (reused) stays too, until that process is gone."""
    removed = []
    for candidate in directory.glob(f"{SNAPSHOT_PREFIX}*-*"):
        pid = candidate.name.removeprefix(SNAPSHOT_PREFIX).partition("-")[0]
        if not pid.isdecimal() or _running(int(pid)):
            continue
        try:
            if candidate.is_symlink() or candidate.stat().st_uid != os.getuid():
                continue
            _remove_snapshot_directory(candidate)
        except OSError:
            continue
        removed.append(candidate)
    if removed:
        log.info("orphan_snapshots_removed", directories=[str(p) for p in removed])
    return removed


def _remove_snapshot_directory(directory: Path) -> None:
    """Remove a snapshot's own files from ``directory``, then the directory; raises
    ``OSError`` when it cannot (it holds other files, or is gone already)."""
    for name in (SNAPSHOT_NAME, STAGED_NAME):
        (directory / name).unlink(missing_ok=True)
    directory.rmdir()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def read_snapshot(path: str) -> Settings:
    """The ``Settings`` a ``SettingsSnapshot`` at ``path`` holds. Raises ``ValueError`` for
    a file that cannot be read or holds something else (a worker's environment set by hand:
    the supervisor always passes its own snapshot)."""
    # The supervisor wrote it, in a directory only this user can enter (see SettingsSnapshot).
    try:
        settings = pickle.loads(Path(path).read_bytes())
    except Exception as e:  # pickle raises nearly anything on bytes it did not write
        raise ValueError(f"{SETTINGS_ENV}={path!r}: {type(e).__name__}: {e}") from e
    if not isinstance(settings, Settings):
        raise ValueError(f"{SETTINGS_ENV}={path!r}: not a hookrelay configuration snapshot")
    return settings


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """This process's place in the deployment: worker ``index`` of ``count``."""

    index: int
    count: int
    token: str
    report_fd: int | None
    snapshot: str
    """The supervisor's ``SettingsSnapshot`` path: a worker never reads the files."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> WorkerRole | None:
        """The role the supervisor gave this process, or None (not a worker). Raises
        ``ValueError`` for a malformed ``HOOKRELAY_WORKER``, or one without the snapshot of
        ``HOOKRELAY_WORKER_SETTINGS`` (set by hand: only a supervisor starts workers)."""
        mark = environ.get(WORKER_ENV)
        if not mark:
            return None
        index, _, count = mark.partition("/")
        if not (index.isdecimal() and count.isdecimal() and int(index) < int(count)):
            raise ValueError(f"{WORKER_ENV}={mark!r}: expected <index>/<count>, index < count")
        role_index, role_count = int(index), int(count)
        snapshot = environ.get(SETTINGS_ENV)
        if not snapshot:
            raise ValueError(
                f"{WORKER_ENV} is set but {SETTINGS_ENV} is not: worker processes are started "
                "by their supervisor (`workers` above 1), which passes the configuration it "
                f"accepted; unset {WORKER_ENV} to run the daemon"
            )
        fd = environ.get(REPORT_FD_ENV)
        return cls(
            role_index, role_count, environ.get(TOKEN_ENV, ""), int(fd) if fd else None,
            snapshot,
        )  # fmt: skip

    def settings(self, settings: Settings) -> Settings:
        """``settings`` as this worker runs them: its share of the rate limits, its admin
        listener private (loopback, a free port, the supervisor's token), and a static
        member name of its own (``kafka.group_instance_id`` with ``-w<index>`` appended: the
        workers would fence each other with one name; also stable across restarts)."""
        admin = settings.admin.model_copy(
            update={"listen": "127.0.0.1:0", "token": SecretStr(self.token) if self.token else None}
        )
        kafka = settings.kafka
        if kafka.group_instance_id is not None:
            member = f"{kafka.group_instance_id[:240]}-w{self.index}"
            kafka = kafka.model_copy(update={"group_instance_id": member})
        shared = worker_share(settings, self.count).model_copy(
            update={"admin": admin, "kafka": kafka}
        )
        shared._source = settings._source
        return shared

    def forget_snapshot(self) -> None:
        """Remove the supervisor's snapshot (the supervisor is gone or stopping: nothing
        will start or reload a worker again). Only its own files and directory: the path
        comes from the environment, so nothing else is touched whatever it names."""
        path = Path(self.snapshot)
        if path.name != SNAPSHOT_NAME or not path.parent.name.startswith(SNAPSHOT_PREFIX):
            return
        with suppress(OSError):  # another worker removed it first, or it holds other files
            _remove_snapshot_directory(path.parent)

    def load(self, _path: str) -> Settings:
        """The configuration for a reload, as this worker runs it: the supervisor's snapshot,
        not the files (the supervisor loaded and accepted them)."""
        return self.settings(read_snapshot(self.snapshot))

    def report(self, **message: Any) -> None:
        """One line to the supervisor; never raises (a supervisor gone is seen on stdin)."""
        if self.report_fd is None:
            return
        with suppress(OSError):
            os.write(self.report_fd, orjson.dumps(message) + b"\n")


class _SupervisorPipe(asyncio.Protocol):
    """Standard input: nothing comes; its end means stop."""

    def __init__(self, on_end: Callable[[], None]) -> None:
        self._on_end = on_end

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_end()


@asynccontextmanager
async def supervisor_watched(on_end: Callable[[], None]) -> AsyncIterator[None]:
    """Call ``on_end`` when standard input ends (the supervisor closed it, or died), for the
    duration of the block."""
    loop = asyncio.get_running_loop()
    ended = False

    def end() -> None:
        if not ended:
            log.info("supervisor_pipe_closed", detail="the supervisor asks to stop, or is gone")
            on_end()

    stdin = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: _SupervisorPipe(end), stdin)
    try:
        yield
    finally:
        ended = True
        transport.close()
