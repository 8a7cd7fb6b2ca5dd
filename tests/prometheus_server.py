"""Prometheus for tests: the binaries, a real server, and the metric names queries refer to.

Binaries: :func:`prometheus_binaries` runs deploy/prometheus/fetch_prometheus.py (which
unpacks Debian's ``prometheus`` package into .cache/prometheus on first use) and fails the
test, never skips it, when that does not work.

Server: ``async with running_prometheus(binaries, workdir, targets, rule_files) as prom``
starts a real Prometheus on a free 127.0.0.1 port that scrapes ``targets`` (job name ->
``host:port`` list: ``JOB`` for the daemon, ``INGEST_JOB`` for hookrelay ingest, as
deploy/prometheus/README.md names them) and evaluates ``rule_files`` every second; ``prom``
is a :class:`PrometheusAPI` on its HTTP API.

Names: :func:`exported_names` (what a /metrics exposition exports),
:func:`daemon_metric_names` (what ``hookrelay.ops.metrics.Metrics`` exports),
:func:`ingest_metric_names` (what ``IngestMetrics``, hookrelay ingest's set, exports),
:func:`metric_names` (what a PromQL expression selects), :func:`dashboard_queries`,
:func:`variable_queries` and
:func:`substitute` (a Grafana dashboard's queries, with its variables filled in),
:func:`rule_groups`, :func:`recording_rules` and :func:`alerting_rules` (a rules file).
"""

from __future__ import annotations

import asyncio
import functools
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import promql_parser
import pytest
from ruamel.yaml import YAML

from hookrelay.ops.metrics import IngestMetrics, Metrics
from tests.kafka_broker import free_port

ROOT = Path(__file__).resolve().parent.parent
FETCH_SCRIPT = ROOT / "deploy" / "prometheus" / "fetch_prometheus.py"
# The artefacts under test.
RULES = ROOT / "deploy" / "prometheus" / "hookrelay-rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "hookrelay-rules.test.yaml"
RUNBOOK = ROOT / "deploy" / "prometheus" / "README.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "hookrelay.json"
DASHBOARD_GENERATOR = ROOT / "deploy" / "grafana" / "dashboard.py"
JOB = "hookrelay"
INGEST_JOB = "hookrelay-ingest"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS = 3  # a free port can be taken between the check and Prometheus binding it

# Series Prometheus writes itself for every target; rules may use them, dashboards do not.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# The dashboard's variables as Grafana fills them in for its default view (job hookrelay,
# every instance and hook, hookrelay ingest's job), and Grafana's built-in intervals.
DEFAULT_VARIABLES = {
    "job": JOB,
    "instance": ".*",
    "hook_id": ".*",
    "ingest_job": INGEST_JOB,
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "3h",
}


# -- binaries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrometheusBinaries:
    """Paths of the ``prometheus`` server and ``promtool``."""

    prometheus: Path
    promtool: Path


