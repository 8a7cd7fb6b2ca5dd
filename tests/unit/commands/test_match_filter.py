"""``hookrelay match`` and ``hookrelay check`` show what each hook's payload filter does,
and ``check`` which hooks are ordered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from hookrelay.commands.cli import main
from hookrelay.commands.match import match_event, origin_of, render_text
from hookrelay.config import load_settings
from tests.unit.commands.test_match import config_file, run

ONE_ORG = "not_null(organizationId, params.id, data.id) == 'org_1'"
HOOKS = [
    {"id": "org-one", "events": ["Organization.*"], "url": "https://one.example/in",
     "filter": ONE_ORG},
    {"id": "named", "events": ["*"], "url": "https://named.example/in",
     "filter": "length(data.name) > `3`"},
    {"id": "plan", "events": ["*"], "url": "https://plan.example/in",
     "filter": "data.customData"},
    {"id": "all", "events": ["*"], "url": "https://all.example/in"},
]  # fmt: skip


def membership(org: str, data: dict[str, Any]) -> bytes:
    return orjson.dumps({
        "event": "Organization.Membership.Updated", "createdAt": "2026-08-21T08:58:54.144Z",
        "organizationId": org, "data": data,
    })  # fmt: skip


def test_each_filtered_hook_shows_its_verdict_and_value_and_only_passing_hooks_count(
    tmp_path: Path,
) -> None:
    settings = load_settings(config_file(tmp_path, HOOKS), env={})
    value = membership("org_2", {"name": 5, "customData": {"plan": "pro"}})

    report = match_event(settings, value, None, origin_of("identity.events", 0, 0))

    verdicts = {r.hook.id: (r.sent, r.verdict) for r in report.requests}
    assert verdicts["org-one"][0] is False
    assert verdicts["org-one"][1] is not None and verdicts["org-one"][1].value is False
    assert verdicts["named"][1] is not None and verdicts["named"][1].error == (
        "length() expected string or array or object, got number"
    )
    assert verdicts["plan"][0] is True
    assert verdicts["plan"][1] is not None and verdicts["plan"][1].value == {"plan": "pro"}
    assert verdicts["all"] == (True, None)
    text = render_text(report)
    assert text.splitlines()[0].endswith(
        "2 of 4 hooks would receive it; 1 kept out by their filter; 1 whose filter fails on "
        "it (dead-lettered filter_error)"
    )
    assert f"  filter: {ONE_ORG}\n    → FILTERED OUT: skipped, not sent (value: false)" in text
    assert "→ ERROR: length() expected string or array or object, got number; the daemon " \
        "would dead-letter it (filter_error)" in text  # fmt: skip
    assert '→ passed (value: {"plan":"pro"})' in text


def test_json_output_carries_each_filters_expression_verdict_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, HOOKS)
    value = membership("org_1", {"name": "Acme GmbH"})

    code, out, _ = run(capsys, "-c", str(config), "--json", "-", stdin=value)

    assert code == 0
    hooks = {hook["id"]: hook for hook in orjson.loads(out)["hooks"]}
    assert (hooks["org-one"]["sent"], hooks["org-one"]["filter"]) == (
        True, {"expression": ONE_ORG, "passed": True, "value": True, "error": None},
    )  # fmt: skip
    assert hooks["plan"]["filter"] == {
        "expression": "data.customData", "passed": False, "value": None, "error": None,
    }  # fmt: skip
    assert (hooks["all"]["sent"], hooks["all"]["filter"]) == (True, None)


def test_check_lists_each_hooks_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_file(tmp_path, HOOKS)

    assert main(["check", "-c", str(config)]) == 0

    out = capsys.readouterr().out
    assert f"  hook org-one: filter: {ONE_ORG}\n" in out
    assert "  hook named: filter: length(data.name) > `3`\n" in out
    assert "hook all:" not in out


def test_check_names_ordered_hooks_and_what_they_hold_for_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hooks = [{**HOOKS[3], "ordering": "key"}, HOOKS[0]]
    assert main(["check", "-c", str(config_file(tmp_path, hooks))]) == 0
    out = capsys.readouterr().out
    assert (
        "  hook all: ordering: key (one delivery per record key at a time, in offset order; "
        "its held deliveries count towards the backpressure of 1 other hook (README: Ordered "
        "delivery))\n"
    ) in out


def test_check_names_ordered_hooks_that_block_keys_after_a_dead_letter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hooks = [{**HOOKS[3], "ordering": "key", "ordering_after_dead_letter": "block"}]
    assert main(["check", "-c", str(config_file(tmp_path, hooks))]) == 0
    out = capsys.readouterr().out
    assert (
        "  hook all: ordering_after_dead_letter: block (a dead-lettered delivery blocks its key "
        "until hookrelay unblock all or a replay)\n"
    ) in out


def test_match_says_an_ordered_hook_chains_the_event_behind_its_keys_earlier_ones(
    tmp_path: Path,
) -> None:
    hooks = [{**HOOKS[3], "ordering": "key"}]
    settings = load_settings(config_file(tmp_path, hooks), env={})
    value = membership("org_1", {})
    keyed = match_event(settings, value, b"user-42", origin_of("identity.events", 0, 0))
    keyless = match_event(settings, value, None, origin_of("identity.events", 0, 0))
    assert "  ordering: key: sent after every earlier event of key 'user-42' in its " \
        "partition was delivered" in render_text(keyed)  # fmt: skip
    assert "  ordering: key, but the event has no record key: delivered unordered" in (
        render_text(keyless)
    )


def test_check_names_adaptive_rate_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hooks = [{**HOOKS[3], "rate_limit": {"per_second": 50, "adaptive": {"floor": 2}}}]
    assert main(["check", "-c", str(config_file(tmp_path, hooks))]) == 0
    out = capsys.readouterr().out
    assert "  hook all: rate_limit: adaptive, between 2 and 50 requests/s (README: " in out
