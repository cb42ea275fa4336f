"""`sluice bench --mode wall --engines llamacpp`: the scenarios scaled to two real
`llama-server`s, and one short replay on them that reads their own counters."""

from __future__ import annotations

import pytest

from sluice.bench.engines.build import MODEL_NAME, find_install
from sluice.bench.engines.llamacpp import LlamaServerSettings
from sluice.bench.metrics import delivered_output_tps, hit_rate
from sluice.bench.scenarios import FIXED, Scenario
from sluice.bench.wall import llamacpp
from sluice.bench.wall.capacity import steady_rate
from sluice.bench.wall.llamacpp import LLAMACPP_SCENARIOS
from sluice.bench.wall.run import LLAMACPP, run_arm, wall_workload
from sluice.bench.workloads import Workload, shared_prefix


def test_the_scaled_scenarios_fit_a_slot_and_name_the_served_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # two-bands offers multiples of what the servers complete, measured first; here, a given rate
    monkeypatch.setattr(llamacpp, "pool_requests_per_s", lambda seed: 2.0)
    context = LlamaServerSettings().context_per_slot
    for scenario in LLAMACPP_SCENARIOS.values():
        workload = wall_workload(scenario, 1, scenario.quick_loads[0], True)
        assert workload.arrivals
        assert {a.model for a in workload.arrivals} == {MODEL_NAME}
        # the workloads' lengths are the simulator's tokens; llama's tokenizer splits them
        # into ~4x as many: every prompt and its output fit one slot
        ratio = llamacpp.LLAMA_TOKENS_PER_SIM_TOKEN
        longest = max(ratio * len(a.prompt.split()) + a.max_tokens for a in workload.arrivals)
        assert longest < context, scenario.name
    two = wall_workload(LLAMACPP_SCENARIOS["two-bands"], 1, 1.5, True)
    assert {a.tenant for a in two.arrivals} == {"interactive", "batch"}
    assert two.objectives == {"interactive": 10, "batch": 0}
    # 1.5x capacity offered, 30% of it interactive (Poisson arrivals: within sampling noise)
    offered = len(two.arrivals) / two.duration_s
    interactive = sum(a.tenant == "interactive" for a in two.arrivals) / two.duration_s
    assert offered == pytest.approx(1.5 * 2.0, rel=0.25)
    assert interactive == pytest.approx(0.3 * 2.0, rel=0.35)


def test_capacity_is_the_rate_of_the_completions_after_the_first_wave() -> None:
    # four slots start together and end together; then one completion every 0.5 s
    first_wave = [1.0, 1.0, 1.0, 1.0]
    steady = [1.5 + 0.5 * i for i in range(12)]
    assert steady_rate(first_wave + steady) == pytest.approx(2.0)
    assert steady_rate(list(reversed(first_wave + steady))) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="spread completions"):
        steady_rate([3.0, 3.0, 3.0])


def _tiny(seed: int, load: float, quick: bool) -> Workload:
    workload = shared_prefix(
        seed=seed,
        qps=load,
        duration_s=4,
        groups=2,
        system_tokens=128,
        question_tokens=8,
        output_tokens=8,
    )
    return llamacpp._served(workload)


@pytest.mark.skipif(find_install() is None, reason="llama.cpp is built by `make engines`")
def test_a_replay_on_llama_server_counts_its_tokens_and_its_prefix_cache() -> None:
    scenario = Scenario("tiny-llamacpp", "2 groups", FIXED, _tiny, (1.0,), (1.0,))
    workload = scenario.build(1, 1.0, True)
    # the drain is generous: a machine whose cores are busy elsewhere slows llama.cpp tenfold
    run = run_arm(
        scenario, "round-robin", workload, seed=1, load=1.0, drain_s=90, engine_kind=LLAMACPP
    )
    result = run.result
    assert all(r.outcome == "completed" for r in result.records), run.error
    counted = [s.generated_tokens or 0 for s in result.samples]
    assert counted[-1] - counted[0] == sum(r.output_tokens for r in result.records)
    assert delivered_output_tps(result) > 0
    # two system prompts over 2 engines x 2 slots: llama.cpp reuses them (its own counters)
    assert 0 < hit_rate(result) < 1
