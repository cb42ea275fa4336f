"""sluice.sim stands in for a real vLLM: it must not import the EPP it is used to test."""

from __future__ import annotations

import ast
from pathlib import Path

import sluice.sim

SIM_DIR = Path(sluice.sim.__file__).parent
# The simulated model's tokenizer: the one thing the sim shares with the EPP, as a real engine and a
# precise router share the model's tokenizer library. It must itself import nothing of sluice.
SHARED_TOKENIZER = "sluice.util.sim_tokens"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports stay inside the package by construction
                continue
            names.add(node.module or "")
    return names


def test_sim_imports_nothing_of_sluice_outside_sim() -> None:
    modules = sorted(SIM_DIR.rglob("*.py"))
    assert len(modules) > 10
    offenders = {
        f"{path.name}: {name}"
        for path in modules
        for name in imported_modules(path)
        if (name == "sluice" or name.startswith("sluice."))
        and not name.startswith("sluice.sim")
        and name != SHARED_TOKENIZER
    }
    assert offenders == set()


def test_the_shared_tokenizer_is_a_leaf() -> None:
    import sluice.util.sim_tokens as tokenizer

    names = imported_modules(Path(tokenizer.__file__))
    assert names, "the tokenizer module was read"
    assert {n for n in names if n == "sluice" or n.startswith("sluice.")} == set()
