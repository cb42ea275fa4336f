"""Environment for a Python child process (`python -c SCRIPT`) that must import this very
`sluice`, whichever checkout or install the parent runs from."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import sluice

SOURCE_ROOT = str(Path(sluice.__file__).resolve().parents[1])


def child_env() -> dict[str, str]:
    """This process's environment with the directory holding `sluice` first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SOURCE_ROOT, env.get("PYTHONPATH")) if p)
    return env


def stop_processes(*processes: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM every child still running (all at once, so they drain side by side), then wait
    `timeout` seconds for each and kill the ones that did not exit."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.terminate()
    for process in running:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
