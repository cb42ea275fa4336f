"""Running a scenario: every arm, every repetition (and every load of a sweep), in a small
process pool, into one `ScenarioResult` that the report reads.

Each run starts from fresh engines, a fresh scheduler (empty prefix index) and a fresh flow
controller; repetition k of every arm uses the same seed, so arms see identical traffic.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from sluice.bench.arms import arm_by_name
from sluice.bench.metrics import SLO_TTFT_P90_S, goodput, summarize
from sluice.bench.records import RunResult
from sluice.bench.runner_virtual import RunLimits, run_virtual
from sluice.bench.scenarios import ISOLATION, SCENARIOS, SWEEP, Scenario

R = TypeVar("R")
T = TypeVar("T")


@dataclass
class ScenarioResult:
    scenario: Scenario
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    quick: bool
    mode: str = "virtual"
    # arm -> runs (sweeps: every load of every repetition; isolation: the loaded runs)
    runs: dict[str, list[RunResult]] = field(default_factory=dict)
    # isolation: arm -> the protected tenants' runs alone at the same rates
    baselines: dict[str, list[RunResult]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # arm -> why it did not run
    wall_s: float = 0.0

    def goodputs(self, arm: str) -> list[float]:
        """Goodput per repetition (sweeps only)."""
        out = []
        for seed in self.seeds:
            curve = {
                r.load: summarize(r).ttft_p90 for r in self.runs.get(arm, []) if r.seed == seed
            }
            out.append(goodput(curve))
        return out


def _limits(scenario: Scenario, quick: bool) -> RunLimits:
    return RunLimits(warmup_frac=scenario.warmup_frac, drain_s=20.0 if quick else 60.0)


def run_one(
    scenario_name: str, arm_name: str, seed: int, load: float, quick: bool, only: tuple[str, ...]
) -> RunResult:
    """One run; a module-level function so a process pool can call it."""
    scenario = SCENARIOS[scenario_name]
    workload = scenario.build(seed, load, quick)
    if only:
        workload = workload.only(*only)
    result = run_virtual(
        workload,
        arm_by_name(arm_name),
        scenario.setup,
        seed=seed,
        load=load,
        limits=_limits(scenario, quick),
        gateway=scenario.gateway,
    )
    result.scenario = scenario_name
    return result


def sweep(
    loads: Iterable[float], run_at: Callable[[float], R], result_of: Callable[[R], RunResult]
) -> list[R]:
    """Walk up the loads until p90 TTFT breaks the SLO twice over, or breaks it at all after
    two points (the knee is found; the rest of the curve would only cost time). Both modes'
    goodput sweeps walk through here: `run_at(load)` runs one point, `result_of` gives its
    `RunResult`."""
    out: list[R] = []
    for load in loads:
        out.append(run_at(load))
        if _past_the_knee(result_of(out[-1]), len(out)):
            break
    return out


def sweep_arms(
    loads: Sequence[float],
    arms: Sequence[str],
    run_at: Callable[[str, float], R],
    result_of: Callable[[R], RunResult],
) -> dict[str, list[R]]:
    """`sweep` for several arms taken in turn at each load — A B at one load, B A at the next —
    so that a stretch of other load on a shared machine falls on every arm's points alike, not
    on one arm's whole curve. Each arm stops at its own knee, by `sweep`'s rule."""
    out: dict[str, list[R]] = {arm: [] for arm in arms}
    walking = list(arms)
    for i, load in enumerate(loads):
        for arm in in_turn(walking, i):
            out[arm].append(run_at(arm, load))
        walking = [a for a in walking if not _past_the_knee(result_of(out[a][-1]), len(out[a]))]
        if not walking:
            break
    return out


def in_turn(arms: Sequence[T], round_: int) -> Sequence[T]:
    """The order the arms take in round `round_`: as given, then reversed (A B, B A, A B ...),
    so that no arm always runs first or last on a machine whose load drifts."""
    return arms if round_ % 2 == 0 else arms[::-1]


def _past_the_knee(last: RunResult, points: int) -> bool:
    """`sweep`'s stopping rule, after `points` points of which `last` is the latest."""
    p90 = summarize(last).ttft_p90
    return (
        not math.isfinite(p90) or p90 > 2 * SLO_TTFT_P90_S or (p90 > SLO_TTFT_P90_S and points >= 2)
    )


def sweep_one(scenario_name: str, arm_name: str, seed: int, quick: bool) -> list[RunResult]:
    """One arm's goodput sweep in virtual time (see `sweep`)."""
    scenario = SCENARIOS[scenario_name]
    return sweep(
        scenario.loads_for(quick),
        lambda load: run_one(scenario_name, arm_name, seed, load, quick, ()),
        lambda result: result,
    )


def workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def run_scenario(
    scenario: Scenario,
    *,
    arms: tuple[str, ...] | None = None,
    seed: int = 1,
    reps: int = 3,
    quick: bool = False,
    pool: ProcessPoolExecutor | None = None,
    on_done: Callable[[str], None] | None = None,
) -> ScenarioResult:
    arm_names = arms or scenario.arms
    seeds = tuple(seed + k for k in range(reps))
    result = ScenarioResult(scenario, arm_names, seeds, quick)
    own_pool = pool is None
    executor = pool or ProcessPoolExecutor(max_workers=workers())
    pending: list[tuple[str, str, Future[RunResult] | Future[list[RunResult]]]] = []
    try:
        for arm in arm_names:
            for s in seeds:
                if scenario.kind == SWEEP:
                    pending.append(
                        ("runs", arm, executor.submit(sweep_one, scenario.name, arm, s, quick))
                    )
                    continue
                for load in scenario.loads_for(quick):
                    pending.append(
                        (
                            "runs",
                            arm,
                            executor.submit(run_one, scenario.name, arm, s, load, quick, ()),
                        )
                    )
                    if scenario.kind == ISOLATION:
                        only = scenario.protected
                        future = executor.submit(run_one, scenario.name, arm, s, load, quick, only)
                        pending.append(("baselines", arm, future))
        for slot, arm, task in pending:
            value = task.result()
            runs = value if isinstance(value, list) else [value]
            getattr(result, slot).setdefault(arm, []).extend(runs)
            if on_done is not None:
                on_done(f"{scenario.name} {arm}")
    finally:
        if own_pool:
            executor.shutdown()
    return result


def task_count(scenario: Scenario, arms: tuple[str, ...] | None, reps: int, quick: bool) -> int:
    per = len(arms or scenario.arms) * reps
    if scenario.kind == SWEEP:
        return per
    return per * len(scenario.loads_for(quick)) * (2 if scenario.kind == ISOLATION else 1)
