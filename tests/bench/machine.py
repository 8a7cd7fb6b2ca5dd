"""What the benchmark ran on: hardware, software versions, load, and the commit measured."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "hookrelay", "aiohttp", "aiokafka", "orjson", "uvloop", "structlog", "prometheus-client",
    "pydantic", "yarl", "multidict",
)  # fmt: skip


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def _memory_mb() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _command(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def _kafka_version() -> str | None:
    kafkactl = (ROOT / "deploy" / "kafka" / "kafkactl.py").read_text()
    match = re.search(r'^KAFKA_VERSION = "([^"]+)"', kafkactl, re.MULTILINE)
    return match.group(1) if match else None


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages (runnable processes; > cores means contention)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, OS, Python, package versions, Kafka/Java, git commit."""
    java = _command("java", "-version").splitlines()
    commit = _command("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    dirty = bool(_command("git", "-C", str(ROOT), "status", "--porcelain", "daemon"))
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_mb": _memory_mb(),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": {name: _version(name) for name in PACKAGES},
        "kafka": _kafka_version(),
        "java": java[0] if java else None,
        "git_commit": commit + ("+dirty daemon/" if dirty else ""),
        "load_average_at_start": load_average(),
    }
