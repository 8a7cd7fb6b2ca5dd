"""The benchmark's webhook receiver: a raw asyncio protocol in its own process(es).

It must never be the bottleneck, so it does as little as a receiver can: it splits HTTP/1.1
requests on ``Content-Length``, logs (wall-clock arrival time, path, ``benchSeq``) into
arrays, and answers ``200`` with an empty body on a kept-alive connection. It verifies
nothing per request; the first request of every path is kept whole, so the bench can check
one signature per hook afterwards. A path starting with ``/hang/`` is logged and never
answered: the endpoint that "never answers". A path starting with ``/cap/`` has a hidden
capacity (``Capacity``, set with ``Receiver.set_capacity``): a request beyond it is answered
``429`` without ``Retry-After`` and logged under ``/429`` + its path.

Several processes may share the port (``SO_REUSEPORT``; the kernel spreads connections).
The bench drives them through ``Receiver``: ``counts()``, ``dump()`` and ``reset()`` go over
a pipe to each process and are answered between requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import socket
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

from tests.bench.events import parse_seq
from tests.bench.loops import run_loop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
"""The one answer the receiver gives (keep-alive is HTTP/1.1's default)."""
HANG_PREFIX = b"/hang/"
CAP_PREFIX = b"/cap/"
THROTTLED_PREFIX = "/429"
"""Requests a ``/cap/`` path answered 429 are logged under this prefix + the path."""
RESPONSE_429 = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n"
CAPACITY_BURST_S = 0.2
_CONTENT_LENGTH = b"\r\ncontent-length:"
_START_TIMEOUT_S = 30.0


class ArrivalLog:
    """Per request: wall-clock arrival time (s), path number and ``benchSeq`` (or -1); and
    the connections accepted (a client that keeps too few idle connections opens many)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything logged so far."""
        self.path_ids: dict[bytes, int] = {}
        self.times = array("d")
        self.paths = array("H")
        self.seqs = array("q")
        self.first_requests: dict[bytes, bytes] = {}
        self.connections = 0

    def record(self, path: bytes, request: bytes, body_start: int, now: float) -> None:
        """Log one request (``request`` is its raw bytes; the body starts at ``body_start``)."""
        number = self.path_ids.get(path)
        if number is None:
            number = self.path_ids[path] = len(self.path_ids)
            self.first_requests[path] = request
        self.times.append(now)
        self.paths.append(number)
        self.seqs.append(parse_seq(request[body_start:]))

    def counts(self) -> dict[str, int]:
        """Requests per path so far."""
        names = {number: path.decode() for path, number in self.path_ids.items()}
        return {names[number]: count for number, count in Counter(self.paths).items()}

    def dump(self) -> dict[str, Any]:
        """Everything logged, as picklable values (arrays travel as bytes)."""
        return {
            "paths": [path.decode() for path in self.path_ids],
            "times": self.times.tobytes(),
            "path_ids": self.paths.tobytes(),
            "seqs": self.seqs.tobytes(),
            "first_requests": {p.decode(): r for p, r in self.first_requests.items()},
            "connections": self.connections,
        }


class Capacity:
    """The hidden capacity of the ``/cap/`` paths (all of them together), per process: a
    token bucket of ``per_s`` requests/s holding ``CAPACITY_BURST_S`` of burst, as an
    endpoint's own rate limiter would; ``per_s`` 0 admits everything."""

    def __init__(self) -> None:
        self.per_s = 0.0
        self._tokens = 0.0
        self._stamp = 0.0

    def set(self, per_s: float, now: float) -> None:
        """Change the capacity (requests/s) from ``now`` on, starting with a full burst."""
        self.per_s = per_s
        self._tokens = self._burst
        self._stamp = now

    @property
    def _burst(self) -> float:
        return max(1.0, self.per_s * CAPACITY_BURST_S)

    def admit(self, now: float) -> bool:
        """Take a token for a request arriving at ``now`` (wall seconds); False: 429."""
        if not self.per_s:
            return True
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self.per_s)
        self._stamp = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def _content_length(buffer: bytearray, head_end: int) -> int:
    """``Content-Length`` of the request head ``buffer[:head_end]``; 0 when absent."""
    head = bytes(buffer[:head_end]).lower()
    start = head.find(_CONTENT_LENGTH)
    if start < 0:
        return 0
    end = head.find(b"\r\n", start + 2)
    return int(head[start + len(_CONTENT_LENGTH) : end if end >= 0 else None])


def _path(buffer: bytearray) -> bytes:
    """The request target of the request line at the start of ``buffer``."""
    first = buffer.find(b" ")
    return bytes(buffer[first + 1 : buffer.find(b" ", first + 1)])


class SinkProtocol(asyncio.Protocol):
    """One client connection: split requests, log them, answer 200 (or hang)."""

    def __init__(self, log: ArrivalLog, clock: Any, capacity: Capacity) -> None:
        self._log = log
        self._clock = clock
        self._capacity = capacity
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._log.connections += 1

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._take_request():
            pass

    def _take_request(self) -> bool:
        buffer = self._buffer
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        total = head_end + 4 + _content_length(buffer, head_end)
        if len(buffer) < total:
            return False
        path = _path(buffer)
        request = bytes(buffer[:total])
        del buffer[:total]
        now = self._clock()
        if path.startswith(CAP_PREFIX) and not self._capacity.admit(now):
            self._log.record(THROTTLED_PREFIX.encode() + path, request, head_end + 4, now)
            if self._transport is not None:
                self._transport.write(RESPONSE_429)
            return True
        self._log.record(path, request, head_end + 4, now)
        if self._transport is not None and not path.startswith(HANG_PREFIX):
            self._transport.write(RESPONSE)
        return True


