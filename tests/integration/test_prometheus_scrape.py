"""A real Prometheus scrapes a running daemon and a running ``hookrelay ingest`` (each its own
job, as deploy/prometheus/README.md says), both under traffic: every Grafana panel query (the
Ingest row's included), every dashboard variable and every recording rule returns data, no
rule fails to evaluate, and the alerts the traffic deserves become active. Alerts whose
``for:`` outlasts the test are matched in their pending state."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import promql_parser
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.harness import (
    edit_config,
    eventually,
    start_daemon_process,
    unique,
    with_admin_port,
    write_config,
)
from tests.integration.test_ingest_process import (
    KEY,
    Ingest,
    ingest_config,
    ingest_process,
    logto_body,
    numbered,
    post_logto,
)
from tests.kafka_broker import create_topics
from tests.prometheus_server import (
    DASHBOARD,
    INGEST_JOB,
    JOB,
    RULES,
    SCRAPE_SERIES,
    PrometheusAPI,
    alerting_rules,
    dashboard_queries,
    exported_names,
    metric_names,
    prometheus_binaries,
    recording_rules,
    running_prometheus,
    substitute,
    variable_queries,
)
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration

DATA_TIMEOUT_S = 45.0
RANGE_S = 60.0  # the range queries look back this far, 1 s steps
# Grafana's $__rate_interval is four scrape intervals at least; 10 s of 1 s scrapes keeps a
# few samples in every window on a busy machine.
RATE_INTERVAL = "10s"
TRAFFIC_PERIOD_S = 0.25
# Dead letters the traffic keeps writing: "gone" answers 410, "failing" exhausts its retries.
DEAD_LETTER_REASONS = {"hook_gone", "retries_exhausted"}
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# hookrelay ingest's sources: "prod" writes to the daemon's event topic, "refusing" (records
# without a key) to a compacted topic, which refuses every record without a key: answered 503
# not_written. Neither a missing topic (the test broker creates it at its first write), nor
# one with a tiny max.message.bytes (a permanent 413), nor min.insync.replicas above the
# replicas (Kafka 4.1 took the writes) would do.
REFUSING_TOPIC_CONFIG = {"cleanup.policy": "compact"}
WRONG_KEY = "rotated-signing-key-0123456789"


def event(name: str, n: int) -> bytes:
    return orjson.dumps(
        {"event": name, "createdAt": "2026-08-21T09:15:42.123Z", "data": {"id": f"s{n}"}}
    )


@dataclass(frozen=True)
class Check:
    """A query that must return data: where it comes from, the PromQL, its legend."""

    where: str
    expr: str
    legend: str = ""


@asynccontextmanager
async def steady_traffic(bootstrap: str, topic: str) -> AsyncIterator[None]:
    """Publish events (and now and then an invalid record) every TRAFFIC_PERIOD_S until the
    block exits, so every rate window keeps seeing increases."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()

    async def publish() -> None:
        for n in range(1_000_000):
            batch = [event("User.Created", n), event("Organization.Created", n)]
            if n % 8 == 0:
                batch.append(b"not json")
            for value in batch:
                await producer.send_and_wait(topic, value)
            await asyncio.sleep(TRAFFIC_PERIOD_S)

    task = asyncio.create_task(publish(), name="scrape-test-traffic")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await producer.stop()


