"""Wall-clock mode: the goodput sweep (the virtual mode's stopping rule and goodput), the
loaded-vs-alone table and the targets against peers, and one real run through Sluice's proxy in
front of `sluice sim` engines (seconds)."""

from __future__ import annotations

import math

import pytest

from sluice.bench.harness.cpu import (
    MachineJiffies,
    busy_share,
    idle_and_steal,
    machine_cpu,
    machine_jiffies,
)
from sluice.bench.metrics import delivered_output_tps
from sluice.bench.records import RequestRecord, RunResult
from sluice.bench.scenarios import SCENARIOS, SWEEP, Scenario
from sluice.bench.suite import sweep, sweep_arms
from sluice.bench.wall.render import SMG_PRIORITY_NOTE, render_wall
from sluice.bench.wall.run import WallRun, WallScenario, run_arm, run_wall_scenario
from sluice.bench.wall.sampling import family_total
from sluice.bench.workloads import shared_prefix


def _run(
    scenario: str, arm: str, load: float, ttfts: dict[str, list[float]], *, hits: int = 0
) -> RunResult:
    """A run whose requests (per tenant) had these TTFTs; no warm-up."""
    records = []
    for tenant, values in ttfts.items():
        for i, ttft in enumerate(values):
            r = RequestRecord(f"{tenant}-{i}", tenant, 0, float(i), 10, 4, outcome="completed")
            r.first_token_at = r.arrived_at + ttft
            r.completed_at = r.first_token_at + 0.1
            r.output_tokens = 4
            records.append(r)
    return RunResult(
        scenario, arm, 1, load, records, prefix_hits=hits, prefix_queries=100, duration_s=20.0
    )


def _point(arm: str, load: float, p90: float) -> WallRun:
    run = _run("shared-prefix", arm, load, {"t": [p90] * 20}, hits=50)
    return WallRun(arm, run, None, 2.0, 80.0, 1.0, replay_s=20.0, machine_busy=0.9)


def test_sweep_stops_past_the_knee_and_goodput_interpolates() -> None:
    curve = {4.0: 0.5, 8.0: 1.5, 12.0: 2.5, 16.0: 3.0, 24.0: 9.0}
    calls: list[float] = []

    def at(load: float) -> WallRun:
        calls.append(load)
        return _point("a", load, curve[load])

    points = sweep(sorted(curve), at, lambda p: p.result)
    assert calls == [4.0, 8.0, 12.0]  # stops at the first load past the SLO (after two points)
    ws = WallScenario(SCENARIOS["shared-prefix"], tuple(curve), {"a": points})
    # the virtual mode's goodput: interpolated between 8 (1.5 s) and 12 (2.5 s)
    assert ws.as_result().goodputs("a") == [pytest.approx(10.0)]
    # far past the SLO at once: stop there
    assert len(sweep([1.0, 2.0], lambda load: _point("b", load, 9.0), lambda p: p.result)) == 1


def test_arms_take_turns_at_each_load_and_each_stops_at_its_own_knee() -> None:
    curves = {
        "a": {4.0: 0.5, 8.0: 1.5, 12.0: 2.5, 16.0: 3.0},
        "b": {4.0: 0.5, 8.0: 0.9, 12.0: 1.2, 16.0: 1.9},
    }
    calls: list[tuple[str, float]] = []

    def at(arm: str, load: float) -> WallRun:
        calls.append((arm, load))
        return _point(arm, load, curves[arm][load])

    runs = sweep_arms(sorted(curves["a"]), ("a", "b"), at, lambda p: p.result)
    # A B, then B A: a stretch of other load on the machine falls on both arms' points
    assert calls == [("a", 4.0), ("b", 4.0), ("b", 8.0), ("a", 8.0), ("a", 12.0), ("b", 12.0),
                     ("b", 16.0)]  # fmt: skip
    # each arm's curve is what `sweep` alone would have walked
    for arm, curve in curves.items():
        alone = sweep(sorted(curve), lambda load, a=arm: _point(a, load, curves[a][load]),
                      lambda p: p.result)  # fmt: skip
        assert [p.load for p in runs[arm]] == [p.load for p in alone]


