"""The architecture's one rule, enforced: imports point down (DESIGN.md). The core packages
never import the shell, and each package imports only what its `__init__` says it may."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sluice"

# package -> the sluice packages it may import (besides itself). Every package and top-level
# module of src/sluice is listed (a test checks it): the core first, then the shell around it.
CORE = {
    "util": set(),
    "logs": set(),
    "settings": set(),
    "net": set(),
    "api": {"util"},
    "requests": {"api", "util"},
    "datalayer": {"api", "util", "net"},
    "flowcontrol": {"api", "requests", "util"},
    "scheduling": {"api", "requests", "datalayer", "util"},
    "room": {"datalayer", "requests", "util"},
    "receipts": {"datalayer", "requests", "room", "scheduling", "util"},
    "request_metrics": {"requests", "util"},
    "sources": {"api", "datalayer", "util", "logs"},
    "sim": {"util"},  # util imports nothing of ours: the sim still imports nothing of the EPP
    "config": {"api", "util", "scheduling", "flowcontrol", "room", "requests", "datalayer"},
}
_BELOW_DIRECTOR = {*CORE, "director"} - {"sim"}
SHELL = {
    "director": {"datalayer", "flowcontrol", "logs", "receipts", "request_metrics", "requests"}
    | {"room", "scheduling", "sources", "util"},
    "shutdown": {"logs"},
    "tracing": {"logs", "receipts", "scheduling", "util"},
    "extproc": {"datalayer", "director", "net", "requests", "logs", "util"},
    "proxy": {"datalayer", "director", "net", "requests", "logs", "util"},
    "health": {"extproc", "logs", "net", "util"},
    "replicas": _BELOW_DIRECTOR,
    "dashboard": _BELOW_DIRECTOR | {"tracing"},
    # the process: everything but the command line and the benchmarks
    "app": _BELOW_DIRECTOR
    | {"dashboard", "extproc", "health", "proxy", "replicas", "shutdown", "tracing"},
    # benchmarks drive the EPP's parts and the simulator; they are not part of serving
    "bench": {*CORE, "director", "extproc", "proxy", "health"},
    "cli": {"app", "bench", "dashboard", "proxy", "replicas", "settings", "sim", "api", "util"},
    "__main__": {"cli"},
}
ALLOWED = {**CORE, **SHELL}


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


def _files(package: str) -> list[Path]:
    folder = SRC / package
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [SRC / f"{package}.py"]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_lies_below_it(package: str) -> None:
    files = _files(package)
    assert files and all(f.exists() for f in files), f"{package}: no such package or module"
    offenders = {
        str(path.relative_to(SRC)): sorted(sluice_imports(path) - ALLOWED[package] - {package})
        for path in files
    }
    assert {file: bad for file, bad in offenders.items() if bad} == {}


def test_every_package_has_a_place_in_the_layers() -> None:
    present = {
        p.name if p.is_dir() else p.stem
        for p in SRC.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.name != "__init__.py")
    }
    assert present - set(ALLOWED) == set(), "add the new package to CORE or SHELL above"


def test_the_layers_point_one_way() -> None:
    """The table itself is a DAG: no package may (transitively) import one that imports it."""

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in ALLOWED.get(start, set()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    assert [p for p in sorted(ALLOWED) if reaches(p, p, set())] == []


def module_graph() -> dict[str, set[str]]:
    """Each module of src/sluice -> the modules of src/sluice it imports (relative imports
    resolved; `from package import name` points at the submodule when `name` is one)."""
    modules: dict[str, Path] = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    targets.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_cycle_between_modules() -> None:
    graph = module_graph()
    assert len(graph) > 100
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycles.append([*path[path.index(node) :], node])
            return
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*path, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == [], " -> ".join(cycles[0]) if cycles else ""
