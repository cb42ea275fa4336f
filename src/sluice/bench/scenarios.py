"""The named scenarios `sluice bench` runs: a workload shape, the simulated pool, which arms,
and what is measured (a load sweep for goodput, one load, or loaded vs unloaded isolation).

Sizes are scaled down from the published shapes (landscape §8.2) so that a quick run fits in
seconds, keeping the ratios that matter: e.g. shared-prefix's working set is ~2x one
engine's KV cache, as llm-d's 150 groups x 6,000 tokens is on an H100.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sluice.bench import workloads as w
from sluice.bench.arms import STANDARD_ARM_NAMES
from sluice.bench.runner_virtual import EngineSetup

SWEEP = "sweep"  # goodput: the highest load whose p90 TTFT <= 2 s
FIXED = "fixed"  # one load, all arms
ISOLATION = "isolation"  # the protected tenant's TTFT loaded vs alone
FAIRNESS = "fairness"  # token service of backlogged tenants

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


def _lora_mix(seed: int, load: float, quick: bool) -> w.Workload:
    return w.lora_mix(
        seed=seed,
        qps=load,
        duration_s=_dur(quick, 60, 20),
        adapters=8,
        prompt_tokens=300,
        output_tokens=100,
    )


# Multi-tenant scenarios. Capacity of the default pool (4 x llama-8b-h100) for the batch shape
# (1,000 in / 200 out) is about 20 req/s; `load` is the batch tenant's share of that.
BATCH_CAPACITY_QPS = 20.0
INTERACTIVE = w.TenantSpec("interactive", "interactive", 6.0, 200, 50)


def _two_bands(seed: int, load: float, quick: bool) -> w.Workload:
    """Interactive (priority 10) at ~30% of capacity plus batch (priority 0) filling the rest to
    `load` x capacity."""
    batch_qps = max(0.0, load - 0.3) * BATCH_CAPACITY_QPS
    specs = (INTERACTIVE, w.TenantSpec("batch", "batch", batch_qps, 1000, 200))
    return w.tenants(
        "two-bands",
        seed=seed,
        duration_s=_dur(quick, 60, 20),
        specs=specs,
        objectives={"interactive": 10, "batch": 0},
    )


def _sheddable(seed: int, load: float, quick: bool) -> w.Workload:
    batch_qps = max(0.0, load - 0.3) * BATCH_CAPACITY_QPS
    specs = (INTERACTIVE, w.TenantSpec("batch", "batch", batch_qps, 1000, 200))
    return w.tenants(
        "sheddable-batch",
        seed=seed,
        duration_s=_dur(quick, 60, 20),
        specs=specs,
        objectives={"interactive": 10, "batch": -1},
    )


def _noisy(seed: int, load: float, quick: bool) -> w.Workload:
    """One band; the heavy tenant sends long prompts at 5x the light one's share."""
    heavy_qps = max(0.0, load - 0.1) * BATCH_CAPACITY_QPS * 1000 / 4000
    specs = (
        w.TenantSpec("light", None, 2.0, 300, 60),
        w.TenantSpec("heavy", None, heavy_qps, 4000, 200),
    )
    return w.tenants(
        "noisy-neighbour", seed=seed, duration_s=_dur(quick, 60, 20), specs=specs, objectives={}
    )


def _fairness(seed: int, load: float, quick: bool) -> w.Workload:
    """VTC's classic: two backlogged tenants in one band, A with 8k-token prompts at 5x its
    share, B with 500-token prompts."""
    share = load * BATCH_CAPACITY_QPS * 1200 / 2
    specs = (
        w.TenantSpec("A", None, 5 * share / 8200, 8000, 200),
        w.TenantSpec("B", None, share / 700, 500, 200),
    )
    return w.tenants(
        "fairness", seed=seed, duration_s=_dur(quick, 60, 20), specs=specs, objectives={}
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
            "two-bands",
            "interactive (priority 10, 200/50) at 30% of capacity + batch (priority 0, "
            "1,000/200); total offered load 150%",
            ISOLATION,
            _two_bands,
            loads=(1.5,),
            quick_loads=(1.5,),
            protected=("interactive",),
            load_unit="x capacity",
        ),
        Scenario(
            "sheddable-batch",
            "interactive (priority 10) + sheddable batch (priority -1) at 150% load",
            ISOLATION,
            _sheddable,
            loads=(1.5,),
            quick_loads=(1.5,),
            protected=("interactive",),
            load_unit="x capacity",
        ),
        Scenario(
            "noisy-neighbour",
            "one band: light tenant (300/60, 2 req/s) + heavy tenant (4,000/200) pushing the "
            "pool to 150%",
            ISOLATION,
            _noisy,
            loads=(1.5,),
            quick_loads=(1.5,),
            protected=("light",),
            load_unit="x capacity",
        ),
        Scenario(
            "fairness",
            "two backlogged tenants in one band: A 8k-token prompts at 5x its share, B "
            "500-token prompts (VTC); token service over time",
            FAIRNESS,
            _fairness,
            loads=(1.5,),
            quick_loads=(1.5,),
            load_unit="x capacity",
        ),
    )
}
