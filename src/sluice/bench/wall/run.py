"""One wall-clock run (fresh engines and router, the replay, the router's costs) and one
scenario (every arm; sweeps walk up the loads with `suite.sweep`)."""

from __future__ import annotations

import asyncio
import functools
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from sluice.bench.arms import arm_by_name
from sluice.bench.harness.cpu import busy_share, machine_cpu, peak_rss_mb, tree_cpu_seconds
from sluice.bench.records import RunResult
from sluice.bench.report import fmt
from sluice.bench.scenarios import SWEEP, Scenario
from sluice.bench.suite import ScenarioResult, in_turn, sweep_arms
from sluice.bench.wall import llamacpp
from sluice.bench.wall.load import probe_latency, replay
from sluice.bench.wall.processes import (
    DIRECT_ROUND_ROBIN,
    PEER_ARMS,
    client_headers,
    installed_peers,
    start_engines,
    start_llamacpp_engines,
    start_router,
    stop,
)
from sluice.bench.wall.sampling import prefix_counters
from sluice.bench.workloads import Workload

# what each wall scenario runs, and at which loads: (quick, full). shared-prefix is a goodput
# sweep (the same points for every arm, walked up by `suite.sweep` until p90 TTFT breaks the
# SLO); the others run at one load, loaded and with the protected tenants alone.
WALL_LOADS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "shared-prefix": ((4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 32.0),) * 2,
    # KV-event scenarios (approximate vs precise; benchmarks/precise_routing.py --mode wall)
    "prefix-eviction": ((4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 20.0),) * 2,
    "prefix-bypass": ((4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 20.0, 24.0),) * 2,
    "prefix-restarts": ((4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 32.0),) * 2,
    "two-bands": ((1.5,), (1.5,)),
    "noisy-neighbour": ((1.5,), (1.5,)),
    "llamacpp-shared-prefix": ((2.0,), (2.0,)),
    "llamacpp-two-bands": ((1.5,), (1.5,)),
    # closed loops (load = the streamed share): requests, not seconds, bound them
    "non-streamed": ((0.0,), (0.0,)),
    "mixed-streaming": ((0.5,), (0.5,)),
}
# requests a closed loop sends in wall mode (quick, full); the rest of its workload is unused
WALL_REQUESTS: dict[str, tuple[int, int]] = {
    "non-streamed": (128, 512),
    "mixed-streaming": (128, 512),
}
# seconds of the workload's arrivals replayed (quick, full)
WALL_DURATION: dict[str, tuple[float, float]] = {
    "shared-prefix": (20.0, 60.0),
    "two-bands": (10.0, 45.0),
    "noisy-neighbour": (15.0, 45.0),
    "prefix-eviction": (30.0, 60.0),
    "prefix-bypass": (30.0, 60.0),
    # the workload restarts its engines at 30%..60% of its own length (40 s quick, 90 s full)
    "prefix-restarts": (30.0, 60.0),
    # real engines on both cores: short windows
    "llamacpp-shared-prefix": (15.0, 40.0),
    "llamacpp-two-bands": (15.0, 40.0),
}


SIM, LLAMACPP = "sim", "llamacpp"  # the engines of `--engines`


@dataclass
class WallRun:
    arm: str
    result: RunResult
    baseline: RunResult | None = None
    router_cpu_s: float = math.nan
    router_rss_mb: float = math.nan
    added_latency_ms: float = math.nan
    replay_s: float = math.nan  # wall time of the replay (arrivals + drain)
    machine_busy: float = math.nan  # share of all CPUs busy during the replay
    error: str = ""

    @property
    def load(self) -> float:
        return self.result.load

    @property
    def router_core_share(self) -> float:
        """The router's CPU seconds per second of replay: 1.0 is one core flat out."""
        return self.router_cpu_s / self.replay_s if self.replay_s > 0 else math.nan

    @property
    def req_per_cpu_s(self) -> float:
        done = sum(1 for r in self.result.records if r.outcome == "completed")
        return done / self.router_cpu_s if self.router_cpu_s else math.nan


def _needs_priority_engines(arm_name: str) -> bool:
    return arm_name not in PEER_ARMS and arm_by_name(arm_name).flow.engine_priority


def needs_kv_events(arms: Sequence[str]) -> bool:
    """Whether one of `arms` reads the engines' KV events (then every arm of the run gets the
    same publishing engines, so that only the router differs)."""
    return any(
        arm_by_name(a).engine_overrides.get("enable_kv_cache_events")
        for a in arms
        if a not in PEER_ARMS
    )


