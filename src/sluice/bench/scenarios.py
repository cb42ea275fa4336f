"""The named scenarios `sluice bench` runs: a workload shape, the simulated pool, which arms,
and what is measured (a load sweep for goodput, one load, or loaded vs unloaded isolation).

Sizes are scaled down from the published shapes (landscape §8.2) so that a quick run fits in
seconds, keeping the ratios that matter: e.g. shared-prefix's working set is ~2x one
engine's KV cache, as llm-d's 150 groups x 6,000 tokens is on an H100.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from sluice.bench import workloads as w
from sluice.bench import workloads_outside as wo
from sluice.bench.arms import STANDARD_ARM_NAMES
from sluice.bench.runner_virtual import FULL_GATEWAY, EngineSetup, Gateway

SWEEP = "sweep"  # goodput: the highest load whose p90 TTFT <= 2 s
FIXED = "fixed"  # one load, all arms
ISOLATION = "isolation"  # the protected tenant's TTFT loaded vs alone
FAIRNESS = "fairness"  # token service of backlogged tenants
THROUGHPUT = "throughput"  # a closed loop: requests per second and end-to-end latency

# (seed, load, quick) -> workload
Builder = Callable[[int, float, bool], w.Workload]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    kind: str
    build: Builder
    loads: tuple[float, ...]  # offered loads (QPS, or the scenario's load unit)
    quick_loads: tuple[float, ...]
    setup: EngineSetup = field(default_factory=EngineSetup)
    arms: tuple[str, ...] = STANDARD_ARM_NAMES
    protected: tuple[str, ...] = ()  # ISOLATION: tenants whose TTFT must hold
    load_unit: str = "QPS"
    warmup_frac: float = 0.1  # share of the arrival window left out of latency statistics
    gateway: Gateway = FULL_GATEWAY  # what the gateway shows Sluice of each response

    def loads_for(self, quick: bool) -> tuple[float, ...]:
        return self.quick_loads if quick else self.loads


def _dur(quick: bool, full: float, short: float) -> float:
    return short if quick else full


def _shared_prefix(seed: int, load: float, quick: bool) -> w.Workload:
    return w.shared_prefix(
        seed=seed,
        qps=load,
        duration_s=_dur(quick, 90, 40),
        groups=48,
        system_tokens=3000,
        question_tokens=200,
        output_tokens=100,
    )


# KV-event scenarios: where the engines' truth and Sluice's guess part ways. The pool is the
# shared-prefix one (4 engines x 4,000 blocks = 256k tokens of KV cache).
KV_EVENT_ARMS = ("sluice-default", "sluice-precise")
_KV_SETUP = EngineSetup(overrides={"num_gpu_blocks": 4000})


def _prefix_eviction(seed: int, load: float, quick: bool) -> w.Workload:
    """96 groups x 3,000-token prefixes: a 288k-token working set, more than the pool holds."""
    workload = w.shared_prefix(
        seed=seed,
        qps=load,
        duration_s=_dur(quick, 90, 40),
        groups=96,
        system_tokens=3000,
        question_tokens=200,
        output_tokens=100,
    )
    return replace(workload, name="prefix-eviction")


def _prefix_bypass(seed: int, load: float, quick: bool) -> w.Workload:
    """shared-prefix, with 30% of the requests sent to random engines behind Sluice's back."""
    return w.bypassing(_shared_prefix(seed, load, quick), share=0.3, seed=seed)


def _prefix_restarts(seed: int, load: float, quick: bool) -> w.Workload:
    """shared-prefix, with each of the 4 engines restarted once, staggered, mid-run."""
    duration = _dur(quick, 90, 40)
    return w.restarting(
        _shared_prefix(seed, load, quick), engines=4, first_s=0.3 * duration, every_s=0.1 * duration
    )


def _hot_prefix(seed: int, load: float, quick: bool) -> w.Workload:
    return w.hot_prefix(
        seed=seed, qps=load, duration_s=_dur(quick, 60, 20), system_tokens=4000, output_tokens=100
    )


def _sharegpt(seed: int, load: float, quick: bool) -> w.Workload:
    return w.sharegpt_like(seed=seed, qps=load, duration_s=_dur(quick, 60, 20))


def _bursty(seed: int, load: float, quick: bool) -> w.Workload:
    return w.bursty(seed=seed, qps=load, duration_s=_dur(quick, 60, 20), burst=16)