async def create_refusing_topic(bootstrap: str, name: str) -> None:
    """A one-partition topic the broker takes no acks=all write on (``REFUSING_TOPIC_CONFIG``):
    hookrelay ingest answers 503, while the topic exists and the process stays ready."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, 1, 1, topic_configs=REFUSING_TOPIC_CONFIG)]
        )
        assert [code for _, code, _ in response.topic_errors] == [0], response.topic_errors
    finally:
        await admin.close()
    await create_topics(bootstrap, [name])  # it exists: this waits for its leader


class Logto:
    """Posts events to hookrelay ingest's routes as Logto does (``numbered`` events, each id
    once), one connection per post, remembering the ids of the events answered 204."""

    def __init__(self, session: aiohttp.ClientSession, ingest: Ingest) -> None:
        self._session = session
        self._base = f"http://127.0.0.1:{ingest.port}/logto"
        self._ids = itertools.count()
        self.acknowledged: set[str] = set()

    async def post(self, source: str, key: str = KEY) -> int:
        """Post the next event to ``source``'s route signed with ``key``; returns the status
        (0 for no answer)."""
        n = next(self._ids)
        status = await post_logto(
            self._session, f"{self._base}/{source}", logto_body(numbered(n)), key
        )
        if status == 204:
            self.acknowledged.add(f"u{n}")
        return status

    async def until_written(self, ingest: Ingest, log: Path) -> None:
        """Post to "prod" until hookrelay ingest answers 204 (its writer reached Kafka), for
        at most 60 s. Not /readyz: hookrelay_ready must say so without a probe asking."""
        deadline = time.monotonic() + 60
        while ingest.process.returncode is None and time.monotonic() < deadline:
            if await self.post("prod") == 204:
                return
            await asyncio.sleep(0.2)
        tail = await asyncio.to_thread(lambda: log.read_text(errors="replace")[-3000:])
        pytest.fail(f"hookrelay ingest wrote nothing (exit {ingest.process.returncode}):\n{tail}")


@asynccontextmanager
async def logto_traffic(logto: Logto, ingest: Ingest) -> AsyncIterator[dict[str, Counter[int]]]:
    """Every TRAFFIC_PERIOD_S until the block exits: a signed event to "prod" (204), every
    fourth period one more signed with another key (401), one to "refusing" (503), then a
    connection left idle, which the next post's connection evicts (ingest.max_connections
    is 1). Yields the statuses answered per source, as they come. Stops between periods,
    never within a post, so ``logto.acknowledged`` is exactly what was written."""
    statuses: dict[str, Counter[int]] = {"prod": Counter(), "refusing": Counter()}
    stopping = asyncio.Event()

    async def post() -> None:
        idle: asyncio.StreamWriter | None = None
        try:
            for n in itertools.count():
                statuses["prod"][await logto.post("prod")] += 1
                if n % 4 == 0:
                    statuses["prod"][await logto.post("prod", WRONG_KEY)] += 1
                statuses["refusing"][await logto.post("refusing")] += 1
                if idle is not None:
                    idle.close()  # evicted by now: the guard closed its end
                _, idle = await asyncio.open_connection("127.0.0.1", ingest.port)
                with suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), TRAFFIC_PERIOD_S)
                if stopping.is_set():
                    return
        finally:
            if idle is not None:
                idle.close()

    task = asyncio.create_task(post(), name="scrape-test-logto")
    try:
        yield statuses
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)


def delivered_ids(receiver: Receiver, hook_id: str) -> set[str]:
    """The ``data.id`` of every event ``hook_id`` received."""
    return {request.json["data"]["id"] for request in receiver.for_hook(hook_id)}


async def wait_ready(port: int, process: asyncio.subprocess.Process, log: Path) -> None:
    """Poll the daemon's /readyz until 200; fail with its log if it exits or takes 60 s."""
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while process.returncode is None and time.monotonic() < deadline:
            with suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    tail = await asyncio.to_thread(lambda: log.read_text(errors="replace")[-3000:])
    pytest.fail(f"daemon not ready (exit {process.returncode}):\n{tail}")


async def stop(process: asyncio.subprocess.Process) -> int:
    """SIGTERM (the daemon drains and exits 0), SIGKILL after 30 s; returns the exit status."""
    process.terminate()
    try:
        return await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        return await r.text()


