#!/usr/bin/env python3
"""Fetch, start, stop and inspect a local single-node Apache Kafka broker (KRaft mode).

Commands (run with --help for all options):
  kafkactl.py fetch                         download the pinned broker jars into the cache
  kafkactl.py start [--port 9092] ...       fetch if needed, format storage, start, wait
                                            (--sasl-port/--ssl-port/--sasl-ssl-port add
                                            secured listeners; see "Secured listeners")
  kafkactl.py stop [--port 9092] ...        SIGTERM the broker, SIGKILL after --timeout
  kafkactl.py status [--port 9092] ...      print running/stopped and the bootstrap address
  kafkactl.py lock                          maintainers: regenerate the lock file with Maven

The broker is the real Apache Kafka: artifact org.apache.kafka:kafka_2.13 and its runtime
dependencies from Maven Central, pinned by version and sha256 in kafka-<version>.lock next to
this script, cached under <repo>/.cache/kafka/<version>/libs (git-ignored). Java 17+ runs it.
Each data dir (default <repo>/.cache/kafka-data/<port>) holds one broker: server.properties,
the KRaft log dirs, kafka.pid and logs/server.log.

Secured listeners (for testing clients against SASL and TLS; the PLAINTEXT --port stays):
  --sasl-port P      SASL_PLAINTEXT listener; mechanisms PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
  --ssl-port P       SSL listener (TLS; no client certificate asked)
  --sasl-ssl-port P  SASL_SSL listener (TLS + the same SASL mechanisms)
  --sasl-user N:PW   a SASL user for every mechanism (repeatable). SCRAM credentials are
                     written into the metadata log when storage is formatted (`kafka-storage
                     format --add-scram`), so users only take effect on a fresh --data-dir.
  TLS material is generated with Java's keytool on the first start into <data-dir>/tls: a CA
  (ca.pem is what clients trust), and a broker certificate for localhost and 127.0.0.1.

Class-data sharing (faster starts): the first broker started for a given Java build and jar
set dumps the classes it loaded, right after it answers, into a dynamic AppCDS archive
<cache>/<version>/kafka-jdk<java version>-<key>.jsa (the key covers the Java build and the
jars, so neither a Java update nor new jars meets a stale archive); that first start takes
about a second longer. Every later broker (and the storage format tool) maps it with
-Xshare:auto, which skips an archive it can tell is unusable; one corrupted on disk crashes
the JVM instead, and a broker that dies with the archive (or while recording it: a full
disk) is started again without it, the archive removed. One start records at a time (the
others meanwhile start without; so does a start that may not write the cache); the temp
file is renamed into place once complete.

Exit codes: 0 success; 1 other error; 2 usage; 3 stopped (status only); 4 Java missing or
older than 17; 5 port already in use; 6 broker not up within --timeout; 7 download failed.
`status` exits 1 when the broker process lives but does not answer.

Environment:
  HOOKRELAY_KAFKA_CACHE  cache root instead of <repo>/.cache/kafka (jars: <root>/<version>/libs)
  HOOKRELAY_MAVEN_REPO   Maven repository base URL (a mirror) instead of Maven Central
  KAFKA_HEAP_OPTS        JVM heap options instead of "-Xms256m -Xmx512m" (as in Kafka's scripts)
  JAVA_HOME              the Java to use; otherwise `java` on PATH
  HOOKRELAY_KAFKA_CDS    0 (or false/no/off): no class-data sharing archive, neither made nor used

Standard library only: it must run before any virtualenv exists (make demo, CI bootstrap).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Kafka 4.1.1, not 3.9.x: Kafka 4.0 removed old protocol versions (KIP-896), but aiokafka
# 0.13+ picks each request's version from the broker's ApiVersions answer and none of the
# versions it ends up sending were removed. Verified with aiokafka 0.14.0 against this broker:
# idempotent and transactional acks=all produce with headers, consumer-group join/fetch,
# explicit commit and committed() from another consumer, beginning/end offsets and
# offsets_for_times, admin create/describe/delete topics, describe configs, list/describe
# groups and group offsets. tests/integration/test_kafka_launcher.py keeps the main path
# covered. Bumping the version: change KAFKA_VERSION (and LOG4J_VERSION if `lock` says so),
# run `kafkactl.py lock`, then the integration tests.
KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
# kafka_2.13 declares slf4j-api 1.7.x but no binding; without one the broker logs nothing.
# log4j-slf4j-impl (the slf4j 1.x binding) must match the log4j-core that Kafka brings in;
# `lock` checks that.
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
MIN_JAVA = 17
NODE_ID = 1
DEFAULT_PORT = 9092
DEFAULT_HOST = "127.0.0.1"
DEFAULT_HEAP = "-Xms256m -Xmx512m"
# Kafka's own defaults from kafka-run-class.sh, plus dying on OOM instead of limping on.
JVM_OPTS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent.parent
LOCK_FILE = SCRIPT_DIR / f"kafka-{KAFKA_VERSION}.lock"
LOG4J_CONFIG = SCRIPT_DIR / "log4j2.properties"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_STOPPED = 3
EXIT_JAVA = 4
EXIT_PORT = 5
EXIT_TIMEOUT = 6
EXIT_FETCH = 7

PID_FILE = "kafka.pid"
PROPS_FILE = "server.properties"
LOG_SUBDIR = "logs"
KRAFT_SUBDIR = "kraft-combined-logs"
LOG_TAIL_LINES = 20

DOWNLOAD_ATTEMPTS = 4
DOWNLOAD_WORKERS = 6
DOWNLOAD_TIMEOUT_S = 60
CHUNK = 1 << 16


class KafkactlError(Exception):
    """A failure reported as one line on stderr, optional detail lines, and an exit code."""

    def __init__(
        self, message: str, exit_code: int = EXIT_ERROR, details: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.details = details or []


class TransientError(Exception):
    """A download failure worth retrying (network error, 5xx, truncated or corrupt body)."""


# ---------------------------------------------------------------------------------------------
# Lock file and jar cache
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Jar:
    """One pinned jar: Maven coordinates and the sha256 of its bytes."""

    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        """File name in the libs folder (Kafka's own distribution uses the same names)."""
        return f"{self.artifact}-{self.version}.jar"

    def url(self, repo: str) -> str:
        """Download URL of this jar in the Maven repository at base URL `repo`."""
        group_path = self.group.replace(".", "/")
        return f"{repo}/{group_path}/{self.artifact}/{self.version}/{self.filename}"


_LOCK_LINE = re.compile(r"^([\w.\-]+):([\w.\-]+):([\w.\-]+) ([0-9a-f]{64})$")


def read_lock(path: Path) -> list[Jar]:
    """Parse a lock file (`group:artifact:version sha256` lines, `#` comments) into jars."""
    if not path.is_file():
        raise KafkactlError(f"lock file {path} is missing; run `kafkactl.py lock`")
    jars = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LOCK_LINE.match(line)
        if match is None:
            raise KafkactlError(f"{path}:{number}: expected `group:artifact:version sha256`")
        jars.append(Jar(*match.groups()))
    if not jars:
        raise KafkactlError(f"lock file {path} lists no jars")
    return jars


def cache_root() -> Path:
    """Cache root: $HOOKRELAY_KAFKA_CACHE or <repo>/.cache/kafka."""
    override = os.environ.get("HOOKRELAY_KAFKA_CACHE")
    return Path(override).expanduser().resolve() if override else REPO_ROOT / ".cache" / "kafka"


def libs_dir() -> Path:
    """Folder holding exactly the jars of the pinned Kafka version (the broker's classpath)."""
    # One folder per version: the classpath is `libs/*`, so two versions must never mix.
    return cache_root() / KAFKA_VERSION / "libs"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def is_valid(path: Path, expected_sha256: str) -> bool:
    """True if the file exists and its sha256 is the pinned one."""
    return path.is_file() and sha256_of(path) == expected_sha256


def remove_strays(folder: Path, wanted: set[str]) -> None:
    """Delete jars the lock does not list, and temp files abandoned by a killed download."""
    # A stray jar would silently join the `libs/*` classpath. Fresh .part files may belong to
    # a concurrent fetch (make demo and pytest at once), so only old ones are removed.
    for path in folder.iterdir():
        stray_jar = path.suffix == ".jar" and path.name not in wanted
        old_part = path.name.endswith(".part") and time.time() - path.stat().st_mtime > 3600
        if stray_jar or old_part:
            path.unlink(missing_ok=True)


def _download_once(url: str, dest: Path, expected_sha256: str) -> None:
    """Download url into dest atomically (temp file + rename) if its sha256 matches."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - must outlive the with-block on success
        dir=dest.parent, prefix=f".{dest.name}.", suffix=".part", delete=False
    )
    temp = Path(handle.name)
    try:
        with handle, _open_url(url) as response:
            digest = hashlib.sha256()
            for block in iter(lambda: response.read(CHUNK), b""):
                digest.update(block)
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        if digest.hexdigest() != expected_sha256:
            raise TransientError(f"sha256 mismatch (got {digest.hexdigest()})")
        os.chmod(temp, 0o644)
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)


def _open_url(url: str) -> http.client.HTTPResponse:
    """Open url; classify failures as transient (retry) or permanent (KafkactlError)."""
    request = urllib.request.Request(url, headers={"User-Agent": "hookrelay-kafkactl"})
    try:
        return urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        if exc.code in (408, 429) or exc.code >= 500:
            raise TransientError(f"HTTP {exc.code}") from exc
        raise KafkactlError(f"{url}: HTTP {exc.code} {exc.reason}", EXIT_FETCH) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise TransientError(str(exc)) from exc


def download_jar(jar: Jar, folder: Path, repo: str) -> None:
    """Download one jar into folder, retrying transient failures with backoff."""
    url = jar.url(repo)
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            _download_once(url, folder / jar.filename, jar.sha256)
            return
        except (TransientError, OSError, http.client.HTTPException) as exc:
            # OSError/HTTPException here: the connection broke while reading the body.
            if attempt == DOWNLOAD_ATTEMPTS:
                raise KafkactlError(
                    f"{url}: {exc} (gave up after {attempt} attempts)", EXIT_FETCH
                ) from exc
            time.sleep(0.5 * 2**attempt)


def fetch(quiet: bool = False) -> Path:
    """Make the libs folder hold exactly the locked jars, verified; returns the folder."""
    jars = read_lock(LOCK_FILE)
    folder = libs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    remove_strays(folder, {jar.filename for jar in jars})
    missing = [jar for jar in jars if not is_valid(folder / jar.filename, jar.sha256)]
    repo = os.environ.get("HOOKRELAY_MAVEN_REPO", MAVEN_CENTRAL).rstrip("/")
    if missing:
        with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS) as pool:
            futures = [pool.submit(download_jar, jar, folder, repo) for jar in missing]
            errors = [exc for future in futures if (exc := future.exception()) is not None]
        if errors:
            first = errors[0]
            raise first if isinstance(first, KafkactlError) else KafkactlError(str(first))
    if not quiet:
        print(
            f"kafka {KAFKA_VERSION}: {len(jars)} jars verified in {folder} "
            f"({len(missing)} downloaded)"
        )
    return folder


# ---------------------------------------------------------------------------------------------
# Java, ports, processes
# ---------------------------------------------------------------------------------------------


def find_java() -> tuple[str | None, str]:
    """Locate java: $JAVA_HOME/bin/java if JAVA_HOME is set, else `java` on PATH.

    Returns (path or None, a description of where we looked, for the error message).
    """
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate), str(candidate)
        return None, f"JAVA_HOME={java_home} without an executable bin/java"
    return shutil.which("java"), "no `java` on PATH and JAVA_HOME is not set"


def java_major(version: str) -> int:
    """Major version from a `java -version` string: "17.0.15" -> 17, "1.8.0_292" -> 8."""
    parts = re.findall(r"\d+", version)
    if not parts:
        return 0
    major = int(parts[0])
    return int(parts[1]) if major == 1 and len(parts) > 1 else major


@functools.cache
def java_version_output(java: str) -> str:
    """What `java -version` prints (cached: the CDS archive key needs it again, and every
    JVM start costs time)."""
    try:
        probe = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkactlError(
            f"Kafka needs Java {MIN_JAVA}+; found {java}, which failed to run: {exc}", EXIT_JAVA
        ) from exc
    return probe.stderr + probe.stdout


def require_java() -> str:
    """Return the path of a Java 17+ executable, or raise the one-line "needs Java" error."""
    java, where = find_java()
    if java is None:
        raise KafkactlError(f"Kafka needs Java {MIN_JAVA}+; found {where}", EXIT_JAVA)
    match = re.search(r'version "([^"]+)"', java_version_output(java))
    version = match.group(1) if match else "an unknown version"
    if java_major(version) < MIN_JAVA:
        raise KafkactlError(
            f"Kafka needs Java {MIN_JAVA}+; found Java {version} at {java}", EXIT_JAVA
        )
    return java


def _family(host: str) -> socket.AddressFamily:
    """Socket family for a literal address (IPv6 literals contain a colon)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def host_port(host: str, port: int) -> str:
    """host:port as Kafka and clients expect it (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def port_in_use(host: str, port: int) -> bool:
    """True if a listener could not bind host:port right now.

    Binds with SO_REUSEADDR like the JVM does, so a port left in TIME_WAIT by a broker that
    just stopped counts as free, while any listening or bound socket counts as in use.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except PermissionError as exc:
            raise KafkactlError(f"not allowed to listen on {host_port(host, port)}: {exc}") from exc
        except OSError as exc:
            if exc.errno == 98 or "in use" in str(exc).lower():  # EADDRINUSE (Linux: 98)
                return True
            raise KafkactlError(f"cannot listen on {host_port(host, port)}: {exc}") from exc
    return False


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS considers free on host right now (there is a small race; callers retry)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def require_free_port(host: str, port: int) -> None:
    """Raise the one-line "port in use" error unless host:port is free."""
    if port_in_use(host, port):
        raise KafkactlError(
            f"port {port} is already in use by another process; "
            "choose another with --port (make: KAFKA_PORT=...)",
            EXIT_PORT,
        )


def _process_field(pid: int, proc_file: str, ps_field: str) -> str | None:
    """Read /proc/<pid>/<proc_file>, or `ps -o <ps_field>=` where there is no /proc (macOS)."""
    proc = Path("/proc")
    if proc.is_dir():
        try:
            return (proc / str(pid) / proc_file).read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return None
    result = subprocess.run(
        ["ps", "-o", f"{ps_field}=", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout if result.returncode == 0 and result.stdout.strip() else None


def process_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (an exited child nobody has reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _process_field(pid, "stat", "stat")
    if stat is None:
        return False
    # /proc/<pid>/stat is "pid (comm) S ...": the state letter follows the last ')'.
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else stat.strip()[:1]
    return not state.startswith("Z")


def is_our_broker(pid: int, props: Path) -> bool:
    """True if pid is a live `kafka.Kafka <props>` JVM (guards against recycled pids)."""
    cmdline = _process_field(pid, "cmdline", "command")
    return (
        process_alive(pid)
        and cmdline is not None
        and "kafka.Kafka" in cmdline
        and str(props) in cmdline
    )


def terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM pid (a clean Kafka shutdown), SIGKILL it if still alive after timeout_s."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return
            time.sleep(0.1)
    raise KafkactlError(f"broker pid {pid} survived SIGKILL")


# ---------------------------------------------------------------------------------------------
# Kafka protocol readiness probe (ApiVersions v0, then Metadata v4)
# ---------------------------------------------------------------------------------------------

API_METADATA = 3
API_FIND_COORDINATOR = 10
API_VERSIONS = 18
# The oldest versions Kafka 4.x still accepts (KIP-896) that are not yet "flexible" (tagged
# fields), so the encoding stays a few struct.pack calls. Both exist since Kafka 0.11.
METADATA_VERSION = 4
FIND_COORDINATOR_VERSION = 1
MAX_RESPONSE = 1 << 20
PROBE_GROUP = b"hookrelay-kafkactl-probe"


class _Reader:
    """Sequential big-endian reader over one Kafka response body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        """Read one struct-formatted integer."""
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        """Read an int16-length-prefixed (nullable) string."""
        length = self.take(">h")
        if length < 0:
            return None
        text = self.data[self.pos : self.pos + length].decode()
        self.pos += length
        return text


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    """Read exactly size bytes, or raise ConnectionError if the peer closes first."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _call(sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes) -> bytes:
    """Send one request (header v1) and return the response body after the correlation id."""
    client_id = b"hookrelay-kafkactl"
    header = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id
    sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    if not 4 <= size <= MAX_RESPONSE:
        raise ValueError(f"implausible response size {size}")
    data = _recv_exact(sock, size)
    if struct.unpack_from(">i", data)[0] != correlation:
        raise ValueError("correlation id mismatch")
    return data[4:]


def _api_versions(sock: socket.socket) -> dict[int, tuple[int, int]]:
    """ApiVersions v0: api key -> (min version, max version) supported by the broker."""
    reader = _Reader(_call(sock, API_VERSIONS, 0, 1, b""))
    error = reader.take(">h")
    if error != 0:
        raise ValueError(f"ApiVersions error code {error}")
    versions = {}
    for _ in range(reader.take(">i")):
        key, low, high = reader.take(">h"), reader.take(">h"), reader.take(">h")
        versions[key] = (low, high)
    return versions


def _metadata_brokers(sock: socket.socket) -> list[tuple[int, str | None, int]]:
    """Metadata v4 for no topics: the (node id, host, port) of every live, unfenced broker."""
    body = struct.pack(">ib", 0, 0)  # topics: empty array (not null = all); no auto-create
    reader = _Reader(_call(sock, API_METADATA, METADATA_VERSION, 2, body))
    reader.take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(reader.take(">i")):
        node_id, host = reader.take(">i"), reader.string()
        port = reader.take(">i")
        reader.string()  # rack
        brokers.append((node_id, host, port))
    return brokers


def _group_coordinator_ready(sock: socket.socket) -> bool:
    """FindCoordinator v1 for a probe group: True once the broker can serve consumer groups.

    The first such request makes the broker create __consumer_offsets; until its partitions
    have leaders the answer is COORDINATOR_NOT_AVAILABLE, which aiokafka logs at ERROR level
    and retries. Waiting here keeps that noise out of the first test and the demo.
    """
    body = struct.pack(">h", len(PROBE_GROUP)) + PROBE_GROUP + struct.pack(">b", 0)  # 0: group
    reader = _Reader(_call(sock, API_FIND_COORDINATOR, FIND_COORDINATOR_VERSION, 3, body))
    reader.take(">i")  # throttle_time_ms
    return reader.take(">h") == 0


def _supports(versions: dict[int, tuple[int, int]], api_key: int, version: int) -> bool:
    """True if the broker's ApiVersions range for api_key includes version."""
    low, high = versions.get(api_key, (0, -1))
    return low <= version <= high


def broker_answers(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True if host:port speaks Kafka, lists our node as a live broker, and serves groups.

    The listener accepts connections before the broker has joined the quorum and been
    unfenced; only then does it list itself in Metadata. A request version this probe
    knows and a future broker dropped is skipped (ApiVersions answering is then enough).
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            versions = _api_versions(sock)
            if _supports(versions, API_METADATA, METADATA_VERSION):
                brokers = _metadata_brokers(sock)
                if not any(node == NODE_ID and p == port for node, _, p in brokers):
                    return False
            if _supports(versions, API_FIND_COORDINATOR, FIND_COORDINATOR_VERSION):
                return _group_coordinator_ready(sock)
            return bool(versions)
    except (OSError, ValueError, struct.error, UnicodeDecodeError):
        return False


# ---------------------------------------------------------------------------------------------
# Data dir: configuration, storage format, pid file
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker listens and keeps its data."""

    data_dir: Path
    port: int
    controller_port: int
    listener_host: str = DEFAULT_HOST
    advertised_host: str = DEFAULT_HOST
    sasl_port: int | None = None
    ssl_port: int | None = None
    sasl_ssl_port: int | None = None
    sasl_users: tuple[tuple[str, str], ...] = ()
    tls_password: str = ""

    def secured_listeners(self) -> list[tuple[str, int]]:
        """(listener name, port) of each secured listener asked for; the name is also its
        security protocol."""
        wanted = [("SASL_PLAINTEXT", self.sasl_port), ("SSL", self.ssl_port)]
        wanted.append(("SASL_SSL", self.sasl_ssl_port))
        return [(name, port) for name, port in wanted if port is not None]

    @property
    def bootstrap(self) -> str:
        """The address clients connect to."""
        return host_port(self.advertised_host, self.port)

    @property
    def props_path(self) -> Path:
        """The generated server.properties."""
        return self.data_dir / PROPS_FILE


def default_data_dir(port: int) -> Path:
    """<repo>/.cache/kafka-data/<port>: one broker per port by default."""
    return REPO_ROOT / ".cache" / "kafka-data" / str(port)


def server_properties(settings: BrokerSettings) -> dict[str, str]:
    """The broker configuration: single-node KRaft, PLAINTEXT, everything replicated once."""
    controller = host_port(DEFAULT_HOST, settings.controller_port)
    properties = _plaintext_properties(settings, controller)
    if settings.secured_listeners():
        properties.update(secured_properties(settings))
    return properties


SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TLS_SUBDIR = "tls"


def secured_properties(settings: BrokerSettings) -> dict[str, str]:
    """Listener, SASL and TLS settings added for --sasl-port/--ssl-port/--sasl-ssl-port; the
    PLAINTEXT listener stays the inter-broker one (the readiness probe speaks to it)."""
    listeners = [f"PLAINTEXT://{host_port(settings.listener_host, settings.port)}"]
    advertised = [f"PLAINTEXT://{settings.bootstrap}"]
    properties: dict[str, str] = {}
    for name, port in settings.secured_listeners():
        listeners.append(f"{name}://{host_port(settings.listener_host, port)}")
        advertised.append(f"{name}://{host_port(settings.advertised_host, port)}")
        if name.startswith("SASL_"):
            properties.update(_sasl_listener_properties(name.lower(), settings.sasl_users))
    controller = host_port(DEFAULT_HOST, settings.controller_port)
    properties["listeners"] = ",".join([*listeners, f"CONTROLLER://{controller}"])
    properties["advertised.listeners"] = ",".join(advertised)
    properties["listener.security.protocol.map"] = (
        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,"
        "SASL_SSL:SASL_SSL"
    )
    properties["sasl.enabled.mechanisms"] = ",".join(SASL_MECHANISMS)
    if settings.ssl_port is not None or settings.sasl_ssl_port is not None:
        tls = settings.data_dir / TLS_SUBDIR
        properties["ssl.keystore.type"] = "PKCS12"
        properties["ssl.keystore.location"] = str(tls / "broker.p12")
        properties["ssl.keystore.password"] = settings.tls_password
        properties["ssl.key.password"] = settings.tls_password
        properties["ssl.client.auth"] = "none"
    return properties


def _jaas_text(text: str) -> str:
    """A JAAS option value in double quotes (backslash and quote escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sasl_listener_properties(listener: str, users: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """JAAS configuration of one SASL listener: PLAIN users inline (Kafka's PlainLoginModule
    reads `user_<name>="<password>"`), SCRAM users from the metadata log."""
    plain_users = " ".join(f"user_{name}={_jaas_text(password)}" for name, password in users)
    prefix = f"listener.name.{listener}"
    properties = {
        f"{prefix}.plain.sasl.jaas.config": (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
        )
    }
    for mechanism in SASL_MECHANISMS[1:]:
        properties[f"{prefix}.{mechanism.lower()}.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        )
    return properties


def _plaintext_properties(settings: BrokerSettings, controller: str) -> dict[str, str]:
    """The default broker: PLAINTEXT on --port, the controller on its own port."""
    return {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        # Static voters (not --standalone dynamic quorum): the controller port may change
        # between runs (it defaults to a free port), and a static voter set just follows the
        # config, whereas a dynamic one records the old endpoint in the metadata log.
        "controller.quorum.voters": f"{NODE_ID}@{controller}",
        "controller.listener.names": "CONTROLLER",
        "listeners": (
            f"PLAINTEXT://{host_port(settings.listener_host, settings.port)},"
            f"CONTROLLER://{controller}"
        ),
        "advertised.listeners": f"PLAINTEXT://{settings.bootstrap}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(settings.data_dir / KRAFT_SUBDIR),
        "num.partitions": "3",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        # 50 partitions by default; one node gains nothing from them and creating them slows
        # the first consumer-group request of every fresh test broker.
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Consumers in tests and the demo join at once; no reason to wait 3 s for more.
        "group.initial.rebalance.delay.ms": "0",
        # A transaction past its timeout is aborted at the next check of this interval (10 s
        # by default): a dev broker aborts it within a second, so a test's open transaction
        # ends when its timeout says, not up to 10 s later.
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
        # Small segments keep a dev broker's disk use proportional to what it holds.
        "log.segment.bytes": str(16 * 1024 * 1024),
        "log.retention.hours": "168",
    }


def write_server_properties(settings: BrokerSettings) -> Path:
    """Write server.properties into the data dir (atomically); returns its path."""
    lines = [f"# Generated by {Path(__file__).name} on every start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in server_properties(settings).items()]
    path = settings.props_path
    temp = path.with_suffix(".tmp")
    temp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(temp, path)
    return path


def read_properties(path: Path) -> dict[str, str]:
    """Parse the simple key=value properties files this script writes."""
    if not path.is_file():
        return {}
    result = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            result[key.strip()] = value.strip()
    return result


def recorded_bootstrap(data_dir: Path) -> tuple[str, int] | None:
    """(host, port) of the PLAINTEXT advertised listener in the data dir's server.properties."""
    advertised = read_properties(data_dir / PROPS_FILE).get("advertised.listeners", "")
    match = re.search(r"PLAINTEXT://\[?([^\],]*?)\]?:(\d+)", advertised)
    return (match.group(1), int(match.group(2))) if match else None


def new_cluster_id() -> str:
    """A random Kafka cluster id: 16 random bytes, URL-safe base64 without padding."""
    while True:
        # Kafka's Uuid.randomUuid() also rejects ids starting with "-" (they parse as options).
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def java_command(java: str, libs: Path, data_dir: Path, heap: str) -> list[str]:
    """The JVM command line prefix shared by the broker and the storage tool."""
    return [
        java,
        *heap.split(),
        *JVM_OPTS,
        f"-Dkafka.logs.dir={data_dir / LOG_SUBDIR}",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp",
        f"{libs}{os.sep}*",  # the JVM expands the classpath wildcard itself
    ]


def format_storage_if_needed(
    java: str, libs: Path, settings: BrokerSettings, cds_options: tuple[str, ...] = ()
) -> None:
    """Format the KRaft log dir with a fresh cluster id, unless it is formatted already."""
    if (settings.data_dir / KRAFT_SUBDIR / "meta.properties").is_file():
        return
    command = [
        *java_command(java, libs, settings.data_dir, "-Xmx256m"),
        *cds_options,
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        new_cluster_id(),
        "--config",
        str(settings.props_path),
        "--ignore-formatted",
    ]
    for name, password in settings.sasl_users:
        for mechanism in SASL_MECHANISMS[1:]:
            command += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).splitlines()
        raise KafkactlError(
            f"formatting Kafka storage in {settings.data_dir} failed (exit {result.returncode})",
            details=output[-LOG_TAIL_LINES:],
        )


def keytool_for(java: str) -> str:
    """The keytool next to the java executable (symlinks resolved), else `keytool` on PATH."""
    beside = Path(java).resolve().parent / "keytool"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("keytool")
    if found is None:
        raise KafkactlError(f"TLS listeners need Java's keytool; none next to {java} or on PATH")
    return found


def _keytool(keytool: str, *args: str) -> None:
    result = subprocess.run(
        [keytool, *args], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).splitlines()
        raise KafkactlError(f"keytool {args[0]} failed", details=output[-LOG_TAIL_LINES:])


def tls_material(java: str, data_dir: Path) -> str:
    """Generate, once per data dir, a CA and a broker certificate it signs (for localhost and
    127.0.0.1) into <data-dir>/tls: ca.pem (what clients trust), ca.p12, broker.p12. Returns
    the keystores' password (random, kept in tls/store.password)."""
    tls = data_dir / TLS_SUBDIR
    password_file = tls / "store.password"
    if (tls / "broker.p12").is_file() and password_file.is_file():
        return password_file.read_text(encoding="utf-8").strip()
    tls.mkdir(parents=True, exist_ok=True)
    for stale in tls.iterdir():
        stale.unlink()
    password = uuid.uuid4().hex
    keytool = keytool_for(java)
    ca, broker = str(tls / "ca.p12"), str(tls / "broker.p12")
    common = ["-storetype", "PKCS12", "-storepass", password, "-keyalg", "RSA", "-keysize", "2048"]
    _keytool(keytool, "-genkeypair", "-alias", "ca", "-keystore", ca, *common, "-validity",
             "3650", "-dname", "CN=hookrelay local test CA", "-ext", "bc:c")  # fmt: skip
    _keytool(keytool, "-exportcert", "-rfc", "-alias", "ca", "-keystore", ca, "-storepass",
             password, "-file", str(tls / "ca.pem"))  # fmt: skip
    _keytool(keytool, "-genkeypair", "-alias", "broker", "-keystore", broker, *common,
             "-validity", "3650", "-dname", "CN=localhost")  # fmt: skip
    _keytool(keytool, "-certreq", "-alias", "broker", "-keystore", broker, "-storepass",
             password, "-file", str(tls / "broker.csr"))  # fmt: skip
    _keytool(keytool, "-gencert", "-rfc", "-alias", "ca", "-keystore", ca, "-storepass",
             password, "-infile", str(tls / "broker.csr"), "-outfile", str(tls / "broker.pem"),
             "-validity", "3650", "-ext", "SAN=dns:localhost,ip:127.0.0.1,ip:::1",
             "-ext", "EKU=serverAuth")  # fmt: skip
    for alias, pem in (("ca", "ca.pem"), ("broker", "broker.pem")):
        _keytool(keytool, "-importcert", "-noprompt", "-alias", alias, "-file", str(tls / pem),
                 "-keystore", broker, "-storepass", password)  # fmt: skip
    password_file.write_text(password + "\n", encoding="utf-8")
    os.chmod(password_file, 0o600)
    return password


def launch_broker(
    java: str, libs: Path, settings: BrokerSettings, cds_options: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start `kafka.Kafka server.properties` detached (own session), write the pid file."""
    logs = settings.data_dir / LOG_SUBDIR
    logs.mkdir(parents=True, exist_ok=True)
    heap = os.environ.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP)
    command = [*java_command(java, libs, settings.data_dir, heap), *cds_options, "kafka.Kafka"]
    command.append(str(settings.props_path))
    with (logs / "kafka.out").open("ab") as out:
        # New session: Ctrl-C in the terminal (or pytest's process group) does not reach the
        # broker; it lives until `stop`.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=settings.data_dir,
            start_new_session=True,
        )
    pid_file = settings.data_dir / PID_FILE
    pid_file.with_suffix(".tmp").write_text(f"{process.pid}\n", encoding="utf-8")
    os.replace(pid_file.with_suffix(".tmp"), pid_file)
    return process


def running_pid(data_dir: Path) -> int | None:
    """Pid of the broker started from data_dir if it is still running; clears a stale pid file."""
    pid_file = data_dir / PID_FILE
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None and is_our_broker(pid, data_dir / PROPS_FILE):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


LOG_FILES = ("server.log", "kafka.out")


def log_sizes(data_dir: Path) -> dict[str, int]:
    """Current size of each log file, so a later log_tail shows only what this run wrote."""
    sizes = {}
    for name in LOG_FILES:
        path = data_dir / LOG_SUBDIR / name
        sizes[name] = path.stat().st_size if path.is_file() else 0
    return sizes


def log_tail(data_dir: Path, since: dict[str, int] | None = None) -> list[str]:
    """The last lines of server.log, plus the JVM's console output if it printed anything.

    `since` maps file name -> byte offset from log_sizes(); earlier output (previous runs on
    the same data dir) is skipped. A file smaller than its offset was rolled: read it whole.
    """
    details = []
    for name in LOG_FILES:
        path = data_dir / LOG_SUBDIR / name
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            offset = (since or {}).get(name, 0)
            handle.seek(offset if offset <= path.stat().st_size else 0)
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
        if lines:
            details.append(f"--- last lines of {path}:")
            details += lines[-LOG_TAIL_LINES:]
    return details or [f"(no log output in {data_dir / LOG_SUBDIR})"]


def wait_until_ready(
    process: subprocess.Popen[bytes],
    settings: BrokerSettings,
    timeout_s: float,
    log_offsets: dict[str, int],
) -> None:
    """Poll the broker with the protocol probe until it answers; fail if it dies or times out.

    log_offsets (from log_sizes() before the launch) limits the error's log tail to this run.
    """
    deadline = time.monotonic() + timeout_s
    host = settings.advertised_host
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise KafkactlError(
                f"Kafka broker exited with code {code} during startup",
                details=log_tail(settings.data_dir, log_offsets),
            )
        if broker_answers(host, settings.port, timeout_s=1.0):
            return
        time.sleep(0.2)
    raise KafkactlError(
        f"Kafka broker not up on {settings.bootstrap} within {timeout_s:g} s (stopped it)",
        EXIT_TIMEOUT,
        details=log_tail(settings.data_dir, log_offsets),
    )


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Serialise start/stop on one data dir across processes (pytest workers, make demo)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / ".kafkactl.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# Class-data sharing: a dynamic AppCDS archive of the broker's classes
# ---------------------------------------------------------------------------------------------

CDS_ENV = "HOOKRELAY_KAFKA_CDS"
CDS_LOCK = ".kafka-cds.lock"
# HotSpot's CDS_DYNAMIC_ARCHIVE_MAGIC, the first 4 bytes (native order) of a dynamic archive.
# The JVM writes the header last, so a file cut short (a JVM killed while dumping) lacks it.
CDS_DYNAMIC_MAGIC = 0xF00BABA8
CDS_DUMP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class CdsPlan:
    """The CDS options of one broker JVM, and what recording the archive needs."""

    options: tuple[str, ...] = ()
    archive: Path | None = None  # where the recorded archive goes
    recording: Path | None = None  # the temp file the JVM dumps into
    lock_fd: int | None = None  # the recorder lock, held by this process until the dump ends


def cds_enabled() -> bool:
    """False when $HOOKRELAY_KAFKA_CDS is 0/false/no/off."""
    return os.environ.get(CDS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def cds_archive_path(libs: Path, java: str, java_version: str, jar_lock: bytes) -> Path:
    """<cache>/<version>/kafka-jdk<java version>-<key>.jsa for this Java and this jar set.

    HotSpot checks an archive against its own build and against each classpath jar's path,
    size and mtime, and with -Xshare:auto silently ignores one that does not match: a stale
    archive would quietly cost every later start. A key over exactly those inputs (plus the
    lock's sha256s) makes any change record a fresh archive instead.
    """
    match = re.search(r'version "([^"]+)"', java_version)
    label = re.sub(r"[^A-Za-z0-9._-]", "_", match.group(1) if match else "unknown")
    digest = hashlib.sha256()
    for part in (str(Path(java).resolve()), java_version, str(libs)):
        digest.update(part.encode() + b"\0")
    digest.update(jar_lock + b"\0")
    for jar in sorted(libs.glob("*.jar")):
        stat = jar.stat()
        digest.update(f"{jar.name}:{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    return libs.parent / f"kafka-jdk{label}-{digest.hexdigest()[:16]}.jsa"


def cds_use_options(archive: Path) -> tuple[str, ...]:
    """Map the archive; auto: a broken or mismatched archive is skipped, never fatal."""
    return (f"-XX:SharedArchiveFile={archive}", "-Xshare:auto")


def cds_record_options() -> tuple[str, ...]:
    """A broker whose classes `record_archive` can dump while it runs."""
    # The attach listener from the start, so the dump needs no SIGQUIT handshake; and the dump
    # lists each class it cannot archive (old bytecode, never linked) as a warning: noise.
    return (
        "-XX:+RecordDynamicDumpInfo",
        "-XX:+StartAttachListener",
        "-Xlog:cds=error,cds+dynamic=error",
    )


def is_finished_archive(path: Path) -> bool:
    """True if path starts with the dynamic archive magic (the JVM finished writing it)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return len(head) == 4 and struct.unpack("=I", head)[0] == CDS_DYNAMIC_MAGIC


def try_cds_lock(folder: Path) -> int | None:
    """The recorder lock's fd if nobody holds it, else None (a start is recording now)."""
    try:
        fd = os.open(folder / CDS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:  # a read-only cache: start without recording, never fail for it
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def install_archive(recording: Path, archive: Path) -> bool:
    """Move a finished recording into place (atomically) and drop the folder's other archives:
    they belong to a Java or jar set no longer in use. A recording not finished is deleted."""
    if not is_finished_archive(recording):
        recording.unlink(missing_ok=True)
        return False
    os.replace(recording, archive)
    for other in archive.parent.glob("kafka-*.jsa"):
        if other != archive:
            other.unlink(missing_ok=True)
    return True


def finish_recordings(folder: Path) -> None:
    """Install or delete what a start that died while recording left. Needs the recorder lock.

    A dump outliving its start (timed out) may still be writing: deleting its name is
    harmless, and a file with the magic is complete whoever finished it.
    """
    for temp in folder.glob(".kafka-*.jsa.*.tmp"):
        archive = folder / (temp.name[1:].split(".jsa.", 1)[0] + ".jsa")
        if archive.exists():
            temp.unlink(missing_ok=True)
        else:
            install_archive(temp, archive)


def cds_plan(java: str, libs: Path) -> CdsPlan:
    """Use the archive if there is one, else record it (one recorder at a time), else neither.

    The caller owns lock_fd and closes it once `record_archive` is done (or the start failed).
    """
    if not cds_enabled():
        return CdsPlan()
    archive = cds_archive_path(libs, java, java_version_output(java), LOCK_FILE.read_bytes())
    if archive.is_file():
        return CdsPlan(cds_use_options(archive), archive)
    lock_fd = try_cds_lock(archive.parent)
    if lock_fd is None:
        return CdsPlan()  # a parallel first start is recording: start as before, no waiting
    try:
        finish_recordings(archive.parent)
    except BaseException:
        os.close(lock_fd)
        raise
    if archive.is_file():
        os.close(lock_fd)
        return CdsPlan(cds_use_options(archive), archive)
    recording = archive.with_name(f".{archive.name}.{uuid.uuid4().hex}.tmp")
    return CdsPlan(cds_record_options(), archive, recording, lock_fd)


def jcmd_for(java: str) -> str | None:
    """The JDK's jcmd next to the java executable (symlinks resolved), else on PATH, else
    None (a JRE has none: no archive is recorded then)."""
    beside = Path(java).resolve().parent / "jcmd"
    return str(beside) if beside.exists() else shutil.which("jcmd")


def record_archive(java: str, pid: int, cds: CdsPlan) -> bool:
    """Dump the classes of the broker that just came up, and install the archive.

    At readiness, not at exit: the test session's own broker lives as long as the session
    and would hold the recording (and its lock) until the end. A failure only means this
    start leaves no archive; the broker runs on either way.
    """
    jcmd = jcmd_for(java)
    if cds.recording is None or cds.archive is None or jcmd is None:
        return False
    if '"' in str(cds.recording):  # the diagnostic command parser has no escape for it
        return False
    # The file tells whether the dump finished, whatever jcmd says or however it fails.
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            # Quoted: the diagnostic command parser splits its arguments at spaces.
            [jcmd, str(pid), f'VM.cds dynamic_dump "{cds.recording}"'],
            capture_output=True, timeout=CDS_DUMP_TIMEOUT_S, check=False,
        )  # fmt: skip
    return install_archive(cds.recording, cds.archive)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def resolve_data_dir(args: argparse.Namespace) -> Path:
    """The --data-dir argument as an absolute path, or the default for --port."""
    chosen = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir(args.port)
    return chosen.resolve()


def settings_from_args(args: argparse.Namespace, data_dir: Path) -> BrokerSettings:
    """BrokerSettings for `start`, checking that both ports are free."""
    host = args.listener_host
    advertised = args.advertised_host or (DEFAULT_HOST if host in ("0.0.0.0", "::", "") else host)
    require_free_port(host, args.port)
    controller_port = args.controller_port or free_port(DEFAULT_HOST)
    if controller_port == args.port:
        raise KafkactlError("--controller-port must differ from --port")
    if args.controller_port:
        require_free_port(DEFAULT_HOST, controller_port)
    secured = (args.sasl_port, args.ssl_port, args.sasl_ssl_port)
    chosen = [port for port in secured if port is not None]
    if len({args.port, controller_port, *chosen}) != 2 + len(chosen):
        raise KafkactlError("every listener needs a port of its own")
    for port in chosen:
        require_free_port(host, port)
    return BrokerSettings(
        data_dir, args.port, controller_port, host, advertised, *secured, tuple(args.sasl_user)
    )


def already_running(pid: int, data_dir: Path, args: argparse.Namespace) -> int:
    """`start` when the data dir's broker runs: success if it is on --port and answers."""
    recorded = recorded_bootstrap(data_dir)
    if recorded is None or recorded[1] != args.port:
        where = f"port {recorded[1]}" if recorded else "an unknown port"
        raise KafkactlError(
            f"the broker of {data_dir} is already running on {where} (pid {pid}); "
            "stop it first or use another --data-dir"
        )
    host, port = recorded
    deadline = time.monotonic() + args.timeout
    while not broker_answers(host, port):
        if time.monotonic() > deadline:
            raise KafkactlError(
                f"broker pid {pid} of {data_dir} runs but does not answer on "
                f"{host_port(host, port)}; run `kafkactl.py stop`",
                EXIT_TIMEOUT,
                details=log_tail(data_dir),
            )
        time.sleep(0.2)
    print(f"bootstrap={host_port(host, port)}")
    return EXIT_OK


def cmd_start(args: argparse.Namespace) -> int:
    """Start a broker (or find ours already running) and print `bootstrap=host:port`."""
    data_dir = resolve_data_dir(args)
    with data_dir_lock(data_dir):
        pid = running_pid(data_dir)
        if pid is not None:
            return already_running(pid, data_dir, args)
        java = require_java()
        settings = settings_from_args(args, data_dir)
        if settings.ssl_port is not None or settings.sasl_ssl_port is not None:
            settings = dataclasses.replace(settings, tls_password=tls_material(java, data_dir))
        libs = fetch(quiet=True)
        write_server_properties(settings)
        cds = cds_plan(java, libs)
        try:
            try:
                launch_and_wait(java, libs, settings, args.timeout, cds)
            except KafkactlError as e:
                if not cds.options or e.exit_code == EXIT_TIMEOUT:
                    raise
                # A JVM that dies with the archive (one corrupted on disk: SIGBUS, not the
                # skip -Xshare:auto promises) or while recording it (a full disk) must not
                # stop every later start: the archive goes, the broker starts without.
                print(f"kafkactl: the broker failed with the class-data archive ({e}); "
                      "removing the archive and starting without it", file=sys.stderr)  # fmt: skip
                discard_archive(cds)
                launch_and_wait(java, libs, settings, args.timeout, CdsPlan())
        finally:
            if cds.lock_fd is not None:
                os.close(cds.lock_fd)
    print(f"bootstrap={settings.bootstrap}")
    return EXIT_OK


def launch_and_wait(
    java: str, libs: Path, settings: BrokerSettings, timeout_s: float, cds: CdsPlan
) -> None:
    """Format the storage if needed, start the broker with ``cds``'s options, wait until it
    answers, record the archive if ``cds`` says so. Raises ``KafkactlError`` (the broker
    stopped) when it does not come up, or dies while the archive is recorded."""
    # The storage tool shares most of its classes with the broker (~0.25 s faster).
    format_storage_if_needed(java, libs, settings, () if cds.recording else cds.options)
    log_offsets = log_sizes(settings.data_dir)
    process = launch_broker(java, libs, settings, cds.options)
    try:
        wait_until_ready(process, settings, timeout_s, log_offsets)
        record_archive(java, process.pid, cds)
        time.sleep(0.2 if cds.recording else 0.0)  # a JVM failing its dump exits at once
        if (code := process.poll()) is not None:
            raise KafkactlError(
                f"Kafka broker exited with code {code} while its class-data archive was "
                "recorded", details=log_tail(settings.data_dir, log_offsets),
            )  # fmt: skip
    except BaseException:
        # Never leave a half-started broker holding the port (a retry would fail).
        terminate(process.pid, 10.0)
        process.wait()
        (settings.data_dir / PID_FILE).unlink(missing_ok=True)
        raise


def discard_archive(cds: CdsPlan) -> None:
    """Remove the archive ``cds`` used, or the recording it made."""
    path = cds.recording if cds.recording is not None else cds.archive
    if path is not None:
        with contextlib.suppress(OSError):  # a read-only cache: nothing more to do
            path.unlink(missing_ok=True)


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop the data dir's broker: SIGTERM, SIGKILL after --timeout. No-op if not running."""
    data_dir = resolve_data_dir(args)
    if not data_dir.is_dir():
        print(f"not running ({data_dir} does not exist)")
        return EXIT_OK
    with data_dir_lock(data_dir):
        pid = running_pid(data_dir)
        if pid is None:
            print("not running")
            return EXIT_OK
        terminate(pid, args.timeout)
        (data_dir / PID_FILE).unlink(missing_ok=True)
    print(f"stopped broker pid {pid}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Print running/stopped and the bootstrap address; exit 0 running, 3 stopped, 1 stuck."""
    data_dir = resolve_data_dir(args)
    recorded = recorded_bootstrap(data_dir) if data_dir.is_dir() else None
    host, port = recorded or (DEFAULT_HOST, args.port)
    bootstrap = host_port(host, port)
    pid = running_pid(data_dir) if data_dir.is_dir() else None
    if pid is None:
        print(f"stopped bootstrap={bootstrap}")
        return EXIT_STOPPED
    if broker_answers(host, port):
        print(f"running pid={pid} bootstrap={bootstrap}")
        return EXIT_OK
    print(f"unresponsive pid={pid} bootstrap={bootstrap} (process alive, not answering)")
    return EXIT_ERROR


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download and verify the pinned jars."""
    fetch(quiet=args.quiet)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# `lock`: regenerate the lock file with Maven (maintainers only; needs mvn and the internet)
# ---------------------------------------------------------------------------------------------

LOCK_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>hookrelay</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

# A dependency:list line: "   group:artifact:jar[:classifier]:version:scope:/abs/x.jar[ -- ...]"
_LIST_LINE = re.compile(
    r"^\s*([\w.\-]+):([\w.\-]+):jar:(?:[\w.\-]+:)?([\w.\-]+):(?:compile|runtime):(/\S+\.jar)"
)


def resolve_with_maven(mvn: str, workdir: Path) -> list[tuple[str, str, str, Path]]:
    """Run Maven's dependency:list (runtime scope, strict checksums) on the lock pom.

    Returns (group, artifact, version, local jar path) for every runtime jar.
    """
    pom = workdir / "pom.xml"
    pom.write_text(
        LOCK_POM.format(scala=SCALA_VERSION, kafka=KAFKA_VERSION, log4j=LOG4J_VERSION),
        encoding="utf-8",
    )
    listing = workdir / "dependencies.txt"
    command = [mvn, "-B", "-q", "-C", "-f", str(pom), f"{DEPENDENCY_PLUGIN}:list"]
    command += ["-DincludeScope=runtime", "-DoutputAbsoluteArtifactFilename=true"]
    command.append(f"-DoutputFile={listing}")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).splitlines()
        raise KafkactlError("Maven dependency resolution failed", details=output[-40:])
    resolved = []
    for line in listing.read_text(encoding="utf-8").splitlines():
        match = _LIST_LINE.match(line)
        if match:
            group, artifact, version, path = match.groups()
            resolved.append((group, artifact, version, Path(path)))
    return resolved


def check_log4j_binding(resolved: list[tuple[str, str, str, Path]]) -> None:
    """Fail if Kafka's log4j version drifted from the slf4j binding we add (LOG4J_VERSION)."""
    versions = {v for g, _, v, _ in resolved if g == "org.apache.logging.log4j"}
    if versions != {LOG4J_VERSION}:
        raise KafkactlError(
            f"log4j versions {sorted(versions)} resolved; set LOG4J_VERSION to Kafka's log4j-core"
        )


def cmd_lock(args: argparse.Namespace) -> int:
    """Regenerate kafka-<version>.lock from Maven's resolution of kafka_2.13 + log4j binding."""
    mvn = shutil.which(args.mvn)
    if mvn is None:
        raise KafkactlError(f"`{args.mvn}` not found on PATH; `lock` needs Maven")
    with tempfile.TemporaryDirectory(prefix="kafkactl-lock-") as tmp:
        resolved = resolve_with_maven(mvn, Path(tmp))
        if not resolved:
            raise KafkactlError("Maven resolved no jars")
        check_log4j_binding(resolved)
        lines = sorted(f"{g}:{a}:{v} {sha256_of(path)}" for g, a, v, path in resolved)
    header = [
        f"# Apache Kafka {KAFKA_VERSION} (kafka_{SCALA_VERSION}) broker runtime classpath,",
        f"# plus log4j-slf4j-impl {LOG4J_VERSION} so the broker's slf4j logging reaches log4j2.",
        "# Generated by `deploy/kafka/kafkactl.py lock` (Maven dependency:list, runtime scope,",
        "# strict checksums); do not edit by hand. Format: group:artifact:version sha256",
    ]
    temp = LOCK_FILE.with_suffix(".tmp")
    temp.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    os.replace(temp, LOCK_FILE)
    print(f"wrote {LOCK_FILE} ({len(lines)} jars)")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def positive_float(text: str) -> float:
    """argparse type: a number of seconds > 0."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def port_number(text: str) -> int:
    """argparse type: a TCP port 1-65535."""
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("must be 1-65535")
    return value


_SASL_TEXT = re.compile(r"[A-Za-z0-9._-]+")


def sasl_user(text: str) -> tuple[str, str]:
    """argparse type: NAME:PASSWORD, both of A-Z a-z 0-9 . _ - (safe in JAAS and --add-scram)."""
    name, _, password = text.partition(":")
    if not (_SASL_TEXT.fullmatch(name) and _SASL_TEXT.fullmatch(password)):
        raise argparse.ArgumentTypeError("expected NAME:PASSWORD of A-Z a-z 0-9 . _ -")
    return name, password


def add_location_args(parser: argparse.ArgumentParser) -> None:
    """--port and --data-dir, shared by start/stop/status."""
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help="PLAINTEXT port (default 9092)"
    )
    parser.add_argument(
        "--data-dir", help="broker data dir (default <repo>/.cache/kafka-data/<port>)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all subcommands."""
    parser = argparse.ArgumentParser(
        prog="kafkactl.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    fetch_cmd = commands.add_parser("fetch", help="download and verify the pinned broker jars")
    fetch_cmd.add_argument("--quiet", action="store_true", help="print nothing on success")
    fetch_cmd.set_defaults(handler=cmd_fetch)

    start = commands.add_parser("start", help="start a broker and wait until it answers")
    add_location_args(start)
    start.add_argument("--controller-port", type=port_number, help="default: a free port")
    start.add_argument("--listener-host", default=DEFAULT_HOST, help="default 127.0.0.1")
    start.add_argument("--advertised-host", help="host told to clients (default: listener host)")
    start.add_argument("--timeout", type=positive_float, default=60.0, help="seconds (default 60)")
    start.add_argument("--sasl-port", type=port_number, help="add a SASL_PLAINTEXT listener")
    start.add_argument("--ssl-port", type=port_number, help="add an SSL (TLS) listener")
    start.add_argument("--sasl-ssl-port", type=port_number, help="add a SASL_SSL listener")
    start.add_argument(
        "--sasl-user", type=sasl_user, action="append", default=[], metavar="NAME:PASSWORD",
        help="SASL user for PLAIN and SCRAM (repeatable; SCRAM users need a fresh data dir)",
    )  # fmt: skip
    start.set_defaults(handler=cmd_start)

    stop = commands.add_parser("stop", help="stop the broker of a data dir")
    add_location_args(stop)
    stop.add_argument(
        "--timeout", type=positive_float, default=30.0, help="seconds before SIGKILL (default 30)"
    )
    stop.set_defaults(handler=cmd_stop)

    status = commands.add_parser("status", help="exit 0 if running, 3 if stopped")
    add_location_args(status)
    status.set_defaults(handler=cmd_status)

    lock = commands.add_parser("lock", help=f"regenerate {LOCK_FILE.name} with Maven")
    lock.add_argument("--mvn", default="mvn", help="Maven executable (default mvn)")
    lock.set_defaults(handler=cmd_lock)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; KafkactlError becomes a one-line `hookrelay: ...` error and its code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KafkactlError as exc:
        print(f"hookrelay: {exc}", file=sys.stderr)
        for line in exc.details:
            print(f"  {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
