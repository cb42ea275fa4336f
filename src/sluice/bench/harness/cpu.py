"""CPU time and memory of processes, read from Linux's /proc (the "per core" numbers on a
shared machine come from here, not from wall time)."""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path
from typing import NamedTuple

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_cpu(path: Path) -> float:
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (those alive now)."""
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out += process_tree(int(child))
    return out


def cpu_seconds(pid: int) -> float:
    """CPU seconds of one process: every thread, live or finished. Read from its CPU-time clock
    (nanoseconds) where Linux gives it, else utime + stime from /proc, which count in 10 ms
    ticks: a benchmark arm that spends 0.4 CPU-s a round would read ±2.5 % from the ticks
    alone."""
    try:
        return time.clock_gettime(process_clock(pid))
    except OSError:
        return _stat_cpu(Path(f"/proc/{pid}/stat"))


def process_clock(pid: int) -> int:
    """The clock id of `pid`'s CPU time, as glibc's `clock_getcpuclockid` makes it on Linux
    (`MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)`: the scheduler's nanosecond count)."""
    return ((~pid) << 3) | 2


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its children (vllm-router and `sluice serve` fork); processes that
    exit while being read count as zero."""
    total = 0.0
    for p in process_tree(pid):
        try:
            total += cpu_seconds(p)
        except OSError:
            continue
    return total


def thread_cpu_seconds(pid: int | str = "self") -> dict[int, float]:
    """CPU seconds of each live thread of a process (e.g. libzmq's I/O thread): the scheduler's
    own count (`se.sum_exec_runtime` in /proc/.../sched, to the microsecond) where the kernel
    shows it, else utime + stime in ticks."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        task = Path(f"/proc/{pid}/task/{tid}")
        try:
            ran = _sched_cpu(task / "sched")
            out[int(tid)] = ran if ran is not None else _stat_cpu(task / "stat")
        except OSError:
            continue
    return out


_SUM_EXEC = re.compile(r"^se\.sum_exec_runtime\s*:\s*([0-9.]+)$", re.MULTILINE)


def _sched_cpu(path: Path) -> float | None:
    """`se.sum_exec_runtime` (milliseconds) in seconds; None where the file is not there (a
    kernel without CONFIG_SCHED_DEBUG) or does not have it."""
    try:
        found = _SUM_EXEC.search(path.read_text())
    except FileNotFoundError:
        return None
    return None if found is None else float(found.group(1)) / 1000


class MachineJiffies(NamedTuple):
    """Jiffies of all CPUs since boot, from /proc/stat's first line (zeros where unreadable)."""

    total: float  # guest time is already counted in user/nice: not added again
    idle: float  # idle + iowait
    steal: float  # taken by the hypervisor for other guests


def machine_jiffies() -> MachineJiffies:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return MachineJiffies(0.0, 0.0, 0.0)
    values = [float(x) for x in fields] + [0.0] * 8  # older kernels list fewer columns
    return MachineJiffies(sum(values[:8]), values[3] + values[4], values[7])


def idle_and_steal(before: MachineJiffies, after: MachineJiffies) -> tuple[float, float]:
    """Shares of the machine's CPU time idle and stolen by the host between two readings."""
    total = after.total - before.total
    if total <= 0:
        return math.nan, math.nan
    return (after.idle - before.idle) / total, (after.steal - before.steal) / total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot; (0, 0) where unreadable."""
    jiffies = machine_jiffies()
    return jiffies.total - jiffies.idle, jiffies.total


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of the machine's CPUs busy between two `machine_cpu()` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else math.nan


def _status_mb(pid: int | str, field: str) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return math.nan
    match = re.search(rf"{field}:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else math.nan


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of one process now (MiB); NaN when it is gone."""
    return _status_mb(pid, "VmRSS")


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its children, summed (MiB)."""
    peaks = [_status_mb(p, "VmHWM") for p in process_tree(pid)]
    return sum(p for p in peaks if not math.isnan(p))