def _answer(
    control: Connection, log: ArrivalLog, capacity: Capacity, done: asyncio.Future[None]
) -> None:
    """Serve one command from the bench: counts, dump, reset, (capacity, per_s) or stop."""
    # uvloop makes a watched fd non-blocking; a dump is larger than the pipe buffer, and a
    # partial message would leave the bench waiting forever.
    os.set_blocking(control.fileno(), True)
    try:
        command = control.recv()
    except (EOFError, OSError):
        command = "stop"  # the bench went away: stop too
    if command == "counts":
        control.send(log.counts())
    elif command == "dump":
        control.send(log.dump())
    elif command == "reset":
        log.reset()
        control.send("ok")
    elif isinstance(command, tuple) and command[0] == "capacity":
        capacity.set(command[1], time.time())
        control.send("ok")
    elif not done.done():
        done.set_result(None)


async def _serve(port: int, control: Connection) -> None:
    loop = asyncio.get_running_loop()
    log = ArrivalLog()
    capacity = Capacity()
    server = await loop.create_server(
        lambda: SinkProtocol(log, time.time, capacity), "127.0.0.1", port, reuse_port=True,
        backlog=4096,
    )  # fmt: skip
    done: asyncio.Future[None] = loop.create_future()
    loop.add_reader(control.fileno(), _answer, control, log, capacity, done)
    control.send(("ready", os.getpid()))
    await done
    loop.remove_reader(control.fileno())
    server.close()
    with contextlib.suppress(OSError, BrokenPipeError):
        control.send("stopped")


def serve(port: int, control: Connection) -> None:
    """Process entry point: receive on 127.0.0.1:``port`` until told to stop (uvloop if any)."""
    run_loop(_serve(port, control))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Arrivals:
    """Merged arrival logs: per path, (arrival time s, benchSeq) sorted by time; the
    connections accepted since the last reset."""

    by_path: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    first_requests: dict[str, bytes] = field(default_factory=dict)
    connections: int = 0

    def add(self, dumped: dict[str, Any]) -> None:
        """Merge one process's ``ArrivalLog.dump()``."""
        times, paths, seqs = array("d"), array("H"), array("q")
        times.frombytes(dumped["times"])
        paths.frombytes(dumped["path_ids"])
        seqs.frombytes(dumped["seqs"])
        names = dumped["paths"]
        for when, number, seq in zip(times, paths, seqs, strict=True):
            self.by_path.setdefault(names[number], []).append((when, seq))
        for path, request in dumped["first_requests"].items():
            self.first_requests.setdefault(path, request)
        self.connections += dumped["connections"]

    def sort(self) -> None:
        """Order every path's arrivals by time."""
        for pairs in self.by_path.values():
            pairs.sort()

    def times(self, paths: list[str] | None = None) -> list[float]:
        """Sorted arrival times of ``paths`` (all paths when None)."""
        chosen = self.by_path if paths is None else {p: self.by_path.get(p, []) for p in paths}
        return sorted(when for pairs in chosen.values() for when, _ in pairs)

    def count(self, path: str) -> int:
        """Requests that arrived on ``path``."""
        return len(self.by_path.get(path, []))


class Receiver:
    """Bench-side handle of ``processes`` receiver processes sharing one port."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = processes
        self.port = 0
        self._children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        self.pids: list[int] = []

    def start(self) -> None:
        """Start the processes and wait until every one listens."""
        context = multiprocessing.get_context("spawn")
        self.port = free_port()
        for number in range(self.processes):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=serve, args=(self.port, theirs), name=f"bench-receiver-{number}",
                daemon=True,
            )  # fmt: skip
            process.start()
            theirs.close()
            self._children.append((process, ours))
        for _, pipe in self._children:
            if not pipe.poll(_START_TIMEOUT_S):
                raise RuntimeError("bench receiver did not start")
            _, pid = pipe.recv()
            self.pids.append(pid)

    def url(self, path: str) -> str:
        """``http://127.0.0.1:<port><path>``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def set_capacity(self, per_s: float) -> None:
        """Give the ``/cap/`` paths a hidden capacity of ``per_s`` requests/s (0: none),
        split evenly between the processes (the kernel spreads connections, not requests,
        so with several processes the capacity is only roughly ``per_s``)."""
        self._ask(("capacity", per_s / self.processes))

    def _ask(self, command: str | tuple[str, float]) -> list[Any]:
        for _, pipe in self._children:
            pipe.send(command)
        return [pipe.recv() for _, pipe in self._children]

    def counts(self) -> Counter[str]:
        """Requests per path, all processes together."""
        total: Counter[str] = Counter()
        for counts in self._ask("counts"):
            total.update(counts)
        return total

    def reset(self) -> None:
        """Forget all arrivals (between scenarios)."""
        self._ask("reset")

    def dump(self) -> Arrivals:
        """All arrivals so far, merged and sorted."""
        arrivals = Arrivals()
        for dumped in self._ask("dump"):
            arrivals.add(dumped)
        arrivals.sort()
        return arrivals

    def stop(self) -> None:
        """Stop every process (terminate any that does not stop within 5 s)."""
        for process, pipe in self._children:
            with contextlib.suppress(OSError, BrokenPipeError):
                pipe.send("stop")
            process.join(5.0)
            if process.is_alive():
                process.terminate()
                process.join(5.0)
            pipe.close()
        self._children.clear()
