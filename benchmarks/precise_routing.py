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

Wall clock (`--mode wall`): the same scenarios and arms with real processes — 4 `sluice sim`
engines publishing vLLM's KV events over real ZMQ (PUB + replay ROUTER each, PYTHONHASHSEED
0), `sluice serve` in proxy mode with the arm's config (the precise arm subscribes), an
asyncio load generator; bypassing requests go straight to a random engine, restarts kill and
start an engine process. Each arm walks up the same loads (`bench.wall.run`), fresh engines and
router per point, the arms taking turns at each load (A B, then B A). Goodput from client-side
TTFTs; hit rate from the engines' own prefix-cache counters (a restarted engine's counters
start over). The prediction error needs Sluice's per-request prediction, which only the virtual
runner records, so wall mode reports goodput and hit rate.

Run: .venv/bin/python benchmarks/precise_routing.py [--quick] [--reps 2]
     [--scenarios prefix-eviction,prefix-bypass,...] [--mode wall [--loads 4,8,12]]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from sluice.bench.harness.child import exit_on_sigterm
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
    parser.add_argument("--mode", choices=("virtual", "wall"), default="virtual")
    parser.add_argument("--loads", default="", help="wall: the QPS points (default per scenario)")
    parser.add_argument("--seconds", type=float, help="wall: seconds of arrivals replayed")
    args = parser.parse_args()
    names = [s for s in args.scenarios.split(",") if s]
    if args.mode == "wall":
        wall(names, args)
        return
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


def wall(names: list[str], args: argparse.Namespace) -> None:
    from sluice.bench.harness.cpu import busy_share, machine_cpu
    from sluice.bench.metrics import hit_rate
    from sluice.bench.scenarios import SCENARIOS as ALL
    from sluice.bench.wall.run import WallRun, run_wall_scenario

    loads = [float(x) for x in args.loads.split(",") if x] or None
    started = time.monotonic()
    cpu0 = machine_cpu()

    def progress(run: WallRun) -> None:
        p90 = summarize(run.result).ttft_p90 if not run.error else float("nan")
        print(
            f"  {run.result.scenario} {run.arm} {run.load:g} QPS: p90 TTFT {p90:.3f} s, "
            f"hit {hit_rate(run.result):.3f}, machine busy {run.machine_busy:.2f} {run.error}",
            flush=True,
        )

    try:
        results = [
            run_wall_scenario(
                ALL[name],
                ARMS,
                seed=args.seed,
                quick=args.quick,
                loads=loads,
                duration_s=args.seconds,
                on_run=progress,
            )
            for name in names
        ]
    except ValueError as e:  # a --seconds longer than the workload: before any run starts
        raise SystemExit(f"precise_routing.py --seconds: {e}") from e
    busy_all = busy_share(cpu0, machine_cpu())
    print(
        f"wall clock, {'quick' if args.quick else 'full'} windows, seed {args.seed}, "
        f"{time.monotonic() - started:.0f} s wall; machine busy {busy_all:.0%} over the run "
        "(2 CPUs shared with other agents' work)"
    )
    print(
        f"{'scenario':<17}{'goodput approx':>15}{'goodput precise':>16}{'ratio':>7}"
        f"{'hit approx':>11}{'hit precise':>12}   p90 TTFT per load (QPS: s) approx | precise"
    )
    for ws in results:
        result = ws.as_result()
        good = {arm: statistics.fmean(result.goodputs(arm) or [0.0]) for arm in ARMS}
        knee_hits, curves = {}, {}
        for arm in ARMS:
            runs = [r.result for r in ws.runs.get(arm, []) if not r.error]
            knee_hits[arm] = hit_rate(runs[-1]) if runs else float("nan")
            curves[arm] = ", ".join(f"{r.load:g}: {summarize(r).ttft_p90:.2f}" for r in runs)
        a, p = good[ARMS[0]], good[ARMS[1]]
        print(
            f"{ws.scenario.name:<17}{a:>15.1f}{p:>16.1f}{p / a if a else float('nan'):>7.2f}"
            f"{knee_hits[ARMS[0]]:>11.3f}{knee_hits[ARMS[1]]:>12.3f}   "
            f"{curves[ARMS[0]]} | {curves[ARMS[1]]}"
        )
        for arm, why in result.skipped.items():
            print(f"{'':<17}{arm} failed: {why}")


if __name__ == "__main__":
    exit_on_sigterm()
    main()