def _multi_turn(seed: int, load: float, quick: bool) -> w.Workload:
    return w.multi_turn(
        seed=seed,
        users=int(load),
        rounds=_dur_int(quick, 8, 4),
        think_s=3.0,
        system_tokens=1000,
        turn_tokens=200,
        answer_tokens=100,
    )


def _dur_int(quick: bool, full: int, short: int) -> int:
    return short if quick else full


# The closed loop a new user tries first (issue #13): 32 clients, unique ~500-word prompts,
# 64 tokens out; `load` is the streamed share.
CLOSED_CLIENTS, CLOSED_PROMPT, CLOSED_OUTPUT = 32, 650, 64
THROUGHPUT_ARMS = ("round-robin", "least-queue", "upstream-default", "sluice-default")


def _closed_loop(seed: int, load: float, quick: bool) -> w.Workload:
    return w.closed_loop(
        seed=seed,
        clients=CLOSED_CLIENTS,
        requests=_dur_int(quick, 1024, 256),
        prompt_tokens=CLOSED_PROMPT,
        output_tokens=CLOSED_OUTPUT,
        streamed_share=load,
    )


def _lora_mix(seed: int, load: float, quick: bool) -> w.Workload:
    return w.lora_mix(
        seed=seed,
        qps=load,
        duration_s=_dur(quick, 60, 20),
        adapters=8,
        prompt_tokens=300,
        output_tokens=100,
    )


# Multi-tenant scenarios. Offered load is in units of the pool's capacity, *measured in the
# same run*: `pool_capacity` offers the scenario's own mix far past what the pool can serve,
# through a queue that keeps every engine at its full batch (max_num_seqs in flight each, so no
# engine queue starves decodes of the step budget), and counts the tokens (prompt + output)
# completed per second once the batches are full. "150%" then means 1.5x that many tokens per
# second offered. (Offering overload straight to the engines would not measure capacity: an
# engine whose waiting queue never empties fills every step's token budget with new prefills,
# and its running requests crawl.)

# Chat-like lengths (ShareGPT-ish: lognormal, prompt median 250, output median 150).
CHAT_PROMPT, CHAT_OUTPUT, CHAT_SIGMA, CHAT_MAX_PROMPT = 250, 150, 0.9, 2000
INTERACTIVE_SHARE = 0.3  # two-bands: the interactive class offers 30% of capacity
LIGHT_SHARE = 0.1  # noisy-neighbour: the light tenant offers 10% of capacity


def _chat(name: str, objective: str | None, qps: float) -> w.TenantSpec:
    return w.TenantSpec(
        name,
        objective,
        qps,
        CHAT_PROMPT,
        CHAT_OUTPUT,
        sigma=CHAT_SIGMA,
        max_prompt_tokens=CHAT_MAX_PROMPT,
        max_output_tokens=600,
    )


def _two_band_specs(interactive_tps: float, batch_tps: float) -> tuple[w.TenantSpec, ...]:
    mean = _chat("x", None, 1.0).mean_tokens()
    return (
        _chat("interactive", "interactive", interactive_tps / mean),
        _chat("batch", "batch", batch_tps / mean),
    )


# intermittent: the interactive class comes and goes (on 5 s, off 15 s), at this share of the
# capacity while on; batch fills the average offered load to the scenario's load.
INTERMITTENT_ON_OFF, INTERMITTENT_PEAK = (5.0, 15.0), 0.6


def _intermittent_specs(interactive_tps: float, batch_tps: float) -> tuple[w.TenantSpec, ...]:
    interactive, batch = _two_band_specs(interactive_tps, batch_tps)
    return (replace(interactive, on_off=INTERMITTENT_ON_OFF), batch)


def _noisy_specs(light_tps: float, heavy_tps: float) -> tuple[w.TenantSpec, ...]:
    return (
        _chat("light", None, light_tps / _chat("x", None, 1.0).mean_tokens()),
        w.TenantSpec("heavy", None, heavy_tps / 4200, 4000, 200),
    )


def _fairness_specs(a_tps: float, b_tps: float) -> tuple[w.TenantSpec, ...]:
    return (
        w.TenantSpec("A", None, a_tps / 8100, 8000, 100),
        w.TenantSpec("B", None, b_tps / 600, 500, 100),
    )


