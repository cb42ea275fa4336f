"""A benchmark stopped with SIGTERM (`timeout`, a cancelled CI job, `kill`) stops the engines
and routers it started: `exit_on_sigterm` turns the signal into an exception, so the `finally`
that stops them runs — also from inside an asyncio loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sluice.bench.harness.child import child_env

SCRIPT = """
import asyncio, subprocess, sys, time
from sluice.bench.harness.child import exit_on_sigterm, stop_processes
if sys.argv[1] == "on":
    exit_on_sigterm()
engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
try:
    print(engine.pid, flush=True)
    if sys.argv[2] == "asyncio":
        asyncio.run(asyncio.sleep(60))
    else:
        time.sleep(60)
finally:
    stop_processes(engine)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie awaiting its reaper is gone too
        return stat.read().split(") ", 1)[1][0] != "Z"


def _terminate_benchmark(handler: str, loop: str) -> tuple[int, int]:
    """(the benchmark's exit code, its engine's pid) after a SIGTERM to the benchmark."""
    bench = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, handler, loop],
        stdout=subprocess.PIPE,
        env=child_env(),
    )
    assert bench.stdout is not None
    engine = int(bench.stdout.readline())
    time.sleep(0.3)  # inside its sleep, as a benchmark is inside its run
    bench.send_signal(signal.SIGTERM)
    return bench.wait(10), engine


@pytest.mark.parametrize("loop", ["plain", "asyncio"])
def test_a_terminated_benchmark_stops_the_processes_it_started(loop: str) -> None:
    code, engine = _terminate_benchmark("on", loop)
    assert code == 128 + signal.SIGTERM
    deadline = time.monotonic() + 5
    while _alive(engine) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(engine)


def test_without_it_the_engine_is_orphaned() -> None:
    code, engine = _terminate_benchmark("off", "plain")
    try:
        assert code == -signal.SIGTERM  # Python's default: die at once, no finally
        assert _alive(engine)
    finally:
        os.kill(engine, signal.SIGKILL)
