"""One request's life inside the engine: how far it has been computed and what it has produced."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sluice.sim.request import SimRequest


class Status(enum.Enum):
    ARRIVING = "arriving"  # in the API server (tokenizing), not yet in the engine's queue
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Sequence:
    request: SimRequest
    submitted_at: float  # when the request was handed to the engine (TTFT and e2e start here)
    arrival_time: float  # when it reaches the waiting queue, after the front end's overhead
    seq_no: int
    status: Status = Status.ARRIVING
    num_computed: int = 0  # tokens whose KV is in the cache
    num_output: int = 0
    blocks: list[int] = field(default_factory=list)
    num_published: int = 0  # leading blocks already in the prefix-cache index
    cached_tokens: int | None = None  # prefix-cache hit on first scheduling (usage.cached_tokens)
    first_token_time: float | None = None
    last_token_time: float | None = None
    finish_time: float | None = None
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    num_preemptions: int = 0
    # Derived from the request once, read on every step (the engine's hot loop).
    num_tokens: int = 0  # prompt + generated so far
    target_output: int = 0  # where generation stops
    num_hashes: int = 0
    # The prompt's full blocks' prefix-cache hashes, by the engine's hasher (set on add_request).
    block_hashes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.num_tokens = self.request.prompt_tokens + self.num_output
        self.target_output = self.request.output_tokens
        self.num_hashes = len(self.block_hashes)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED
