"""The roles import mxgate and schemas, never each other (BRIEF)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLES = ("receiver", "scanner", "deliverer")
SHARED = ("mxgate", "schemas")


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("role", ROLES)
def test_role_imports_no_other_role(role: str) -> None:
    files = sorted((REPO / role).rglob("*.py"))
    assert files, f"{role}/ has no modules"
    for f in files:
        others = imported_packages(f) & (set(ROLES) - {role})
        assert not others, f"{f.relative_to(REPO)} imports {sorted(others)}"


@pytest.mark.parametrize("shared", SHARED)
def test_shared_code_imports_no_role_at_module_level(shared: str) -> None:
    # The CLI starts roles lazily inside functions; module-level imports of a role from the
    # shared package would tie every role to every other.
    for f in sorted((REPO / shared).rglob("*.py")):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert node.module.split(".")[0] not in ROLES, f"{f.relative_to(REPO)}"
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & set(ROLES), f
