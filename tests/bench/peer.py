"""A peer in the bench (issue 17): Benthos v4.27.0 doing hookrelay's work on the same events.

- ``build_benthos``: builds the recipe in ``tests/bench/peers/benthos/`` (go.mod, go.sum, a
  ``main.go`` calling ``service.RunCLI`` with the kafka, io, pure and prometheus components)
  from the Go module proxy, once, into ``.cache/bench/peers/`` (git-ignored), and reuses the
  binary while the recipe is unchanged. No Go, or a failed build, is ``PeerUnavailableError``
  with a one-line reason: the bench says it and runs the rest.
- ``pipeline_config``: the Benthos configuration equivalent to a hookrelay run: a
  ``kafka_franz`` input in its own consumer group from the start of the topic; a mapping
  that checks each event as hookrelay's decoder does (an object whose ``event`` and
  ``createdAt`` are strings); per hook, a mapping that splices ``"hookId":"<id>"`` into the
  producer's bytes as the last member and computes ``logto-signature-sha-256`` and
  ``webhook-id`` exactly as hookrelay does, then an ``http_client`` output with the hook's
  share of the concurrency (``max_in_flight``); N hooks sit under a ``broker`` output with
  the ``fan_out`` pattern.
- ``throughput``: the scenario, measured exactly as ``scenarios.throughput`` measures
  hookrelay: deliveries/s from receiver arrivals after the first 5 %, CPU-seconds of the
  Benthos process from ``/proc/<pid>/stat`` over the same window, and one body per hook
  checked byte for byte with its signature.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from hookrelay import __version__
from hookrelay.errors import InvalidEventError
from hookrelay.events.decode import decode
from hookrelay.events.model import Origin
from hookrelay.events.signing import delivery_id, hook_id_member, splice_hook_id
from tests.bench.daemon import ROOT, DaemonProcess, HookSpec
from tests.bench.events import event_value, signature, signing_key
from tests.bench.harness import Bench, Run, sampled, signatures_valid, wait_for_deliveries
from tests.bench.receiver import Arrivals, free_port
from tests.bench.stats import steady_rate

BENTHOS_VERSION = "v4.27.0"
"""The module version pinned in the recipe's go.mod (MIT licence)."""
RECIPE = Path(__file__).resolve().parent / "peers" / "benthos"
RECIPE_FILES = ("go.mod", "go.sum", "main.go")
CACHE = ROOT / ".cache" / "bench" / "peers"
BUILD_TIMEOUT_S = 1200.0
"""The first build downloads about 100 modules and compiles them (~1-3 min on 2 cores)."""
BENTHOS_METRICS = ("input_received", "output_sent", "output_error", "processor_error")
"""Benthos' own counters (its /metrics), summed over their labels into each result."""
WEBHOOK_ID = re.compile(rb"msg_[A-Za-z0-9_-]{22}")
IDLE_ENV = "BENCH_MAX_IDLE_CONNS_PER_HOST"
"""Read by the recipe's main.go: Go's default HTTP transport, which every http_client output
shares, then keeps this many idle connections per host instead of Go's 2. The keep-alive
variant sets it to the total concurrency, so Benthos reuses its connections as hookrelay does;
the stock variant leaves it unset (what a Benthos user gets: no option changes it)."""
VARIANTS = {"stock": False, "keepalive": True}
"""Result-key part → whether the run keeps connections alive."""


class PeerUnavailableError(Exception):
    """The peer cannot run here; ``str()`` is the one-line reason."""


@dataclass(frozen=True)
class PeerBuild:
    """A usable Benthos binary and how it came to be."""

    binary: Path
    version: str
    go: str
    built_s: float | None
    """Seconds the build took; None when the cached binary was reused."""

    def as_dict(self) -> dict[str, Any]:
        """JSON shape, for ``bench-results.json``."""
        return {
            "peer": "benthos",
            "version": self.version,
            "module": "github.com/benthosdev/benthos/v4",
            "licence": "MIT",
            "go": self.go,
            "binary": str(self.binary),
            "built_s": self.built_s,
            "cached": self.built_s is None,
        }


