"""Environment for a Python child process (`python -c SCRIPT`) that must import this very
`sluice`, whichever checkout or install the parent runs from."""

from __future__ import annotations

import os
from pathlib import Path

import sluice

SOURCE_ROOT = str(Path(sluice.__file__).resolve().parents[1])


def child_env() -> dict[str, str]:
    """This process's environment with the directory holding `sluice` first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SOURCE_ROOT, env.get("PYTHONPATH")) if p)
    return env
