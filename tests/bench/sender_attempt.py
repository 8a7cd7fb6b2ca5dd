"""CPU per ``HttpSender.attempt``: the working tree against a git revision, in one run.

    .venv/bin/python -m tests.bench.sender_attempt --against f17e7ac
    .venv/bin/python -m tests.bench.sender_attempt --rounds 9 --requests 20000

A micro-benchmark of the sender alone (issue 10, item 7: what the stale-connection check
costs a healthy request). The receiver is ``tests.bench.receiver`` in its own process, so
the figure is this process's CPU time (``time.process_time``) divided by the requests sent:
the sender's own code plus aiohttp and the event loop (uvloop when installed, as in the
daemon), with keep-alive connections that never go stale. ``concurrency`` workers share one
hook, as a lane's workers do.

Variants, measured in turn within every round (each round starting with the next one) so
that the machine's drift hits them alike:

- ``current``: the working tree's ``HttpSender``;
- ``against``: ``hookrelay/delivery/sender.py`` as it was at ``--against`` (loaded from git),
  if given;
- ``trace_config``: the working tree's sender learning connection reuse the public way
  instead, from an ``aiohttp.TraceConfig`` with an ``on_connection_reuseconn`` handler (a
  lower bound of that design's cost: its handler only sets a context variable);
- ``bare``: the bench's baseline client (``tests.bench.baseline``): a bare aiohttp post of
  pre-signed headers, the floor any sender on aiohttp could reach;
- ``noise_floor``: the reference measured once more, so its ratio shows how far chance alone
  moves a ratio on this machine.

Prints each variant's median and best µs per attempt over the rounds, and the median of the
per-round ratios to the reference (``against`` if given, else ``current``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import ipaddress
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import aiohttp

from hookrelay.config import DeliverySettings, Hook, HttpSettings
from hookrelay.delivery import sender as current_sender
from hookrelay.net.guard import GuardedResolver, NetworkPolicy
from tests.bench import baseline
from tests.bench.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
BODY = (
    b'{"event":"PostSignIn","createdAt":"2026-08-21T09:15:42.123Z","userId":"u1",'
    b'"data":{"id":"e1"},"hookId":"bench"}'
)
_reused: ContextVar[bool] = ContextVar("bench_reused", default=False)


def sender_at(revision: str) -> ModuleType:
    """``hookrelay.delivery.sender`` as committed at ``revision`` (see ``module_at``)."""
    return module_at(revision, "delivery/sender.py")


def module_at(revision: str, path: str) -> ModuleType:
    """``daemon/hookrelay/<path>`` as committed at ``revision`` (its imports resolve to the
    tree's other modules, so it must not need ones that changed since). Raises
    ``SystemExit`` naming the cause for a revision from before the layered layout (its
    module imports modules that have moved since; measure such a revision from a worktree
    of its own)."""
    shown = subprocess.run(
        ["git", "show", f"{revision}:daemon/hookrelay/{path}"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if shown.returncode != 0:
        raise SystemExit(f"--against {revision}: no daemon/hookrelay/{path} there "
                         "(a revision from before the layered layout?)")  # fmt: skip
    name = f"hookrelay._bench_{Path(path).stem}_{revision.replace('~', '_')}"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    try:
        exec(compile(shown.stdout, f"{revision}:{path}", "exec"), module.__dict__)
    except ImportError as e:
        raise SystemExit(f"--against {revision}: its {path} imports what moved since: {e}") from e
    return module


async def _on_reuse(_session: Any, _context: SimpleNamespace, _params: Any) -> None:
    _reused.set(True)


class TraceConfigSender(current_sender.HttpSender):
    """The working tree's sender, its pooled sessions carrying a ``TraceConfig``."""

    def _session_for(self, policy: NetworkPolicy) -> Any:
        sessions = self._sessions.get(policy)
        if sessions is None:
            trace = aiohttp.TraceConfig()
            trace.on_connection_reuseconn.append(_on_reuse)
            trace.freeze()
            connector = aiohttp.TCPConnector(
                limit=self._http.max_connections, limit_per_host=0, ttl_dns_cache=60,
                resolver=GuardedResolver(policy),
            )  # fmt: skip
            pooled = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, raise_for_status=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                trace_configs=[trace],
            )  # fmt: skip
            fresh = current_sender._session(
                aiohttp.TCPConnector(
                    limit=self._http.max_connections, limit_per_host=0, ttl_dns_cache=60,
                    resolver=GuardedResolver(policy), force_close=True,
                )
            )  # fmt: skip
            sessions = self._sessions[policy] = current_sender._Sessions(pooled, fresh)
        return sessions


