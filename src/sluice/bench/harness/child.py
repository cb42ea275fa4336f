"""Environment for a Python child process (`python -c SCRIPT`) that must import this very
`sluice`, whichever checkout or install the parent runs from."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


def exit_on_sigterm() -> None:
    """Make SIGTERM unwind this process as an exception does, so every `finally` that stops
    the engines, routers and stores it started still runs. By default SIGTERM (`timeout`, a
    cancelled CI job, `kill`) ends Python at once and leaves those children orphaned, holding
    their ports and CPU. For a benchmark's or a CLI's main thread."""
    signal.signal(signal.SIGTERM, _exit_from_signal)


def _exit_from_signal(signum: int, _frame: object) -> None:
    sys.exit(128 + signum)
