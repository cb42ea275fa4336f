"""What one run produced: a record per request and a few time series. Both runners fill these;
`metrics` turns them into numbers and `plots` into pictures."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    tenant: str
    priority: int
    arrived_at: float
    prompt_tokens: int
    max_tokens: int
    outcome: str = (
        "unfinished"  # completed | rejected | displaced | expired | shed | error | unfinished
    )
    dispatched_at: float | None = None
    engine: str | None = None
    first_token_at: float | None = None
    completed_at: float | None = None
    output_tokens: int = 0
    cached_tokens: int = 0
    # With precise-prefix-cache-scorer: the cached tokens it predicted for the chosen endpoint,
    # and what its approximate half guessed (compare with `cached_tokens`, the engine's word).
    predicted_cached_tokens: int | None = None
    approx_cached_tokens: int | None = None

    @property
    def ttft(self) -> float:
        """Client-side time to first token (queue wait included); inf if it never came."""
        return math.inf if self.first_token_at is None else self.first_token_at - self.arrived_at

    @property
    def e2e(self) -> float:
        return math.inf if self.completed_at is None else self.completed_at - self.arrived_at

    @property
    def queue_wait(self) -> float | None:
        return None if self.dispatched_at is None else self.dispatched_at - self.arrived_at

    @property
    def itl(self) -> float | None:
        """Mean inter-token latency of this request."""
        if self.completed_at is None or self.first_token_at is None or self.output_tokens < 2:
            return None
        return (self.completed_at - self.first_token_at) / (self.output_tokens - 1)

    @property
    def served_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens if self.outcome == "completed" else 0


@dataclass(slots=True)
class Sample:
    """The system at one instant (taken every `sample_every_s`)."""

    at: float
    queued_by_band: dict[int, int]
    served_by_tenant: dict[str, int]  # delivered by then, virtual tokens (runner._served_at)
    busy_engines: int
    engines: int
    # The flow controller's virtual counters per tenant (service charged at dispatch, corrected
    # with true usage at completion): what VTC's bound is about.
    charged_by_tenant: dict[str, float] = field(default_factory=dict)
    # Output tokens the engines generated so far (their own counters): the pool's throughput
    # as delivered, whether or not the requests they belong to finished in the window.
    generated_tokens: int | None = None


@dataclass(slots=True)
class RunResult:
    scenario: str
    arm: str
    seed: int
    load: float  # the offered load parameter (QPS or a fraction of capacity)
    records: list[RequestRecord]
    samples: list[Sample] = field(default_factory=list)
    prefix_hits: int = 0
    prefix_queries: int = 0
    duration_s: float = 0.0  # time of the last arrival
    warmup_s: float = 0.0  # arrivals before this are excluded from latency statistics
    cpu_s: float = 0.0  # process CPU time the run took (virtual: the simulation's cost)
    router_overhead_us: float | None = None  # wall mode: added latency vs direct
