"""deploy/prometheus/hookrelay-rules.yaml: promtool accepts it, its promtool unit tests pass,
every alert is complete and tested both ways, and every rule reads only metrics that the
daemon or hookrelay ingest exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from ruamel.yaml import YAML

from tests.prometheus_server import (
    DASHBOARD,
    DEFAULT_VARIABLES,
    RULE_TESTS,
    RULES,
    RUNBOOK,
    SCRAPE_SERIES,
    alerting_rules,
    daemon_metric_names,
    dashboard_queries,
    ingest_metric_names,
    metric_names,
    promtool,
    recording_rules,
    rule_groups,
    substitute,
)

SEVERITIES = {"critical", "warning"}


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub gives the headings of a Markdown text (lowercase, punctuation dropped,
    spaces as hyphens)."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def unit_test_cases() -> list[dict[str, Any]]:
    data = YAML(typ="safe").load(RULE_TESTS.read_text(encoding="utf-8"))
    return [case for test in data["tests"] for case in test.get("alert_rule_test", [])]


def test_promtool_check_rules_accepts_every_rule() -> None:
    count = sum(len(group["rules"]) for group in rule_groups(RULES))
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_fail_when_an_expected_alert_is_wrong(tmp_path: Path) -> None:
    # The same tests with one expected annotation changed must fail: the cases really compare
    # rendered alerts instead of passing vacuously.
    text = RULE_TESTS.read_text(encoding="utf-8")
    broken = text.replace("only 10% of POST attempts", "only 11% of POST attempts", 1)
    assert broken != text
    (tmp_path / RULES.name).write_text(RULES.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / RULE_TESTS.name).write_text(broken, encoding="utf-8")
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "HookrelayHookFailing" in result.stdout + result.stderr


@pytest.mark.parametrize("alert", [rule["alert"] for rule in alerting_rules(RULES)])
def test_every_alert_fires_on_a_failing_series_and_not_on_a_healthy_one(alert: str) -> None:
    cases = [case for case in unit_test_cases() if case["alertname"] == alert]
    assert any(case["exp_alerts"] for case in cases), f"no promtool case where {alert} fires"
    assert any(not case["exp_alerts"] for case in cases), f"no case where {alert} stays silent"


@pytest.mark.parametrize("rule", alerting_rules(RULES), ids=lambda rule: rule["alert"])
def test_every_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert len(annotations["description"].split()) >= 10
    page, _, anchor = annotations["runbook"].partition("#")
    assert page == "deploy/prometheus/README.md"
    assert anchor == rule["alert"].lower()
    assert anchor in github_anchors(RUNBOOK.read_text(encoding="utf-8")), (
        f"{RUNBOOK.name} has no section for {rule['alert']}"
    )


def test_rules_read_only_metrics_the_daemon_or_ingest_exports() -> None:
    recorded = recording_rules(RULES)
    names = daemon_metric_names() | ingest_metric_names()
    for record, expr in recorded.items():
        unknown = metric_names(expr) - names - set(recorded)
        assert not unknown, f"recording rule {record} reads {unknown}, which are not exported"
    for rule in alerting_rules(RULES):
        unknown = metric_names(rule["expr"]) - names - set(recorded) - SCRAPE_SERIES
        assert not unknown, f"alert {rule['alert']} reads {unknown}, which are not exported"


@pytest.mark.parametrize(
    "alert", ["HookrelayIngestErrors", "HookrelayIngestRefusing", "HookrelayIngestNotReady"]
)
def test_ingest_alerts_read_the_ingest_process_metrics(alert: str) -> None:
    """Each reads a metric only hookrelay ingest exports, so it never fires on the daemon."""
    (rule,) = [rule for rule in alerting_rules(RULES) if rule["alert"] == alert]
    ingest_only = ingest_metric_names() - daemon_metric_names()
    assert metric_names(rule["expr"]) & ingest_only, alert
    assert all(name.startswith("hookrelay_ingest_") for name in ingest_only)


def test_every_recording_rule_is_used_by_the_dashboard_or_an_alert() -> None:
    recorded = recording_rules(RULES)
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    readers = [substitute(q.expr, DEFAULT_VARIABLES) for q in dashboard_queries(dashboard)]
    readers += [rule["expr"] for rule in alerting_rules(RULES)] + list(recorded.values())
    used = set().union(*(metric_names(expr) for expr in readers))
    assert set(recorded) <= used, f"recorded but never read: {set(recorded) - used}"
