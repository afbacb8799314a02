"""The import floors: schemas → mxgate (core) → the roles → ops, cli and devstack.

Every import counts, at module level or inside a function: a lazy import is still an arrow.
No arrow runs back up a floor, the roles never import each other, and no two modules import
each other in a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLES = ("receiver", "scanner", "deliverer")
# What each package may import from the tree, besides itself.
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "mxgate": {"schemas"},
    **{role: {"schemas", "mxgate"} for role in ROLES},
    "devstack": {"schemas", "mxgate"},
    "ops": {"schemas", "mxgate", *ROLES},
    "cli": {"schemas", "mxgate", *ROLES, "ops", "devstack"},
}
PACKAGES = tuple(ALLOWED)


def _modules() -> Iterator[tuple[str, Path]]:
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            rel = f.relative_to(REPO).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts), f


def imports(path: Path, module: str) -> set[str]:
    """Every module of the tree that ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in out if m.split(".")[0] in PACKAGES}


GRAPH = {name: imports(path, name) for name, path in _modules()}
NAMES = set(GRAPH)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_arrow_runs_up_a_floor(package: str) -> None:
    files = [n for n in GRAPH if n.split(".")[0] == package]
    assert files, f"{package}/ has no modules"
    for name in files:
        bad = {m for m in GRAPH[name] if m.split(".")[0] not in ALLOWED[package] | {package}}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_no_import_circle() -> None:
    # Edges between modules of the tree only (``from pkg import name`` may name a module).
    edges = {n: {m for m in deps if m in NAMES and m != n} for n, deps in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges[n]):
            if state.get(m) == 1:
                cycle = [*stack[stack.index(m) :], m]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from scanner.service import run\n    import receiver.smtp\n")
    assert imports(f, "mxgate.x") >= {"scanner.service", "receiver.smtp"}
