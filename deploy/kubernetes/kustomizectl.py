#!/usr/bin/env python3
"""Fetch the pinned kustomize and render hookrelay's Kubernetes manifests with it.

Commands:
  kustomizectl.py fetch              build the pinned kustomize into the cache; print its path
  kustomizectl.py build DIR [-o F]   render a kustomization (base or overlay) to stdout or F
  kustomizectl.py path               print where the pinned binary lives (fetched or not)

kustomize is the real one, `sigs.k8s.io/kustomize/kustomize/v5` at KUSTOMIZE_VERSION, built
from the Go module proxy with `go install` (Go 1.24+ must be on PATH; the module checksums
are verified against the Go checksum database as usual) into
<repo>/.cache/kustomize/<version>/ (git-ignored). A finished binary is reused; a failed or
interrupted build leaves nothing behind. `kubectl kustomize` (kubectl's built-in copy, often
an older kustomize) renders the same manifests; this script exists so that tests and CI
use one known version.

Exit codes: 0 success; 1 kustomize failed (its stderr is passed on); 2 usage; 4 Go missing;
7 the build of kustomize failed.

Environment:
  HOOKRELAY_KUSTOMIZE_CACHE  cache root instead of <repo>/.cache/kustomize
  GOPROXY, GOFLAGS, ...      passed to `go install` unchanged

Standard library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
KUSTOMIZE_VERSION = "v5.8.1"

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent.parent

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_GO = 4
EXIT_FETCH = 7

# A cold `go install` downloads about 60 modules and compiles them: under a minute on two
# cores; the limit only catches a hung download.
INSTALL_TIMEOUT_S = 900
BUILD_TIMEOUT_S = 120


class KustomizectlError(Exception):
    """A failure reported as one line on stderr (plus optional detail) and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR, detail: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.detail = detail


def cache_dir() -> Path:
    """Folder holding the pinned binary: ``<cache root>/<version>``."""
    root = os.environ.get("HOOKRELAY_KUSTOMIZE_CACHE") or REPO_ROOT / ".cache" / "kustomize"
    return Path(root) / KUSTOMIZE_VERSION


def binary_path() -> Path:
    """Path of the pinned kustomize binary (it may not be fetched yet)."""
    return cache_dir() / "kustomize"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` so concurrent fetches build once."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _installed_version(binary: Path) -> str | None:
    """The version a kustomize binary reports (``v5.8.1``), or None if it does not run."""
    try:
        result = subprocess.run(
            [str(binary), "version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    words = result.stdout.split()
    return words[-1] if result.returncode == 0 and words else None


def fetch() -> Path:
    """Build the pinned kustomize into the cache unless it is already there.

    Returns the binary's path. Raises KustomizectlError with EXIT_GO when `go` is not on
    PATH, EXIT_FETCH when `go install` fails or the result reports another version.
    """
    target = binary_path()
    with _locked(target.parent):
        if _installed_version(target) == KUSTOMIZE_VERSION:
            return target
        go = shutil.which("go")
        if go is None:
            raise KustomizectlError(
                "Go is required to build kustomize (go install from the Go module proxy); "
                "install Go 1.24+ or put it on PATH",
                EXIT_GO,
            )
        # Install into a scratch folder next to the target, then rename: an interrupted
        # build never leaves a half-written binary at the cached path.
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".install-") as scratch:
            env = {**os.environ, "GOBIN": scratch, "CGO_ENABLED": "0"}
            spec = f"{KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}"
            print(f"kustomizectl: go install {spec} (first run only)", file=sys.stderr)
            try:
                result = subprocess.run(
                    [go, "install", spec],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=INSTALL_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as e:
                raise KustomizectlError(
                    f"go install {spec} did not finish within {INSTALL_TIMEOUT_S} s", EXIT_FETCH
                ) from e
            built = Path(scratch) / "kustomize"
            if result.returncode != 0 or not built.is_file():
                raise KustomizectlError(
                    f"go install {spec} failed (exit {result.returncode})",
                    EXIT_FETCH,
                    detail=result.stderr.strip(),
                )
            os.replace(built, target)
        found = _installed_version(target)
        if found != KUSTOMIZE_VERSION:
            target.unlink(missing_ok=True)
            raise KustomizectlError(
                f"the kustomize just built reports version {found!r}, not {KUSTOMIZE_VERSION}",
                EXIT_FETCH,
            )
    return target


def build(kustomization: Path) -> str:
    """Render the kustomization folder ``kustomization`` with the pinned kustomize.

    Returns the multi-document YAML kustomize prints. Raises KustomizectlError (EXIT_ERROR,
    kustomize's stderr as detail) when kustomize refuses the kustomization.
    """
    binary = fetch()
    result = subprocess.run(
        [str(binary), "build", str(kustomization)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise KustomizectlError(
            f"kustomize build {kustomization} failed (exit {result.returncode})",
            detail=result.stderr.strip(),
        )
    return result.stdout


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("fetch", help="build the pinned kustomize into the cache")
    commands.add_parser("path", help="print the pinned binary's path")
    render = commands.add_parser("build", help="render a kustomization folder")
    render.add_argument("kustomization", type=Path, help="folder with a kustomization.yaml")
    render.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        if args.command == "path":
            print(binary_path())
        elif args.command == "fetch":
            print(fetch())
        else:
            text = build(args.kustomization)
            if args.output is None:
                sys.stdout.write(text)
            else:
                args.output.write_text(text, encoding="utf-8")
    except KustomizectlError as e:
        print(f"kustomizectl: {e}", file=sys.stderr)
        if e.detail:
            print(e.detail, file=sys.stderr)
        return e.exit_code
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