def _sweep_scenario() -> WallScenario:
    curves = {
        "sluice-default": {4.0: 0.5, 8.0: 0.9, 12.0: 1.5, 16.0: 1.9, 24.0: 2.1},
        "upstream-default": {4.0: 0.6, 8.0: 1.9, 12.0: 3.0},
        "vllm-router:round_robin": {4.0: 2.5},
        "sglang-router:cache_aware": {4.0: 0.7, 8.0: 2.1},
    }
    runs = {a: [_point(a, load, p90) for load, p90 in c.items()] for a, c in curves.items()}
    failed = WallRun("smg:cache_aware", RunResult("shared-prefix", "smg:cache_aware", 1, 4, []))
    failed.error = "smg is not installed"
    runs["smg:cache_aware"] = [failed]
    return WallScenario(SCENARIOS["shared-prefix"], (4.0, 8.0, 12.0, 16.0, 24.0), runs)


def _noisy_scenario() -> WallScenario:
    runs = {}
    for arm, loaded in (("sluice-default", 0.45), ("vllm-router:cache_aware", 4.0)):
        run = _run("noisy-neighbour", arm, 1.5, {"light": [0.4] * 9 + [loaded], "heavy": [3.0]})
        w = WallRun(arm, run, None, 1.0, 70.0, 1.0, replay_s=20.0, machine_busy=0.5)
        w.baseline = _run("noisy-neighbour", arm, 1.5, {"light": [0.3] * 9 + [0.4]})
        runs[arm] = [w]
    return WallScenario(SCENARIOS["noisy-neighbour"], (1.5,), runs)


def test_wall_report_has_goodput_ratios_isolation_and_targets() -> None:
    text = render_wall([_sweep_scenario(), _noisy_scenario()], "sluice bench --mode wall", 9.0)
    assert "## shared-prefix (wall, goodput sweep)" in text
    assert "vs vllm-router:round_robin" in text and "vs best cache-aware peer" in text
    # sluice-default: 16 + 8 * (2 - 1.9) / (2.1 - 1.9) = 20 QPS; round-robin 0 (∞x); upstream
    # 8 + 4 * 0.1 / 1.1 = 8.36 (2.39x); the best cache-aware peer 4 + 4 * 1.3 / 1.4 = 7.71
    assert "| sluice-default | 20 | ∞ | 2.39 | 2.59 |" in text
    assert "| smg:cache_aware | failed: smg is not installed |" in text
    assert "| smg:cache_aware | 4 | failed: smg is not installed |" in text
    assert "smg:cache_aware 0" not in text  # a failed arm is no evidence
    assert "| shared-prefix: sluice-default goodput >= 4x vllm-router:round_robin | yes |" in text
    assert "goodput >= 1.2x upstream-default | yes | 2.39x |" in text
    assert "goodput >= the best cache-aware peer | yes |" in text
    assert "sglang-router:cache_aware 7.71" in text
    # noisy-neighbour: light p99 0.45 / 0.4 loaded vs alone; the peer 4 / 0.4
    assert "## noisy-neighbour (wall, loaded vs alone)" in text
    assert "| 0.4 | 0.45 | 1.12 |" in text and "| 0.4 | 4 | 10 |" in text
    assert "light p99 TTFT within 1.25x of unloaded at 150% load | yes | p99 ratio" in text
    assert "no peer router keeps light within 1.25x of unloaded | yes |" in text
    assert "pool busy" not in text  # not measured in wall mode
    assert SMG_PRIORITY_NOTE not in text  # said where smg:priority ran


def test_an_isolation_target_says_how_few_requests_its_p99s_rest_on() -> None:
    # the light tenant sent 10 requests loaded and 7 alone: a p99 of 7 is its worst request's
    scenario = _noisy_scenario()
    for (run,) in scenario.runs.values():
        assert run.baseline is not None
        run.baseline.records = run.baseline.records[3:]
    text = render_wall([scenario], "sluice bench --mode wall", 9.0)
    assert "p99 ratio per rep 1.12 (each p99 over at least 7 requests)" in text


def test_machine_cpu_share_is_a_fraction() -> None:
    before = machine_cpu()
    sum(i * i for i in range(200_000))
    share = busy_share(before, machine_cpu())
    assert math.isnan(share) or 0.0 <= share <= 1.0


def test_idle_and_steal_are_shares_of_the_machine_between_two_readings() -> None:
    before = MachineJiffies(total=1000.0, idle=400.0, steal=10.0)
    after = MachineJiffies(total=1200.0, idle=450.0, steal=30.0)
    assert idle_and_steal(before, after) == (50 / 200, 20 / 200)
    assert all(math.isnan(x) for x in idle_and_steal(after, after)), "no time passed"
    first = machine_jiffies()
    measured = idle_and_steal(first, machine_jiffies())
    assert all(math.isnan(x) or 0.0 <= x <= 1.0 for x in measured)


