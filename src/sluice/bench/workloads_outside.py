"""Workloads shaped after other projects' benchmarks, not invented here (issue #14, item 4).

Each generator follows a published client's shape, named in its docstring; the sizes and rates
the scenarios use, beside the upstream originals, are in docs/bench.md ("Workloads from
outside"). Like `workloads`, every generator is seeded and deterministic, and requests that
should share a prefix share its *text*.

- `shared_prefix_ladder`: inference-perf's `shared_prefix` data (a fixed pool of groups x
  prompts, cycled in a shuffled order) under a staged Poisson load, as llm-d's
  optimized-baseline guide runs it;
- `priority_mix`: llm-d-benchmark's priority-mix harness: weighted classes critical (100),
  normal (0) and batch (-10), each with its own fairness ids;
- `shared_prefix_chat`: inference-perf's `shared_prefix` with `enable_multi_turn_chat`: each
  user's next prompt is its previous prompt + the answer + a new question;
- `agentic_fanout`: an agent session (a shared tool preamble + its own context) that plans,
  fans out sub-requests sharing the session's context, and combines their answers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from sluice.bench.workloads import Arrival, TenantSpec, Workload, poisson_times, tenants, text

# -- arrival processes --------------------------------------------------------------------


def staged_poisson_times(
    rng: random.Random, stages: Sequence[tuple[float, float]]
) -> Iterator[float]:
    """Poisson arrivals through consecutive stages of (rate per second, seconds): inference-perf's
    `load: {type: poisson, stages: [...]}`."""
    start = 0.0
    for rate, seconds in stages:
        if rate > 0:
            for t in poisson_times(rng, rate, seconds):
                yield start + t
        start += seconds


# -- generators ---------------------------------------------------------------------------


def shared_prefix_ladder(
    *,
    seed: int,
    stages: Sequence[tuple[float, float]],
    groups: int,
    prompts_per_group: int,
    system_tokens: int,
    question_tokens: int,
    output_tokens: int,
) -> Workload:
    """inference-perf's `shared_prefix`: `groups` system prompts, each with `prompts_per_group`
    fixed questions; the groups x prompts prompts are shuffled once and sent in that order,
    cycling (request i sends prompt i mod groups*prompts), at the staged Poisson rates."""
    rng = random.Random(seed)
    prompts: list[tuple[int, int, str]] = []
    for g in range(groups):
        system = text(f"spl-sys-{seed}-{g}", system_tokens)
        for p in range(prompts_per_group):
            prompts.append((g, p, system + text(f"spl-q-{seed}-{g}-{p}", question_tokens)))
    rng.shuffle(prompts)
    arrivals = []
    for i, t in enumerate(staged_poisson_times(rng, stages)):
        g, p, prompt = prompts[i % len(prompts)]
        arrivals.append(
            Arrival(t, f"spl-{i}", f"group-{g}", None, prompt, max_tokens=output_tokens)
        )
    return Workload(
        "shared-prefix-ladder", tuple(arrivals), window_s=sum(seconds for _, seconds in stages)
    )


@dataclass(frozen=True, slots=True)
class PriorityClass:
    """One class of the priority mix: its objective, priority and fairness ids."""

    objective: str
    priority: int
    fairness_ids: int  # tenants sharing the class's rate evenly


# llm-d-benchmark's priority-mix harness (llm-d-benchmark #1725): three weighted classes.
PRIORITY_CLASSES = (
    PriorityClass("critical", 100, 2),
    PriorityClass("normal", 0, 2),
    PriorityClass("batch", -10, 2),
)


def priority_specs(
    tokens_per_s: Mapping[str, float],
    *,
    prompt_tokens: int,
    output_tokens: int,
    sigma: float,
    max_prompt_tokens: int,
    max_output_tokens: int,
    classes: Sequence[PriorityClass] = PRIORITY_CLASSES,
) -> tuple[TenantSpec, ...]:
    """The mix's tenants: each class offers `tokens_per_s[objective]` (prompt + output tokens
    per second), split evenly over its fairness ids (`<objective>-0`, `<objective>-1`, ...),
    chat-like requests with lognormal lengths around the given medians."""

    def spec(name: str, objective: str | None, qps: float) -> TenantSpec:
        return TenantSpec(
            name,
            objective,
            qps,
            prompt_tokens,
            output_tokens,
            sigma=sigma,
            max_prompt_tokens=max_prompt_tokens,
            max_output_tokens=max_output_tokens,
        )

    mean = spec("probe", None, 1.0).mean_tokens()
    specs = (
        spec(
            f"{c.objective}-{k}",
            c.objective,
            tokens_per_s.get(c.objective, 0.0) / c.fairness_ids / mean,
        )
        for c in classes
        for k in range(c.fairness_ids)
    )
    return tuple(s for s in specs if s.qps > 0)


def priority_mix(
    *,
    seed: int,
    duration_s: float,
    specs: tuple[TenantSpec, ...],
    classes: Sequence[PriorityClass] = PRIORITY_CLASSES,
) -> Workload:
    """The priority mix's tenants (`priority_specs`) as independent Poisson streams, with the
    classes' InferenceObjectives."""
    return tenants(
        "priority-mix",
        seed=seed,
        duration_s=duration_s,
        specs=specs,
        objectives={c.objective: c.priority for c in classes},
    )


