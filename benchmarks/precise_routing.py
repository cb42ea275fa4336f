"""Approximate vs precise prefix routing, in virtual time: goodput per scenario, and how close
each index's predicted cache hit is to what the engines report.

Scenarios (src/sluice/bench/scenarios.py): `shared-prefix` (the working set fits: the control),
`prefix-eviction` (a working set larger than the pool's KV cache), `prefix-bypass` (30% of the
traffic reaches the engines without Sluice), `prefix-restarts` (every engine restarted once
mid-run). Arms: `sluice-default` (the approximate prefix-cache-scorer) and `sluice-precise` (the
same profile with precise-prefix-cache-scorer, fed by the engines' KV events).

Goodput is `sluice bench`'s: the highest offered QPS whose p90 TTFT stays within the SLO, per
repetition. Prediction error, over every completed request of the precise arm's sweep:
sum |predicted - reported cached tokens| / sum reported cached tokens — for the precise
scorer's prediction (what its score used) and, beside it, for its approximate half's guess on
the same requests and placements.

Run: .venv/bin/python benchmarks/precise_routing.py [--quick] [--reps 2]
     [--scenarios prefix-eviction,prefix-bypass,...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from sluice.bench.metrics import goodput, summarize
from sluice.bench.records import RunResult
from sluice.bench.suite import sweep_one, workers

SCENARIOS = ("shared-prefix", "prefix-eviction", "prefix-bypass", "prefix-restarts")
ARMS = ("sluice-default", "sluice-precise")


def prediction_error(runs: list[RunResult]) -> tuple[float, float, int]:
    """(precise error, approximate error, requests) over the completed requests."""
    reported = predicted = approximate = 0
    n = 0
    for run in runs:
        for r in run.records:
            if r.outcome != "completed" or r.predicted_cached_tokens is None:
                continue
            assert r.approx_cached_tokens is not None
            reported += r.cached_tokens
            predicted += abs(r.predicted_cached_tokens - r.cached_tokens)
            approximate += abs(r.approx_cached_tokens - r.cached_tokens)
            n += 1
    return predicted / max(1, reported), approximate / max(1, reported), n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    names = [s for s in args.scenarios.split(",") if s]
    seeds = [args.seed + k for k in range(args.reps)]
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=workers()) as pool:
        futures = {
            (name, arm, seed): pool.submit(sweep_one, name, arm, seed, args.quick)
            for name in names
            for arm in ARMS
            for seed in seeds
        }
        results = {key: f.result() for key, f in futures.items()}
    print(
        f"virtual time, {'quick' if args.quick else 'full'} sweeps, seeds {seeds}, "
        f"{time.monotonic() - started:.0f} s wall"
    )
    print(
        f"{'scenario':<17}{'goodput approx':>15}{'goodput precise':>16}{'ratio':>7}"
        f"{'hit approx':>11}{'hit precise':>12}{'pred err precise':>17}{'approx':>8}{'n':>7}"
    )
    for name in names:
        good: dict[str, list[float]] = {}
        hits: dict[str, float] = {}
        for arm in ARMS:
            per_seed = []
            hit = query = 0
            for seed in seeds:
                runs = results[(name, arm, seed)]
                curve = {r.load: summarize(r).ttft_p90 for r in runs}
                per_seed.append(goodput(curve))
                hit += sum(r.prefix_hits for r in runs)
                query += sum(r.prefix_queries for r in runs)
            good[arm] = per_seed
            hits[arm] = hit / max(1, query)
        precise_runs = [r for seed in seeds for r in results[(name, "sluice-precise", seed)]]
        err, approx_err, n = prediction_error(precise_runs)
        a, p = statistics.fmean(good[ARMS[0]]), statistics.fmean(good[ARMS[1]])
        print(
            f"{name:<17}{a:>15.1f}{p:>16.1f}{p / a if a else float('nan'):>7.2f}"
            f"{hits[ARMS[0]]:>11.3f}{hits[ARMS[1]]:>12.3f}{err:>16.1%}{approx_err:>9.1%}{n:>7}"
        )
        print(f"{'':<17}per seed: approx {good[ARMS[0]]}  precise {good[ARMS[1]]}")


if __name__ == "__main__":
    main()