def _priority_mix_specs(critical_tps: float, rest_tps: float) -> tuple[w.TenantSpec, ...]:
    """llm-d-benchmark's priority mix: critical (100) at `critical_tps`, normal (0) and batch
    (-10) splitting the rest evenly; two fairness ids per class; chat-like lengths."""
    return wo.priority_specs(
        {"critical": critical_tps, "normal": rest_tps / 2, "batch": rest_tps / 2},
        prompt_tokens=CHAT_PROMPT,
        output_tokens=CHAT_OUTPUT,
        sigma=CHAT_SIGMA,
        max_prompt_tokens=CHAT_MAX_PROMPT,
        max_output_tokens=600,
    )


# scenario -> (specs from tokens/s per tenant, objectives, each tenant's share of the mix)
_MIXES: dict[str, tuple[Callable[[float, float], tuple[w.TenantSpec, ...]], dict[str, int]]] = {
    "two-bands": (_two_band_specs, {"interactive": 10, "batch": 0}),
    "intermittent": (_intermittent_specs, {"interactive": 10, "batch": 0}),
    "sheddable-batch": (_two_band_specs, {"interactive": 10, "batch": -1}),
    "noisy-neighbour": (_noisy_specs, {}),
    "fairness": (_fairness_specs, {}),
    "priority-mix": (_priority_mix_specs, {c.objective: c.priority for c in wo.PRIORITY_CLASSES}),
}
PROBE_TPS = 60_000.0  # offered tokens/s while probing: well past the 4-engine pool's capacity
KV_TOKENS = 27_000 * 16  # llama-8b-h100's KV cache, in tokens
_PROBE_SPLIT = {
    "two-bands": 0.3,
    "intermittent": 0.3,
    "sheddable-batch": 0.3,
    "noisy-neighbour": 0.1,
    "fairness": 0.5,
    "priority-mix": 0.2,
}


@functools.lru_cache(maxsize=64)
def pool_capacity(name: str, seed: int) -> float:
    """Tokens/s (prompt + output) the default pool completes when saturated by `name`'s mix
    (the second half of a 40 s probe; the same for quick and full runs)."""
    from sluice.bench.arms import arm_by_name
    from sluice.bench.runner_virtual import RunLimits, run_virtual

    make, objectives = _MIXES[name]
    split = _PROBE_SPLIT[name]
    duration = 40.0
    specs = make(split * PROBE_TPS, (1 - split) * PROBE_TPS)
    workload = w.tenants(
        f"{name}-probe", seed=seed, duration_s=duration, specs=specs, objectives=objectives
    )
    # full batches: max_num_seqs per engine, fewer for long requests (as many as fit in 80% of
    # the KV cache, and few enough that the first batch's prefills take seconds, not minutes:
    # 120,000 tokens ~ 24 s of prefill); the overload waits in Sluice's queue. None of the
    # room's other rules (pending-prefill budget, lower-band cap, heavy hitter's headroom,
    # steering) and no heavy hitter (fair-share window 0): the probe measures what the engines
    # can do, and a change to the room does not change the load the scenarios offer. Nor does a
    # change to the default's scorers' parameters: the KV scorer reads the page alone
    # (`kvcount=0`), as when the scenarios' loads were set.
    largest = max(s.mean_tokens() for s in specs)
    cap = max(1, min(256, int(0.8 * KV_TOKENS / largest), int(120_000 / largest)))
    run = run_virtual(
        workload,
        arm_by_name(
            f"sluice@inflight={cap},qd=1000000,kvmax=1.0,sharewin=0,"
            "prefill=none,lowinflight=none,headroom=0,steer=0,kvcount=0"
        ),
        EngineSetup(),
        seed=seed,
        limits=RunLimits(drain_s=0.0),
    )
    start = duration / 2
    served = sum(
        r.served_tokens
        for r in run.records
        if r.completed_at is not None and start <= r.completed_at <= duration
    )
    return served / (duration - start)


def _mix(name: str, seed: int, quick: bool, first_share: float, load: float) -> w.Workload:
    cap = pool_capacity(name, seed)
    make, objectives = _MIXES[name]
    specs = make(first_share * cap, max(0.0, load - first_share) * cap)
    return w.tenants(
        name, seed=seed, duration_s=_dur(quick, 60, 20), specs=specs, objectives=objectives
    )


def _two_bands(seed: int, load: float, quick: bool) -> w.Workload:
    """Interactive (priority 10) at 30% of capacity plus batch (priority 0) filling the rest to
    `load` x capacity; both chat-like."""
    return _mix("two-bands", seed, quick, INTERACTIVE_SHARE, load)


