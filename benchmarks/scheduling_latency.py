"""Latency of one scheduling cycle over 64 endpoints with a 16 KiB prompt, and memory with a
full prefix index (targets: p50 <= 200 us, p99 <= 1 ms, RSS < 300 MB).

Reports wall-clock and thread-CPU percentiles per call: on a shared machine wall-clock p99 is
mostly other processes; CPU time is the cost. Pinned to one CPU, after a warm-up.

Run: .venv/bin/python benchmarks/scheduling_latency.py [--endpoints 64] [--requests 5000]
     [--warmup 1000] [--cpu N] [--no-gc-freeze]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
from dataclasses import replace

from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.harness.cpu import rss_mb
from sluice.config import default_config
from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.registry import EndpointRegistry, EndpointState
from sluice.requests.model import ApiKind, ChatMessage, InferenceRequest
from sluice.scheduling.scheduler import Scheduler

PROMPT_BYTES = 16 * 1024


def make_request(i: int, system: str, rng: random.Random) -> InferenceRequest:
    user = rng.randbytes(PROMPT_BYTES).hex()[: PROMPT_BYTES - len(system)]
    return InferenceRequest(
        request_id=f"r{i}",
        api=ApiKind.CHAT,
        model="llama",
        target_model="llama",
        body=b"",
        prompt_tokens=PROMPT_BYTES // 4,
        messages=(ChatMessage("system", system), ChatMessage("user", user)),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=64)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: last)")
    parser.add_argument("--no-gc-freeze", action="store_true")
    args = parser.parse_args()
    # Pinned: no migrations between cores in the middle of a measured call.
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {args.cpu if args.cpu is not None else cpus[-1]})
    rng = random.Random(42)
    rss_start = rss_mb()

    registry = EndpointRegistry()
    registry.set_endpoints(
        Endpoint(f"pod-{i}", f"10.0.{i // 250}.{i % 250 + 1}", 8000) for i in range(args.endpoints)
    )
    now = 1000.0
    for state in registry.snapshot():
        mark = registry.begin_scrape(state.name)
        assert mark is not None
        registry.record_scrape(
            mark,
            EngineMetrics(
                waiting=rng.randint(0, 8),
                running=rng.randint(0, 32),
                kv_cache_usage=rng.random(),
                cache_block_size=16,
                cache_num_blocks=31_250,
                updated_at=now,
            ),
        )
    sched = Scheduler.from_config(default_config(), random.Random(1))
    endpoints = registry.snapshot()

    # Fill the prefix index: each endpoint gets 31,250 distinct blocks (its full LRU).
    t0 = time.perf_counter()
    blocks_per_prompt = PROMPT_BYTES // 64
    fills = -(-31_250 // blocks_per_prompt)
    system = "You are a helpful assistant. " * 40
    i = 0
    for state in endpoints:
        for _ in range(fills):
            req = make_request(i, f"{i} " + system, rng)
            sched.schedule(req, endpoints, now)
            sched.on_dispatch(req, state.endpoint)
            i += 1
    fill_s = time.perf_counter() - t0
    gc.collect()
    index_rss = rss_mb()

    # Warm up, then move everything that exists so far out of the collector's generations, as a
    # server can after start-up (docs/scheduling.md). `--no-gc-freeze` shows the difference.
    pool_of_requests = [make_request(100_000 + k, f"{k % 97} " + system, rng) for k in range(200)]
    run(sched, endpoints, now, pool_of_requests, args.warmup, "w")
    gc.collect()
    if not args.no_gc_freeze:
        gc.freeze()

    # Measure: prompts sharing the system prompt with some earlier requests, fresh user text.
    # Every measured request is a fresh object, so nothing cached on a request object is reused.
    timings = run(sched, endpoints, now, pool_of_requests, args.requests, "m")

    print(
        f"endpoints={args.endpoints} prompt={PROMPT_BYTES} B requests={args.requests} "
        f"warmup={args.warmup} cpu={sorted(os.sched_getaffinity(0))} "
        f"gc.freeze={not args.no_gc_freeze}"
    )
    print(f"prefix index: {sched.prefix_index_size():,} block hashes, filled in {fill_s:.1f}s")
    for label, values in timings.items():
        print(f"{label:<28} {summary(values)}")
    churned = args.warmup + args.requests
    print(
        f"RSS: {rss_mb():.0f} MB after {churned:,} more requests churned the index "
        f"(start {rss_start:.0f} MB, after the index fill {index_rss:.0f} MB)"
    )


def run(
    sched: Scheduler,
    endpoints: tuple[EndpointState, ...],
    now: float,
    requests: list[InferenceRequest],
    count: int,
    prefix: str,
) -> dict[str, list[float]]:
    """Schedule and dispatch `count` requests; per call, wall time and this thread's CPU time
    (the CPU figure excludes time the process spent preempted on a busy machine)."""
    wall_s: list[float] = []
    cpu_s: list[float] = []
    wall_d: list[float] = []
    cpu_d: list[float] = []
    clock, cpu = time.perf_counter, time.thread_time
    for k in range(count):
        req = replace(requests[k % len(requests)], request_id=f"{prefix}{k}")
        c0, w0 = cpu(), clock()
        result = sched.schedule(req, endpoints, now)
        w1, c1 = clock(), cpu()
        sched.on_dispatch(req, result.primary)
        w2, c2 = clock(), cpu()
        wall_s.append(w1 - w0)
        cpu_s.append(c1 - c0)
        wall_d.append(w2 - w1)
        cpu_d.append(c2 - c1)
    return {
        "schedule() wall": wall_s,
        "schedule() CPU": cpu_s,
        "on_dispatch() wall": wall_d,
        "on_dispatch() CPU": cpu_d,
        "schedule+on_dispatch wall": [a + b for a, b in zip(wall_s, wall_d)],
        "schedule+on_dispatch CPU": [a + b for a, b in zip(cpu_s, cpu_d)],
    }


def summary(values: list[float]) -> str:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1e6

    mean = statistics.fmean(ordered) * 1e6
    return (
        f"p50={pct(0.5):6.0f} us  p99={pct(0.99):6.0f} us  p99.9={pct(0.999):6.0f} us  "
        f"mean={mean:6.0f} us"
    )


if __name__ == "__main__":
    exit_on_sigterm()
    main()
