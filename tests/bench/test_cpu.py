"""The benchmarks' CPU readings: another process's from its CPU-time clock, to the nanosecond,
and each thread's from the scheduler's count, to the microsecond, where /proc's utime and stime
count in 10 ms ticks (an arm spending 0.4 CPU-s a round would read ±2.5 % from those alone)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from sluice.bench.harness.cpu import _stat_cpu, cpu_seconds, thread_cpu_seconds

SPIN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_another_processs_cpu_is_read_finer_than_procs_ticks_and_agrees_with_them() -> None:
    child = subprocess.Popen([sys.executable, "-c", SPIN + "input()"], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while cpu_seconds(child.pid) < 0.3:  # the spin is done, the child waits on stdin
            assert time.monotonic() < deadline, "the child never spent 0.3 CPU-s"
            time.sleep(0.05)
        read, ticks = cpu_seconds(child.pid), _stat_cpu(Path(f"/proc/{child.pid}/stat"))
        assert abs(read - ticks) <= 0.02  # the same count: /proc rounds it to a tick
        assert read != round(read, 2)  # nanoseconds, not ticks (a tick's multiple: 1 in 10^7)
    finally:
        child.communicate(b"\n", timeout=30)
    assert child.returncode == 0


def test_each_threads_cpu_is_its_own_to_the_microsecond() -> None:
    spun, stop = threading.Event(), threading.Event()

    def spin() -> None:
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass
        spun.set()
        stop.wait(30)

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        assert spun.wait(30)
        threads = thread_cpu_seconds()
        process = time.process_time()
    finally:
        stop.set()
        worker.join()
    spinner = threads[worker.native_id]  # type: ignore[index]
    assert 0.2 <= spinner < 0.2 + 0.05 and spinner != round(spinner, 2)
    assert sum(threads.values()) <= process + 0.001  # each thread's own, none counted twice