def _intermittent(seed: int, load: float, quick: bool) -> w.Workload:
    """Interactive (priority 10) sending only 5 s of every 20, at 60% of capacity while on;
    batch (priority 0) filling the average offered load to `load` x capacity."""
    cap = pool_capacity("intermittent", seed)
    on, off = INTERMITTENT_ON_OFF
    average = INTERMITTENT_PEAK * on / (on + off)
    make, objectives = _MIXES["intermittent"]
    specs = make(INTERMITTENT_PEAK * cap, max(0.0, load - average) * cap)
    return w.tenants(
        "intermittent",
        seed=seed,
        duration_s=_dur(quick, 80, 40),
        specs=specs,
        objectives=objectives,
    )


def _sheddable(seed: int, load: float, quick: bool) -> w.Workload:
    return _mix("sheddable-batch", seed, quick, INTERACTIVE_SHARE, load)


def _noisy(seed: int, load: float, quick: bool) -> w.Workload:
    """One band; a light chat tenant at 10% of capacity, a heavy tenant with 4,000-token
    prompts filling the rest to `load` x capacity."""
    return _mix("noisy-neighbour", seed, quick, LIGHT_SHARE, load)


def _fairness(seed: int, load: float, quick: bool) -> w.Workload:
    """VTC's classic: two backlogged tenants in one band, A with 8k-token prompts offering 5x
    its fair share (half the capacity), B with 500-token prompts offering 1.5x its share."""
    cap = pool_capacity("fairness", seed)
    make, objectives = _MIXES["fairness"]
    specs = make(5 * 0.5 * cap * load, 1.5 * 0.5 * cap * load)
    return w.tenants(
        "fairness", seed=seed, duration_s=_dur(quick, 60, 20), specs=specs, objectives=objectives
    )


# -- workloads from outside (issue #14 item 4; docs/bench.md has the upstream originals) -------

# llm-d's optimized-baseline ladder (inference-perf shared_prefix: 150 groups x 5 prompts,
# 6,000 + 1,200 tokens in, 1,000 out; a 15 req/s warm-up, then Poisson 3 -> 60 req/s on 8
# engines), scaled to 4 engines: half the groups and rates, half the prompt, a quarter of the
# output (docs/bench.md says why), and a KV cache that keeps the prefixes' working set 2.6x
# one engine's cache (upstream: ~3x).
LADDER_GROUPS, LADDER_PROMPTS = 75, 5
LADDER_SYSTEM, LADDER_QUESTION, LADDER_OUTPUT = 3008, 600, 250
LADDER_WARMUP_QPS = 7.5
LADDER_RATES = (1.5, 5, 7.5, 10, 11, 12.5, 15, 17.5, 20, 21.5, 23, 24.5, 26, 27.5, 28.5, 30)
_LADDER_SETUP = EngineSetup(overrides={"num_gpu_blocks": 5400})


def _ladder_stages(load: float, quick: bool) -> tuple[tuple[float, float], ...]:
    """The warm-up stage, then one rung of the ladder (each rung is its own run)."""
    return ((LADDER_WARMUP_QPS, _dur(quick, 50, 20)), (load, _dur(quick, 50, 20)))


def _shared_prefix_ladder(seed: int, load: float, quick: bool) -> w.Workload:
    return wo.shared_prefix_ladder(
        seed=seed,
        stages=_ladder_stages(load, quick),
        groups=LADDER_GROUPS,
        prompts_per_group=LADDER_PROMPTS,
        system_tokens=LADDER_SYSTEM,
        question_tokens=LADDER_QUESTION,
        output_tokens=LADDER_OUTPUT,
    )


def _priority_mix(seed: int, load: float, quick: bool) -> w.Workload:
    """Critical (100) at 20% of capacity; normal (0) and batch (-10) splitting the rest of
    `load` x capacity evenly."""
    cap = pool_capacity("priority-mix", seed)
    specs = _priority_mix_specs(0.2 * cap, max(0.0, load - 0.2) * cap)
    return wo.priority_mix(seed=seed, duration_s=_dur(quick, 60, 20), specs=specs)


def _shared_prefix_chat(seed: int, load: float, quick: bool) -> w.Workload:
    return wo.shared_prefix_chat(
        seed=seed,
        qps=load,
        duration_s=_dur(quick, 90, 30),
        groups=9,
        prompts_per_group=5,
        system_tokens=2000,
        question_tokens=200,
        answer_tokens=100,
    )


