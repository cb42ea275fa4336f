"""Precise prefix routing in virtual time: the engines' KV events reach the scorer, its predicted
hit matches what the engines report, and the world can change behind Sluice's back (engines
restarted, traffic that bypasses it)."""

from __future__ import annotations

from sluice.bench.arms import arm_by_name
from sluice.bench.records import RunResult
from sluice.bench.runner_virtual import EngineSetup, RunLimits, run_virtual
from sluice.bench.workloads import bypassing, restarting, shared_prefix

SETUP = EngineSetup(count=2, overrides={"num_gpu_blocks": 600})


def _run(arm: str, *, restarts: bool = False, bypass: float = 0.0) -> RunResult:
    workload = shared_prefix(
        seed=3, qps=6, duration_s=8, groups=6, system_tokens=512, question_tokens=32,
        output_tokens=16,
    )  # fmt: skip
    if restarts:
        workload = restarting(workload, engines=2, first_s=3.0, every_s=2.0)
    if bypass:
        workload = bypassing(workload, share=bypass, seed=3)
    return run_virtual(
        workload, arm_by_name(arm), SETUP, seed=3, load=6, limits=RunLimits(drain_s=10)
    )


def test_the_precise_scorers_predicted_hit_is_what_the_engines_report() -> None:
    run = _run("sluice-precise")
    done = [r for r in run.records if r.outcome == "completed"]
    assert done and all(r.predicted_cached_tokens is not None for r in done)
    reported = sum(r.cached_tokens for r in done)
    error = sum(abs(r.predicted_cached_tokens - r.cached_tokens) for r in done)  # type: ignore[operator]
    assert reported > 0 and error / reported <= 0.05


def test_restarted_engines_fail_their_requests_and_come_back_empty() -> None:
    for arm in ("sluice-default", "sluice-precise"):
        run = _run(arm, restarts=True)
        outcomes = {r.outcome for r in run.records}
        assert "error" in outcomes and "completed" in outcomes
        assert not any(r.outcome == "unfinished" for r in run.records)


def test_bypassing_requests_reach_engines_without_sluice_and_complete() -> None:
    run = _run("sluice-precise", bypass=0.4)
    bypassed = [r for r in run.records if r.tenant == "bypass"]
    assert bypassed and all(r.outcome == "completed" for r in bypassed)
    assert all(r.predicted_cached_tokens is None for r in bypassed)  # Sluice never saw them