def recipe_digest(recipe: Path = RECIPE) -> str:
    """12 hex chars of SHA-256 over the recipe's files: a changed recipe builds anew."""
    digest = hashlib.sha256()
    for name in RECIPE_FILES:
        digest.update(name.encode() + b"\0" + (recipe / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _go_version(go: str) -> str:
    try:
        done = subprocess.run(
            [go, "version"], check=False, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PeerUnavailableError(f"`go version` failed: {e}") from e
    return done.stdout.strip().removeprefix("go version ") or "unknown"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def build_benthos(cache: Path = CACHE, recipe: Path = RECIPE) -> PeerBuild:
    """The Benthos binary for ``recipe``: the cached one, or built now with ``go build``.

    The build reads go.sum as committed (``-mod=readonly``), fetches modules through the
    Go module proxy into Go's own module cache, and writes nothing into the repository.
    Raises ``PeerUnavailableError`` when Go is missing or the build fails.
    """
    go = shutil.which("go")
    if go is None:
        raise PeerUnavailableError("Go is not installed (no `go` on PATH)")
    version = _go_version(go)
    binary = cache / f"benthos-{BENTHOS_VERSION}-{recipe_digest(recipe)}" / "benthos"
    if binary.is_file():
        return PeerBuild(binary, _binary_version(binary), version, None)
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [go, "build", "-trimpath", "-buildvcs=false", "-o", str(partial), "."],
            cwd=recipe, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        raise PeerUnavailableError(f"`go build` took over {BUILD_TIMEOUT_S:.0f} s") from e
    if done.returncode != 0:
        raise PeerUnavailableError(f"`go build` failed ({version}): {_last_line(done.stderr)}")
    partial.rename(binary)
    return PeerBuild(binary, _binary_version(binary), version, round(time.monotonic() - started, 1))


def _binary_version(binary: Path) -> str:
    """The version the binary reports (``Version: v4.27.0``); refuses any other."""
    try:
        done = subprocess.run(
            [str(binary), "--version"], check=False, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PeerUnavailableError(f"{binary} --version failed: {e}") from e
    match = re.search(r"Version: (\S+)", done.stdout)
    if match is None or match.group(1) != BENTHOS_VERSION:
        raise PeerUnavailableError(f"{binary} is not Benthos {BENTHOS_VERSION}: {done.stdout!r}")
    return match.group(1)


# -- the pipeline ---------------------------------------------------------------------------

VALIDATE_MAPPING = """\
root = if this.event.type().catch("") == "string" && this.createdAt.type().catch("") == "string" {
  content()
} else {
  deleted()
}
"""
"""Once per event, as hookrelay's decoder: parse the JSON, keep only objects whose ``event``
and ``createdAt`` are strings (hookrelay dead-letters the others; the bench has none),
and pass the producer's bytes on unchanged."""


def hook_mapping(hook_id: str, key: str) -> str:
    """Bloblang for one hook: the body with ``"hookId":"<id>"`` spliced in as the last member
    of the producer's bytes (no comma after an empty object, as ``splice_hook_id``), its
    ``logto-signature-sha-256`` (hex HMAC-SHA256, key as UTF-8 text) and its ``webhook-id``
    (``delivery_id``: msg_ + 22 url-safe base64 chars of SHA-256 over topic, partition,
    offset and hook id, NUL-separated), both into metadata for the output's headers.

    Hook ids are ``[A-Za-z0-9_-]`` and the bench's keys are plain ASCII, so neither needs
    escaping inside a bloblang string."""
    return f"""\
let head = content().string().trim().trim_suffix("}}")
let body = if $head == "{{" {{ $head + "\\"hookId\\":\\"{hook_id}\\"}}" }} else {{ $head + ",\\"hookId\\":\\"{hook_id}\\"}}" }}
root = $body
meta logto_signature = $body.hash("hmac_sha256", "{key}").encode("hex")
meta webhook_id = "msg_" + (@kafka_topic + "\\x00" + @kafka_partition.string() + "\\x00" + @kafka_offset.string() + "\\x00{hook_id}").hash("sha256").slice(0, 16).encode("base64rawurl")
"""  # noqa: E501


def hook_output(spec: HookSpec, receiver_url: str) -> dict[str, Any]:
    """One hook's ``http_client`` output (with its mapping): the receiver path, the headers
    hookrelay sends, ``max_in_flight`` = the hook's ``max_concurrency``, hookrelay's 10 s
    per-attempt timeout."""
    return {
        "http_client": {
            "url": receiver_url + spec.path,
            "verb": "POST",
            "headers": {
                "content-type": "application/json",
                "user-agent": f"hookrelay/{__version__}",
                "logto-signature-sha-256": "${! @logto_signature }",
                "webhook-id": "${! @webhook_id }",
            },
            "max_in_flight": spec.max_concurrency,
            "timeout": "10s",
        },
        "processors": [{"mapping": hook_mapping(spec.id, signing_key(spec.id))}],
    }


def pipeline_config(
    *,
    bootstrap: str,
    topic: str,
    group: str,
    hooks: list[HookSpec],
    receiver_url: str,
    http_port: int,
) -> dict[str, Any]:
    """The Benthos configuration (JSON, which is YAML) equivalent to a hookrelay run on
    ``topic`` with ``hooks``. One hook is a plain ``http_client`` output, as a Benthos user
    would write it; several sit under a ``broker`` with the ``fan_out`` pattern (each event
    to every hook; its offset is committed once every hook's request succeeded)."""
    outputs = [hook_output(spec, receiver_url) for spec in hooks]
    output = outputs[0] if len(outputs) == 1 else {
        "broker": {"pattern": "fan_out", "outputs": outputs}
    }  # fmt: skip
    return {
        "http": {"enabled": True, "address": f"127.0.0.1:{http_port}"},
        "input": {
            "kafka_franz": {
                "seed_brokers": [bootstrap],
                "topics": [topic],
                "consumer_group": group,
                "start_from_oldest": True,
            }
        },
        "pipeline": {"processors": [{"mapping": VALIDATE_MAPPING}]},
        "output": output,
        "logger": {"level": "INFO", "format": "logfmt"},
        "shutdown_timeout": "5s",
    }


MAPPING_SAMPLES = (
    event_value(7),
    b' {"event":"User.Created","createdAt":"2026-08-21T09:15:42.123Z","n":1.50} ',
    b'{"event":1,"createdAt":"2026-08-21T09:15:42.123Z"}',
    b'{"event":"Role.Created","createdAt":"2026-08-21T09:15:42.123Z"}',
)
"""What ``verify_mappings`` feeds the built binary: a bench event, one with surrounding
whitespace and a number Python would print otherwise, an invalid one, a two-member one."""
SAMPLE_TOPIC, SAMPLE_PARTITION, SAMPLE_HOOK = "bench-backlog", 2, "h3"


def _expected(seq: int, value: bytes) -> dict[str, str] | None:
    """What hookrelay sends for sample ``seq`` (offset ``seq + 1``) to ``SAMPLE_HOOK``."""
    origin = Origin(SAMPLE_TOPIC, SAMPLE_PARTITION, seq + 1, 0)
    try:
        event = decode(value, None, origin, 1_000_000)
    except InvalidEventError:
        return None
    body = splice_hook_id(event.body_head, event.empty, hook_id_member(SAMPLE_HOOK))
    return {
        "body": body.decode(),
        "signature": signature(signing_key(SAMPLE_HOOK), body),
        "webhook_id": delivery_id(SAMPLE_TOPIC, SAMPLE_PARTITION, seq + 1, SAMPLE_HOOK),
    }


def verify_mappings(build: PeerBuild) -> dict[str, Any]:
    """Run ``MAPPING_SAMPLES`` through the built binary's validation and hook mappings (stdin
    in, stdout out, Kafka coordinates set as kafka_franz sets them) and compare each body,
    signature and webhook-id with hookrelay's own decode, splice and signing functions.

    ``{"match": True, "samples": n}``, or ``match`` False with the first difference."""
    hook = hook_mapping(SAMPLE_HOOK, signing_key(SAMPLE_HOOK))
    coordinates = (
        f'meta kafka_topic = "{SAMPLE_TOPIC}"\nmeta kafka_partition = {SAMPLE_PARTITION}\n'
        'meta kafka_offset = count("offsets")'
    )
    report = 'root = {"offset": @kafka_offset, "body": content().string(), '
    report += '"signature": @logto_signature, "webhook_id": @webhook_id}'
    config = {
        "input": {"stdin": {}},
        "pipeline": {"threads": 1, "processors": [
            {"mapping": coordinates}, {"mapping": VALIDATE_MAPPING}, {"mapping": hook},
            {"mapping": report},
        ]},
        "output": {"stdout": {}},
        "metrics": {"none": {}},
        "http": {"enabled": False},
        "logger": {"level": "WARN"},
    }  # fmt: skip
    path = build.binary.parent / "verify-mappings.json"
    path.write_bytes(orjson.dumps(config))
    try:
        done = subprocess.run(
            [str(build.binary), "-c", str(path)], input=b"\n".join(MAPPING_SAMPLES) + b"\n",
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PeerUnavailableError(f"{build.binary} could not run the mapping check: {e}") from e
    got = {doc.pop("offset") - 1: doc for doc in map(orjson.loads, done.stdout.splitlines())}
    for seq, value in enumerate(MAPPING_SAMPLES):
        if got.get(seq) != _expected(seq, value):
            return {"match": False, "sample": value.decode(), "benthos": got.get(seq)}
    return {"match": True, "samples": len(MAPPING_SAMPLES)}


class BenthosProcess(DaemonProcess):
    """``benthos -c <config>``; ready when its ``/ready`` answers 200 (input and output
    connected), its counters from its ``/metrics``; with ``idle_per_host`` > 0 the
    keep-alive variant."""

    ready_path = "/ready"
    metric_families = BENTHOS_METRICS

    def __init__(
        self, binary: Path, config: Path, http_port: int, log_path: Path, idle_per_host: int
    ) -> None:
        super().__init__(config, http_port, log_path, command="benthos")
        self.binary = binary
        self.idle_per_host = idle_per_host

    def argv(self) -> list[str]:
        """``benthos -c <config>``."""
        return [str(self.binary), "-c", str(self.config)]

    def env(self) -> dict[str, str] | None:
        """With ``idle_per_host``, the recipe's keep-alive switch (see ``IDLE_ENV``)."""
        if not self.idle_per_host:
            return None
        return {**os.environ, IDLE_ENV: str(self.idle_per_host)}


@asynccontextmanager
async def running_peer(
    bench: Bench,
    build: PeerBuild,
    name: str,
    topic: str,
    hooks: list[HookSpec],
    *,
    idle_per_host: int = 0,
) -> AsyncIterator[Run]:
    """Run Benthos on ``topic`` with ``hooks`` for the duration of the block, sampled as
    ``harness.running`` samples the daemon (series ``benthos``); ``idle_per_host``: see
    ``IDLE_ENV`` (0: stock)."""
    http_port = free_port()
    config = bench.workdir / f"{name}.json"
    document = pipeline_config(
        bootstrap=bench.broker.bootstrap, topic=topic, group=f"bench-{name}", hooks=hooks,
        receiver_url=bench.receiver.url(""), http_port=http_port,
    )  # fmt: skip
    config.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    log = bench.workdir / f"{name}.log"
    process = BenthosProcess(build.binary, config, http_port, log, idle_per_host)
    async with sampled(bench, process, "benthos") as run:
        yield run


def webhook_ids_well_formed(arrivals: Arrivals, hooks: list[HookSpec]) -> bool:
    """True when each hook's first request carries a ``webhook-id`` shaped as hookrelay's
    (``msg_`` + 22 url-safe base64 chars)."""
    for hook in hooks:
        request = arrivals.first_requests.get(hook.path)
        if request is None:
            return False
        head = request.partition(b"\r\n\r\n")[0].lower()
        match = re.search(rb"\r\nwebhook-id: *(\S+)", head)
        if match is None or WEBHOOK_ID.fullmatch(match.group(1)) is None:
            return False
    return True


def _duplicates(arrivals: Arrivals, paths: list[str]) -> int:
    """Requests that repeated an event already delivered on the same path."""
    pairs = [arrivals.by_path.get(path, []) for path in paths]
    return sum(len(each) - len({seq for _, seq in each}) for each in pairs)


def _per_cpu_s(cpu_s_per_1000: float | None) -> float | None:
    return round(1000 / cpu_s_per_1000, 1) if cpu_s_per_1000 else None


def _over(value: float | None, reference: float | None) -> float | None:
    return round(value / reference, 3) if value is not None and reference else None


async def throughput(
    bench: Bench, build: PeerBuild, hooks: int, keepalive: bool = False
) -> dict[str, Any]:
    """Benthos' deliveries/s from the backlog, 1 hook or ``hooks``-fold fan-out, measured
    as ``scenarios.throughput`` measures hookrelay, with hookrelay ÷ Benthos ratios when
    the hookrelay run is in the results; ``keepalive``: Go's transport keeps as many idle
    connections as requests can be in flight (``IDLE_ENV``)."""
    specs = bench.hooks(hooks)
    paths = [spec.path for spec in specs]
    target = bench.sizes.backlog_deliveries
    idle = sum(spec.max_concurrency for spec in specs) if keepalive else 0
    name = f"benthos-{'keepalive' if keepalive else 'stock'}-{hooks}"
    async with running_peer(
        bench, build, name, bench.backlog_topic, specs, idle_per_host=idle
    ) as run:
        await wait_for_deliveries(bench, run, paths, target)
    arrivals = bench.receiver.dump()
    rate = steady_rate(arrivals.times(paths)[:target])
    cpu_s = run.sampler.cpu_between("benthos", rate.start, rate.end)
    cpu_s_per_1000 = round(cpu_s / rate.count * 1000, 4) if rate.count else None
    hookrelay = bench.results.get(f"throughput_{hooks}", {})
    firsts = [pairs[0][0] for pairs in arrivals.by_path.values() if pairs]
    return {
        "peer": "benthos",
        "version": build.version,
        "variant": "keepalive" if keepalive else "stock",
        "go_max_idle_conns_per_host": idle or None,
        "hooks": hooks,
        "concurrency_per_hook": specs[0].max_concurrency,
        "deliveries_per_s": round(rate.per_s, 1),
        "cpu_s_per_1000": cpu_s_per_1000,
        "deliveries_per_cpu_s": _per_cpu_s(cpu_s_per_1000),
        "hookrelay_over_benthos": {
            "deliveries_per_s": _over(hookrelay.get("deliveries_per_s"), rate.per_s),
            "deliveries_per_cpu_s": _over(
                _per_cpu_s(hookrelay.get("cpu_s_per_1000")), _per_cpu_s(cpu_s_per_1000)
            ),
        },
        "window": rate.as_dict(),
        "cores": run.sampler.utilisation(rate.start, rate.end),
        "ready_s": round(run.ready_s, 3),
        "first_delivery_after_ready_s": (
            round(min(firsts) - run.daemon.started_at - run.ready_s, 3) if firsts else None
        ),
        "signatures_valid": signatures_valid(arrivals, specs),
        "webhook_ids_well_formed": webhook_ids_well_formed(arrivals, specs),
        "duplicates": _duplicates(arrivals, paths),
        "connections_opened": arrivals.connections,
        "exit_code": run.exit_code,
        "peak_rss_mb": round(run.peak_rss / (1024 * 1024), 1),
        "metrics": run.metrics,
    }
