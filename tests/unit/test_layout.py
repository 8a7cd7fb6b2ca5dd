"""The layout's rules that import-linter's contracts (``make lint``) cannot state: every module
of the package belongs to a layer, ``events`` imports nothing of hookrelay but ``errors`` (a
new root module included), and no module fakes ``TYPE_CHECKING`` to hide a runtime import
from the contracts. A layout review found each of these slipping past them."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "daemon" / "hookrelay"


def _layers() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (layered,) = [c for c in contracts if c["type"] == "layers"]
    return {name.strip() for layer in layered["layers"] for name in layer.split("|")}


def test_every_module_belongs_to_a_layer() -> None:
    graph = grimp.build_graph("hookrelay", exclude_type_checking_imports=True)
    layers = _layers()
    outside = [
        module for module in sorted(graph.modules)
        if module not in ("hookrelay", "hookrelay.__main__")
        and not any(module == layer or module.startswith(layer + ".") for layer in layers)
    ]  # fmt: skip
    assert outside == [], "add the module to a layer in [tool.importlinter] of pyproject.toml"


def test_events_imports_nothing_of_hookrelay_but_errors() -> None:
    graph = grimp.build_graph("hookrelay", exclude_type_checking_imports=True)
    reached = {
        imported
        for module in graph.modules
        if module == "hookrelay.events" or module.startswith("hookrelay.events.")
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.startswith("hookrelay")
    }
    assert {m for m in reached if not m.startswith("hookrelay.events")} <= {"hookrelay.errors"}


def test_no_module_defines_its_own_type_checking_flag() -> None:
    """``TYPE_CHECKING = True`` would make an ``if TYPE_CHECKING:`` import run, while the
    contracts skip it as an annotation-only import."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else []
            targets += [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else []
            if any(isinstance(t, ast.Name) and t.id == "TYPE_CHECKING" for t in targets):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []
