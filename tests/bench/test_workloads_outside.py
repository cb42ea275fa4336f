"""The workloads shaped after other projects' benchmarks: what their prompts share, how fast they
arrive, and that a seed fixes them."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter, defaultdict

from sluice.bench.arms import arm_by_name
from sluice.bench.records import RunResult
from sluice.bench.report import targets
from sluice.bench.runner_virtual import EngineSetup, RunLimits, run_virtual
from sluice.bench.scenarios import SCENARIOS
from sluice.bench.suite import ScenarioResult
from sluice.bench.workloads import Workload, text
from sluice.bench.workloads_outside import (
    PRIORITY_CLASSES,
    agentic_fanout,
    priority_mix,
    priority_specs,
    shared_prefix_chat,
    shared_prefix_ladder,
    staged_poisson_times,
)
from sluice.sim.tokenizer import CHARS_PER_TOKEN


def _within_poisson_noise(count: int, expected: float) -> bool:
    """A Poisson count lies within 4 standard deviations of its mean."""
    return abs(count - expected) <= 4 * math.sqrt(expected)


def _fingerprint(workload: Workload) -> list[tuple[float, str, str, str, int]]:
    return [(a.at, a.request_id, a.tenant, a.prompt, a.max_tokens) for a in workload.arrivals]


def _tokens(s: str) -> int:
    return len(s) // CHARS_PER_TOKEN


# -- the staged ladder ---------------------------------------------------------------------


def test_staged_arrivals_follow_each_stage_rate() -> None:
    stages = ((20.0, 30.0), (5.0, 40.0), (0.0, 10.0), (50.0, 20.0))
    times = list(staged_poisson_times(random.Random(3), stages))
    start = 0.0
    for rate, seconds in stages:
        count = sum(start <= t < start + seconds for t in times)
        assert _within_poisson_noise(count, rate * seconds) if rate else count == 0
        start += seconds
    assert times == sorted(times)


def _ladder(seed: int = 1) -> Workload:
    return shared_prefix_ladder(
        seed=seed,
        stages=((10.0, 20.0), (30.0, 20.0)),
        groups=6,
        prompts_per_group=3,
        system_tokens=320,
        question_tokens=40,
        output_tokens=25,
    )


def test_ladder_cycles_a_fixed_pool_of_group_prompts() -> None:
    workload = _ladder()
    prompts = [a.prompt for a in workload.arrivals]
    pool = 6 * 3
    assert len(set(prompts)) == pool  # groups x prompts, no more
    # the pool is sent in one shuffled order, again and again
    assert all(prompts[i] == prompts[i + pool] for i in range(len(prompts) - pool))
    by_group: dict[str, set[str]] = defaultdict(set)
    for a in workload.arrivals:
        by_group[a.tenant].add(a.prompt)
    system = {g: {p[: 320 * CHARS_PER_TOKEN] for p in ps} for g, ps in by_group.items()}
    assert len(by_group) == 6 and all(len(ps) == 3 for ps in by_group.values())
    assert all(len(s) == 1 for s in system.values())  # a group's prompts share its system prompt
    assert len({next(iter(s)) for s in system.values()}) == 6  # and groups do not
    assert {_tokens(p) for p in prompts} == {360}
    assert {a.max_tokens for a in workload.arrivals} == {25}


def test_ladder_rates_per_stage_and_seed() -> None:
    workload = _ladder()
    warm = sum(a.at < 20 for a in workload.arrivals)
    rung = sum(a.at >= 20 for a in workload.arrivals)
    assert _within_poisson_noise(warm, 10 * 20) and _within_poisson_noise(rung, 30 * 20)
    assert _fingerprint(_ladder()) == _fingerprint(workload)
    assert _fingerprint(_ladder(seed=2)) != _fingerprint(workload)


# -- the priority mix ----------------------------------------------------------------------


def _mix(seed: int = 1) -> Workload:
    specs = priority_specs(
        {"critical": 2000.0, "normal": 6000.0, "batch": 6000.0},
        prompt_tokens=250,
        output_tokens=150,
        sigma=0.9,
        max_prompt_tokens=2000,
        max_output_tokens=600,
    )
    return priority_mix(seed=seed, duration_s=60.0, specs=specs)


def test_priority_mix_sends_three_classes_with_two_fairness_ids_each() -> None:
    workload = _mix()
    assert dict(workload.objectives) == {"critical": 100, "normal": 0, "batch": -10}
    assert [(c.objective, c.priority) for c in PRIORITY_CLASSES] == [
        ("critical", 100),
        ("normal", 0),
        ("batch", -10),
    ]
    tenants = {(a.tenant, a.objective) for a in workload.arrivals}
    assert tenants == {(f"{o}-{k}", o) for o in ("critical", "normal", "batch") for k in (0, 1)}
    assert len({a.prompt for a in workload.arrivals}) == len(workload.arrivals)  # nothing shared


def test_priority_mix_offers_each_class_its_tokens_per_second() -> None:
    workload = _mix()
    offered = Counter[str]()
    for a in workload.arrivals:
        offered[str(a.objective)] += _tokens(a.prompt) + a.max_tokens
    # lognormal lengths: the class totals land within 15% of the asked-for rate over a minute
    for objective, tps in (("critical", 2000.0), ("normal", 6000.0), ("batch", 6000.0)):
        assert abs(offered[objective] / 60.0 - tps) / tps < 0.15, objective
    per_tenant = Counter(a.tenant for a in workload.arrivals)
    assert abs(per_tenant["normal-0"] - per_tenant["normal-1"]) < 0.25 * per_tenant["normal-0"]
    assert _fingerprint(_mix()) == _fingerprint(workload)
    assert _fingerprint(_mix(seed=2)) != _fingerprint(workload)


# -- multi-turn chat -----------------------------------------------------------------------


def _chat(seed: int = 1) -> Workload:
    return shared_prefix_chat(
        seed=seed,
        qps=10.0,
        duration_s=60.0,
        groups=3,
        prompts_per_group=5,
        system_tokens=160,
        question_tokens=30,
        answer_tokens=20,
    )


def test_each_chat_round_extends_the_previous_prompt_by_its_answer_and_a_question() -> None:
    workload = _chat()
    rounds: dict[str, list[str]] = defaultdict(list)
    for a in workload.arrivals:
        rounds[a.tenant].append(a.prompt)
    assert len(rounds) == 15  # one session per (group, prompt)
    for prompts in rounds.values():
        assert len(prompts) >= 3
        for before, after in itertools.pairwise(prompts):
            assert after.startswith(before)
            assert _tokens(after) - _tokens(before) == 20 + 30  # the answer, then a question
    # a group's users share its system prompt; other groups' users do not
    first = {s: ps[0][: 160 * CHARS_PER_TOKEN] for s, ps in rounds.items()}
    for session, system in first.items():
        group = session.rsplit("-", 1)[0]
        same = {v for s, v in first.items() if s.rsplit("-", 1)[0] == group}
        assert same == {system}
    assert len(set(first.values())) == 3


def test_chat_sessions_take_turns_at_the_offered_rate() -> None:
    workload = _chat()
    assert _within_poisson_noise(len(workload.arrivals), 10.0 * 60.0)
    order = [a.tenant for a in workload.arrivals]
    assert order[:15] == order[15:30]  # request i goes to session i mod sessions
    assert len(set(order[:15])) == 15
    assert _fingerprint(_chat()) == _fingerprint(workload)
    assert _fingerprint(_chat(seed=2)) != _fingerprint(workload)


# -- agentic fan-out -----------------------------------------------------------------------


def _agents(seed: int = 1) -> Workload:
    return agentic_fanout(
        seed=seed,
        sessions_per_s=1.0,
        duration_s=60.0,
        tools_tokens=320,
        context_tokens=200,
        task_tokens=30,
        fanout=4,
        subtask_tokens=30,
        output_tokens=20,
        answer_s=3.0,
        tool_s=2.0,
    )


def test_an_agent_session_fans_out_sub_requests_that_share_its_context() -> None:
    workload = _agents()
    sessions: dict[str, dict[str, list[tuple[float, str]]]] = defaultdict(lambda: defaultdict(list))
    for a in workload.arrivals:
        step = a.request_id.split("-")[2]
        sessions[a.tenant][step].append((a.at, a.prompt))
    tools = text("ag-tools-1", 320)
    contexts = set()
    for tenant, steps in sessions.items():
        n = tenant.removeprefix("agent-")
        ((plan_at, plan),) = steps["plan"]
        subs, ((combine_at, combine),) = steps["sub"], steps["combine"]
        assert plan.startswith(tools)  # every session shares the tool preamble
        contexts.add(plan[len(tools) :][: 200 * CHARS_PER_TOKEN])
        assert len(subs) == 4 and len({at for at, _ in subs}) == 1  # fanned out at once
        fan_at = subs[0][0]
        assert plan_at + 3.0 <= fan_at <= combine_at - 3.0
        answered = plan + text(f"ag-plan-a-1-{n}", 20)  # the plan's answer, as generated
        for _, sub in subs:
            assert sub.startswith(answered) and _tokens(sub) == _tokens(answered) + 30
        assert combine.startswith(answered)
        assert _tokens(combine) == _tokens(answered) + 4 * 20 + 30  # every sub-answer
    assert len(contexts) == len(sessions)  # each session's own context differs


def test_agent_sessions_arrive_at_the_offered_rate_and_a_seed_fixes_them() -> None:
    workload = _agents()
    plans = [a for a in workload.arrivals if a.request_id.endswith("-plan")]
    assert _within_poisson_noise(len(plans), 1.0 * 60.0)
    assert len(workload.arrivals) == 6 * len(plans)  # plan + 4 sub-requests + combine
    assert [a.at for a in workload.arrivals] == sorted(a.at for a in workload.arrivals)
    assert _fingerprint(_agents()) == _fingerprint(workload)
    assert _fingerprint(_agents(seed=2)) != _fingerprint(workload)


# -- the report's targets ------------------------------------------------------------------


def test_the_report_checks_chat_history_reuse_against_round_robin() -> None:
    setup = EngineSetup(count=2, overrides={"num_gpu_blocks": 2000})
    workload = shared_prefix_chat(
        seed=3,
        qps=6.0,
        duration_s=12.0,
        groups=3,
        prompts_per_group=3,  # 9 users: round-robin cannot pin them to 2 engines
        system_tokens=256,
        question_tokens=32,
        answer_tokens=16,
    )

    def run(arm: str) -> RunResult:
        return run_virtual(workload, arm_by_name(arm), setup, seed=3, limits=RunLimits(drain_s=10))

    result = ScenarioResult(
        SCENARIOS["shared-prefix-chat"], ("sluice-default", "round-robin"), (3,), quick=True
    )
    result.runs = {"sluice-default": [run("sluice-default")], "round-robin": [run("round-robin")]}
    checked = {t.claim: t for t in targets([result])}
    hits = checked["shared-prefix-chat: sluice-default prefix hit rate > round-robin's"]
    assert hits.met  # each user's history stays on the engine that cached it
    assert "shared-prefix-chat: sluice-default TTFT p90 <= round-robin's" in checked
