"""What real engines complete when saturated: the wall-clock counterpart of
`scenarios.pool_capacity`, so that "150 % load" on llama.cpp means 1.5x what this machine's
servers serve, measured in the same run rather than assumed.

A closed loop of one client per engine slot, sent straight to the engines (no router: the probe
measures the engines), keeps every slot busy without queueing in the engines; the requests that
complete after the first quarter of them are counted over the time they took (the first ones
start together and would overstate a steady rate)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace

from sluice.bench.wall.load import replay
from sluice.bench.wall.processes import Engines
from sluice.bench.workloads import Workload

WARMUP_SHARE = 0.25  # of the probe's completions, left out of the rate
MIN_COMPLETED = 8


def saturated_requests_per_s(
    start_engines: Callable[[], Engines], probe: Workload, clients: int, *, budget_s: float = 300.0
) -> float:
    """Requests per second `probe`'s arrivals (sent in order, `clients` at a time) complete on
    fresh engines from `start_engines` once every slot is busy; raises if fewer than 8 complete."""
    engines = start_engines()
    try:
        closed = replace(probe, concurrency=clients)
        records, _ = asyncio.run(replay(engines.urls, closed, budget_s, counters=engines.counters))
    finally:
        engines.stop()
    ended = [r.completed_at for r in records if r.completed_at is not None]
    if len(ended) < MIN_COMPLETED:
        raise RuntimeError(f"capacity probe: {len(ended)} of {len(records)} requests completed")
    return steady_rate(ended)


def steady_rate(completed_at: Sequence[float]) -> float:
    """Completions per second after the first `WARMUP_SHARE` of them: the intervals between
    the later completions, so a first wave that started together does not count."""
    ended = sorted(completed_at)
    first = int(len(ended) * WARMUP_SHARE)
    if len(ended) - first < 2 or ended[-1] <= ended[first]:
        raise ValueError(f"a steady rate needs spread completions, got {len(ended)}")
    return (len(ended) - 1 - first) / (ended[-1] - ended[first])