def run_arm(
    scenario: Scenario,
    arm_name: str,
    workload: Workload,
    *,
    seed: int,
    load: float,
    drain_s: float,
    probe: bool = True,
    kv_events: bool = False,
    engine_kind: str = SIM,
) -> WallRun:
    """One wall-clock run: fresh engines and router; the result and the router's costs.
    `probe`: also measure the router's added latency (40 + 40 sequential requests first).
    `kv_events`: the engines publish vLLM's KV events (see `processes.Engines`).
    `engine_kind`: `sim` (4 `sluice sim` engines of the scenario's profile) or `llamacpp`
    (2 real `llama-server`s, see `wall.llamacpp`)."""
    if engine_kind == LLAMACPP:
        engines = start_llamacpp_engines(llamacpp.ENGINES, llamacpp.SLOTS, llamacpp.THREADS)
        probe = False  # 80 requests of engine time on 2 cores: not worth the number
    else:
        engines = start_engines(scenario, _needs_priority_engines(arm_name), kv_events=kv_events)
    workdir = Path(tempfile.mkdtemp(prefix="sluice-wall-"))
    router: subprocess.Popen[bytes] | None = None
    try:
        objectives = dict(workload.objectives)
        router, urls = start_router(arm_name, engines, objectives, workdir)
        time.sleep(1.0)  # first scrapes / health checks
        added = math.nan
        if probe and router is not None:
            direct = asyncio.run(probe_latency(engines.urls[0]))
            via = asyncio.run(probe_latency(urls[0]))
            added = (via - direct) * 1000
        cpu0 = tree_cpu_seconds(router.pid) if router is not None else 0.0
        machine0 = machine_cpu()
        t0 = time.monotonic()
        headers = client_headers(arm_name, objectives)
        records, samples = asyncio.run(
            replay(
                urls,
                workload,
                drain_s,
                engines.urls,
                engines.restart,
                seed,
                headers,
                engines.counters,
            )
        )
        replay_s = time.monotonic() - t0
        busy = busy_share(machine0, machine_cpu())
        cpu = tree_cpu_seconds(router.pid) - cpu0 if router is not None else math.nan
        rss = peak_rss_mb(router.pid) if router is not None else math.nan
        priorities = workload.objectives
        for r in records:
            arrival_objective = r.tenant if r.tenant in priorities else None
            r.priority = priorities.get(arrival_objective or "", 0)
        hits, queries = prefix_counters(engines)
        closed = workload.concurrency is not None
        ended = [r.completed_at for r in records if r.completed_at is not None]
        duration = max(ended, default=0.0) if closed else workload.duration_s
        result = RunResult(
            scenario=scenario.name,
            arm=arm_name,
            seed=seed,
            load=load,
            records=records,
            samples=samples,
            prefix_hits=int(hits),
            prefix_queries=int(queries),
            duration_s=duration,
            warmup_s=0.0 if closed else workload.duration_s * scenario.warmup_frac,
            cpu_s=cpu,
        )
        return WallRun(arm_name, result, None, cpu, rss, added, replay_s, busy)
    finally:
        if router is not None:
            stop(router)
        engines.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def wall_arms(scenario: Scenario, requested: Sequence[str]) -> list[str]:
    if requested:
        return list(requested)
    arms = [DIRECT_ROUND_ROBIN, "sluice-default"]
    peers = installed_peers()
    for arm, (peer, _) in PEER_ARMS.items():
        if not peers.get(peer):
            continue
        if arm == "smg:priority" and not scenario.protected:
            continue
        arms.append(arm)
    return arms


@dataclass
class WallScenario:
    scenario: Scenario
    loads: tuple[float, ...]  # the offered loads (a sweep walks up them until the knee)
    # arm -> its runs: one per load reached (sweeps), or the one loaded run (with its baseline)
    runs: dict[str, list[WallRun]] = field(default_factory=dict)
    seed: int = 1
    quick: bool = True
    duration_s: float = 0.0
    wall_s: float = 0.0

    def as_result(self) -> ScenarioResult:
        """The runs as the virtual mode's `ScenarioResult`, so goodput, the isolation ratios and
        the targets come from the same code in both modes."""
        ran = tuple(a for a, runs in self.runs.items() if any(not r.error for r in runs))
        out = ScenarioResult(self.scenario, ran, (self.seed,), self.quick, mode="wall")
        for arm, runs in self.runs.items():
            good = [r for r in runs if not r.error]
            if len(good) < len(runs):
                out.skipped[arm] = next(r.error for r in runs if r.error)
            if good:
                out.runs[arm] = [r.result for r in good]
                out.baselines[arm] = [r.baseline for r in good if r.baseline is not None]
        out.wall_s = self.wall_s
        return out


