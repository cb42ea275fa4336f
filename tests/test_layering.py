"""The architecture's one rule, enforced: imports point down (DESIGN.md). The core packages
never import the shell, and each package imports only what its `__init__` says it may."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sluice"

# package -> the sluice packages it may import (besides itself)
ALLOWED = {
    "util": set(),
    "net": set(),
    "api": {"util"},
    "requests": {"api", "util"},
    "datalayer": {"api", "util", "net"},
    "flowcontrol": {"api", "requests", "util"},
    "scheduling": {"api", "requests", "datalayer", "util"},
    "room": {"datalayer", "requests", "util"},
    "receipts": {"datalayer", "requests", "room", "scheduling", "util"},
    "sources": {"api", "datalayer", "util", "logs"},
    "sim": {"util"},  # util imports nothing of ours: the sim still imports nothing of the EPP
    "config": {"api", "util", "scheduling", "flowcontrol", "room", "requests", "datalayer"},
}


def sluice_imports(path: Path) -> set[str]:
    """The top-level sluice packages/modules a file imports (`sluice.x.y` → `x`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "sluice" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_lies_below_it(package: str) -> None:
    offenders = {
        str(path.relative_to(SRC)): sorted(sluice_imports(path) - ALLOWED[package] - {package})
        for path in (SRC / package).rglob("*.py")
    }
    assert {file: bad for file, bad in offenders.items() if bad} == {}
