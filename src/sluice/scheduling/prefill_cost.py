"""Sluice's prefill-cost scorer: how much prefill a request's first token would wait behind.

An engine step costs about 0.2 ms per prefill token (8B model, one H100) and every request in the
step waits for the whole step, so a request's time to first token on an endpoint is driven by
the prompt tokens already sent there that have not produced a first byte (Sluice counts them)
plus its own uncached prompt (the prefix index's expected hit on that endpoint, when a
`prefix-cache-scorer` ran before this scorer in the profile). One estimate covers both cache
locality and "do not stack prefills": a hot prefix spreads once the endpoint holding it is busy
prefilling for others. Pending prefills count pool-wide, as in the room's budget: with
active-active replicas the others' too, as of the last sync (`peer_pending_prefill_tokens`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from sluice.api.scalars import finite
from sluice.datalayer.registry import EndpointState
from sluice.scheduling.framework import PREFIX_MATCH, CycleState, PluginContext, Scorer
from sluice.scheduling.parameters import PluginParameters, positive


class PrefillCostScorer(Scorer):
    """score = 1 / (1 + (pending prefill tokens + own uncached tokens) / tokenScale)."""

    type_name = "prefill-cost-scorer"
    consumes = frozenset({PREFIX_MATCH})  # optional: without it, every token counts as uncached

    bounded = True

    class Parameters(PluginParameters):
        token_scale: Annotated[float, positive(finite)] = 2048.0

    def __init__(self, name: str, token_scale: float) -> None:
        super().__init__(name)
        self._inv_scale = 1.0 / token_scale

    @classmethod
    def from_params(cls, name: str, params: Parameters, ctx: PluginContext) -> Scorer:
        return cls(name, params.token_scale)

    def score(self, cycle: CycleState, candidates: Sequence[EndpointState]) -> list[float]:
        prompt = cycle.request.prompt_tokens
        inv_scale = self._inv_scale
        match = cycle.data.get(PREFIX_MATCH)
        if match is None:
            return [
                1.0
                / (
                    1.0
                    + (s.pending_prefill_tokens + s.peer_pending_prefill_tokens + prompt)
                    * inv_scale
                )
                for s in candidates
            ]
        by_name, inv_total = match
        out: list[float] = []
        for s in candidates:
            own = prompt * (1.0 - by_name.get(s.endpoint.name, 0) * inv_total)
            pending = s.pending_prefill_tokens + s.peer_pending_prefill_tokens
            out.append(1.0 / (1.0 + (pending + own) * inv_scale))
        return out
