"""Where a throughput ratio of `room_frontier.py` comes from: one scenario and seed in virtual
time, arms side by side, in slices of the run up to its last token — the engines' output
tokens/s, the requests queued in Sluice, the requests running on the engines (pool-wide) and
the arrivals.

    python benchmarks/room_timeline.py                               # two-bands, seed 1
    python benchmarks/room_timeline.py --scenario priority-mix --seed 3 \\
        --arms round-robin sluice-default 'sluice@prefill=150'
"""

from __future__ import annotations

import argparse
import math

from sluice.bench.metrics import delivered_output_tps, timeline
from sluice.bench.suite import run_one

LOAD = 1.5  # of the pool's capacity: the load `room_frontier.py` judges at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="two-bands")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="20 s workloads instead of 60 s")
    parser.add_argument("--step", type=float, default=5.0, help="seconds a slice")
    parser.add_argument("--arms", nargs="*", default=["round-robin", "sluice-default"])
    args = parser.parse_args()
    runs = {arm: run_one(args.scenario, arm, args.seed, LOAD, args.quick, ()) for arm in args.arms}
    for arm, run in runs.items():
        last = max((r.completed_at or 0.0 for r in run.records), default=0.0)
        print(
            f"{arm}: {delivered_output_tps(run):.0f} output tokens/s to the last token; "
            f"last arrival {run.duration_s:.1f} s, last completion {last:.1f} s"
        )
    slices = {arm: timeline(run, args.step) for arm, run in runs.items()}
    rows = max(len(s) for s in slices.values())
    print("\n| from s | " + " | ".join(f"{a}: out tok/s, queued, running" for a in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for i in range(rows):
        start = i * args.step
        cells = []
        for arm in runs:
            arm_slices = slices[arm]
            if i >= len(arm_slices):
                cells.append("done")
                continue
            s = arm_slices[i]
            tps = "-" if math.isnan(s.output_tps) else f"{s.output_tps:,.0f}"
            cells.append(f"{tps}, {s.queued}, {s.running}")
        arrived = slices[args.arms[0]][i].arrived if i < len(slices[args.arms[0]]) else 0
        print(f"| {start:.0f} ({arrived} arrived) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