async def variable_values(prom: PrometheusAPI, dashboard: dict[str, Any]) -> dict[str, str]:
    """Each query variable resolved as Grafana does: its label_values() answered by
    Prometheus and regex-escaped; a multi-value one selects every value, joined as ``(a|b)``,
    and a single-value one (a job) must find exactly one, or Grafana's pick would be a guess.
    Empty while a variable finds nothing (not scraped yet)."""
    values = {"__rate_interval": RATE_INTERVAL, "__interval": "1s", "__range": f"{RANGE_S:g}s"}
    multi = {v["name"] for v in dashboard["templating"]["list"] if v.get("multi")}
    for name, (selector, label) in variable_queries(dashboard).items():
        found = await prom.label_values(label, substitute(selector, values))
        if not found:
            return {}
        assert name in multi or len(found) == 1, f"${name} offers {found}"
        # A regex metacharacter becomes \\. in the PromQL string, as Grafana writes it.
        escaped = [re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\\\1", v) for v in found]
        values[name] = "(" + "|".join(escaped) + ")" if name in multi else escaped[0]
    return values


async def missing_data(prom: PrometheusAPI, checks: list[Check]) -> list[str]:
    """The checks whose range query (last RANGE_S, 1 s steps) has no finite value, or whose
    series lack a label the legend shows; each as "where: expr: why"."""
    end = time.time()
    problems = []
    for check in checks:
        series = await prom.query_range(check.expr, end - RANGE_S, end, 1.0)
        finite = [s for s in series if any(math.isfinite(float(v)) for _, v in s["values"])]
        wanted = set(_LEGEND_LABEL.findall(check.legend))
        unlabelled = [s["metric"] for s in series if not wanted <= set(s["metric"])]
        if not finite:
            problems.append(f"{check.where}: {check.expr}: no finite value in {len(series)} series")
        elif unlabelled:
            problems.append(f"{check.where}: legend {check.legend!r} but series {unlabelled[0]}")
    return problems


def all_checks(dashboard: dict[str, Any], values: dict[str, str]) -> list[Check]:
    """Every panel query with the variables filled in, plus every recorded series."""
    checks = [
        Check(f"panel {q.panel!r} [{q.ref_id}]", substitute(q.expr, values), q.legend)
        for q in dashboard_queries(dashboard)
    ]
    checks += [Check(f"recording rule {name}", name) for name in recording_rules(RULES)]
    return checks


async def wait_for_data(
    prom: PrometheusAPI, dashboard: dict[str, Any]
) -> tuple[list[Check], dict[str, str]]:
    """Poll until every check returns data; returns the checks and the variables' values.
    Fails listing what is still empty after DATA_TIMEOUT_S."""
    deadline = time.monotonic() + DATA_TIMEOUT_S
    problems = ["variables: label_values() found nothing"]
    while time.monotonic() < deadline:
        values = await variable_values(prom, dashboard)
        if values:
            checks = all_checks(dashboard, values)
            problems = await missing_data(prom, checks)
            if not problems:
                return checks, values
        await asyncio.sleep(1.0)
    pytest.fail(f"{len(problems)} quer(ies) without data:\n" + "\n".join(problems))


async def active_alerts(prom: PrometheusAPI) -> dict[str, list[dict[str, Any]]]:
    """Alert name -> its pending/firing alerts; fails on any rule that did not evaluate."""
    alerts: dict[str, list[dict[str, Any]]] = {}
    for group in await prom.rule_groups():
        for rule in group["rules"]:
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
            if rule["type"] == "alerting":
                alerts[rule["name"]] = rule["alerts"]
    return alerts


def alerted(alerts: dict[str, list[dict[str, Any]]], name: str, label: str = "hook_id") -> set[str]:
    """The ``label`` values of the pending or firing alerts called ``name``."""
    return {alert["labels"][label] for alert in alerts[name]}


async def wait_for_alerts(prom: PrometheusAPI) -> dict[str, list[dict[str, Any]]]:
    """Active alerts once those the traffic causes are all there (at most 20 s)."""
    deadline = time.monotonic() + 20
    while True:
        alerts = await active_alerts(prom)
        expected = (
            alerted(alerts, "HookrelayHookFailing")
            and alerted(alerts, "HookrelayHookPaused")
            and alerted(alerts, "HookrelayDeadLettersGrowing", "reason") >= DEAD_LETTER_REASONS
            and alerted(alerts, "HookrelayIngestErrors", "source")
            and alerted(alerts, "HookrelayIngestRefusing", "source")
        )
        if expected or time.monotonic() > deadline:
            return alerts
        await asyncio.sleep(0.5)


def condition_operand(alert: str) -> str:
    """The left-hand side of alert ``alert``'s top-level comparison (``X`` of ``X == 0``):
    what the alert compares, to query when the alert should stay silent."""
    (rule,) = [rule for rule in alerting_rules(RULES) if rule["alert"] == alert]
    tree = promql_parser.parse(rule["expr"])
    assert isinstance(tree, promql_parser.BinaryExpr), rule["expr"]
    return str(tree.lhs)


async def test_every_dashboard_query_and_recording_rule_returns_data_from_live_processes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    binaries = prometheus_binaries()
    dashboard = orjson.loads(await asyncio.to_thread(DASHBOARD.read_bytes))
    topic, refusing = unique("scrape"), unique("scrape-refusing")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    await create_refusing_topic(kafka_bootstrap, refusing)
    async with Receiver() as receiver:
        receiver.script_forever("failing", Reply(status=503))
        receiver.script_forever("gone", Reply(status=410))
        hooks: list[dict[str, Any]] = [
            {"id": "ok", "events": ["*"], "url": receiver.url("ok")},
            {"id": "failing", "events": ["User.*"], "url": receiver.url("failing")},
            # 8 events/s from Kafka and 4 through hookrelay ingest against 4/s: deliveries
            # wait for tokens.
            # Adaptive with its floor at its ceiling: the rate stays 4/s, and the adaptive
            # panel's series exist.
            {"id": "limited", "events": ["*"], "url": receiver.url("limited"),
             "rate_limit": {"per_second": 4, "burst": 1, "adaptive": {"floor": 4}}},
            {"id": "gone", "events": ["Organization.Created"], "url": receiver.url("gone")},
        ]  # fmt: skip
        config = write_config(
            tmp_path, kafka_bootstrap, topic, hooks,
            delivery={"circuit_window": 2, "circuit_min_attempts": 2, "circuit_cooldown_s": 0.5},
        )  # fmt: skip
        port = with_admin_port(config)
        edit_config(config, "admin", retry_backlog_interval_s=1)  # "failing" keeps a backlog
        # "prod" writes to the daemon's event topic (the default), so its events flow on.
        ingest_path = ingest_config(
            tmp_path, kafka_bootstrap, topic, max_connections=1,
            sources=[{"id": "prod", "signing_key": KEY},
                     {"id": "refusing", "signing_key": KEY, "topic": refusing, "key": "none"}],
        )  # fmt: skip
        log, ingest_log = tmp_path / "daemon.log", tmp_path / "ingest.log"
        daemon = await start_daemon_process(config, log)
        try:
            async with (
                ingest_process(ingest_path, ingest_log) as ingest,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            ):
                logto = Logto(http, ingest)
                await wait_ready(port, daemon, log)
                await logto.until_written(ingest, ingest_log)
                targets = {
                    JOB: [f"127.0.0.1:{port}"],
                    INGEST_JOB: [f"127.0.0.1:{ingest.metrics_port}"],
                }
                async with (
                    running_prometheus(binaries, tmp_path / "prometheus", targets, [RULES]) as prom,
                    steady_traffic(kafka_bootstrap, topic),
                    logto_traffic(logto, ingest) as statuses,
                ):
                    checks, values = await wait_for_data(prom, dashboard)
                    alerts = await wait_for_alerts(prom)
                    scraped = await prom.targets()
                    ingest_ready = await prom.query(condition_operand("HookrelayIngestNotReady"))
                    exposition = await scrape(port)
                    ingest_exposition = await scrape(ingest.metrics_port)

                async def all_acknowledged_delivered() -> bool:
                    return logto.acknowledged <= delivered_ids(receiver, "ok")

                await eventually(all_acknowledged_delivered, 20, "hook ok to get every event")
                ingest_delivered = {i for i in delivered_ids(receiver, "ok") if i.startswith("u")}
        finally:
            exit_code = await stop(daemon)

    # The names the dashboard and the rules use are all in the processes' own /metrics.
    recorded = set(recording_rules(RULES))
    live = exported_names(exposition) | exported_names(ingest_exposition)
    for check in checks:
        assert metric_names(check.expr) <= live | recorded, check.where
    for rule in alerting_rules(RULES):
        assert metric_names(rule["expr"]) <= live | recorded | SCRAPE_SERIES, rule["alert"]
    assert len(checks) == len(dashboard_queries(dashboard)) + len(recorded)

    targets_up = sorted((t["labels"]["job"], t["health"]) for t in scraped)
    assert targets_up == [(JOB, "up"), (INGEST_JOB, "up")]
    # Each job variable found its own process alone, so the Ingest row read hookrelay ingest.
    assert (values["job"], values["ingest_job"]) == (JOB, INGEST_JOB)
    # The traffic hookrelay ingest answered, and what it wrote went on to the hooks.
    assert set(statuses["prod"]) == {204, 401}, statuses
    assert set(statuses["refusing"]) == {503}, statuses
    assert ingest_delivered == logto.acknowledged
    evicted = re.search(
        r'^hookrelay_ingest_connections_closed_total\{reason="evicted_idle"\} (\S+)$',
        ingest_exposition, re.MULTILINE,
    )  # fmt: skip
    assert evicted and float(evicted[1]) > 0, "the guard evicted no idle connection"
    # The alerts the traffic deserves, matched against the real series' labels. "gone"
    # answered one 410 and was paused: too few attempts for a ratio, HookPaused covers it.
    assert alerted(alerts, "HookrelayHookFailing") == {"failing"}
    assert alerted(alerts, "HookrelayHookPaused") == {"gone"}
    assert {a["state"] for a in alerts["HookrelayHookPaused"]} == {"firing"}
    assert alerted(alerts, "HookrelayDeadLettersGrowing", "reason") >= DEAD_LETTER_REASONS
    # Every request to "refusing" is a 503, one in five to "prod" a 401.
    assert alerted(alerts, "HookrelayIngestErrors", "source") == {"refusing"}
    assert alerted(alerts, "HookrelayIngestRefusing", "source") == {"prod"}
    assert alerts["HookrelayDown"] == alerts["HookrelayTargetMissing"] == []
    # Both ready, and their /metrics say so although nothing asked hookrelay ingest's
    # /readyz: not even pending (the alerts' `for` would hide a 0 for minutes).
    assert re.search(r"^hookrelay_ready 1\.0$", exposition, re.MULTILINE), "daemon ready"
    assert re.search(r"^hookrelay_ready 1\.0$", ingest_exposition, re.MULTILINE), (
        "hookrelay ingest takes writes, but its hookrelay_ready is not 1"
    )
    assert alerts["HookrelayNotReady"] == alerts["HookrelayIngestNotReady"] == []
    # What HookrelayIngestNotReady compares with 0 is the ingest job's readiness, and only
    # that job's: the alert watches the right series.
    assert [(s["metric"], s["value"][1]) for s in ingest_ready] == [({"job": INGEST_JOB}, "1")]
    assert (exit_code, ingest.process.returncode) == (0, 0)
