"""Layering: planner imports no flowgraph, asyncio, aiokafka, rocksdict, rich."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = frozenset({"flowgraph", "asyncio", "aiokafka", "rocksdict", "rich"})
PLANNER = Path(__file__).resolve().parents[3] / "planner"
FILES = sorted(PLANNER.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PLANNER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_roots(tree: ast.AST) -> set[str]:
    """Top-level package of every import, anywhere in the module (functions included)."""
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and (
                getattr(node.func, "id", None) == "__import__"
                or getattr(node.func, "attr", None) == "import_module"
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_planner_has_modules():
    assert PLANNER / "__init__.py" in FILES
    assert PLANNER / "passes" / "fuse.py" in FILES


@pytest.mark.parametrize("path", FILES, ids=module_name)
def test_planner_module_imports_nothing_forbidden(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert imported_roots(tree) & FORBIDDEN == set()


def test_checker_sees_imports_inside_functions():
    tree = ast.parse(
        "def f():\n    import asyncio.events\n    from rich import print\n"
        "    importlib.import_module('flowgraph.viz')\n"
    )
    assert imported_roots(tree) == {"asyncio", "rich", "flowgraph"}


def test_importing_every_planner_module_loads_nothing_forbidden():
    modules = [module_name(p) for p in FILES]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted({{m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r}}})\n"
        "assert not bad, bad\n"
        "print(len(sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=PLANNER.parent,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
