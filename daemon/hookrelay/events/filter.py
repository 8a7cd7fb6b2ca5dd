"""Payload filters: a hook's JMESPath expression over an event's JSON, and what it decides.

A hook with ``filter:`` receives an event only when the expression, evaluated over the event
(the record value as produced, parsed once), gives a *truthy* value. Truthiness is
JMESPath's own (the spec's "false-like" values, as ``||``, ``&&`` and ``[?…]`` use them):
``false``, ``null``, ``""``, ``[]`` and ``{}`` are false; everything else is true, the
number ``0`` included.

Why JMESPath (the ``jmespath`` package, the AWS CLI's ``--query``): one specification with
compliance tests and implementations in most languages, so an expression tried with ``jp``
or in the AWS CLI means the same here; pure Python without dependencies; compiled once, a
few microseconds per evaluation (``tests/bench/filter_cost.py``). ``cel-python`` was
measured too: about 40 times slower per evaluation, with ``lark`` beside it.

Load-time checks (``PayloadFilter.compile``), so that an expression accepted at load never
fails on every event: the syntax; every function exists and gets as many arguments as it
takes; a literal argument has a type the function accepts; ``&expression`` only where a
function takes one. What still depends on the payload (``length(data.name)`` on an event
whose ``data.name`` is a number) is an *evaluation error*: ``FilterVerdict.error`` says
which function and which types, never the value (a payload may hold personal data).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import jmespath
from jmespath import exceptions as jmespath_errors
from jmespath.functions import Functions
from jmespath.parser import ParsedResult
from jmespath.visitor import TreeInterpreter

if TYPE_CHECKING:
    from jmespath.visitor import _TreeNode

from hookrelay.errors import FilterError

MAX_FILTER_CHARS: Final = 4096
"""Longest expression accepted: a filter is a condition, not a program; it also bounds the
parser's recursion."""

