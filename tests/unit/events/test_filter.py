"""events.filter: JMESPath payload filters compiled and checked at load, evaluated per event."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from hookrelay.errors import FilterError
from hookrelay.events.filter import MAX_FILTER_CHARS, FilterVerdict, PayloadFilter, truthy

MEMBERSHIP: dict[str, Any] = orjson.loads(
    b'{"event":"Organization.Membership.Updated","createdAt":"2026-08-21T08:58:54.144Z",'
    b'"organizationId":"org_1","addedUserIds":["u1","u2"],"params":{"id":"org_1"}}'
)
USER_UPDATED: dict[str, Any] = orjson.loads(
    b'{"event":"User.Data.Updated","createdAt":"2026-08-21T09:18:29.471Z","data":{"id":"u9",'
    b'"name":5,"customData":{"plan":"enterprise","seats":0},"roles":[]}}'
)


def refusal(text: str) -> str:
    with pytest.raises(FilterError) as caught:
        PayloadFilter.compile(text)
    return str(caught.value)


# ── Truthiness ──────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("value", [False, None, "", [], {}])
def test_false_null_and_empty_values_are_falsy(value: Any) -> None:
    assert truthy(value) is False


@pytest.mark.parametrize("value", [True, 0, 0.0, -1, "0", "false", [None], {"a": None}])
def test_everything_else_is_truthy_zero_included(value: Any) -> None:
    assert truthy(value) is True


# ── Evaluation ──────────────────────────────────────────────────────────────────────────────────


def test_one_organizations_events_pass_and_others_do_not() -> None:
    one_org = PayloadFilter.compile("not_null(organizationId, params.id, data.id) == 'org_1'")

    assert one_org.evaluate(MEMBERSHIP) == FilterVerdict(True, True)
    assert one_org.evaluate({**MEMBERSHIP, "organizationId": "org_2"}) == FilterVerdict(
        False, False
    )


def test_a_path_to_a_missing_member_is_null_and_filters_the_event_out() -> None:
    assert PayloadFilter.compile("data.customData.plan").evaluate(MEMBERSHIP) == FilterVerdict(
        False, None
    )


@pytest.mark.parametrize(
    ("text", "document", "passed"),
    [
        ("data.count > '1'", {"data": {"count": 2}}, False),  # number vs string: null
        ("data.count > `1`", {"data": {"count": 2}}, True),
        ("data.name > 'a'", {"data": {"name": "b"}}, True),  # two strings compare
        ("data.flag < `1`", {"data": {"flag": True}}, False),  # a boolean is no number
    ],
)
def test_an_ordering_comparison_of_other_than_two_numbers_or_strings_is_null(
    text: str, document: Any, passed: bool
) -> None:
    """jmespath 1.1 raised a TypeError for a number against a string: every event of the
    breaker's hook (data.count > '1', accepted at load) was dead-lettered filter_error."""
    verdict = PayloadFilter.compile(text).evaluate(document)
    assert (verdict.passed, verdict.error) == (passed, None)


def test_the_verdict_carries_the_value_the_expression_returned() -> None:
    plan = PayloadFilter.compile("data.customData")

    assert plan.evaluate(USER_UPDATED) == FilterVerdict(True, {"plan": "enterprise", "seats": 0})
    assert PayloadFilter.compile("data.customData.seats").evaluate(USER_UPDATED).passed is True
    assert PayloadFilter.compile("data.roles").evaluate(USER_UPDATED).passed is False


def test_a_type_error_on_one_payload_is_a_verdict_naming_function_and_types_not_the_value() -> None:
    verdict = PayloadFilter.compile("length(data.name) > `3`").evaluate(USER_UPDATED)

    assert verdict == FilterVerdict(
        False, None, "length() expected string or array or object, got number"
    )
    assert "5" not in (verdict.error or "")


