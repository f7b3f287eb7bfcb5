"""Imports point one way: core → building blocks → methods → applications → interfaces."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "segxai"

LAYER = {
    "core": 0,
    "data": 1, "models": 1,
    "explainers": 2,
    "evaluate": 3, "attack": 3,
    "nas": 4, "continual": 4,
    "report": 5, "cli": 5, "viewer": 5,
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("segxai."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("segxai."):
                    found.add(alias.name.split(".")[1])
    return found


def test_imports_point_one_way() -> None:
    bad = []
    for package, level in LAYER.items():
        for path in (SRC / package).rglob("*.py"):
            for imported in _imports(path):
                if imported in LAYER and LAYER[imported] > level:
                    bad.append(f"{path.relative_to(SRC)} imports segxai.{imported}")
                if imported in LAYER and LAYER[imported] == level and imported != package \
                        and level in (0, 2):
                    bad.append(f"{path.relative_to(SRC)} imports segxai.{imported}")
    assert not bad, "\n".join(bad)


def test_core_imports_nothing_else_of_segxai() -> None:
    for path in (SRC / "core").rglob("*.py"):
        assert _imports(path) <= {"core"}, path
