"""`sluice bench`: run scenarios, write the report, the plots and the raw data.

sluice bench --list
sluice bench shared-prefix --quick
sluice bench two-bands --arms sluice-default,upstream-default --reps 5
sluice bench --all --quick            # every scenario; writes benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sluice.bench import report
from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.plots import plot_scenario
from sluice.bench.progress import Progress
from sluice.bench.readme import perf_rows, update_perf_table
from sluice.bench.scenarios import SCENARIOS
from sluice.bench.suite import ScenarioResult, run_scenario, task_count, workers

DEFAULT_OUT = Path("benchmarks/out")
RESULTS = Path("benchmarks/RESULTS.md")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sluice bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", nargs="*", help="scenario names (see --list)")
    p.add_argument("--all", action="store_true", help="run every scenario")
    p.add_argument("--list", action="store_true", help="list scenarios and arms")
    p.add_argument("--mode", choices=("virtual", "wall"), default="virtual")
    p.add_argument("--quick", action="store_true", help="short runs (CI, a first look)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reps", type=int, default=3, help="repetitions per arm (>= 3 for spread)")
    p.add_argument(
        "--arms",
        default="",
        help="space-separated arms (default: the five standard; "
        "variants as sluice@prefix=3,load=2,qd=0,inflight=8)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="raw data and plots")
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help=f"report file (default: {RESULTS} with --all, else OUT/REPORT.md)",
    )
    p.add_argument(
        "--readme", type=Path, default=None, help="also regenerate this README's perf table"
    )
    p.add_argument(
        "--engines",
        choices=("sim", "llamacpp"),
        default="sim",
        help="wall mode's engines: 4 `sluice sim` processes, or 2 real llama-server "
        "(built by `make engines`; runs shared-prefix and two-bands, scaled to them)",
    )
    p.add_argument(
        "--candidate",
        default=report.SLUICE,
        help="the arm the targets are checked for (default: sluice-default)",
    )
    return p


def _list() -> str:
    from sluice.bench.arms import STANDARD_ARM_NAMES, standard_arms

    lines = ["scenarios:"]
    width = max(16, *(len(name) for name in SCENARIOS))
    lines += [f"  {s.name:{width}} {s.kind:10} {s.description}" for s in SCENARIOS.values()]
    lines += ["arms:"]
    arms = standard_arms()
    lines += [f"  {n:16} {arms[n].description}" for n in STANDARD_ARM_NAMES]
    lines += [
        "  sluice@k=v,...   a variant of Sluice's default: weights prefix, load, queue, kv, "
        "running, prefillcost, lora; room rule qd, inflight, lowinflight, prefill, unseen, "
        "kvmax, headroom, holdgaps, holdmin, holdmax; fair-share window sharewin; eprio"
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    exit_on_sigterm()  # a wall run stopped by SIGTERM still stops its engines and routers
    if args.list:
        print(_list())
        return 0
    names = list(SCENARIOS) if args.all else args.scenario
    unknown = [n for n in names if n not in SCENARIOS]
    if not names or unknown:
        print(
            f"sluice bench: name a scenario or --all (unknown: {unknown}); see --list",
            file=sys.stderr,
        )
        return 2
    if args.mode == "wall":
        from sluice.bench.runner_wall import main_wall

        return main_wall(names, args, "sluice bench " + shlex.join(argv))
    arms = tuple(args.arms.split()) or None
    report.SLUICE = args.candidate
    started = time.monotonic()
    scenarios = [SCENARIOS[n] for n in names]
    progress = Progress(sum(task_count(s, arms, args.reps, args.quick) for s in scenarios))
    results: list[ScenarioResult] = []
    plots = {}
    with ProcessPoolExecutor(max_workers=workers()) as pool:
        for scenario in scenarios:
            t0 = time.monotonic()
            result = run_scenario(
                scenario,
                arms=arms,
                seed=args.seed,
                reps=args.reps,
                quick=args.quick,
                pool=pool,
                on_done=progress.advance,
            )
            result.wall_s = time.monotonic() - t0
            results.append(result)
            plots[scenario.name] = plot_scenario(result, args.out)
            report.write_raw(result, args.out)
    progress.close()
    elapsed = time.monotonic() - started
    command = "sluice bench " + " ".join(argv)
    results_path = args.results or (RESULTS if args.all else args.out / "REPORT.md")
    results_path.parent.mkdir(parents=True, exist_ok=True)
    notes = [
        f"Machine: {os.cpu_count()} CPUs (shared with other work while this ran); "
        f"virtual time, so latencies do not depend on the machine's load.",
        "",
    ]
    text = report.render(
        results,
        command=command,
        elapsed_s=elapsed,
        plots=plots,
        relative_to=results_path.parent,
        notes=notes,
    )
    results_path.write_text(text, encoding="utf-8")
    if args.readme is not None:
        update_perf_table(args.readme, perf_rows(results, command))
    for t in report.targets(results):
        print(f"{'MET ' if t.met else 'MISS'} {t.claim}: {t.evidence}", file=sys.stderr)
    print(f"wrote {results_path} and {args.out}/ in {elapsed:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
