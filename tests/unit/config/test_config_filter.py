"""A hook's ``filter``: compiled at load, refused with file, line and key path like any key."""

from __future__ import annotations

from pathlib import Path

from hookrelay.config import Hook, json_schemas, load_settings
from hookrelay.events.filter import PayloadFilter
from tests.unit.config.test_config import refusals
from tests.unit.config.test_config import with_hooks as hooks_file


def test_a_hook_filter_loads_compiled_and_a_hook_without_one_has_none(tmp_path: Path) -> None:
    path = hooks_file(
        tmp_path,
        """
        - id: org-one
          events: ["Organization.*"]
          url: https://one.example.com/hook
          filter: not_null(organizationId, params.id, data.id) == 'org_1'
        - id: everything
          events: ["*"]
          url: https://all.example.com/hook
        """,
    )

    one, everything = load_settings(path, env={}).hooks

    assert one.filter == PayloadFilter.compile(
        "not_null(organizationId, params.id, data.id) == 'org_1'"
    )
    assert one.filter is not None
    assert one.filter.evaluate({"organizationId": "org_1"}).passed is True
    assert everything.filter is None


def test_a_folded_multi_line_filter_is_one_expression(tmp_path: Path) -> None:
    path = hooks_file(
        tmp_path,
        """
        - id: enterprise
          events: [User.Data.Updated]
          url: https://crm.example.com/hook
          filter: >-
            data.customData.plan == 'enterprise'
            && data.isSuspended == `false`
        """,
    )

    (hook,) = load_settings(path, env={}).hooks

    assert str(hook.filter) == (
        "data.customData.plan == 'enterprise' && data.isSuspended == `false`"
    )


def test_bad_filters_are_refused_with_file_line_and_key_path(tmp_path: Path) -> None:
    path = hooks_file(
        tmp_path,
        """
        - id: incomplete
          events: ["*"]
          url: https://a.example.com/hook
          filter: "organizationId == 'org_1' &&"
        - id: a-number
          events: ["*"]
          url: https://b.example.com/hook
          filter: 5
        - id: unknown-call
          events: ["*"]
          url: https://c.example.com/hook
          filter: lower(data.name) == 'x'
        - id: empty
          events: ["*"]
          url: https://d.example.com/hook
          filter: ""
        """,
    )
    hooks = tmp_path / "hooks.yaml"

    found = refusals(path)

    assert found[0] == (
        f"{hooks}:5: hooks[0].filter: incomplete JMESPath expression: more was expected at its end"
    )
    assert found[1] == f"{hooks}:9: hooks[1].filter: expected a string; quote the value"
    assert found[2].startswith(f"{hooks}:13: hooks[2].filter: unknown function lower();")
    assert found[3] == (
        f"{hooks}:17: hooks[3].filter: expected a JMESPath expression, e.g. "
        "organizationId == 'org_1'"
    )
    assert len(found) == 4


def test_a_filter_survives_a_dump_and_reload_and_code_may_pass_a_compiled_one() -> None:
    hook = Hook.model_validate(
        {"id": "h", "events": ["*"], "url": "https://x.example.com/", "filter": "a == 'b'"}
    )

    assert hook.model_dump()["filter"] == "a == 'b'"
    assert Hook.model_validate(hook.model_dump()) == hook
    assert Hook.model_validate({**hook.model_dump(), "filter": hook.filter}) == hook


def test_the_hooks_json_schema_describes_filter_as_text() -> None:
    hooks_schema = json_schemas()["hooks.schema.json"]
    hook = hooks_schema["$defs"]["Hook"]["properties"]["filter"]

    assert {"type": "string", "minLength": 1, "maxLength": 4096} in hook["anyOf"]
    assert "JMESPath" in hook["description"]
