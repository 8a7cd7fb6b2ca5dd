"""deploy/tools/check_tools.py names every missing tool before make builds anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "tools" / "check_tools.py"


def run(target: str, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "PATH")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), target], capture_output=True, text=True, check=False,
        env={**environ, "PATH": path, **env}, timeout=60,
    )  # fmt: skip


def test_a_machine_without_java_go_or_apt_hears_each_by_name(tmp_path: Path) -> None:
    result = run("test", str(tmp_path))  # an empty PATH
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("make test needs Java 17+ to run the local Kafka broker")
    assert lines[1].startswith("make test needs Go 1.24+ to build the pinned kustomize")
    assert lines[2].startswith("make test needs apt-get and dpkg-deb to fetch Debian's")


def test_the_demo_needs_neither_go_nor_apt(tmp_path: Path) -> None:
    result = run("demo", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "make demo needs Java 17+ to run the local Kafka broker (no `java` on PATH, no JAVA_HOME)"
    ]


def test_an_old_java_is_named_with_its_version(tmp_path: Path) -> None:
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    java.chmod(0o755)
    result = run("demo", str(tmp_path))
    assert "found Java 11" in result.stderr


def test_this_machine_has_what_make_test_needs() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "test"], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")
