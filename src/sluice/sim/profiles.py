"""Named hardware/model profiles: the step-cost coefficients and the engine's capacity.

A step of the simulated engine costs

    step_s = a + b·prefill_tokens + c·decoding_seqs + d·context_tokens_attended

and every request additionally pays ``frontend_s`` once (API server, tokenization, IPC to the
engine core) before it reaches the waiting queue. Sources of each number: docs/sim.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sluice.sim.block_hash import HASH_ALGORITHMS


@dataclass(frozen=True, slots=True)
class CostProfile:
    """Step-time coefficients, in seconds."""

    step_overhead_s: float  # a: fixed cost of one forward pass (kernel launches, sampling)
    prefill_token_s: float  # b: per prompt token computed in the step
    decode_seq_s: float  # c: per sequence decoding one token in the step
    context_token_s: float  # d: per token of KV read by attention in the step
    frontend_s: float  # once per request, before it reaches the engine's waiting queue
    lora_load_s: float  # loading an adapter that is not resident


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Capacity and policy of one engine (vLLM's EngineArgs that matter for routing)."""

    num_gpu_blocks: int = 27_000
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 32_768
    scheduling_policy: str = "fcfs"  # or "priority": lower value is served sooner, as vLLM
    max_loras: int = 1
    enable_prefix_caching: bool = True
    prefix_caching_hash_algo: str = "sha256"  # vLLM's --prefix-caching-hash-algo default
    # vLLM seeds its first block's parent hash from PYTHONHASHSEED and uses random bytes when it
    # is unset: None reproduces that (each engine then hashes differently).
    hash_seed: str | None = None
    enable_kv_cache_events: bool = False  # vLLM's KVEventsConfig.enable_kv_cache_events

    def __post_init__(self) -> None:
        if self.scheduling_policy not in ("fcfs", "priority"):
            raise ValueError(
                f"scheduling_policy must be fcfs or priority, not {self.scheduling_policy!r}"
            )
        for name in ("num_gpu_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_loras < 0:
            raise ValueError("max_loras must be >= 0")
        if self.prefix_caching_hash_algo not in HASH_ALGORITHMS:
            raise ValueError(
                f"prefix_caching_hash_algo must be one of {', '.join(HASH_ALGORITHMS)}, "
                f"not {self.prefix_caching_hash_algo!r}"
            )


@dataclass(frozen=True, slots=True)
class Profile:
    """A named preset: cost coefficients plus the capacity that hardware would have."""

    name: str
    cost: CostProfile
    engine: EngineConfig
    description: str


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="llama-8b-h100",
            description="Llama-3.1-8B, bf16, one H100 80GB (the default)",
            cost=CostProfile(
                step_overhead_s=0.011,
                prefill_token_s=0.0002,
                decode_seq_s=0.0001,
                context_token_s=2e-8,
                frontend_s=0.018,
                lora_load_s=0.050,
            ),
            engine=EngineConfig(num_gpu_blocks=27_000, max_num_seqs=256),
        ),
        Profile(
            name="llama-70b-h100-tp4",
            description="Llama-3.1-70B, bf16, four H100 80GB with tensor parallelism 4",
            cost=CostProfile(
                step_overhead_s=0.022,
                prefill_token_s=0.00045,
                decode_seq_s=0.0002,
                context_token_s=5e-8,
                frontend_s=0.025,
                lora_load_s=0.150,
            ),
            engine=EngineConfig(num_gpu_blocks=26_000, max_num_seqs=256),
        ),
        Profile(
            name="qwen-1.5b-l4",
            description="Qwen2.5-1.5B, bf16, one L4 24GB (small / edge)",
            cost=CostProfile(
                step_overhead_s=0.012,
                prefill_token_s=0.0001,
                decode_seq_s=0.00005,
                context_token_s=1e-8,
                frontend_s=0.015,
                lora_load_s=0.030,
            ),
            engine=EngineConfig(
                num_gpu_blocks=36_000, max_num_seqs=128, max_num_batched_tokens=2048
            ),
        ),
        Profile(
            name="zero-latency",
            description="every cost 0: measures proxy overhead, not the engine",
            cost=CostProfile(0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
            engine=EngineConfig(
                num_gpu_blocks=100_000, max_num_seqs=1024, max_num_batched_tokens=65_536
            ),
        ),
    )
}

DEFAULT_PROFILE = "llama-8b-h100"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown profile {name!r}; known: {known}") from None


def with_engine(profile: Profile, **overrides: object) -> EngineConfig:
    """The profile's engine config with some fields overridden (None values are ignored)."""
    return replace(profile.engine, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