def shared_prefix_chat(
    *,
    seed: int,
    qps: float,
    duration_s: float,
    groups: int,
    prompts_per_group: int,
    system_tokens: int,
    question_tokens: int,
    answer_tokens: int,
) -> Workload:
    """inference-perf's `shared_prefix` with `enable_multi_turn_chat`: one user session per
    (group, prompt), its context starting as the group's system prompt; request i goes to
    session i mod sessions (in a once-shuffled order), round i div sessions, and sends the
    session's context + a new question; the context then becomes that prompt + the answer.
    The answer text stands in for what the model said (`answer_tokens` long, as generated).

    Open loop: a session's rounds are `sessions / qps` seconds apart on average, and the
    scenario sizes that well above a request's latency, so the upstream client's per-session
    lock (the next round waits for the previous answer) would not have waited."""
    rng = random.Random(seed)
    sessions: list[tuple[int, int]] = [
        (g, p) for g in range(groups) for p in range(prompts_per_group)
    ]
    rng.shuffle(sessions)
    system = [text(f"spc-sys-{seed}-{g}", system_tokens) for g in range(groups)]
    context = {s: system[s[0]] for s in sessions}
    arrivals = []
    for i, t in enumerate(poisson_times(rng, qps, duration_s)):
        session = sessions[i % len(sessions)]
        turn = i // len(sessions)
        g, p = session
        prompt = context[session] + text(f"spc-q-{seed}-{g}-{p}-{turn}", question_tokens)
        arrivals.append(
            Arrival(t, f"spc-{i}", f"session-{g}-{p}", None, prompt, max_tokens=answer_tokens)
        )
        context[session] = prompt + text(f"spc-a-{seed}-{g}-{p}-{turn}", answer_tokens)
    return Workload("shared-prefix-chat", tuple(arrivals), window_s=duration_s)


def agentic_fanout(
    *,
    seed: int,
    sessions_per_s: float,
    duration_s: float,
    tools_tokens: int,
    context_tokens: int,
    task_tokens: int,
    fanout: int,
    subtask_tokens: int,
    output_tokens: int,
    answer_s: float,
    tool_s: float,
) -> Workload:
    """Agent sessions arriving as a Poisson stream. A session's prompt starts with a tool
    preamble every session shares (`tools_tokens`) and its own context (`context_tokens`).
    It sends a plan request (context + task); then, after the plan's answer and a tool call, it
    fans out `fanout` sub-requests at once, each the plan's prompt + its answer + its own
    sub-task; after their answers and another tool call, a combine request sends the plan, its
    answer and every sub-answer. Every request of a session carries the session's id as its
    fairness id.

    Open loop: the generator cannot wait for an answer, so each step starts `answer_s` (about
    a step's unloaded latency) + an exponential tool latency (mean `tool_s`) after the one
    before; a slow answer does not delay the next step."""
    rng = random.Random(seed)
    arrivals = []
    tools = text(f"ag-tools-{seed}", tools_tokens)
    for n, t in enumerate(poisson_times(rng, sessions_per_s, duration_s)):
        tenant = f"agent-{n}"
        plan = tools + text(f"ag-ctx-{seed}-{n}", context_tokens)
        plan += text(f"ag-task-{seed}-{n}", task_tokens)
        arrivals.append(Arrival(t, f"ag-{n}-plan", tenant, None, plan, max_tokens=output_tokens))
        base = plan + text(f"ag-plan-a-{seed}-{n}", output_tokens)
        fan_at = t + answer_s + rng.expovariate(1.0 / tool_s)
        answers = []
        for k in range(fanout):
            sub = base + text(f"ag-sub-{seed}-{n}-{k}", subtask_tokens)
            arrivals.append(
                Arrival(fan_at, f"ag-{n}-sub-{k}", tenant, None, sub, max_tokens=output_tokens)
            )
            answers.append(text(f"ag-sub-a-{seed}-{n}-{k}", output_tokens))
        combine_at = fan_at + answer_s + rng.expovariate(1.0 / tool_s)
        combine = base + "".join(answers) + text(f"ag-combine-{seed}-{n}", task_tokens)
        arrivals.append(
            Arrival(combine_at, f"ag-{n}-combine", tenant, None, combine, max_tokens=output_tokens)
        )
    arrivals.sort(key=lambda a: (a.at, a.request_id))
    return Workload("agentic", tuple(arrivals))
