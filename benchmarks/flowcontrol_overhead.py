"""Flow-control overhead: µs per enqueue + dispatch with 1,000 flows and 10,000 queued items.

Steady state: the queue holds 10,000 items spread over 1,000 flows (one band); each iteration
enqueues one request to a random flow and dispatches with exactly one free slot, so one item
leaves and the queue stays at 10,000. Requests are built before timing (parsing is not flow
control's cost). Budget: 50 µs per iteration.

    .venv/bin/python benchmarks/flowcontrol_overhead.py [--iterations 20000]

Reported per batch of 500 iterations: CPU time of this process (less sensitive to other
processes on a shared machine) and wall-clock. Noisy either way: compare runs, never
hard-code them.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from typing import Any

from prometheus_client import CollectorRegistry

from sluice.bench.harness.child import exit_on_sigterm
from sluice.config import parse_flow_control
from sluice.flowcontrol import FlowController
from sluice.flowcontrol.metrics import FlowControlMetrics
from sluice.flowcontrol.observer import FlowObserver
from sluice.requests.model import ApiKind, InferenceRequest

FLOWS = 1_000
QUEUED = 10_000
BUDGET_US = 50.0


class OneSlot:
    """A `CapacityView` with `free` slots, refilled by the benchmark before each dispatch."""

    def __init__(self) -> None:
        self.free = 0

    def has_room(
        self,
        candidates: frozenset[str] | None,
        priority: int = 0,
        *,
        heavy_hitter: str | None = None,
    ) -> bool:
        return self.free > 0

    def take_room(self, request: InferenceRequest) -> None:
        self.free -= 1


def make_request(i: int, rng: random.Random) -> InferenceRequest:
    return InferenceRequest(
        request_id=f"r{i}",
        api=ApiKind.CHAT,
        model="m",
        target_model="m",
        body=b"{}",
        prompt_tokens=rng.randint(50, 8000),
        max_tokens=rng.randint(1, 512),
        fairness_id=f"tenant-{rng.randrange(FLOWS)}",
    )


def run(label: str, block: dict[str, Any], iterations: int, observer: FlowObserver | None) -> float:
    rng = random.Random(7)
    fc = FlowController(parse_flow_control(block), observer=observer)
    pool = OneSlot()
    for i in range(QUEUED):  # 10 per flow on average, every flow backlogged
        r = make_request(i, rng)
        r.fairness_id = f"tenant-{i % FLOWS}"
        fc.enqueue(r, 0.0)
    warmup = 5_000  # untimed: touches every flow once (first-time metric labels, caches)
    requests = [make_request(QUEUED + i, rng) for i in range(warmup + iterations)]
    now = 1.0
    for req in requests[:warmup]:
        now += 0.001
        fc.enqueue(req, now)
        pool.free = 1
        fc.dispatch(now, pool)
    requests = requests[warmup:]
    samples: list[float] = []  # CPU µs per iteration, per batch
    wall: list[float] = []
    batch = 500
    gc.collect()
    gc.disable()  # measure our code, not a collection that happens to land in one batch
    try:
        for start in range(0, iterations, batch):
            t0, c0 = time.perf_counter(), time.process_time()
            for req in requests[start : start + batch]:
                now += 0.001
                fc.enqueue(req, now)
                pool.free = 1
                fc.dispatch(now, pool)
            samples.append((time.process_time() - c0) / batch * 1e6)
            wall.append((time.perf_counter() - t0) / batch * 1e6)
    finally:
        gc.enable()
    assert fc.queued_requests == QUEUED, fc.queued_requests
    mean = statistics.fmean(samples)
    verdict = "OK" if mean <= BUDGET_US else "OVER BUDGET"
    print(
        f"{label:<42} CPU mean {mean:5.1f} µs  best batch {min(samples):5.1f}  "
        f"worst {max(samples):5.1f}   wall mean {statistics.fmean(wall):5.1f} µs   {verdict}"
    )
    return mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    args = parser.parse_args()
    print(f"{FLOWS} flows, {QUEUED} queued, {args.iterations} × (enqueue + dispatch of one)")
    n = args.iterations

    def band(fairness: str, ordering: str = "fcfs") -> dict[str, Any]:
        return {
            "defaultPriorityBand": {"fairnessPolicyRef": fairness, "orderingPolicyRef": ordering}
        }

    run("token-fair, fcfs (default)", {}, n, None)
    run(
        "token-fair, edf, TTL 30s",
        {**band("token-fair", "edf"), "defaultRequestTTL": "30s"},
        n,
        None,
    )
    run("round-robin, fcfs", band("round-robin"), n, None)
    run("global-strict, fcfs", band("global-strict"), n, None)
    run(
        "token-fair + Prometheus metrics observer",
        {},
        n,
        FlowControlMetrics(CollectorRegistry(), inference_pool="bench"),
    )


if __name__ == "__main__":
    exit_on_sigterm()
    main()
