"""`benchmarks/room_frontier.py` names a mistyped variant or scenario before any run starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "room_frontier.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def test_a_variant_without_its_arm_prefix_is_named_with_the_known_arms() -> None:
    done = _run("--variants", "lowinflight=none")
    assert done.returncode == 2
    assert "--variants: unknown arm 'lowinflight=none'" in done.stderr
    assert "sluice@key=value" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_scenario_is_named_with_the_known_ones() -> None:
    done = _run("--scenarios", "twobands")
    assert done.returncode == 2
    assert "--scenarios: unknown ['twobands']; known: two-bands" in done.stderr
