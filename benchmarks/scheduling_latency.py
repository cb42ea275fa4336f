"""Latency of one scheduling cycle over 64 endpoints with a 16 KiB prompt, and memory with a
full prefix index (targets: p50 <= 200 us, p99 <= 1 ms, RSS < 300 MB).

Run: .venv/bin/python benchmarks/scheduling_latency.py [--endpoints 64] [--requests 5000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time

from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.registry import EndpointRegistry
from sluice.requests.model import ApiKind, ChatMessage, InferenceRequest
from sluice.scheduling.defaults import default_config
from sluice.scheduling.scheduler import Scheduler

PROMPT_BYTES = 16 * 1024


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


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
    args = parser.parse_args()
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

    # Measure: prompts sharing the system prompt with some earlier requests, fresh user text.
    pool_of_requests = [make_request(100_000 + k, f"{k % 97} " + system, rng) for k in range(200)]
    samples: list[float] = []
    dispatch_samples: list[float] = []
    # CPU time of schedule() alone, over all requests: unlike wall-clock percentiles it does
    # not count time this process spent preempted on a busy machine.
    cpu_total = 0.0
    for k in range(args.requests):
        req = pool_of_requests[k % len(pool_of_requests)]
        req.request_id = f"m{k}"
        cpu_start, start = time.process_time(), time.perf_counter()
        result = sched.schedule(req, endpoints, now)
        samples.append(time.perf_counter() - start)
        cpu_total += time.process_time() - cpu_start
        start = time.perf_counter()
        sched.on_dispatch(req, result.primary)
        dispatch_samples.append(time.perf_counter() - start)
    samples.sort()
    dispatch_samples.sort()

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(len(values) * p))] * 1e6

    print(f"endpoints={args.endpoints} prompt={PROMPT_BYTES} B requests={args.requests}")
    print(f"prefix index: {sched.prefix_index_size():,} block hashes, filled in {fill_s:.1f}s")
    print(
        f"schedule(): p50={pct(samples, 0.5):.0f} us  p99={pct(samples, 0.99):.0f} us  "
        f"mean={statistics.fmean(samples) * 1e6:.0f} us"
    )
    print(f"schedule() CPU time, mean: {cpu_total / args.requests * 1e6:.0f} us")
    print(
        f"on_dispatch(): p50={pct(dispatch_samples, 0.5):.0f} us  "
        f"p99={pct(dispatch_samples, 0.99):.0f} us"
    )
    print(f"RSS: {rss_mb():.0f} MB (start {rss_start:.0f} MB, after index fill {index_rss:.0f} MB)")


if __name__ == "__main__":
    main()
