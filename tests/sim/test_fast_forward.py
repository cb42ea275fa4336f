"""Virtual time plans runs of identical decode steps at once; the results must be exactly those
of stepping one by one (events, times, usage and every metric), whatever the workload."""

from __future__ import annotations

import random
import time

import pytest

from sluice.sim.metrics import EngineMetrics
from sluice.sim.virtual import Event, VirtualCluster

from .helpers import engine, request


def replay(seed: int, *, fast_forward: bool) -> tuple[list[Event], list[EngineMetrics]]:
    rng = random.Random(seed)
    policy = rng.choice(["fcfs", "priority"])
    engines = {
        f"e{i}": engine(
            num_gpu_blocks=rng.choice([60, 200, 5000]),
            max_num_seqs=rng.choice([4, 16, 64]),
            max_num_batched_tokens=rng.choice([256, 2048]),
            scheduling_policy=policy,
            max_loras=2,
        )
        for i in range(3)
    }
    cluster = VirtualCluster(engines, fast_forward=fast_forward)
    t = 0.0
    for i in range(120):
        t += rng.expovariate(40.0)
        lora = rng.choice([None, None, "a", "b", "c"])
        req = request(
            f"r{i}",
            rng.randint(1, 600),
            rng.randint(1, 300),
            priority=rng.randint(-2, 2),
            lora=lora,
        )
        target = f"e{rng.randrange(3)}"
        cluster.submit(target, req, at=t)
        if rng.random() < 0.05:
            cluster.abort(target, req.request_id, at=t + rng.uniform(0.0, 2.0))
    events: list[Event] = []
    snapshots = []
    probe = 0.0
    while cluster.next_event_time() is not None:
        probe += 0.37  # a scraper reading every engine now and then
        events += cluster.run_until(probe)
        snapshots += [cluster.metrics(e) for e in sorted(engines)]
    return events, snapshots


@pytest.mark.parametrize("seed", range(6))
def test_fast_forward_changes_nothing_but_speed(seed: int) -> None:
    assert replay(seed, fast_forward=True) == replay(seed, fast_forward=False)


def test_fast_forward_is_faster_on_long_decodes() -> None:
    def wall(fast_forward: bool) -> float:
        cluster = VirtualCluster({"e": engine()}, fast_forward=fast_forward)
        for i in range(64):
            cluster.submit("e", request(f"r{i}", 100, max_tokens=1000), at=i * 0.001)
        started = time.perf_counter()
        cluster.run()
        return time.perf_counter() - started

    assert wall(True) < wall(False)


def progress(seed: int, *, fast_forward: bool) -> list[dict[str, tuple[int, int]]]:
    """What each engine's running requests have received at probe times (the fairness
    benchmark's delivered service), with decode runs planned ahead or stepped one by one."""
    rng = random.Random(seed)
    engines = {f"e{i}": engine(num_gpu_blocks=5000, max_num_seqs=16) for i in range(2)}
    cluster = VirtualCluster(engines, fast_forward=fast_forward)
    for i in range(40):
        req = request(f"r{i}", rng.randint(1, 600), rng.randint(20, 300))
        cluster.submit(f"e{i % 2}", req, at=rng.uniform(0.0, 1.0))
    seen = []
    probe = 0.0
    while cluster.next_event_time() is not None:
        probe += 0.05
        cluster.run_until(probe)
        seen += [cluster.engines[e].progress_at(probe) for e in sorted(engines)]
    return seen


@pytest.mark.parametrize("seed", range(3))
def test_progress_inside_a_planned_decode_run_is_what_stepping_would_show(seed: int) -> None:
    planned = progress(seed, fast_forward=True)
    assert any(outputs for snapshot in planned for _, outputs in snapshot.values())
    assert planned == progress(seed, fast_forward=False)
