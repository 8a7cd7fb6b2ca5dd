"""Say, before anything is downloaded or built, which tools a make target needs and lacks.

    python3 deploy/tools/check_tools.py demo     # make demo: Python 3.11+, Java 17+
    python3 deploy/tools/check_tools.py test     # make test: also Go 1.24+ (kustomize) and
                                                 # apt-get + dpkg-deb (Prometheus, promtool)

Exit 0 when everything is there; 1 listing every missing or too old tool by name, with what
it is for. Standard library only: it runs before the virtualenv exists. The version floors
are those of the scripts that use the tools (deploy/kafka/kafkactl.py,
deploy/kubernetes/kustomizectl.py, deploy/prometheus/fetch_prometheus.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

JAVA_MIN = 17
GO_MIN = (1, 24)
PYTHON_MIN = (3, 11)


def _output(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


def python_problem() -> str | None:
    if sys.version_info[:2] >= PYTHON_MIN:
        return None
    found = ".".join(map(str, sys.version_info[:3]))
    return f"Python {PYTHON_MIN[0]}.{PYTHON_MIN[1]}+ (found {found}; set PYTHON=python3.11)"


def java_problem() -> str | None:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if java is None or not Path(java).exists():
        return f"Java {JAVA_MIN}+ to run the local Kafka broker (no `java` on PATH, no JAVA_HOME)"
    match = re.search(r'version "(\d+)(?:\.(\d+))?', _output([java, "-version"]))
    if match is None:
        return f"Java {JAVA_MIN}+ ({java} did not say its version)"
    major = int(match.group(1))
    major = int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8
    if major < JAVA_MIN:
        return f"Java {JAVA_MIN}+ to run the local Kafka broker (found Java {major} at {java})"
    return None


def go_problem() -> str | None:
    go = shutil.which("go")
    need = f"Go {GO_MIN[0]}.{GO_MIN[1]}+ to build the pinned kustomize for the Kubernetes tests"
    if go is None:
        return f"{need} (no `go` on PATH)"
    match = re.search(r"go(\d+)\.(\d+)", _output([go, "version"]))
    if match is not None and (int(match.group(1)), int(match.group(2))) < GO_MIN:
        return f"{need} (found go{match.group(1)}.{match.group(2)})"
    return None


def debian_problem() -> str | None:
    if os.environ.get("HOOKRELAY_PROMETHEUS_BIN"):
        return None  # binaries given: nothing to fetch
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} to fetch Debian's prometheus and promtool for the rule and "
        "scrape tests (or set HOOKRELAY_PROMETHEUS_BIN to a folder holding both)"
    )


CHECKS = {
    "demo": (python_problem, java_problem),
    "test": (python_problem, java_problem, go_problem, debian_problem),
}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: check_tools.py {{{'|'.join(CHECKS)}}}", file=sys.stderr)
        return 2
    problems = [p for check in CHECKS[argv[0]] if (p := check()) is not None]
    for problem in problems:
        print(f"make {argv[0]} needs {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
