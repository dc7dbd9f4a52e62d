"""Size limits that keep hf_oto readable in an hour: modules ≤ 700 lines, classes ≤ 450, functions ≤ 100."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hf_oto"
LIMITS = {"module": 700, "class": 450, "function": 100}


def _oversized() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        name = path.relative_to(PACKAGE.parent)
        if len(source.splitlines()) > LIMITS["module"]:
            found.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            kind = {ast.ClassDef: "class", ast.FunctionDef: "function", ast.AsyncFunctionDef: "function"}.get(
                type(node)
            )
            if kind and node.end_lineno - node.lineno + 1 > LIMITS[kind]:
                found.append(f"{name}:{node.lineno} {kind} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    return found


def test_modules_classes_and_functions_stay_small():
    assert PACKAGE.is_dir()
    assert _oversized() == []


@pytest.mark.parametrize("kind", sorted(LIMITS))
def test_the_size_check_can_fail(kind, tmp_path, monkeypatch):
    """The checker really measures: a limit of 1 line flags the real package."""
    monkeypatch.setitem(LIMITS, kind, 1)
    assert any(kind in line or kind == "module" for line in _oversized())