@functools.cache
def prometheus_binaries() -> PrometheusBinaries:
    """Both binaries, fetched on first use (Debian's package; see fetch_prometheus.py).

    Calls ``pytest.fail`` with the script's message when they cannot be had: the rule and
    scrape tests are required, so a machine without Prometheus fails them.
    """
    result = subprocess.run(
        [sys.executable, str(FETCH_SCRIPT)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(
            f"Prometheus is required (fetch_prometheus.py exit {result.returncode}):\n"
            f"{result.stderr}",
            pytrace=False,
        )
    bin_dir = Path(result.stdout.strip().splitlines()[-1])
    return PrometheusBinaries(bin_dir / "prometheus", bin_dir / "promtool")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``promtool args...`` to completion (output captured; never raises on status)."""
    return subprocess.run(
        [str(prometheus_binaries().promtool), *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


# -- server -----------------------------------------------------------------------------------


class PrometheusError(Exception):
    """The HTTP API answered with an error (bad query, server not up)."""


class PrometheusAPI:
    """Client for the parts of Prometheus' HTTP API (``/api/v1``) the tests use.

    Every method raises :class:`PrometheusError` with Prometheus' own message when the
    answer is not ``status: success``.
    """

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self._session = session

    async def _get(self, path: str, params: Mapping[str, str] | Sequence[tuple[str, str]]) -> Any:
        async with self._session.get(f"{self.url}{path}", params=params) as response:
            body = await response.read()
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise PrometheusError(f"{path}: HTTP {response.status}: {body[:200]!r}") from e
        if answer.get("status") != "success":
            raise PrometheusError(f"{path} {dict(params)}: {answer.get('error', answer)}")
        return answer["data"]

    async def query_range(
        self, expr: str, start: float, end: float, step_s: float
    ) -> list[dict[str, Any]]:
        """``/api/v1/query_range``: a list of ``{"metric": {labels}, "values": [[t, "v"]]}``."""
        data = await self._get(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s}"},
        )
        return list(data["result"])

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """``/api/v1/query`` now: a list of ``{"metric": {labels}, "value": [t, "v"]}``."""
        data = await self._get("/api/v1/query", {"query": expr})
        return list(data["result"])

    async def label_values(self, label: str, match: str) -> list[str]:
        """``/api/v1/label/<label>/values`` for series matching the selector ``match``."""
        return list(await self._get(f"/api/v1/label/{label}/values", [("match[]", match)]))

    async def rule_groups(self) -> list[dict[str, Any]]:
        """``/api/v1/rules``: loaded groups with each rule's health, state and last error."""
        return list((await self._get("/api/v1/rules", {}))["groups"])

    async def targets(self) -> list[dict[str, Any]]:
        """``/api/v1/targets``: active targets with ``health`` and ``lastError``."""
        return list((await self._get("/api/v1/targets", {}))["activeTargets"])


def prometheus_config(targets: Mapping[str, Sequence[str]], rule_files: Sequence[Path]) -> bytes:
    """prometheus.yml (as JSON, which is YAML): 1 s scrapes of each job's targets (job name ->
    ``host:port`` list), 1 s rules."""
    return orjson.dumps(
        {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(path.resolve()) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(hosts)}]}
                for job, hosts in targets.items()
            ],
        },
        option=orjson.OPT_INDENT_2,
    )


async def _wait_ready(
    process: asyncio.subprocess.Process, url: str, session: aiohttp.ClientSession
) -> bool:
    """Poll ``/-/ready`` until 200 (True) or the process exits (False); TimeoutError after
    READY_TIMEOUT_S."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while process.returncode is None:
        with suppress(aiohttp.ClientError):
            async with session.get(f"{url}/-/ready") as response:
                if response.status == 200:
                    return True
        if time.monotonic() > deadline:
            raise TimeoutError(f"Prometheus at {url} not ready within {READY_TIMEOUT_S} s")
        await asyncio.sleep(0.1)
    return False


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; always reaps the process."""
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()


