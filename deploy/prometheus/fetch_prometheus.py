#!/usr/bin/env python3
"""Make Prometheus and promtool available for the tests, without installing a service.

  fetch_prometheus.py            ensure both binaries; print the folder that holds them
  fetch_prometheus.py --check    print that folder if both are there, else exit 3 (no download)

The binaries come from Debian's `prometheus` package (it also ships `promtool`):
`apt-get download prometheus` into a temporary folder, `apt-get update` first only when the
package lists do not know the package, then `dpkg-deb -x` and keep the two binaries (they
need only libc) plus the package's copyright file. Nothing is installed with dpkg, so no
system user, no systemd unit and no service is created or started. They are cached in
<repo>/.cache/prometheus/bin (git-ignored) with the package version in VERSION; a cached copy
that answers `--version` is reused without any network access, so a second run takes well
under a second. A file lock makes concurrent runs (two test sessions) wait for each other.

Exit codes: 0 ready (the folder is printed on stdout); 1 other error; 2 usage; 3 not cached
(--check only); 4 no apt-get/dpkg-deb on this machine and HOOKRELAY_PROMETHEUS_BIN unset;
7 download or unpacking failed.

Environment:
  HOOKRELAY_PROMETHEUS_BIN    a folder that already holds `prometheus` and `promtool` (2.x),
                              e.g. on a machine without apt; used as it is, never downloaded
  HOOKRELAY_PROMETHEUS_CACHE  cache folder instead of <repo>/.cache/prometheus

Standard library only: .ci/run calls it before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PACKAGE = "prometheus"
BINARIES = ("prometheus", "promtool")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "prometheus"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_MISSING = 3
EXIT_NO_APT = 4
EXIT_FETCH = 7

APT_TIMEOUT_S = 600
APT_ATTEMPTS = 3  # another apt run may hold the package-list lock for a while
APT_RETRY_PAUSE_S = 10
VERSION_TIMEOUT_S = 30
# apt waits this long for a lock another apt/dpkg run holds instead of failing at once.
APT_LOCK_OPTION = ("-o", "DPkg::Lock::Timeout=120")


class FetchError(Exception):
    """A failure reported as one line on stderr (plus detail) with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR, detail: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.detail = detail


def working_version(bin_dir: Path) -> str | None:
    """The first line of ``promtool --version`` when both binaries run, else None."""
    for name in BINARIES:
        path = bin_dir / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            return None
    try:
        results = [
            subprocess.run(
                [str(bin_dir / name), "--version"],
                capture_output=True,
                text=True,
                timeout=VERSION_TIMEOUT_S,
                check=False,
            )
            for name in BINARIES
        ]
    except (OSError, subprocess.TimeoutExpired):
        return None
    if any(r.returncode != 0 for r in results):
        return None
    return (results[1].stdout or results[1].stderr).splitlines()[0].strip()


@contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<cache>/.lock`` for the block (waits for other runs)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, even on errors
        yield


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion with a timeout; output captured, never raises on status."""
    try:
        return subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise FetchError(
            f"{' '.join(command)} did not finish within {APT_TIMEOUT_S} s", EXIT_FETCH
        ) from e


def apt_download(into: Path) -> Path:
    """``apt-get download prometheus`` into ``into``; runs ``apt-get update`` once when the
    package lists do not know the package. Returns the .deb. Raises FetchError (exit 7)."""
    updated = False
    for attempt in range(1, APT_ATTEMPTS + 1):
        result = run(["apt-get", *APT_LOCK_OPTION, "download", PACKAGE], cwd=into)
        debs = sorted(into.glob(f"{PACKAGE}_*.deb"))
        if result.returncode == 0 and debs:
            return debs[-1]
        if not updated:
            print(
                "fetch_prometheus: refreshing the package lists (apt-get update)", file=sys.stderr
            )
            update = run(["apt-get", *APT_LOCK_OPTION, "update"])
            updated = update.returncode == 0
            if not updated and os.geteuid() != 0:
                raise FetchError(
                    "apt-get update failed; it needs root (or install Debian's prometheus "
                    "package yourself and set HOOKRELAY_PROMETHEUS_BIN=/usr/bin)",
                    EXIT_FETCH, update.stderr,
                )  # fmt: skip
            if updated:
                continue  # fresh lists: download again at once
        if attempt < APT_ATTEMPTS:
            time.sleep(APT_RETRY_PAUSE_S)
    raise FetchError(
        f"apt-get download {PACKAGE} failed {APT_ATTEMPTS} times", EXIT_FETCH, result.stderr
    )


def unpack(deb: Path, work: Path, bin_dir: Path) -> None:
    """Extract the package in ``work`` and move the binaries into ``bin_dir`` (replaced as a
    whole, so a half-written cache is never used)."""
    tree = work / "tree"
    result = run(["dpkg-deb", "-x", str(deb), str(tree)])
    if result.returncode != 0:
        raise FetchError(f"dpkg-deb -x {deb.name} failed", EXIT_FETCH, result.stderr)
    staged = work / "bin"
    staged.mkdir()
    for name in BINARIES:
        source = tree / "usr" / "bin" / name
        if not source.is_file():
            raise FetchError(f"{deb.name} has no usr/bin/{name}", EXIT_FETCH)
        shutil.move(str(source), staged / name)
    copyright_file = tree / "usr" / "share" / "doc" / PACKAGE / "copyright"
    if copyright_file.is_file():
        shutil.copy2(copyright_file, staged / "copyright")
    if bin_dir.exists():
        shutil.rmtree(bin_dir)
    staged.rename(bin_dir)


def fetch(cache: Path) -> Path:
    """Return the cache's bin folder with both binaries, downloading them when needed."""
    bin_dir = cache / "bin"
    with cache_lock(cache):
        if working_version(bin_dir):
            return bin_dir
        if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
            raise FetchError(
                "this machine has no apt-get/dpkg-deb to fetch Debian's prometheus package; "
                "install Prometheus 2.x and set HOOKRELAY_PROMETHEUS_BIN to the folder that "
                "holds prometheus and promtool",
                EXIT_NO_APT,
            )
        with tempfile.TemporaryDirectory(dir=cache, prefix="download-") as tmp:
            work = Path(tmp)
            deb = apt_download(work)
            unpack(deb, work, bin_dir)
            (cache / "VERSION").write_text(deb.name.removesuffix(".deb") + "\n")
        version = working_version(bin_dir)
        if version is None:
            raise FetchError(f"the unpacked binaries in {bin_dir} do not run", EXIT_FETCH)
        print(f"fetch_prometheus: {version} in {bin_dir}", file=sys.stderr)
        return bin_dir


def resolve(check_only: bool) -> Path:
    """The folder holding both binaries (HOOKRELAY_PROMETHEUS_BIN, or the cache)."""
    given = os.environ.get("HOOKRELAY_PROMETHEUS_BIN")
    if given:
        if working_version(Path(given)) is None:
            raise FetchError(
                f"HOOKRELAY_PROMETHEUS_BIN={given} does not hold runnable prometheus and promtool"
            )
        return Path(given)
    cache = Path(os.environ.get("HOOKRELAY_PROMETHEUS_CACHE", DEFAULT_CACHE))
    if check_only:
        if working_version(cache / "bin") is None:
            raise FetchError(f"prometheus/promtool are not in {cache / 'bin'}", EXIT_MISSING)
        return cache / "bin"
    return fetch(cache)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="only report whether the binaries are there"
    )
    args = parser.parse_args(argv)
    try:
        bin_dir = resolve(args.check)
    except FetchError as e:
        print(f"fetch_prometheus: {e}", file=sys.stderr)
        if e.detail:
            print(e.detail.rstrip(), file=sys.stderr)
        return e.exit_code
    print(bin_dir)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