def test_evaluation_never_raises_whatever_the_document() -> None:
    deep: Any = []
    for _ in range(5000):
        deep = [deep]

    verdict = PayloadFilter.compile("to_string(@)").evaluate(deep)

    assert verdict.passed is False
    assert verdict.error == "evaluation failed (RecursionError)"


def test_filters_compare_and_hash_by_their_text() -> None:
    first, second = PayloadFilter.compile("a == 'x'"), PayloadFilter.compile("a == 'x'")

    assert first == second
    assert hash(first) == hash(second)
    assert first != PayloadFilter.compile("a == 'y'")
    assert str(first) == "a == 'x'"


# ── Load-time checks ────────────────────────────────────────────────────────────────────────────


LITERAL = (
    'a literal in backticks must be JSON (`10`, `true`, `"text"`); write a string in single '
    "quotes: 'org_1'"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a JMESPath expression, e.g. organizationId == 'org_1'"),
        ("   ", "expected a JMESPath expression, e.g. organizationId == 'org_1'"),
        ("organizationId ==", "incomplete JMESPath expression: more was expected at its end"),
        ("a ==== b", "unexpected eq at character 5"),
        ("a[?b = 1]", "Unknown token '=' at character 6"),
        ("a == 'x", "Unclosed ' delimiter at character 6"),
        ("[1,2", "Expecting: rbracket, got: comma at character 3"),
        ("data.count > `1O`", LITERAL),  # a typo: jmespath read it as the string "1O"
        ("`{bad json`", LITERAL),  # which was always true
        (
            "data.count > 0",
            "unexpected number at character 14 (JMESPath writes a literal in "
            "backticks: `0`, `true`, `null`; a string in single quotes: 'org_1')",
        ),
    ],
)
def test_a_syntax_error_says_what_and_where_without_quoting_the_expression(
    text: str, message: str
) -> None:
    assert refusal(text) == message


def test_an_unknown_function_is_refused_with_the_known_ones() -> None:
    message = refusal("lower(name) == 'x'")

    assert message.startswith("unknown function lower(); JMESPath's functions are: abs, avg,")
    assert "starts_with" in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("length(a, b)", "length() takes 1 argument(s), 2 given"),
        ("not_null()", "not_null() takes at least 1 argument(s), 0 given"),
        ("length(`5`)",
         "length() argument 1: expected string or array or object, got a literal number"),
        ("starts_with(name, `1`)",
         "starts_with() argument 2: expected string, got a literal number"),
        ("sum(`[\"a\"]`)", "sum() argument 1: expected array-number, got a literal array"),
        ("sort_by(users, name)", "sort_by() argument 2: expected an &expression"),
        ("length(&name)", "length() argument 1: an &expression is not taken here"),
        ("merge(a, `1`)", "merge() argument 2: expected object, got a literal number"),
    ],
)  # fmt: skip
def test_a_call_that_would_fail_on_every_event_is_refused(text: str, message: str) -> None:
    assert refusal(text) == message


@pytest.mark.parametrize(
    "text",
    [
        "contains(addedUserIds, 'u1')",
        "not_null(a, b, c)",
        "max_by(users, &age).name",
        "sum(`[1, 2]`) > `2`",
        "length(`[]`) == `0`",
        'contains(`["a", 1]`, a)',
        "starts_with(event, 'Organization.') && !contains(`[\"org_x\"]`, organizationId)",
    ],
)
def test_calls_that_can_succeed_are_accepted(text: str) -> None:
    assert PayloadFilter.compile(text).text == text


def test_a_nested_call_inside_a_filter_projection_is_checked_too() -> None:
    assert refusal("users[?nope(name)]").startswith("unknown function nope()")


def test_an_expression_longer_than_the_limit_or_nested_too_deeply_is_refused() -> None:
    assert (
        refusal("a" * (MAX_FILTER_CHARS + 1)) == f"expected at most {MAX_FILTER_CHARS} characters"
    )
    assert refusal("(" * 2000 + "a" + ")" * 2000) == "nested too deeply"
