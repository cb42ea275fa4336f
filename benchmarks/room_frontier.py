"""The room's trade-off between isolation and pool throughput, measured knob by knob.

Issue #13 asks for both at once at 150 % load: the protected class's p99 TTFT within 1.25x of
its unloaded value, and the pool's delivered output tokens/s at least 0.95x round-robin's. This
runs Sluice's room with the knobs that trade one for the other (the pending-prefill budget, the
lower-band in-flight cap, the heavy hitter's headroom, how close to its end a prefill stops
holding) against round-robin on the isolation
scenarios in virtual time (the same engine model and workloads as `sluice bench`), and prints
for each variant the worst protected p99 ratio over the seeds, the lowest throughput ratio, and
the requests the engines ran at once (mean over the loaded run): what a variant's throughput
comes from. Virtual time, so the numbers do not depend on the machine's load.

    python benchmarks/room_frontier.py                 # full length, seeds 1-3
    python benchmarks/room_frontier.py --quick --scenarios two-bands
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from sluice.bench.arms import arm_by_name
from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.metrics import delivered_output_tps, engine_concurrency
from sluice.bench.report import isolation_ratios, markdown_table
from sluice.bench.scenarios import SCENARIOS
from sluice.bench.suite import run_scenario, workers

ISOLATION_LIMIT = 1.25
THROUGHPUT_FLOOR = 0.95
REFERENCE = "round-robin"
VARIANTS = (
    "sluice-default",
    "sluice@ending=0,bgending=0",
    "sluice@lowinflight=64",
    "sluice@headroom=0",
    "sluice@prefill=400",
    "sluice@prefill=800",
    "sluice@prefill=300",
    "sluice@prefill=none,headroom=0",
)
SCENARIO_NAMES = ("two-bands", "noisy-neighbour", "priority-mix")


def frontier(
    scenario_names: Sequence[str], variants: Sequence[str], *, quick: bool, reps: int
) -> list[list[str]]:
    rows: list[list[str]] = []
    with ProcessPoolExecutor(max_workers=workers()) as pool:
        for name in scenario_names:
            scenario = SCENARIOS[name]
            result = run_scenario(
                scenario, arms=(REFERENCE, *variants), reps=reps, quick=quick, pool=pool
            )
            engines = len(scenario.setup.build())
            reference = result.runs[REFERENCE]
            ref_tps = [delivered_output_tps(r) for r in reference]
            for arm in (REFERENCE, *variants):
                runs = result.runs[arm]
                ratios = isolation_ratios(result, arm)
                tps = [delivered_output_tps(r) / ref for r, ref in zip(runs, ref_tps, strict=True)]
                worst, least = max(ratios), min(tps)
                met = worst <= ISOLATION_LIMIT and least >= THROUGHPUT_FLOOR
                concurrency = sum(engine_concurrency(r, engines) for r in runs) / len(runs)
                rows.append(
                    [
                        name,
                        arm,
                        ", ".join(f"{x:.2f}" for x in ratios),
                        ", ".join(f"{x:.3f}" for x in tps),
                        f"{concurrency:.0f}",
                        "**both**" if met else "no",
                    ]
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 s workloads instead of 60 s")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIO_NAMES))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = parser.parse_args()
    for name in args.variants:
        try:
            arm_by_name(name)
        except ValueError as error:  # named before any run starts, not as a worker's traceback
            parser.error(f"--variants: {error}")
    unknown = sorted(set(args.scenarios) - set(SCENARIO_NAMES))
    if unknown:
        parser.error(f"--scenarios: unknown {unknown}; known: {', '.join(SCENARIO_NAMES)}")
    started = time.monotonic()
    rows = frontier(args.scenarios, args.variants, quick=args.quick, reps=args.reps)
    header = (
        "scenario",
        "arm",
        f"protected p99 / unloaded per seed (<= {ISOLATION_LIMIT})",
        f"pool out tok/s vs {REFERENCE} per seed (>= {THROUGHPUT_FLOOR})",
        "requests per engine at once (while offered)",
        "both targets",
    )
    print("\n".join(markdown_table(header, rows)))
    met = [r for r in rows if r[-1] == "**both**" and r[1] != REFERENCE]
    print(f"\n{len(met)} of {len(rows) - len(args.scenarios)} variant runs met both targets")
    print(f"wall time {time.monotonic() - started:.0f} s (virtual time: load-independent)")


if __name__ == "__main__":
    exit_on_sigterm()
    main()
