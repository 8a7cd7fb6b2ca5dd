"""Optional: profile the daemon with py-spy during a 1-hook throughput run (``--profile``).

py-spy attaches to the running daemon and samples its stacks at 250 Hz while the backlog is
delivered, without pausing it (``--nonblocking``). Paused sampling, py-spy's default, is
biased on a virtual machine: the pause takes effect when the daemon next enters the kernel,
so the samples land on system calls. On this project's 2-core VM a loop spending 8 % of its
time in ``os.getpid()`` was sampled 100 % there; the daemon's paused profiles put 8-10 % on
``asyncio.create_task`` (it calls ``getpid`` on Python 3.11) and 5 % on socket writes.
Unpaused sampling reads many stacks while they change, and loses their outer frames
(``torn`` counts the stacks whose outermost frame is not the process's entry point). The
innermost frame is read first, so own shares count every sample; inclusive shares are lower
bounds. Idle samples (the loop waiting in epoll) are left out by py-spy, so shares are
shares of busy CPU; the run's rate is not a figure, only its shares are. The folded stacks
are kept and summarised: functions by own ("self") samples, by inclusive samples, and own
samples per package. py-spy is not a dependency: ``pip install py-spy`` into the
virtualenv.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.bench.harness import Bench, HookSpec, Run, keep_running, running, wait_for_deliveries

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    """Path of the py-spy executable next to this Python, or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _function(frame: str) -> str:
    """``function (file:line)`` → ``function (file)``: samples of one function add up."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['function']} ({match['file']})"


def _package(frame: str) -> str:
    """The top-level package or module of a frame's file (py-spy prints paths relative to
    their import root: ``aiohttp/client.py``, ``asyncio/tasks.py``, ``hookrelay/...``)."""
    match = _FRAME.match(frame)
    if match is None:
        return "other"
    return re.split(r"[/.]", match["file"].lstrip("<"), maxsplit=1)[0] or "other"


_ENTRY = "<module> (hookrelay/__main__.py"
"""The outermost frame of every whole stack of the daemon (``python -m hookrelay``)."""


def summarise(folded: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self and inclusive share (%), and self share per package."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = torn = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        torn += 0 if any(f.startswith(_ENTRY) for f in frames[:3]) else count
        total += count
        own[_function(frames[-1])] += count
        packages[_package(frames[-1])] += count
        for function in {_function(f) for f in frames}:
            inclusive[function] += count

    def shares(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(n / total * 100, 1)] for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "torn": torn,
        "self_pct": shares(own),
        "inclusive_pct": shares(inclusive),
        "package_self_pct": shares(packages),
    }


async def profile_throughput(bench: Bench, out: Path, hooks: int = 1) -> dict[str, Any]:
    """Re-run the throughput scenario (1 or 10 hooks) with py-spy attached; summarise the
    stacks."""
    specs = bench.hooks(hooks)
    target = bench.sizes.backlog_deliveries
    return await _profiled(
        bench, out, f"profile-{hooks}", specs,
        lambda run: wait_for_deliveries(bench, run, [spec.path for spec in specs], target),
    )  # fmt: skip


async def profile_isolation(bench: Bench, out: Path) -> dict[str, Any]:
    """Re-run an isolation run (10 hooks, h9 never answers) with py-spy attached: where the
    CPU goes that the nine healthy hooks lose."""
    specs = bench.hooks(10, hang=(9,))
    return await _profiled(
        bench, out, "profile-isolation", specs,
        lambda run: keep_running(run, bench.sizes.isolation_s),
    )  # fmt: skip


async def _profiled(
    bench: Bench, out: Path, name: str, specs: list[HookSpec],
    until: Callable[[Run], Awaitable[object]],
) -> dict[str, Any]:  # fmt: skip
    spy = py_spy()
    if spy is None:
        return {"error": "py-spy not installed (.venv/bin/pip install py-spy)"}
    _prepare(out)
    spy_log = bench.workdir / f"{name}-py-spy.log"
    async with running(bench, name, bench.backlog_topic, specs) as run:
        recorder = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(run.daemon.pid), "--rate", "250", "--format", "raw",
            "--output", str(out), "--nonblocking",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            await until(run)
        finally:
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            output, _ = await asyncio.wait_for(recorder.communicate(), 60)
            spy_log.write_bytes(output)
    return _summary_of(out, spy_log)


def _prepare(out: Path) -> None:
    """Make room for a fresh output file (py-spy refuses nothing, but a stale one misleads)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)


def _summary_of(out: Path, spy_log: Path) -> dict[str, Any]:
    if not out.exists():
        return {"error": f"py-spy wrote nothing; see {spy_log}"}
    return {"folded_stacks": str(out), **summarise(out)}