def _prepare(
    workdir: Path, targets: Mapping[str, Sequence[str]], rule_files: Sequence[Path]
) -> Path:
    """Write ``workdir/prometheus.yml``; returns its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_bytes(prometheus_config(targets, rule_files))
    return config


def _log_text(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


async def _start(
    binaries: PrometheusBinaries, workdir: Path, port: int
) -> asyncio.subprocess.Process:
    """Start the server on ``port``; its output is appended to ``workdir/prometheus.log``."""
    with (workdir / "prometheus.log").open("ab") as log:
        return await asyncio.create_subprocess_exec(
            str(binaries.prometheus),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip


@asynccontextmanager
async def running_prometheus(
    binaries: PrometheusBinaries,
    workdir: Path,
    targets: Mapping[str, Sequence[str]],
    rule_files: Sequence[Path] = (),
) -> AsyncIterator[PrometheusAPI]:
    """A real Prometheus server for the block, stopped (SIGTERM) when it exits; it scrapes
    ``targets`` (job name -> ``host:port`` list) every second.

    Its config, TSDB and log (``prometheus.log``) live in ``workdir``. Raises RuntimeError
    with the log's tail when it does not start (bad config or rules file, port taken
    ``START_ATTEMPTS`` times).
    """
    _prepare(workdir, targets, rule_files)
    log = workdir / "prometheus.log"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for _ in range(START_ATTEMPTS):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            process = await _start(binaries, workdir, port)
            try:
                if await _wait_ready(process, url, session):
                    yield PrometheusAPI(url, session)
                    return
            finally:
                await _stop(process)
            if "address already in use" not in _log_text(log):
                break
    tail = "\n".join(_log_text(log).splitlines()[-20:])
    raise RuntimeError(f"Prometheus did not start (exit {process.returncode}):\n{tail}")


# -- names ------------------------------------------------------------------------------------

_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_SAMPLE_NAME = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", re.MULTILINE)
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def exported_names(exposition: str) -> set[str]:
    """Every sample name a Prometheus text exposition (format 0.0.4) exports.

    The samples present, plus what each ``# TYPE name type`` line promises: a counter's
    ``name_total``, a histogram's ``_bucket``/``_sum``/``_count``, a summary's name,
    ``_sum`` and ``_count``, any other type's name. So a labelled metric that has no series
    yet (nothing counted) still counts as exported.
    """
    names = set(_SAMPLE_NAME.findall(exposition))
    for name, kind in _TYPE_LINE.findall(exposition):
        base = name.removesuffix("_total") if kind == "counter" else name
        names.update(base + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return names


def daemon_metric_names() -> set[str]:
    """What the daemon's metric set exports: a fresh ``hookrelay.ops.metrics.Metrics`` rendered,
    so a metric added there counts at once."""
    return exported_names(Metrics().render().decode())


def ingest_metric_names() -> set[str]:
    """What hookrelay ingest's metric set exports: a fresh ``IngestMetrics`` rendered (its
    ``hookrelay_ingest_*`` metrics, and the build info, readiness and process metrics every
    hookrelay process has)."""
    return exported_names(IngestMetrics().render().decode())


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (parsed with promql-parser).

    Raises ValueError for a syntax error or a selector without a metric name (e.g.
    ``{__name__=~"hookrelay_.*"}``), whose names cannot be checked.
    """
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if not isinstance(node, promql_parser.VectorSelector):
            return
        equal = [
            m.value
            for m in node.matchers.matchers
            if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal
        ]
        if not (node.name or equal):
            raise ValueError(f"selector without a metric name in {expr!r}")
        names.update([node.name] if node.name else equal)

    try:
        tree = promql_parser.parse(expr)
    except ValueError as e:
        raise ValueError(f"not PromQL: {expr!r}: {e}") from e
    promql_parser.walk(tree, visit)
    return names


@dataclass(frozen=True)
class PanelQuery:
    """One query target of a dashboard panel, as written (variables not filled in)."""

    panel: str
    ref_id: str
    expr: str
    legend: str


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def dashboard_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Every Prometheus query target of every panel (collapsed rows included)."""
    return [
        PanelQuery(panel["title"], target["refId"], target["expr"], target.get("legendFormat", ""))
        for panel in _panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if "expr" in target
    ]


_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.+),\s*)?(\w+)\)\s*$", re.DOTALL)


def variable_queries(dashboard: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Query variables: name -> (series selector, label) from ``label_values(selector, label)``.

    Raises ValueError for a query variable of another form, which the tests cannot check.
    """
    found: dict[str, tuple[str, str]] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        text = variable["query"]
        text = text.get("query", "") if isinstance(text, dict) else text
        match = _LABEL_VALUES.match(text)
        if not match or not match.group(1):
            raise ValueError(f"variable {variable['name']}: expected label_values(selector, label)")
        found[variable["name"]] = (match.group(1), match.group(2))
    return found


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Fill in Grafana's ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]``.

    Raises KeyError naming a variable that ``values`` lacks (a query using an undefined
    variable is a dashboard bug).
    """

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise KeyError(f"variable ${name} has no value (in {expr!r})")
        return values[name]

    return _VARIABLE.sub(value, expr)


def rule_groups(path: Path) -> list[dict[str, Any]]:
    """The ``groups`` of a Prometheus rules file, as plain dicts and lists."""
    data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    return list(data["groups"])


def recording_rules(path: Path) -> dict[str, str]:
    """Recorded name -> expression, for every recording rule of a rules file."""
    return {
        rule["record"]: rule["expr"]
        for group in rule_groups(path)
        for rule in group["rules"]
        if "record" in rule
    }


def alerting_rules(path: Path) -> list[dict[str, Any]]:
    """Every alerting rule of a rules file (``alert``, ``expr``, ``labels``, ...)."""
    return [rule for group in rule_groups(path) for rule in group["rules"] if "alert" in rule]