_FUNCTIONS: Final[dict[str, dict[str, Any]]] = Functions.FUNCTION_TABLE
_JSON_TYPES: Final = {
    bool: "boolean", int: "number", float: "number", str: "string", list: "array",
    dict: "object", type(None): "null",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FilterVerdict:
    """What a filter decided for one event: ``passed`` (the value was truthy), ``value`` (what
    the expression returned, JSON-ready) and ``error`` (why it could not be evaluated, with
    ``passed`` False; None otherwise)."""

    passed: bool
    value: Any = None
    error: str | None = None


class PayloadFilter:
    """A compiled, checked JMESPath expression (see the module docstring).

    Equal, and hashed, by its ``text``, so configurations compare as their files do. Build it
    with ``compile``; ``evaluate`` never raises.
    """

    __slots__ = ("_compiled", "_interpreter", "text")

    def __init__(self, text: str, compiled: ParsedResult) -> None:
        self.text = text
        self._compiled = compiled
        # One interpreter per filter, not per evaluation: jmespath's own ``search`` builds
        # one (and its function table) on every call, a third of an evaluation's time.
        self._interpreter = _Interpreter()

    @classmethod
    def compile(cls, text: str) -> PayloadFilter:
        """Parse and check ``text``. Raises ``FilterError`` saying what is wrong and at which
        character (1-based), without quoting the expression."""
        if not text.strip():
            raise FilterError("expected a JMESPath expression, e.g. organizationId == 'org_1'")
        if len(text) > MAX_FILTER_CHARS:
            raise FilterError(f"expected at most {MAX_FILTER_CHARS} characters")
        try:
            with warnings.catch_warnings():
                # jmespath reads a backtick literal that is not JSON (`1O`, `{bad json`) as a
                # string, with only this warning: a typo that passes or drops every event.
                warnings.simplefilter("error", PendingDeprecationWarning)
                compiled = jmespath.compile(text)
        except PendingDeprecationWarning:
            raise FilterError(
                'a literal in backticks must be JSON (`10`, `true`, `"text"`); write a '
                "string in single quotes: 'org_1'"
            ) from None
        except jmespath_errors.JMESPathError as e:
            raise FilterError(_syntax_message(e)) from None
        except RecursionError:
            raise FilterError("nested too deeply") from None
        _check_functions(compiled.parsed)
        return cls(text, compiled)

    def evaluate(self, document: Any) -> FilterVerdict:
        """The verdict over ``document`` (a parsed JSON value, as orjson returns it)."""
        try:
            value = self._interpreter.visit(self._compiled.parsed, document)
        except jmespath_errors.JMESPathTypeError as e:
            return FilterVerdict(False, None, _type_message(e))
        except Exception as e:  # whatever a payload makes of it, never a crash
            return FilterVerdict(False, None, f"evaluation failed ({type(e).__name__})")
        return FilterVerdict(truthy(value), value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PayloadFilter) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"PayloadFilter({self.text!r})"

    def __str__(self) -> str:
        return self.text


class _Interpreter(TreeInterpreter):
    """jmespath's interpreter with the specification's ordering comparisons: ``<``, ``<=``,
    ``>``, ``>=`` of a number and a string (or anything else but two numbers or two strings)
    are null, not a Python ``TypeError`` (jmespath 1.1 raises one for ``data.count > '1'``,
    which dead-lettered every event of a hook ``check`` had accepted)."""

    def visit_comparator(self, node: _TreeNode, value: Any) -> Any:
        if node["value"] not in _ORDERING_OPS:
            return super().visit_comparator(node, value)
        left = self.visit(node["children"][0], value)
        right = self.visit(node["children"][1], value)
        if (_number(left) and _number(right)) or (isinstance(left, str) and isinstance(right, str)):
            return self.COMPARATOR_FUNC[node["value"]](left, right)
        return None


_ORDERING_OPS: Final = frozenset({"lt", "lte", "gt", "gte"})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def truthy(value: Any) -> bool:
    """JMESPath's truthiness: false for ``false``, ``null``, ``""``, ``[]`` and ``{}``."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


_LITERAL_HINT = (
    " (JMESPath writes a literal in backticks: `0`, `true`, `null`; a string in single "
    "quotes: 'org_1')"
)


def _syntax_message(error: jmespath_errors.JMESPathError) -> str:
    """jmespath's error as one line without the expression (its own message repeats it)."""
    if isinstance(error, jmespath_errors.IncompleteExpressionError):
        return "incomplete JMESPath expression: more was expected at its end"
    if isinstance(error, jmespath_errors.LexerError):
        return f"{error.message} at character {error.lexer_position + 1}"
    if isinstance(error, jmespath_errors.ParseError):
        at = f"at character {error.lex_position + 1}"
        if error.msg.startswith("Expecting"):
            return f"{error.msg} {at}"
        token = str(error.token_type).lower()
        hint = _LITERAL_HINT if token in ("number", "true", "false", "null") else ""
        return f"unexpected {token} {at}{hint}"
    return f"not a JMESPath expression ({type(error).__name__})"


def _type_message(error: jmespath_errors.JMESPathTypeError) -> str:
    expected = " or ".join(error.expected_types)
    return f"{error.function_name}() expected {expected}, got {error.actual_type}"


def _check_functions(node: Any) -> None:
    """Refuse a call that would fail on every event: an unknown function, a wrong argument
    count, a literal of a type the function refuses, an ``&expression`` out of place."""
    children: list[dict[str, Any]] = node.get("children", [])
    if node["type"] == "function_expression":
        _check_call(node["value"], children)
    for child in children:
        if isinstance(child, dict):
            _check_functions(child)


def _check_call(name: str, arguments: list[dict[str, Any]]) -> None:
    spec = _FUNCTIONS.get(name)
    if spec is None:
        known = ", ".join(sorted(_FUNCTIONS))
        raise FilterError(f"unknown function {name}(); JMESPath's functions are: {known}")
    signature: list[dict[str, Any]] = spec["signature"]
    variadic = bool(signature) and bool(signature[-1].get("variadic"))
    if len(arguments) < len(signature) or (not variadic and len(arguments) > len(signature)):
        least = "at least " if variadic else ""
        raise FilterError(
            f"{name}() takes {least}{len(signature)} argument(s), {len(arguments)} given"
        )
    for position, argument in enumerate(arguments):
        types: list[str] = signature[min(position, len(signature) - 1)]["types"]
        problem = _argument_problem(argument, types)
        if problem is not None:
            raise FilterError(f"{name}() argument {position + 1}: {problem}")


def _argument_problem(argument: dict[str, Any], types: list[str]) -> str | None:
    """Why ``argument`` can never be of ``types`` (a signature's list), or None."""
    if (argument["type"] == "expref") != ("expref" in types):
        return (
            "expected an &expression" if "expref" in types else "an &expression is not taken here"
        )
    if argument["type"] != "literal" or not types:
        return None
    value = argument["value"]
    kind = _JSON_TYPES.get(type(value), "object")
    for allowed in types:
        outer, _, inner = allowed.partition("-")
        if kind == outer and (not inner or all(_JSON_TYPES.get(type(v)) == inner for v in value)):
            return None
    return f"expected {' or '.join(types)}, got a literal {kind}"