class BareSender:
    """``tests.bench.baseline``'s request as a sender: one session with the baseline's
    settings, the headers built once, nothing classified."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._headers = (
            ("content-type", "application/json"), ("user-agent", "hookrelay"),
            ("logto-signature-sha-256", "0" * 64), ("webhook-id", "msg_bench"),
        )  # fmt: skip

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=baseline.MAX_CONNECTIONS, limit_per_host=0)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )  # fmt: skip

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def attempt(self, hook: Hook, _delivery_id: str, body: bytes) -> SimpleNamespace:
        assert self._session is not None
        async with self._session.post(
            hook.url, data=body, headers=self._headers, allow_redirects=False
        ) as response:
            await response.content.read(baseline.MAX_RESPONSE_BYTES)
            return SimpleNamespace(ok=200 <= response.status < 300, error=None)


async def cpu_per_attempt(make: Callable[[], Any], url: str, requests: int, workers: int) -> float:
    """µs of this process's CPU per ``attempt``, after one untimed warm-up pass."""
    sender = make()
    await sender.start()
    hook = Hook.model_validate({"id": "bench", "events": ["*"], "url": url, "signing_key": "k"})

    async def worker(n: int) -> None:
        for _ in range(n):
            result = await sender.attempt(hook, "msg_bench", BODY)
            if not result.ok:
                raise RuntimeError(f"bench request failed: {result.error}")

    try:
        await asyncio.gather(*(worker(requests // 10 // workers) for _ in range(workers)))
        started = time.process_time()
        await asyncio.gather(*(worker(requests // workers) for _ in range(workers)))
        spent = time.process_time() - started
    finally:
        await sender.close()
    return spent / (requests // workers * workers) * 1e6


async def run(args: argparse.Namespace) -> dict[str, list[float]]:
    http = HttpSettings(allow_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    delivery = DeliverySettings()
    variants: dict[str, Callable[[], Any]] = {
        "current": lambda: current_sender.HttpSender(http, delivery),
        "trace_config": lambda: TraceConfigSender(http, delivery),
        "bare": BareSender,
    }
    if args.against:
        old = sender_at(args.against)
        variants["against"] = lambda: old.HttpSender(http, delivery)
    reference = "against" if args.against else "current"
    variants["noise_floor"] = variants[reference]  # the reference again: what chance moves
    receiver = Receiver()
    receiver.start()
    figures: dict[str, list[float]] = {name: [] for name in variants}
    try:
        url = receiver.url("/hooks/bench")
        names = list(variants)
        for round_number in range(args.rounds):
            # Each round starts with another variant: none is always first after a pause.
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                figures[name].append(
                    await cpu_per_attempt(variants[name], url, args.requests, args.concurrency)
                )
            print(f"round {round_number + 1}/{args.rounds}: "
                  + ", ".join(f"{n} {f[-1]:.1f}" for n, f in figures.items()),
                  file=sys.stderr)  # fmt: skip
    finally:
        receiver.stop()
    return figures


def report(figures: dict[str, list[float]], reference: str) -> str:
    lines = [f"µs of CPU per HttpSender.attempt ({len(figures[reference])} rounds; "
             f"ratio = median of per-round ratios to {reference}):"]  # fmt: skip
    for name, values in figures.items():
        ratios = [v / r for v, r in zip(values, figures[reference], strict=True)]
        lines.append(
            f"  {name:<13} median {statistics.median(values):6.1f}  best {min(values):6.1f}"
            f"  ratio {statistics.median(ratios):.3f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", help="git revision whose sender.py is the reference")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=10_000, help="timed requests per run")
    parser.add_argument("--concurrency", type=int, default=8, help="a lane's default workers")
    args = parser.parse_args()
    try:
        import uvloop  # optional, as in the daemon
    except ImportError:
        figures = asyncio.run(run(args))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            figures = runner.run(run(args))
    print(report(figures, "against" if args.against else "current"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
