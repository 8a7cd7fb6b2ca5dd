"""deploy/systemd/: the unit files as systemd itself reads them.

``systemd-analyze`` (Debian package ``systemd``, on every machine image of this project) checks
each committed unit (the daemon's hookrelay.service and hookrelay-ingest.service) byte for byte
inside a throw-away root that has the unit's executables, so nothing in a unit is rewritten for
the test. A missing ``systemd-analyze`` fails, never skips. The units share one sandbox; its
seccomp-based restrictions are rebuilt with libseccomp, and the daemon and the ingest process
run under them (see the second half of this file).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import hashlib
import hmac
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from asyncio.subprocess import Process
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import aiohttp
import orjson
import pytest

from hookrelay.app.supervisor import HARD_DEADLINE_MARGIN_S
from hookrelay.config import HttpSettings, ShutdownSettings
from hookrelay.config.ingest import IngestSettings
from tests.deploy.example_secrets import env_file_values, flagged_as_placeholder
from tests.integration.harness import HOOKRELAY, ROOT, produce, unique, write_config
from tests.kafka_broker import create_topics, free_port
from tests.receiver import Receiver

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
UNIT = SYSTEMD_DIR / "hookrelay.service"
INGEST_UNIT = SYSTEMD_DIR / "hookrelay-ingest.service"
UNITS = [UNIT, INGEST_UNIT]
SYSUSERS = SYSTEMD_DIR / "hookrelay.sysusers"
ENV_EXAMPLES = [SYSTEMD_DIR / "hookrelay.env.example", SYSTEMD_DIR / "ingest.env.example"]
MAX_EXPOSURE = 2.0  # systemd-analyze security's overall exposure, 0 best to 10 worst (units: 1.4)
# What differs between the two units: the command, its secrets, the daemon's watchdog and
# reload, the descriptors each needs. Every other directive (the sandbox, the account, the
# start, stop and restart policy) must be the same in both.
PER_PROCESS = {"Description", "ExecStart", "ExecReload", "EnvironmentFile", "WatchdogSec",
               "LimitNOFILE", "KillMode"}  # fmt: skip


def systemd_tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else "")
    if not path:
        pytest.fail(
            f"{name} not found: install Debian's 'systemd' package (apt-get install systemd)",
            pytrace=False,
        )
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def directives(section: str, unit: Path = UNIT) -> dict[str, list[str]]:
    """``Key=value`` lines of one section of a committed unit (the daemon's by default), every
    value of a repeated key."""
    found: dict[str, list[str]] = {}
    current = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def seconds(timespan: str) -> float:
    """A systemd time span (``45s``, ``1min 30s``) in seconds, as systemd-analyze parses it."""
    result = run(systemd_tool("systemd-analyze"), "timespan", timespan)
    assert result.returncode == 0, result.stderr
    [usec] = re.findall(r"μs:\s*(\d+)", result.stdout)
    return int(usec) / 1e6


@pytest.fixture(params=UNITS, ids=lambda unit: unit.name)
def unit(request: pytest.FixtureRequest) -> Path:
    """Each committed unit in turn."""
    path: Path = request.param
    return path


@pytest.fixture
def unit_root(tmp_path: Path, unit: Path) -> Iterator[Path]:
    """A file-system root holding the committed unit, systemd's own units and the programs
    the unit runs (copies: verify checks that they exist and are executable)."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    service = directives("Service", unit)
    for command in service["ExecStart"] + service.get("ExecReload", []):
        program = Path(command.split()[0])  # /opt/hookrelay/bin/hookrelay, /bin/kill
        copy = root / program.relative_to("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        # The real program where this machine has it; else this virtualenv's hookrelay.
        shutil.copy(
            program if program.exists() else Path(sys.executable).with_name("hookrelay"), copy
        )
    yield root


def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(
    unit_root: Path, unit: Path
) -> None:
    result = run(systemd_tool("systemd-analyze"), "verify", f"--root={unit_root}", unit.name)
    # verify exits 0 on lines it ignores ("Unknown key name", "Failed to parse ... ignoring"),
    # so any output at all is a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_would_catch_a_misspelt_directive(unit_root: Path, unit: Path) -> None:
    installed = unit_root / "etc/systemd/system" / unit.name
    installed.write_text(installed.read_text().replace("NotifyAccess=main", "NotifyAccess=mian"))
    result = run(systemd_tool("systemd-analyze"), "verify", f"--root={unit_root}", unit.name)
    assert "Failed to parse notify access specifier" in result.stderr


def test_the_sandbox_rates_ok_in_systemd_analyze_security(unit_root: Path, unit: Path) -> None:
    result = run(
        systemd_tool("systemd-analyze"), "security", "--offline=yes", f"--root={unit_root}",
        f"--threshold={MAX_EXPOSURE * 10:g}", "--no-pager", unit.name,
    )  # fmt: skip
    # --threshold counts in tenths (0-100): the exit status is non-zero above it.
    [exposure] = re.findall(
        rf"Overall exposure level for {re.escape(unit.name)}: ([\d.]+)", result.stdout
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert float(exposure) <= MAX_EXPOSURE


def test_stop_timeout_outlasts_the_processs_own_shutdown_deadline(unit: Path) -> None:
    service = directives("Service", unit)
    shutdown = ShutdownSettings()
    [stop] = service["TimeoutStopSec"]
    # systemd sends SIGKILL at TimeoutStopSec; the daemon drains for grace_s, the ingest
    # process answers its requests in progress for ingest.write_timeout_s, and both exit by
    # themselves at hard_deadline_s at the latest, so systemd must wait longer than that.
    assert seconds(stop) > shutdown.hard_deadline_s > shutdown.grace_s
    assert shutdown.hard_deadline_s > IngestSettings().write_timeout_s
    assert seconds(stop) >= shutdown.hard_deadline_s + 10  # room to unwind and exit


def test_a_supervisor_of_workers_alone_gets_sigterm_and_has_time_to_outlast_them() -> None:
    """With workers > 1 the main process is the supervisor: it stops its workers itself
    (KillMode=mixed sends SIGTERM to it only), is the only one to notify systemd
    (NotifyAccess=main), and exits HARD_DEADLINE_MARGIN_S after the workers' deadline."""
    service = directives("Service")
    assert service["KillMode"] == ["mixed"]
    assert service["NotifyAccess"] == ["main"]
    [stop] = service["TimeoutStopSec"]
    assert seconds(stop) >= ShutdownSettings().hard_deadline_s + HARD_DEADLINE_MARGIN_S + 5


def test_both_units_run_as_the_same_account_in_the_same_sandbox() -> None:
    """Everything but the command, its secrets, the daemon's watchdog and reload and the
    descriptor limit is identical, so the sandbox checks below hold for both processes."""
    for section in ("Unit", "Service", "Install"):
        daemon, ingest = directives(section, UNIT), directives(section, INGEST_UNIT)
        for name in PER_PROCESS:
            daemon.pop(name, None)
            ingest.pop(name, None)
        assert ingest == daemon, section


@pytest.mark.parametrize("example", ENV_EXAMPLES, ids=lambda path: path.name)
def test_every_secret_of_an_env_example_is_a_placeholder_check_flags(
    example: Path, tmp_path: Path
) -> None:
    """A file installed from an example without filling it in gets a warning from
    `hookrelay check` (shown where check looks for placeholders: a hook's signing key)."""
    values = env_file_values(example)
    assert values
    for name, value in values.items():
        assert flagged_as_placeholder(value, tmp_path), name


def test_notify_settings_match_what_each_process_does(unit: Path) -> None:
    service = directives("Service", unit)
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["Restart"] == ["on-failure"]
    assert service["User"] == ["hookrelay"]


def test_the_ingest_unit_runs_ingest_without_watchdog_or_reload() -> None:
    """hookrelay ingest sends no WATCHDOG=1 (a WatchdogSec would kill a healthy process) and
    ignores SIGHUP; it reads only its own secrets."""
    service = directives("Service", INGEST_UNIT)
    assert service["ExecStart"] == [
        "/opt/hookrelay/bin/hookrelay ingest -c /etc/hookrelay/hookrelay.yaml"
    ]
    assert "WatchdogSec" not in service
    assert "ExecReload" not in service
    assert service["EnvironmentFile"] == ["-/etc/hookrelay/ingest.env"]
    assert set(env_file_values(SYSTEMD_DIR / "ingest.env.example")) == {
        "LOGTO_SIGNING_KEY",
        "HOOKRELAY_BATCH_TOKEN",
    }


def test_watchdog_and_notify_settings_match_what_the_daemon_does() -> None:
    service = directives("Service")
    assert service["ExecStart"] == [
        "/opt/hookrelay/bin/hookrelay run -c /etc/hookrelay/hookrelay.yaml"
    ]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    [watchdog] = service["WatchdogSec"]
    # The daemon pings at half the interval from its event loop. Long enough that a loaded
    # machine never misses it, short enough that a stuck loop is restarted within minutes.
    assert 10 <= seconds(watchdog) <= 120
    assert service["EnvironmentFile"] == ["-/etc/hookrelay/hookrelay.env"]


def test_open_file_limit_leaves_room_for_every_http_connection() -> None:
    [limit] = directives("Service")["LimitNOFILE"]
    # One socket per webhook connection, plus Kafka connections, admin clients and files.
    assert int(limit) >= 2 * HttpSettings().max_connections + 1024


def test_ingest_open_file_limit_leaves_room_for_every_client_connection() -> None:
    [limit] = directives("Service", INGEST_UNIT)["LimitNOFILE"]
    # One socket per client connection up to ingest.max_connections (the guard closes the
    # rest, each just accepted), plus Kafka connections, metrics clients and files.
    assert int(limit) >= 2 * IngestSettings().max_connections + 1024


def test_sysusers_snippet_creates_a_system_user_without_a_login(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    result = run(systemd_tool("systemd-sysusers"), f"--root={tmp_path}", str(SYSUSERS))
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc/passwd").read_text().splitlines()
    [entry] = [line.split(":") for line in passwd if line.startswith("hookrelay:")]
    assert int(entry[2]) < 1000  # a system account
    assert entry[6] == "/usr/sbin/nologin"
    assert any(
        line.startswith("hookrelay:") for line in (tmp_path / "etc/group").read_text().splitlines()
    )


# -- the unit's kernel-side restrictions, applied by hand ---------------------------------
#
# No systemd manager runs on a test machine, so the daemon cannot be started by the unit
# itself. What systemd 252 turns the unit's settings into is plain kernel state, though, built
# with the same library (libseccomp) from the same syscall groups (as systemd-analyze lists
# them): one seccomp filter per setting, loaded just before exec. Namespaces (ProtectSystem=,
# PrivateTmp=, ...) and User= are not reproduced; they hide files the daemon never touches.

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_GE = 5
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
AF_MAX = 46  # linux/socket.h in the 6.x kernels
CAP_LAST = 63  # PR_CAPBSET_DROP of a capability the kernel lacks is EINVAL, ignored
PR_CAPBSET_DROP = 24


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | code


class ScmpArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


def syscall_groups() -> dict[str, list[str]]:
    """``systemd-analyze syscall-filter``: every @group with its members (names or @groups)."""
    result = run(systemd_tool("systemd-analyze"), "syscall-filter", "--no-pager")
    assert result.returncode == 0, result.stderr
    groups: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        if line.startswith("@"):
            members = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and not line.strip().startswith("#"):
            members.append(line.strip())
    return groups


def expand(name: str, groups: dict[str, list[str]]) -> set[str]:
    if not name.startswith("@"):
        return {name}
    return set().union(*(expand(member, groups) for member in groups[name]))


class Sandbox:
    """The unit's NoNewPrivileges=, CapabilityBoundingSet=, SystemCallFilter= (with
    SystemCallErrorNumber=EPERM), MemoryDenyWriteExecute= and RestrictAddressFamilies=, as
    seccomp filters built here and loaded by ``enter`` (a ``preexec_fn``: runs in the child)."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        try:
            self._seccomp = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as e:
            pytest.fail(f"{e}: install Debian's libseccomp2 (systemd needs it too)", pytrace=False)
        self._seccomp.seccomp_init.restype = ctypes.c_void_p
        self._seccomp.seccomp_init.argtypes = (ctypes.c_uint32,)
        self._seccomp.seccomp_load.argtypes = (ctypes.c_void_p,)
        self._seccomp.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
        self._seccomp.seccomp_rule_add_array.argtypes = (
            ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
            ctypes.POINTER(ScmpArgCmp),
        )  # fmt: skip
        assert directives("Service")["CapabilityBoundingSet"] == [""]
        # The system-call allow-list goes last, as systemd loads it: it may forbid seccomp().
        self.filters = [self._memory_filter(), self._family_filter(), self._syscall_filter()]

    def _rule(self, ctx: int, action: int, syscall: str, *cmps: tuple[int, int, int, int]) -> None:
        number = self._seccomp.seccomp_syscall_resolve_name(syscall.encode())
        if number == -1:
            return  # not a system call of this architecture
        array = (ScmpArgCmp * max(1, len(cmps)))(*(ScmpArgCmp(*c) for c in cmps))
        rc = self._seccomp.seccomp_rule_add_array(ctx, action, number, len(cmps), array)
        assert rc == 0 or number < 0, f"seccomp_rule_add {syscall}: {rc}"

    def _syscall_filter(self) -> int:
        groups = syscall_groups()
        service = directives("Service")["SystemCallFilter"]  # ["@system-service", "~@privileged"]
        allowed: set[str] = set()
        for entry in service:
            names = set().union(*(expand(n, groups) for n in entry.lstrip("~").split()))
            allowed = allowed - names if entry.startswith("~") else allowed | names
        assert directives("Service")["SystemCallErrorNumber"] == ["EPERM"]
        ctx = self._seccomp.seccomp_init(scmp_act_errno(errno.EPERM))
        for name in sorted(allowed):
            self._rule(ctx, SCMP_ACT_ALLOW, name)
        return int(ctx)

    def _memory_filter(self) -> int:
        # systemd 252's seccomp_memory_deny_write_execute(): no mapping both writable and
        # executable, no mapping made executable later, no executable shared memory.
        assert directives("Service")["MemoryDenyWriteExecute"] == ["yes"]
        ctx = self._seccomp.seccomp_init(SCMP_ACT_ALLOW)
        deny = scmp_act_errno(errno.EPERM)
        wx = PROT_WRITE | PROT_EXEC
        self._rule(ctx, deny, "mmap", (2, SCMP_CMP_MASKED_EQ, wx, wx))
        for call in ("mprotect", "pkey_mprotect"):
            self._rule(ctx, deny, call, (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        self._rule(ctx, deny, "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        return int(ctx)

    def _family_filter(self) -> int:
        [families] = directives("Service")["RestrictAddressFamilies"]
        allowed = {int(getattr(socket, name)) for name in families.split()}
        ctx = self._seccomp.seccomp_init(SCMP_ACT_ALLOW)
        deny = scmp_act_errno(errno.EAFNOSUPPORT)
        for family in set(range(AF_MAX)) - allowed:
            self._rule(ctx, deny, "socket", (0, SCMP_CMP_EQ, family, 0))
        self._rule(ctx, deny, "socket", (0, SCMP_CMP_GE, AF_MAX, 0))
        return int(ctx)

    def enter(self) -> None:
        """In the child, before exec: drop every capability from the bounding set (so exec
        leaves none), then load the filters (libseccomp sets no_new_privs first)."""
        for cap in range(CAP_LAST + 1):
            self._libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
        for ctx in self.filters:
            if self._seccomp.seccomp_load(ctx) != 0:
                raise OSError(ctypes.get_errno(), "seccomp_load failed")


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox()


PROBE = """
import mmap, os, socket
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("wx-memory allowed")
except PermissionError:
    print("wx-memory refused")
for family in ("AF_NETLINK", "AF_PACKET", "AF_INET"):
    try:
        socket.socket(getattr(socket, family), socket.SOCK_DGRAM).close()
        print(family, "allowed")
    except OSError as e:
        print(family, os.strerror(e.errno))
try:
    os.setresuid(os.getuid(), os.getuid(), os.getuid())
    print("setresuid allowed")
except PermissionError:
    print("setresuid refused")
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print("NoNewPrivs", status["NoNewPrivs"].strip(), "CapEff", status["CapEff"].strip())
"""


def test_the_emulated_sandbox_really_restricts_a_process(sandbox: Sandbox) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], preexec_fn=sandbox.enter,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.splitlines() == [
        "wx-memory refused",  # MemoryDenyWriteExecute=
        "AF_NETLINK Address family not supported by protocol",  # RestrictAddressFamilies=
        "AF_PACKET Address family not supported by protocol",
        "AF_INET allowed",
        "setresuid refused",  # SystemCallFilter=~@privileged
        "NoNewPrivs 1 CapEff 0000000000000000",  # NoNewPrivileges=, CapabilityBoundingSet=
    ]


async def test_the_daemon_delivers_inside_the_units_sandbox(
    sandbox: Sandbox, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("sandboxed")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with Receiver(keys={"crm": "sandbox-key"}) as receiver:
        hooks = [{"id": "crm", "events": ["*"], "url": receiver.url("crm"),
                  "signing_key": "sandbox-key"}]  # fmt: skip
        path = write_config(tmp_path, kafka_bootstrap, topic, hooks)
        events = [
            orjson.dumps({"event": "User.Created", "createdAt": "2026-08-21T09:15:42.123Z",
                          "data": {"id": f"u{i}", "name": "Zoë 🚀"}})
            for i in range(50)
        ]  # fmt: skip
        await produce(kafka_bootstrap, topic, events)
        log = tmp_path / "daemon.log"
        daemon = await asyncio.create_subprocess_exec(
            *HOOKRELAY, "run", "-c", str(path), cwd=ROOT, preexec_fn=sandbox.enter,
            stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            await receiver.wait_for(50, timeout_s=60)
            status = await asyncio.to_thread(Path(f"/proc/{daemon.pid}/status").read_text)
            maps = await asyncio.to_thread(Path(f"/proc/{daemon.pid}/maps").read_text)
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(daemon.wait(), 30)
    assert code == 0, log.read_text()
    assert "Seccomp:\t2" in status  # filter mode
    assert re.search(r"CapEff:\t0+\n", status)
    assert all(r.signature_valid for r in receiver.requests)
    ids = sorted(r.json["data"]["id"] for r in receiver.requests)
    assert ids == sorted(f"u{i}" for i in range(50))
    # The native extensions that could have needed writable code were loaded and used.
    for extension in ("/uvloop/loop.", "/orjson/orjson.", "/pydantic_core/_pydantic_core."):
        assert extension in maps, extension


# The shared file's shape under systemd: the daemon's hooks (whose keys only hookrelay.env
# holds) next to the ingest section (whose secrets only ingest.env holds). Kafka is a closed
# port: hookrelay ingest starts without the cluster and answers 503 until it is reachable.
INGEST_CONFIG = """\
kafka: {{bootstrap_servers: "127.0.0.1:{kafka_port}", topics: [identity.events]}}
admin: {{token: "${{HOOKRELAY_ADMIN_TOKEN}}"}}
hooks:
  - id: crm-sync
    events: ["*"]
    url: https://crm.example.com/hooks/logto
    signing_key: ${{CRM_SYNC_SIGNING_KEY}}
ingest:
  listen: 127.0.0.1:{listen_port}
  metrics_listen: 127.0.0.1:{metrics_port}
  sources: [{{id: logto, signing_key: "${{LOGTO_SIGNING_KEY}}"}}]
  batch: {{token: "${{HOOKRELAY_BATCH_TOKEN}}"}}
"""


async def wait_for_health(http: aiohttp.ClientSession, url: str, process: Process) -> None:
    """Poll ``url`` until 200; fail if the process exits first or 30 s pass."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        assert process.returncode is None, "hookrelay ingest exited during start-up"
        with suppress(aiohttp.ClientError):
            async with http.get(url) as response:
                if response.status == 200:
                    return
        assert asyncio.get_running_loop().time() < deadline, "not healthy within 30 s"
        await asyncio.sleep(0.1)


async def test_hookrelay_ingest_serves_inside_the_units_sandbox(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """hookrelay ingest with only ingest.env.example's variables, under the filters of the
    shared sandbox: its probes answer, Logto's route checks signatures with aiohttp's C
    parser and uvloop loaded (a signed event 503 with Kafka away, an unsigned one 401), and
    SIGTERM ends it with status 0."""
    ports = {"kafka_port": free_port(), "listen_port": free_port(), "metrics_port": free_port()}
    config = tmp_path / "hookrelay.yaml"
    config.write_text(INGEST_CONFIG.format(**ports), encoding="utf-8")
    secrets = env_file_values(SYSTEMD_DIR / "ingest.env.example")
    event = b'{"event":"User.Created","createdAt":"2026-08-21T09:15:42.123Z","data":{"id":"u1"}}'
    key = secrets["LOGTO_SIGNING_KEY"].encode()
    signature = hmac.new(key, event, hashlib.sha256).hexdigest()
    log = tmp_path / "ingest.log"
    process = await asyncio.create_subprocess_exec(
        *HOOKRELAY, "ingest", "-c", str(config), cwd=ROOT, preexec_fn=sandbox.enter,
        env={**secrets, "PATH": os.environ["PATH"]},
        stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    metrics = f"http://127.0.0.1:{ports['metrics_port']}"
    route = f"http://127.0.0.1:{ports['listen_port']}/logto/logto"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await wait_for_health(http, f"{metrics}/healthz", process)
            async with http.get(f"{metrics}/readyz") as response:
                readiness = (response.status, await response.json())
            headers = {"Content-Type": "application/json"}
            async with http.post(route, data=event, headers=headers) as response:
                unsigned = response.status
            headers["logto-signature-sha-256"] = signature
            async with http.post(route, data=event, headers=headers) as response:
                signed = (response.status, await response.json())
        status = await asyncio.to_thread(Path(f"/proc/{process.pid}/status").read_text)
        maps = await asyncio.to_thread(Path(f"/proc/{process.pid}/maps").read_text)
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    output = log.read_text()
    assert code == 0, output
    assert readiness[0] == 503 and readiness[1]["reasons"][0].startswith("kafka: "), readiness
    assert unsigned == 401
    assert signed == (503, {"reason": "not_written", "detail": signed[1]["detail"]}), signed
    assert "Seccomp:\t2" in status  # filter mode
    assert re.search(r"CapEff:\t0+\n", status)
    for extension in ("/uvloop/loop.", "/aiohttp/_http_parser.", "/orjson/orjson."):
        assert extension in maps, extension
    assert '"event":"ingest_stopped"' in output
