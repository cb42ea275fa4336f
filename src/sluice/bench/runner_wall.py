"""Wall-clock mode: real sockets. `sluice sim` engine processes (4 engines of the scenario's
profile, on 127.0.0.10..13), one router in front of them — `sluice serve --proxy-port` with the
arm's config, or a peer router from PyPI when installed — and an asyncio load generator that
replays the scenario's workload open-loop (streaming, usage in the last chunk) and records
client-side TTFT and e2e. Fresh engines and a fresh router for every run.

shared-prefix is a goodput sweep: every arm walks up the same loads with `suite.sweep` and
goodput comes from `metrics.goodput` (via `ScenarioResult.goodputs`), as in virtual time.
two-bands and noisy-neighbour run loaded and with the protected tenant alone; the targets are
`report.targets` over the same `ScenarioResult`s, so both modes check the same claims.

Router cost, per arm: added latency (median e2e of 40 sequential one-token requests through the
router minus the same straight to an engine), the router's CPU seconds over the run (process
and children, from /proc) and requests completed per router CPU-second, and its peak RSS.

Peers: `vllm-router` (round_robin, cache_aware), `sglang-router` (cache_aware), `smg`
(cache_aware, and its priority scheduler for the priority scenarios: `processes.PEER_ARMS`,
the class YAML and the workers' slots in `processes`, the `x-smg-priority` header from each
objective's priority). Peers come from the `peers` extra of pyproject.
"""

from __future__ import annotations

import argparse
import sys
import time

from sluice.bench import report
from sluice.bench.report import targets
from sluice.bench.scenarios import SCENARIOS
from sluice.bench.wall.llamacpp import LLAMACPP_SCENARIOS
from sluice.bench.wall.processes import installed_peers
from sluice.bench.wall.render import render_wall
from sluice.bench.wall.run import LLAMACPP, SIM, WALL_LOADS, run_wall_scenario, wall_arms


def main_wall(names: list[str], args: argparse.Namespace, command: str) -> int:
    peers = ", ".join(
        f"{n}: {'installed' if ok else 'absent'}" for n, ok in installed_peers().items()
    )
    print(f"sluice bench --mode wall; peer routers: {peers}", file=sys.stderr)
    started = time.monotonic()
    engine_kind = getattr(args, "engines", SIM)
    runs = LLAMACPP_SCENARIOS if engine_kind == LLAMACPP else SCENARIOS
    offered = list(LLAMACPP_SCENARIOS) if engine_kind == LLAMACPP else list(WALL_LOADS)
    chosen = [n for n in names if n in offered]
    skipped = [n for n in names if n not in offered]
    if skipped:
        print(
            f"wall mode with {engine_kind} engines runs {', '.join(offered)}; skipping "
            f"{', '.join(skipped)}",
            file=sys.stderr,
        )
    requested = tuple(args.arms.split())
    report.SLUICE = args.candidate
    results = []
    for name in chosen:
        scenario = runs[name]
        results.append(
            run_wall_scenario(
                scenario,
                wall_arms(scenario, requested),
                seed=args.seed,
                quick=args.quick,
                engine_kind=engine_kind,
            )
        )
    elapsed = time.monotonic() - started
    text = render_wall(results, command, elapsed)
    path = args.results or args.out / "REPORT-wall.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(text)
    for t in targets([ws.as_result() for ws in results]):
        print(f"{'MET ' if t.met else 'MISS'} {t.claim}: {t.evidence}", file=sys.stderr)
    print(f"wrote {path} in {elapsed:.0f} s", file=sys.stderr)
    return 0
