"""systemd's service notification protocol (sd_notify(3)) for a ``Type=notify`` unit.

The protocol: the service manager puts the address of an AF_UNIX datagram socket in
``$NOTIFY_SOCKET`` (a file-system path, or ``@name`` for the Linux abstract namespace), and
the service sends it datagrams of newline-separated ``KEY=VALUE`` assignments:

- ``READY=1``: start-up finished (for hookrelay: consuming; the first time ``/readyz`` is true);
- ``STATUS=text``: one line shown by ``systemctl status``;
- ``WATCHDOG=1``: "still alive", due at least once per ``$WATCHDOG_USEC`` microseconds when
  the unit sets ``WatchdogSec=``; ``$WATCHDOG_PID``, when set, names the process expected to
  send them (sd_watchdog_enabled(3));
- ``STOPPING=1``: shutdown has begun;
- ``RELOADING=1`` with ``MONOTONIC_USEC=`` (CLOCK_MONOTONIC, microseconds), then ``READY=1``
  when done: a configuration reload (tracked by systemd 253+'s ``Type=notify-reload``; older
  managers, such as Debian 12's systemd 252, ignore it harmlessly).

Without ``$NOTIFY_SOCKET`` (not started by systemd) every call is a no-op. Sending never
blocks the event loop (the socket is non-blocking: a full queue drops that datagram) and is
never fatal: the first failure in a row is logged as a warning, later ones at debug level.

Why a module of our own instead of a PyPI package (house rule: outside hookrelay's core, a
well-kept library beats own code), as checked in 2026-11:

- ``systemd-python`` and ``cysystemd`` wrap libsystemd in C/Cython: building them needs
  libsystemd headers and a compiler, too much for five datagram types;
- ``sdnotify`` (pure Python) has had no release since 2017, sends on a blocking socket and
  swallows every error silently;
- ``systemd-watchdog`` sends with a blocking ``sendto`` on the caller's thread (the event
  loop here), raises on any socket error, and has no STOPPING/RELOADING/MONOTONIC_USEC API;
- ``async-sdnotify`` is a single 0.1.0 release; it starts its watchdog task unsupervised
  and has no STOPPING/RELOADING API.

The protocol itself is a stable, documented ABI (systemd.io/NOTIFY, sd_notify(3)) and takes
a few lines of standard-library code.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from hookrelay.ops.logs import get_logger

log = get_logger("hookrelay.sdnotify")

STATUS_MAX_CHARS = 1024
"""Longest STATUS text sent; systemd reads at most one pipe buffer (4096 bytes) per datagram."""


def socket_address(value: str | None) -> str | None:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value, or None when there is none.

    ``/run/systemd/notify`` → itself; ``@name`` → ``"\\0name"`` (abstract namespace, as
    libsystemd reads it). Other forms (a relative path; ``vsock:`` addresses of systemd 254+)
    are not supported here: logged once and treated as unset.
    """
    if not value:
        return None
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    hint = "expected an absolute path or @name; systemd notifications are off"
    log.warning("notify_socket_unsupported", notify_socket=value, hint=hint)
    return None


def watchdog_timeout_s(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog timeout in seconds that systemd asked ``pid`` to honour, else None.

    From ``$WATCHDOG_USEC`` (a positive integer, microseconds), ignored when ``$WATCHDOG_PID``
    is set and names another process: the rules of sd_watchdog_enabled(3).
    """
    usec = environ.get("WATCHDOG_USEC", "")
    # isdigit() alone accepts "²" and other scripts' digits, which int() refuses.
    if not (usec.isascii() and usec.isdigit()) or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    return int(usec) / 1_000_000


class Notifier:
    """Sends sd_notify datagrams to ``address`` (a ``$NOTIFY_SOCKET`` value); no-op when None.

    ``watchdog_timeout_s`` is the manager's watchdog timeout (seconds), or None when the unit
    has no ``WatchdogSec=``. Every method returns True when the datagram was sent, False when
    it was not (disabled, or a socket error: logged, never raised).
    """

    def __init__(self, address: str | None, watchdog_timeout_s: float | None = None) -> None:
        self.address = address
        self._target = socket_address(address)
        self.watchdog_timeout_s = watchdog_timeout_s if self._target else None
        self._socket: socket.socket | None = None
        self._failing = False
        self.last_status = ""
        self.ready_sent = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """A notifier for this process from ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and
        ``$WATCHDOG_PID`` (all set by systemd for a ``Type=notify`` unit)."""
        address = environ.get("NOTIFY_SOCKET") or None
        return cls(address, watchdog_timeout_s(environ, os.getpid()))

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (the process runs under systemd)."""
        return self._target is not None

    def ready(self, status: str) -> bool:
        """``READY=1`` with a ``STATUS=`` line: start-up (or a reload) has finished."""
        self.ready_sent = True
        return self.send("READY=1", self._status_field(status))

    def status(self, status: str) -> bool:
        """``STATUS=``: the one-line state ``systemctl status`` shows."""
        return self.send(self._status_field(status))

    def stopping(self, status: str) -> bool:
        """``STOPPING=1`` with a ``STATUS=`` line: the shutdown sequence has begun."""
        return self.send("STOPPING=1", self._status_field(status))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the keep-alive ping (due every ``watchdog_timeout_s`` at most)."""
        return self.send("WATCHDOG=1")

    @contextmanager
    def reloading(self, status: str = "reloading configuration") -> Iterator[None]:
        """Bracket a configuration reload: ``RELOADING=1`` with ``MONOTONIC_USEC=`` on entry,
        ``READY=1`` with the status shown before the reload on exit (also when the reload
        raised, since the old configuration stays in force). Before the first ``READY=1`` a
        reload sends nothing: READY then would tell systemd that start-up finished while the
        daemon is not consuming yet (``systemctl start`` would return too early)."""
        if not self.ready_sent:
            yield
            return
        before = self.last_status
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", self._status_field(status))
        try:
            yield
        finally:
            self.ready(before or "ready")

    def send(self, *assignments: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` assignments (no newline inside any of them)."""
        if self._target is None:
            return False
        message = "\n".join(assignments).encode("utf-8")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            # sendto, not connect: the path is looked up anew each time, so a manager that
            # re-created its socket (systemctl daemon-reexec) still gets the next datagram.
            self._socket.sendto(message, self._target)
        except OSError as e:
            self._report_failure(assignments[0], e)
            return False
        if self._failing:
            log.info("systemd_notify_recovered", notify_socket=self.address)
            self._failing = False
        return True

    def close(self) -> None:
        """Close the socket (a later send opens a new one)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _status_field(self, status: str) -> str:
        self.last_status = " ".join(status.split())[:STATUS_MAX_CHARS]
        return f"STATUS={self.last_status}"

    def _report_failure(self, first: str, error: OSError) -> None:
        # Once per run of failures: a watchdog ping every few seconds must not flood the log.
        level = log.debug if self._failing else log.warning
        level("systemd_notify_failed", notify_socket=self.address, sending=first,
              error=f"{type(error).__name__}: {error}")  # fmt: skip
        self._failing = True
