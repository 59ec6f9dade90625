"""The architecture's rules, checked: short functions, and callers that ask a family's declared
capabilities instead of probing models with hasattr."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "genforge"
TABLES = {("cli.py", "_parser")}  # declarative tables may be long: the argument parser


def test_no_source_function_is_over_80_lines():
    long = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80 and (path.relative_to(SOURCE).as_posix(), node.name) not in TABLES:
                    long.append(f"{path.relative_to(SOURCE)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_no_hasattr_outside_the_model_package():
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        if path.is_relative_to(SOURCE / "models"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "hasattr":
                found.append(f"{path.relative_to(SOURCE)}:{node.lineno}")
    assert found == []
