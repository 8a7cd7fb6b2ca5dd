"""A real Prometheus scrapes a running daemon: every Grafana panel query, every dashboard
variable and every recording rule returns data, no rule fails to evaluate, and the alerts the
traffic deserves become active. The dashboard's Ingest row and the HookrelayIngest* alerts read
hookrelay ingest's metrics; no ingest process runs here, so they are left to
tests/deploy/test_grafana_dashboard.py and test_prometheus_rules.py (names, promtool cases)."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.harness import start_daemon_process, unique, with_admin_port, write_config
from tests.kafka_broker import create_topics
from tests.prometheus_server import (
    DASHBOARD,
    JOB,
    RULES,
    SCRAPE_SERIES,
    PanelQuery,
    PrometheusAPI,
    alerting_rules,
    dashboard_queries,
    exported_names,
    ingest_metric_names,
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
# The variable of the dashboard's Ingest row: its queries, and it, read hookrelay ingest's jobs.
INGEST_VARIABLE = "ingest_job"


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


def daemon_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """The panel queries of the daemon's rows (all but the Ingest row's)."""
    return [q for q in dashboard_queries(dashboard) if f"${INGEST_VARIABLE}" not in q.expr]


async def variable_values(prom: PrometheusAPI, dashboard: dict[str, Any]) -> dict[str, str]:
    """Each query variable of the daemon's rows resolved as Grafana does for "select every
    value": its label_values() answered by Prometheus, regex-escaped and joined as ``(a|b)``."""
    values = {"__rate_interval": RATE_INTERVAL, "__interval": "1s", "__range": f"{RANGE_S:g}s"}
    for name, (selector, label) in variable_queries(dashboard).items():
        if name == INGEST_VARIABLE:
            continue
        found = await prom.label_values(label, substitute(selector, values))
        if not found:
            return {}  # not scraped yet
        # A regex metacharacter becomes \\. in the PromQL string, as Grafana writes it.
        escaped = [re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\\\1", v) for v in found]
        values[name] = escaped[0] if name == "job" else "(" + "|".join(escaped) + ")"
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


async def all_checks(prom: PrometheusAPI, dashboard: dict[str, Any]) -> list[Check] | None:
    """Every panel query with the variables filled in, plus every recorded series; None
    while the variables cannot be resolved yet."""
    values = await variable_values(prom, dashboard)
    if not values:
        return None
    checks = [
        Check(f"panel {q.panel!r} [{q.ref_id}]", substitute(q.expr, values), q.legend)
        for q in daemon_queries(dashboard)
    ]
    checks += [Check(f"recording rule {name}", name) for name in recording_rules(RULES)]
    return checks


async def wait_for_data(prom: PrometheusAPI, dashboard: dict[str, Any]) -> list[Check]:
    """Poll until every check returns data; fail listing what is still empty after
    DATA_TIMEOUT_S."""
    deadline = time.monotonic() + DATA_TIMEOUT_S
    problems = ["variables: label_values() found nothing"]
    while time.monotonic() < deadline:
        checks = await all_checks(prom, dashboard)
        if checks is not None:
            problems = await missing_data(prom, checks)
            if not problems:
                return checks
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
        )
        if expected or time.monotonic() > deadline:
            return alerts
        await asyncio.sleep(0.5)


async def test_every_dashboard_query_and_recording_rule_returns_data_from_a_live_daemon(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    binaries = prometheus_binaries()
    dashboard = orjson.loads(await asyncio.to_thread(DASHBOARD.read_bytes))
    topic = unique("scrape")
    await create_topics(kafka_bootstrap, [topic, f"{topic}.dlq"])
    async with Receiver() as receiver:
        receiver.script_forever("failing", Reply(status=503))
        receiver.script_forever("gone", Reply(status=410))
        hooks = [
            {"id": "ok", "events": ["*"], "url": receiver.url("ok")},
            {"id": "failing", "events": ["User.*"], "url": receiver.url("failing")},
            # 8 events/s against 4/s: deliveries wait for tokens.
            {"id": "limited", "events": ["*"], "url": receiver.url("limited"),
             "rate_limit": {"per_second": 4, "burst": 1}},
            {"id": "gone", "events": ["Organization.Created"], "url": receiver.url("gone")},
        ]  # fmt: skip
        config = write_config(
            tmp_path, kafka_bootstrap, topic, hooks,
            delivery={"circuit_window": 2, "circuit_min_attempts": 2, "circuit_cooldown_s": 0.5},
        )  # fmt: skip
        port = with_admin_port(config)
        log = tmp_path / "daemon.log"
        daemon = await start_daemon_process(config, log)
        try:
            await wait_ready(port, daemon, log)
            target = f"127.0.0.1:{port}"
            async with (
                running_prometheus(binaries, tmp_path / "prometheus", [target], [RULES]) as prom,
                steady_traffic(kafka_bootstrap, topic),
            ):
                checks = await wait_for_data(prom, dashboard)
                alerts = await wait_for_alerts(prom)
                targets = await prom.targets()
                exposition = await scrape(port)
        finally:
            exit_code = await stop(daemon)

    # The names the dashboard and the rules use are all in this daemon's own /metrics.
    recorded = set(recording_rules(RULES))
    live = exported_names(exposition)
    for check in checks:
        assert metric_names(check.expr) <= live | recorded, check.where
    # The HookrelayIngest* alerts read hookrelay ingest's own metrics (not running here).
    readable = live | recorded | SCRAPE_SERIES | ingest_metric_names()
    for rule in alerting_rules(RULES):
        assert metric_names(rule["expr"]) <= readable, rule["alert"]
    # Only the Ingest row was left out: every query of it reads hookrelay ingest's metrics.
    left_out = [q for q in dashboard_queries(dashboard) if q not in daemon_queries(dashboard)]
    values = {INGEST_VARIABLE: "hookrelay-ingest", "__rate_interval": RATE_INTERVAL}
    assert left_out
    for query in left_out:
        names = metric_names(substitute(query.expr, values))
        assert all(name.startswith("hookrelay_ingest_") for name in names), query.panel
    assert len(checks) == len(daemon_queries(dashboard)) + len(recorded)

    assert [(t["labels"]["job"], t["health"]) for t in targets] == [(JOB, "up")]
    # The alerts the traffic deserves, matched against the real series' labels. "gone"
    # answered one 410 and was paused: too few attempts for a ratio, HookPaused covers it.
    assert alerted(alerts, "HookrelayHookFailing") == {"failing"}
    assert alerted(alerts, "HookrelayHookPaused") == {"gone"}
    assert {a["state"] for a in alerts["HookrelayHookPaused"]} == {"firing"}
    assert alerted(alerts, "HookrelayDeadLettersGrowing", "reason") >= DEAD_LETTER_REASONS
    assert alerts["HookrelayDown"] == alerts["HookrelayTargetMissing"] == []
    # Ready, and /metrics says so: not even pending (its `for` would hide a 0 for 5 min).
    assert re.search(r"^hookrelay_ready 1\.0$", exposition, re.MULTILINE), "hookrelay_ready"
    assert alerts.get("HookrelayNotReady", []) == []
    assert exit_code == 0
