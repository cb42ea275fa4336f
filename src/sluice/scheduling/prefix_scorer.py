"""`prefix-cache-scorer`: prefer endpoints that likely hold the prompt's prefix in KV cache.

Score = leading blocks an endpoint holds contiguously / blocks in the prompt; with upstream's
`matchLengthWeight` w > 0, w·min(1, matched tokens / `matchLengthScaleTokens`)² + (1−w)·that
ratio, so a long match outweighs a short prompt matched whole. The index
learns from Sluice's own dispatches (upstream PreRequest): the chosen endpoint is assumed to
cache every block of the prompt afterwards.

`computingPrefixes` (Sluice's): also track which of those blocks are still being computed
(`prefix_computing.py`) until the request's prefill ends (`prefill`, vLLM's shared blocks) or it
completes (`completion`, llama.cpp's per-slot caches), so that the director can choose between
waiting for that first prefill and computing the prefix elsewhere. Unset, it follows the engine
(`--engine`): `completion` for llama.cpp (measured on two llama-servers: 4 cold prefills for 4
new prefixes instead of 8, benchmarks/llamacpp_duplicate_prefills.py), `none` — upstream's
behaviour — for the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, ClassVar

from sluice.api.scalars import Bool, Int, field_type, finite, text
from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointState
from sluice.requests.model import InferenceRequest
from sluice.scheduling.framework import (
    PREFIX_MATCH,
    CycleState,
    MatchObserver,
    PluginContext,
    Scorer,
)
from sluice.scheduling.parameters import PluginParameters, at_least
from sluice.scheduling.prefix_computing import Blocked, ComputingPrefixes
from sluice.scheduling.prefix_hashing import block_hashes
from sluice.scheduling.prefix_index import PrefixIndex

CHARS_PER_TOKEN = 4
_PENDING_MAX = 8192  # hashes kept between schedule and dispatch, per scorer
# computingPrefixes: when blocks being computed count as cached
COMPUTED_WHEN = ("none", "prefill", "completion")
# ... when the config does not say: llama.cpp shares a slot's cache only once the slot is free
ENGINE_COMPUTING = {"llamacpp": "completion"}


def _weight(value: Any) -> float:
    weight = finite(value)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"must be between 0.0 and 1.0, got {weight}")
    return weight


def _computed_when(value: Any) -> str:
    mode = text(value)
    if mode not in COMPUTED_WHEN:
        raise ValueError(f"must be one of {', '.join(COMPUTED_WHEN)}, got {mode!r}")
    return mode


class PrefixParameters(PluginParameters):
    # Upstream: non-positive values fall back to the defaults.
    block_size: Int = 64
    max_prefix_blocks_to_match: Int = 256
    lru_capacity_per_server: Int = 31_250
    auto_tune: Bool = True
    match_length_weight: Annotated[float, field_type(_weight)] = 0.0
    match_length_scale_tokens: Annotated[int, at_least(1)] = 8192
    computing_prefixes: Annotated[str | None, field_type(_computed_when)] = None  # the engine's


class PrefixCacheScorer(Scorer):
    type_name = "prefix-cache-scorer"
    produces = frozenset({PREFIX_MATCH})  # for scorers that run after it

    bounded = True

    # (declared as any plugin's: the precise scorer, one of these, has its own)
    Parameters: ClassVar[type[PluginParameters]] = PrefixParameters

    def __init__(
        self,
        name: str,
        *,
        block_size: int = 64,
        max_blocks: int = 256,
        lru_capacity: int = 31_250,
        auto_tune: bool = True,
        match_length_weight: float = 0.0,
        match_length_scale_tokens: int = 8192,
        computing: str = "none",
    ) -> None:
        super().__init__(name)
        if computing not in COMPUTED_WHEN:
            raise ValueError(f"computingPrefixes must be one of {COMPUTED_WHEN}, got {computing}")
        self.computing_mode = computing
        self.computing = ComputingPrefixes()
        # request id -> endpoint name -> where its match meets blocks still being computed
        self._blocked: dict[str, dict[str, Blocked]] = {}
        self.block_size = block_size
        self.max_blocks = max_blocks
        self.lru_capacity = lru_capacity
        self.auto_tune = auto_tune
        self.match_length_weight = match_length_weight
        self.match_length_scale_tokens = match_length_scale_tokens
        self.index = PrefixIndex()
        self.on_match: MatchObserver | None = None
        # Told of every addition to the index (scorer name, endpoint, hashes, capacity): how
        # active-active replicas share it (sluice.replicas.prefix_share).
        self.on_added: Callable[[str, str, list[int], int], None] | None = None
        self._pending: dict[str, tuple[list[int], int]] = {}  # request id -> (hashes, capacity)
        # request id -> (matched blocks by endpoint name, 1 / blocks): the expected cache hit,
        # read by the pipeline to estimate how much prefill a placement will really cost.
        self._matches: dict[str, tuple[dict[str, int], float]] = {}

    @classmethod
    def from_params(cls, name: str, params: PrefixParameters, ctx: PluginContext) -> Scorer:
        def given(value: int, default: int) -> int:
            return value if value > 0 else default

        return cls(
            name,
            block_size=given(params.block_size, 64),
            max_blocks=given(params.max_prefix_blocks_to_match, 256),
            lru_capacity=given(params.lru_capacity_per_server, 31_250),
            auto_tune=params.auto_tune,
            match_length_weight=params.match_length_weight,
            match_length_scale_tokens=params.match_length_scale_tokens,
            computing=params.computing_prefixes or ENGINE_COMPUTING.get(ctx.engine, "none"),
        )

    def _tuning(self, candidates: Sequence[EndpointState]) -> tuple[int, int]:
        """(block size in chars, LRU capacity in blocks), from vllm:cache_config_info when
        autoTune and the first candidate reports it (as upstream)."""
        block_size, capacity = self.block_size, self.lru_capacity
        if self.auto_tune and candidates:
            m = candidates[0].metrics
            if m.cache_block_size > 0:
                block_size = m.cache_block_size * CHARS_PER_TOKEN
            if m.cache_num_blocks > 0:
                capacity = m.cache_num_blocks
        return block_size, capacity

    def score(self, cycle: CycleState, candidates: Sequence[EndpointState]) -> list[float]:
        request = cycle.request
        block_size, capacity = self._tuning(candidates)
        hashes = block_hashes(request, block_size, self.max_blocks)
        self._remember(request.request_id, hashes, capacity)
        if not hashes:
            return [0.0] * len(candidates)
        matched = self.index.match(hashes)
        if not matched:
            if self.on_match is not None:
                self.on_match(0.0, 0)
            return [0.0] * len(candidates)
        inv_total = 1.0 / len(hashes)
        names = self.index.names
        # Only endpoints that matched need a lookup; everything else scores 0.
        by_name = {
            name: blocks for slot, blocks in matched.items() if (name := names[slot]) is not None
        }
        self._matches[request.request_id] = cycle.data[PREFIX_MATCH] = (by_name, inv_total)
        if len(self._matches) > _PENDING_MAX:
            del self._matches[next(iter(self._matches))]
        if self.computing_mode != "none" and len(self.computing):
            self._note_blocked(request.request_id, hashes, by_name)
        weight = self.match_length_weight
        if weight > 0.0:
            tokens = block_size / CHARS_PER_TOKEN / self.match_length_scale_tokens
            blended = {
                name: weight * min(1.0, blocks * tokens) ** 2 + (1.0 - weight) * blocks * inv_total
                for name, blocks in by_name.items()
            }
            scores = [blended.get(s.endpoint.name, 0.0) for s in candidates]
        else:
            scores = [by_name.get(s.endpoint.name, 0) * inv_total for s in candidates]
        if self.on_match is not None:
            best = max(by_name.values(), default=0)
            self.on_match(best * inv_total, best * block_size)
        return scores

    def _note_blocked(self, request_id: str, hashes: list[int], by_name: dict[str, int]) -> None:
        blocked = {}
        for name, blocks in by_name.items():
            found = self.computing.blocked(name, hashes, blocks)
            if found is not None:
                blocked[name] = found
        if blocked:
            self._blocked[request_id] = blocked
            if len(self._blocked) > _PENDING_MAX:
                del self._blocked[next(iter(self._blocked))]

    def blocked_on(self, request: InferenceRequest, endpoint: Endpoint) -> Blocked | None:
        """Where the last scoring of `request` found its match on `endpoint` running through
        blocks still being computed there (None: what matched is cached, or tracking is off)."""
        found = self._blocked.get(request.request_id)
        return None if found is None else found.get(endpoint.name)

    def is_computing(self, request_id: str) -> bool:
        return request_id in self.computing

    def computing_ahead(self, request_id: str) -> str | None:
        """An earlier request still using blocks this one waits for on its endpoint."""
        return self.computing.ahead_of(request_id)

    def prefill_ended(self, request_id: str) -> None:
        """The request's first byte came: with `prefill`, its blocks are shared cache now."""
        if self.computing_mode == "prefill":
            self.computing.end(request_id)

    def on_complete(self, request: InferenceRequest, target: Endpoint) -> None:
        self.computing.end(request.request_id)

    def _remember(self, request_id: str, hashes: list[int], capacity: int) -> None:
        pending = self._pending
        pending[request_id] = (hashes, capacity)
        if len(pending) > _PENDING_MAX:
            del pending[next(iter(pending))]

    def cached_fraction(self, request: InferenceRequest, endpoint: Endpoint) -> float:
        """The share of the prompt the last scoring of `request` expects `endpoint` to have
        cached (0 when nothing matched)."""
        entry = self._matches.get(request.request_id)
        if entry is None:
            return 0.0
        by_name, inv_total = entry
        return by_name.get(endpoint.name, 0) * inv_total

    def on_dispatch(
        self, cycle: CycleState | None, request: InferenceRequest, target: Endpoint
    ) -> None:
        self._matches.pop(request.request_id, None)
        self._blocked.pop(request.request_id, None)
        entry = self._pending.pop(request.request_id, None)
        if entry is None:  # dispatched without a cycle we saw: hash now
            entry = (block_hashes(request, self.block_size, self.max_blocks), self.lru_capacity)
        hashes, capacity = entry
        if not hashes:
            return
        if self.computing_mode == "prefill":  # it computes what the engine did not hold
            slot = self.index.slot(target.name)
            held = 0 if slot is None else self.index.match(hashes).get(slot, 0)
            self.computing.start(request.request_id, target.name, hashes[held:])
        elif self.computing_mode == "completion":  # its slot holds all of them until it ends
            self.computing.start(request.request_id, target.name, hashes)
        self.index.add(target.name, hashes, capacity)
        if self.on_added is not None:
            self.on_added(self.name, target.name, hashes, capacity)

    def index_size(self) -> int:
        return len(self.index)

    def prune(self, live_endpoints: set[str]) -> None:
        """Forget endpoints that left the pool (upstream purges them every 2 minutes)."""
        for server in self.index.servers():
            if server not in live_endpoints:
                self.index.remove_server(server)