def wall_duration(scenario: Scenario, quick: bool) -> float:
    return WALL_DURATION.get(scenario.name, (10.0, 45.0))[0 if quick else 1]


def wall_workload(
    scenario: Scenario, seed: int, load: float, quick: bool, cut: float | None = None
) -> Workload:
    """The scenario's workload cut to the wall mode's replay window. A window longer than the
    workload was built for is refused: cutting could not lengthen it, and a run reporting a
    90-s window over 40 s of arrivals would measure something other than it says."""
    workload = scenario.build(seed, load, quick)
    if cut is not None and workload.window_s is not None and cut > workload.window_s:
        sizes = "quick" if quick else "full"
        longer = "" if not quick else " (or drop --quick: the full workload is longer)"
        raise ValueError(
            f"{scenario.name}: a {cut:g}-s replay window is longer than its {sizes} workload's "
            f"{workload.window_s:g} s of arrivals; ask for at most {workload.window_s:g} s{longer}"
        )
    if workload.concurrency is not None:
        count = WALL_REQUESTS.get(scenario.name, (128, 512))[0 if quick else 1]
        return Workload(
            workload.name,
            workload.arrivals[:count],
            workload.objectives,
            workload.adapters,
            workload.concurrency,
        )
    cut = wall_duration(scenario, quick) if cut is None else cut
    return replace(
        workload,
        arrivals=tuple(a for a in workload.arrivals if a.at < cut),
        restarts=tuple((at, i) for at, i in workload.restarts if at < cut),
    )


def _failed(scenario: Scenario, arm: str, seed: int, load: float, exc: Exception) -> WallRun:
    return WallRun(arm, RunResult(scenario.name, arm, seed, load, [], []), error=str(exc))


def run_wall_scenario(
    scenario: Scenario,
    arms: Sequence[str],
    *,
    seed: int,
    quick: bool,
    loads: Sequence[float] | None = None,
    drain_s: float | None = None,
    duration_s: float | None = None,
    on_run: Callable[[WallRun], None] | None = None,
    engine_kind: str = SIM,
) -> WallScenario:
    """Every arm on the scenario. Sweeps walk each arm up `loads` with `suite.sweep` (the
    virtual mode's stopping rule); the added-latency probe runs once per arm, at its first load.
    Isolation scenarios run the loaded mix and the protected tenants alone."""
    default = WALL_LOADS.get(scenario.name, (scenario.quick_loads, scenario.loads))
    chosen = tuple(loads or default[0 if quick else 1])
    out = WallScenario(scenario, chosen, seed=seed, quick=quick)
    if duration_s is None:  # the wall mode's window, or the whole workload if that is shorter
        built = scenario.build(seed, chosen[0], quick).window_s
        out.duration_s = min(wall_duration(scenario, quick), built or math.inf)
    else:
        wall_workload(scenario, seed, chosen[0], quick, duration_s)  # a bad window fails now
        out.duration_s = duration_s
    started = time.monotonic()
    # after the last arrival, wait this long for stragglers (a request still without its first
    # token by then is infinitely late: far past the 2 s SLO either way)
    drain = drain_s if drain_s is not None else (10.0 if quick else 40.0)
    kv_events = needs_kv_events(arms)

    def point(arm: str, load: float, first: bool) -> WallRun:
        print(f"wall {scenario.name} {arm} at {fmt(load)} ...", file=sys.stderr, flush=True)
        workload = wall_workload(scenario, seed, load, quick, out.duration_s)
        try:
            run_on = functools.partial(
                run_arm,
                scenario,
                arm,
                seed=seed,
                load=load,
                drain_s=drain,
                kv_events=kv_events,
                engine_kind=engine_kind,
            )
            run = run_on(workload, probe=first)
            if scenario.protected:
                run.baseline = run_on(workload.only(*scenario.protected), probe=False).result
        except Exception as exc:  # a peer that fails to start is reported, not fatal
            run = _failed(scenario, arm, seed, load, exc)
        if on_run is not None:
            on_run(run)
        return run

    # The arms take turns at each load (A B, then B A): on a shared machine a stretch of other
    # load then falls on every arm's points alike instead of on one arm's whole curve.
    if scenario.kind == SWEEP:
        out.runs.update(
            sweep_arms(
                chosen,
                arms,
                lambda arm, load: point(arm, load, load == chosen[0]),
                lambda run: run.result,
            )
        )
    else:
        for i, load in enumerate(chosen):
            for arm in in_turn(arms, i):
                out.runs.setdefault(arm, []).append(point(arm, load, i == 0))
    out.wall_s = time.monotonic() - started
    return out
