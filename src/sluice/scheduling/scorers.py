"""Load scorers: queue depth, KV-cache use, running requests (upstream) and in-flight load
(Sluice). Each returns one score in [0, 1] per candidate, higher = better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from sluice.api.scalars import Bool, finite
from sluice.datalayer.registry import EndpointState
from sluice.scheduling.framework import CycleState, PluginContext, Scorer
from sluice.scheduling.parameters import PluginParameters, positive

Scale = Annotated[float, positive(finite)]


def min_max_inverted(values: list[int]) -> list[float]:
    """Upstream's relative scoring: the smallest value scores 1, the largest 0; all equal → 1."""
    lo, hi = min(values), max(values)
    if hi == lo:
        return [1.0] * len(values)
    span = hi - lo
    return [(hi - v) / span for v in values]


class QueueScorer(Scorer):
    type_name = "queue-scorer"

    bounded = True

    """Min-max of the engine's waiting queue across the candidates."""

    def score(self, cycle: CycleState, candidates: Sequence[EndpointState]) -> list[float]:
        return min_max_inverted([s.metrics.waiting for s in candidates])


class RunningRequestsScorer(Scorer):
    type_name = "running-requests-size-scorer"

    bounded = True

    """Min-max of the engine's running requests across the candidates."""

    def score(self, cycle: CycleState, candidates: Sequence[EndpointState]) -> list[float]:
        return min_max_inverted([s.metrics.running for s in candidates])


class KvCacheUtilizationScorer(Scorer):
    """Absolute: 1 − KV-cache usage. Steps aside (the same score for every candidate) when a
    candidate's engine does not report KV usage (llama.cpp): an unknown engine must neither win
    nor lose on a number it never sent. The scraper logs which endpoints lack it.

    `countDispatched` (Sluice; off: upstream's scorer exactly): the usage the engine will have
    once it holds what Sluice sent it since the last scrape (`expected_kv_usage`). The scraped
    usage stands still between scrapes, and the load scorers' `1/(1 + x)` flattens as a burst
    deepens, so in a burst of hundreds the stale KV difference decided alone: released at
    once after the arrivals stopped (noisy-neighbour, seed 2), 116 of 252 requests went to the
    one engine that had run fewest, which then served them for 20 s after the others were
    idle. Counted, the burst spreads by what each engine will hold."""

    type_name = "kv-cache-utilization-scorer"

    class Parameters(PluginParameters):
        count_dispatched: Bool = False

    def __init__(self, name: str, count_dispatched: bool = False) -> None:
        super().__init__(name)
        self.count_dispatched = count_dispatched

    @classmethod
    def from_params(cls, name: str, params: Parameters, ctx: PluginContext) -> Scorer:
        return cls(name, params.count_dispatched)

    def score(self, cycle: CycleState, candidates: Sequence[EndpointState]) -> list[float]:
        if not all(s.metrics.kv_cache_known for s in candidates):
            return [1.0] * len(candidates)
        if self.count_dispatched:
            return [max(0.0, 1.0 - expected_kv_usage(s)) for s in candidates]
        return [1.0 - s.metrics.kv_cache_usage for s in candidates]


def expected_kv_usage(state: EndpointState) -> float:
    """The engine's KV-cache usage as of its last scrape plus the tokens (prompt and expected
    output) of Sluice's dispatches it had not seen then, over its KV capacity
    (`vllm:cache_config_info`: blocks x block size). Without the capacity, the scraped usage."""
    m = state.metrics
    capacity = m.cache_num_blocks * m.cache_block_size
    if capacity <= 0:
        return m.kv_cache_usage
    return m.kv_cache_usage + state.unseen_tokens / capacity


class InFlightLoadScorer(Scorer):
    type_name = "in-flight-load-scorer"

    bounded = True

    """Sluice: load as the engine reported it *plus* what Sluice sent since that report.

    requests = max(waiting + running - ended since + unseen dispatches, Sluice's in-flight
    requests), where *ended since* are requests that scrape counted and Sluice saw end since;
    score = 1 / (1 + requests / requestScale + in-flight tokens / tokenScale).
    Because every dispatch and every end moves the score at once, a burst between two scrapes
    spreads instead of herding onto the endpoint that looked best at the last scrape, and an
    engine whose requests just ended is not still weighed as full. Without the ends, a closed
    loop of 32 non-streamed clients on 4 engines ran 0-12 requests per engine instead of 8
    (e2e p99 3.2 s against round-robin's 2.4 s; docs/room.md, section 3a). Absolute (not
    min-max), so a 1-vs-2 difference does not swing the whole weight.

    With active-active replicas Sluice's in-flight count is the pool's: this replica's plus
    the others' as of the last sync (`peer_in_flight`). The engine's own counts do not stand
    in for it: an engine counts a request that arrived during a step only from the next step
    (vLLM and the simulated engine add arrivals when a step starts), and a step with a long
    prefill lasts most of a second (3,200 tokens: ~0.65 s simulated), so the others'
    dispatches stayed unseen that long and each replica sent its cold prompt to the one
    endpoint that looked idle (shared prefix, 3 replicas: docs/replicas.md).
    """

    class Parameters(PluginParameters):
        request_scale: Scale = 4.0
        token_scale: Scale = 16384.0

    def __init__(self, name: str, request_scale: float, token_scale: float) -> None:
        super().__init__(name)
        self._inv_requests = 1.0 / request_scale
        self._inv_tokens = 1.0 / token_scale

    @classmethod
    def from_params(cls, name: str, params: Parameters, ctx: PluginContext) -> Scorer:
        return cls(name, params.request_scale, params.token_scale)

    def score(self, cycle: CycleState, candidates: Sequence[EndpointState]) -> list[float]:
        inv_r, inv_t = self._inv_requests, self._inv_tokens
        out: list[float] = []
        for s in candidates:
            m = s.metrics
            requests = max(0, m.waiting + m.running - s.ended_since_scrape) + s.unseen_requests
            pool_in_flight = s.in_flight_requests + s.peer_in_flight
            if pool_in_flight > requests:
                requests = pool_in_flight
            out.append(1.0 / (1.0 + requests * inv_r + s.in_flight_tokens * inv_t))
        return out