def _tiny_shared_prefix(seed: int, load: float, quick: bool) -> object:
    return shared_prefix(
        seed=seed,
        qps=load,
        duration_s=3,
        groups=2,
        system_tokens=256,
        question_tokens=16,
        output_tokens=8,
    )


def test_wall_sweep_through_sluice_proxy_smoke() -> None:
    scenario = Scenario(
        "tiny-shared-prefix",
        "2 groups x 256-token system prompts",
        SWEEP,
        _tiny_shared_prefix,  # type: ignore[arg-type]
        loads=(2.0, 4.0),
        quick_loads=(2.0, 4.0),
        warmup_frac=0.0,
    )
    seen: list[WallRun] = []
    ws = run_wall_scenario(
        scenario, ["sluice-default"], seed=1, quick=True, drain_s=10, on_run=seen.append
    )
    runs = ws.runs["sluice-default"]
    assert [r.load for r in runs] == [2.0, 4.0] and seen == runs
    assert all(not r.error for r in runs), [r.error for r in runs]
    first, second = runs
    assert first.result.records and all(r.outcome == "completed" for r in first.result.records)
    assert first.result.prefix_hits > 0  # two shared system prompts: the engines' caches hit
    assert math.isfinite(first.added_latency_ms) and math.isnan(second.added_latency_ms)
    assert first.router_cpu_s > 0 and 0 < first.router_core_share < 2
    assert ws.as_result().goodputs("sluice-default") == [4.0]
    assert "| sluice-default | 4 |" in render_wall([ws], "test", 1.0)


def test_every_arm_counts_the_engines_tokens_the_same_way() -> None:
    """Round-robin (the client straight to the engines) and Sluice's proxy replay the same
    light workload on fresh engines: in both, the engines' own counters, summed over every
    engine and sampled over the whole replay, add up to the tokens the clients received, and
    the pools deliver them at the same rate."""
    scenario = Scenario(
        "tiny-shared-prefix",
        "2 groups x 256-token system prompts",
        SWEEP,
        _tiny_shared_prefix,  # type: ignore[arg-type]
        loads=(2.0,),
        quick_loads=(2.0,),
        warmup_frac=0.0,
    )
    workload = scenario.build(1, 2.0, True)
    rates = {}
    for arm in ("round-robin", "sluice-default"):
        run = run_arm(scenario, arm, workload, seed=1, load=2.0, drain_s=10, probe=False)
        result = run.result
        assert all(r.outcome == "completed" for r in result.records), arm
        counted = [s.generated_tokens or 0 for s in result.samples]
        received = sum(r.output_tokens for r in result.records)
        assert counted[-1] - counted[0] == received, arm
        rates[arm] = delivered_output_tps(result)
    ratio = rates["sluice-default"] / rates["round-robin"]
    assert 0.8 < ratio < 1.25, rates


def test_a_labelled_counter_counts_every_series() -> None:
    page = (
        "# TYPE vllm:generation_tokens_total counter\n"
        'vllm:generation_tokens_total{engine="0",model_name="m"} 120\n'
        'vllm:generation_tokens_total{engine="1",model_name="m"} 30\n'
        "vllm:num_requests_running 2\n"
    )
    assert family_total(page, "vllm:generation_tokens_total") == 150
    assert family_total(page, "vllm:num_requests_running") == 2
    assert family_total(page, "vllm:num_requests_waiting") == 0


def test_the_real_engine_shared_prefix_target_wants_both_p50_and_p90_below_round_robin() -> None:
    from sluice.bench.report import targets
    from sluice.bench.wall.llamacpp import LLAMACPP_SCENARIOS

    scenario = LLAMACPP_SCENARIOS["shared-prefix"]

    def claim(sluice: list[float], rr: list[float]) -> str:
        runs = {}
        for arm, ttfts in (("sluice-default", sluice), ("round-robin", rr)):
            run = _run(scenario.name, arm, 2.0, {"t": ttfts})
            runs[arm] = [WallRun(arm, run, None, 1.0, 70.0, 1.0, replay_s=20.0)]
        (target,) = targets([WallScenario(scenario, (2.0,), runs).as_result()])
        return f"{target.met} {target.evidence}"

    assert claim([0.1] * 9 + [1.0], [0.5] * 9 + [2.0]) == "True p50 0.1 vs 0.5 s, p90 0.1 vs 0.5 s"
    # a better median bought with a worse tail is not met
    assert claim([0.1] * 8 + [3.0] * 2, [0.5] * 10).startswith("False")
