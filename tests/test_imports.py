"""No import circles among genforge's modules: every import counts, at the top of a file or inside a
function (a lazy import still ties the two modules together), except those under ``if TYPE_CHECKING:``.

Run as a script to list the circles: ``python tests/test_imports.py``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"


def module_names(source: Path = SOURCE) -> dict[str, Path]:
    """Every module of the ``genforge`` package under ``source``: dotted name -> file."""
    names = {}
    for path in sorted((source / "genforge").rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks (they never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(inner) for inner in ast.walk(node)}
    return skipped


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The genforge modules that module ``name`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {target for target in found if target in modules and target != name}


def import_graph(source: Path = SOURCE) -> dict[str, set[str]]:
    modules = module_names(source)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_walker_finds_a_circle_and_a_lazy_import(tmp_path):
    package = tmp_path / "genforge"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from genforge import b\n")
    (package / "b.py").write_text("def f():\n    from genforge.a import g\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from genforge import a\n")
    graph = import_graph(tmp_path)
    assert graph["genforge.a"] == {"genforge.b"} and graph["genforge.b"] == {"genforge.a"}
    assert graph["genforge.c"] == set()
    assert circles(graph) == [["genforge.a", "genforge.b"]]


def test_config_never_imports_the_models():
    graph = import_graph()
    assert not {target for target in graph["genforge.config"] if target.startswith("genforge.models")}


def test_the_config_layer_imports_no_torch_until_a_family_is_needed():
    import subprocess

    code = ("import sys, genforge.config as c; names = c.recipe_names(); c.load_recipe_dict(names[0]); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr  # `genforge recipes` stays fast


def test_no_module_imports_in_a_circle():
    assert circles(import_graph()) == []


if __name__ == "__main__":
    for group in circles(import_graph()):
        print(" <-> ".join(group))