def _agentic(seed: int, load: float, quick: bool) -> w.Workload:
    return wo.agentic_fanout(
        seed=seed,
        sessions_per_s=load,
        duration_s=_dur(quick, 60, 30),
        tools_tokens=3008,
        context_tokens=4000,
        task_tokens=300,
        fanout=4,
        subtask_tokens=300,
        output_tokens=200,
        answer_s=3.0,
        tool_s=2.0,
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "shared-prefix",
            "48 groups x (3,000-token system prompt + 200-token question), 100 out; "
            "working set ~2x one engine's KV cache; QPS sweep for goodput",
            SWEEP,
            _shared_prefix,
            loads=(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24, 28, 32, 40),
            quick_loads=(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24, 28, 32),
            setup=EngineSetup(overrides={"num_gpu_blocks": 4000}),
            warmup_frac=0.25,  # every arm starts cold; goodput is about the steady state
        ),
        Scenario(
            "prefix-eviction",
            "96 groups x (3,000-token system prompt + 200-token question), 100 out: a "
            "working set of 288k tokens, more than the pool's 256k-token KV cache; approximate "
            "vs precise (KV events) prefix routing; QPS sweep for goodput",
            SWEEP,
            _prefix_eviction,
            loads=(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24, 28),
            quick_loads=(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24),
            setup=_KV_SETUP,
            arms=KV_EVENT_ARMS,
            warmup_frac=0.25,
        ),
        Scenario(
            "prefix-bypass",
            "shared-prefix with 30% of the requests reaching random engines without Sluice "
            "(another gateway, direct clients); approximate vs precise; QPS sweep",
            SWEEP,
            _prefix_bypass,
            loads=(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24, 28, 32),
            quick_loads=(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24, 28),
            setup=_KV_SETUP,
            arms=KV_EVENT_ARMS,
            warmup_frac=0.25,
        ),
        Scenario(
            "prefix-restarts",
            "shared-prefix with every engine restarted once mid-run (staggered; its requests "
            "fail, its cache is empty after); approximate vs precise; QPS sweep",
            SWEEP,
            _prefix_restarts,
            loads=(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24, 28, 32),
            quick_loads=(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24, 28),
            setup=_KV_SETUP,
            arms=KV_EVENT_ARMS,
            warmup_frac=0.25,
        ),
        Scenario(
            "hot-prefix",
            "one 4,000-token prefix shared by every request (stickiness vs spreading)",
            FIXED,
            _hot_prefix,
            loads=(16,),
            quick_loads=(16,),
        ),
        Scenario(
            "multi-turn",
            "chat sessions: shared 1,000-token system prompt, history grows 300 "
            "tokens per round; load = concurrent users",
            FIXED,
            _multi_turn,
            loads=(64,),
            quick_loads=(48,),
            load_unit="users",
        ),
        Scenario(
            "sharegpt",
            "no sharing; ShareGPT-like lognormal prompt/output lengths (control)",
            FIXED,
            _sharegpt,
            loads=(20,),
            quick_loads=(20,),
        ),
        Scenario(
            "bursty",
            "bursts of 16 simultaneous 1k/128 requests, gamma gaps (cv 3)",
            FIXED,
            _bursty,
            loads=(12,),
            quick_loads=(12,),
        ),
        Scenario(
            "lora-mix",
            "8 LoRA adapters with Zipf popularity, max_loras 2 per engine",
            FIXED,
            _lora_mix,
            loads=(16,),
            quick_loads=(16,),
            setup=EngineSetup(overrides={"max_loras": 2}),
        ),
        Scenario(
            "non-streamed",
            "closed loop of 32 clients, unique 650-token prompts, 64 tokens out, no response "
            "streamed: the first byte is the last, so no rule may wait for it",
            THROUGHPUT,
            _closed_loop,
            loads=(0.0,),
            quick_loads=(0.0,),
            arms=THROUGHPUT_ARMS,
            load_unit="streamed share",
        ),
        Scenario(
            "mixed-streaming",
            "as non-streamed, half the requests streamed",
            THROUGHPUT,
            _closed_loop,
            loads=(0.5,),
            quick_loads=(0.5,),
            arms=THROUGHPUT_ARMS,
            load_unit="streamed share",
        ),
        Scenario(
            "no-response",
            "as mixed-streaming behind a gateway that never shows Sluice the response (Envoy "
            "with response processing off): Sluice only learns that each request ended",
            THROUGHPUT,
            _closed_loop,
            loads=(0.5,),
            quick_loads=(0.5,),
            arms=THROUGHPUT_ARMS,
            load_unit="streamed share",
            gateway=Gateway(sees_response=False),
        ),
        Scenario(
            "two-bands",
            "both classes chat-like (ShareGPT-ish lognormal lengths: prompt median 250, max "
            "2,000; output median 150, max 600): interactive (priority 10) offering 30% of the "
            "pool's capacity + batch (priority 0) filling the offered load to 150%; capacity "
            "measured in the same run (tokens/s of this mix with the pool saturated)",
            ISOLATION,
            _two_bands,
            loads=(1.5,),
            quick_loads=(1.5,),
            protected=("interactive",),
            load_unit="x capacity",
        ),
        Scenario(
            "intermittent",
            "as two-bands, but the interactive class comes and goes: 5 s on (60% of capacity) "
            "and 15 s off; batch fills the average to 150%. A reserve kept for a class that is "
            "gone is an idle slot while batch waits",
            ISOLATION,
            _intermittent,
            loads=(1.5,),
            quick_loads=(1.5,),
            arms=(*STANDARD_ARM_NAMES, "sluice@lowinflight=64", "sluice@holdmin=100000"),
            protected=("interactive",),
            load_unit="x capacity",
        ),
        Scenario(
            "sheddable-batch",
            "as two-bands, with the batch class sheddable (priority -1)",
            ISOLATION,
            _sheddable,
            loads=(1.5,),
            quick_loads=(1.5,),
            protected=("interactive",),
            load_unit="x capacity",
        ),
        Scenario(
            "noisy-neighbour",
            "one band: a light chat tenant (ShareGPT-ish lengths) offering 10% of capacity + a "
            "heavy tenant (4,000-token prompts, 200 out) filling the offered load to 150% "
            "(~2.8x its fair share); capacity measured in the same run",
            ISOLATION,
            _noisy,
            loads=(1.5,),
            quick_loads=(1.5,),
            protected=("light",),
            load_unit="x capacity",
        ),
        Scenario(
            "fairness",
            "two backlogged tenants in one band (VTC's test): A with 8,000-token prompts "
            "offering 5x its fair share (half the measured capacity), B with 500-token prompts "
            "offering 1.5x its share; 100 output tokens each; token service over time",
            FAIRNESS,
            _fairness,
            loads=(1.5,),
            quick_loads=(1.5,),
            load_unit="x capacity",
        ),
        Scenario(
            "shared-prefix-ladder",
            "llm-d's optimized-baseline shape (inference-perf shared_prefix) scaled to 4 "
            "engines: 75 groups x 5 fixed prompts (3,008-token system prompt + 600-token "
            "question), 250 out, cycled in a shuffled order; each rung of the Poisson ladder "
            "(1.5 -> 30 req/s) follows a 7.5 req/s warm-up stage; goodput",
            SWEEP,
            _shared_prefix_ladder,
            loads=LADDER_RATES,
            quick_loads=LADDER_RATES,
            setup=_LADDER_SETUP,
            warmup_frac=0.5,  # the warm-up stage is left out, as upstream reports per stage
        ),
        Scenario(
            "priority-mix",
            "llm-d-benchmark's priority mix: critical (priority 100) offering 20% of capacity, "
            "normal (0) and batch (-10) 65% each (150% in all), two fairness ids per class, "
            "chat-like lengths (as two-bands); capacity measured in the same run",
            ISOLATION,
            _priority_mix,
            loads=(1.5,),
            quick_loads=(1.5,),
            protected=("critical-0", "critical-1"),
            load_unit="x capacity",
        ),
        Scenario(
            "shared-prefix-chat",
            "inference-perf shared_prefix with enable_multi_turn_chat: 9 groups x 5 users, "
            "2,000-token system prompt; each round sends the previous prompt + its 100-token "
            "answer + a 200-token question; a user's rounds ~3.75 s apart",
            FIXED,
            _shared_prefix_chat,
            loads=(12,),
            quick_loads=(12,),
        ),
        Scenario(
            "agentic",
            "agent sessions: a 3,008-token tool preamble shared by all + 4,000 tokens of the "
            "session's own context; a plan request, then 4 sub-requests at once sharing the "
            "plan's prompt and answer, then a combine request; 200 tokens out each; each step "
            "3 s + a tool call (exponential, mean 2 s) after the one before",
            FIXED,
            _agentic,
            loads=(0.5,),
            quick_loads=(0.5,),
            load_unit="sessions/s",
        ),
        Scenario(
            "agentic-busy",
            "as agentic, twice the sessions per second",
            FIXED,
            _agentic,
            loads=(1.0,),
            quick_loads=(1.0,),
            load_unit="sessions/s",
        ),
    )
}
