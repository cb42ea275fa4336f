"""Fairness policies: which flow of one band goes next.

All three keep the band's backlogged flows in one min-heap ("ready set") and differ only in the
key they sort by:

- `token-fair` (default): VTC (Sheng et al., OSDI'24). Key = the flow's virtual token counter;
  the least-served backlogged flow goes next. A flow that becomes backlogged is lifted to the
  band's minimum counter, so idling banks no credit. Between backlogged flows the counters never
  drift apart by more than the largest single request cost.
- `round-robin`: key = a turn number handed out each time a flow re-enters the ready set.
- `global-strict`: key = the flow's head item's order key, i.e. FCFS (or EDF) across all flows.

Heap entries are versioned: changing a flow's key pushes a fresh entry and the stale one is
skipped when it surfaces, so no operation scans the flows (O(log flows) per dispatch).
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass

from sluice.flowcontrol.flows import Flow
from sluice.flowcontrol.model import Ticket
from sluice.requests.model import InferenceRequest, Usage

TOKEN_FAIR = "token-fair"
ROUND_ROBIN = "round-robin"
GLOBAL_STRICT = "global-strict"
FAIRNESS_POLICIES = (TOKEN_FAIR, ROUND_ROBIN, GLOBAL_STRICT)


@dataclass(frozen=True, slots=True)
class TokenCost:
    """The cost of a request in virtual tokens: w_in · uncached prompt + w_out · output."""

    input_weight: float = 1.0
    output_weight: float = 2.0
    default_output_tokens: int = 256

    def estimate(self, request: InferenceRequest) -> float:
        """Before dispatch: the whole prompt counts as uncached; output = max_tokens if given."""
        output = (
            request.max_tokens if request.max_tokens is not None else self.default_output_tokens
        )
        return self.input_weight * request.prompt_tokens + self.output_weight * output

    def actual(self, usage: Usage) -> float:
        uncached = max(0, usage.prompt_tokens - usage.cached_tokens)
        return self.input_weight * uncached + self.output_weight * usage.completion_tokens


class FairnessPolicy:
    """The ready set of one band, ordered by `key`."""

    name = ""

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[float, ...], int, int, Flow]] = []
        self._tiebreak = itertools.count()
        # Counter of the flow served last: the floor for a flow activating into an idle band.
        self.last_served_counter = 0.0

    def key(self, flow: Flow) -> tuple[float, ...]:
        raise NotImplementedError

    def lift_floor(self) -> float:
        """What a flow becoming backlogged now is lifted to: nothing for policies that keep
        no per-flow state across idleness."""
        return math.inf

    # -- the ready set ---------------------------------------------------------------------

    def push(self, flow: Flow) -> None:
        """Put a backlogged flow (back) into the ready set with a fresh key."""
        flow.ready = True
        flow.ready_version += 1
        flow.ready_key = self.key(flow)
        heapq.heappush(self._heap, (flow.ready_key, next(self._tiebreak), flow.ready_version, flow))

    def pop(self) -> Flow | None:
        """Remove and return the preferred backlogged flow."""
        heap = self._heap
        while heap:
            key, _, version, flow = heapq.heappop(heap)
            if version != flow.ready_version or not flow.ready:
                continue  # stale entry
            if not flow.backlogged:
                flow.ready = False
                continue
            if key != self.key(flow):
                self.push(flow)  # its key grew since it was pushed: re-sort it
                continue
            flow.ready = False
            return flow
        return None

    def set_remote(self, flow: Flow, remote: float) -> None:
        """The flow's weighted service on other replicas is now `remote` (see flows.py)."""
        shrank = remote < flow.remote
        flow.remote = remote
        if shrank and flow.ready:
            self.push(flow)  # its key shrank: an old entry would serve it too late

    def deactivate(self, flow: Flow) -> None:
        """The flow's queue emptied without a dispatch (cancel, expiry, displacement)."""
        flow.ready = False
        flow.ready_version += 1

    def _peek_min_key(self) -> tuple[float, ...] | None:
        heap = self._heap
        while heap:
            _, _, version, flow = heap[0]
            if version == flow.ready_version and flow.ready and flow.backlogged:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def compact_if_needed(self, live_flows: int) -> None:
        if len(self._heap) > 4 * live_flows + 64:
            self._heap = [e for e in self._heap if e[2] == e[3].ready_version and e[3].ready]
            heapq.heapify(self._heap)

    # -- events ----------------------------------------------------------------------------

    def on_enqueue(self, flow: Flow, ticket: Ticket) -> None:
        """`ticket` joined `flow`'s queue (already pushed there)."""
        if not flow.ready:
            self.push(flow)

    def charge(self, flow: Flow, cost: float) -> None:
        """`flow` was served a request that costs `cost` (an estimate until corrected)."""
        flow.counter += cost / flow.weight
        flow.served += cost
        self.last_served_counter = flow.counter

    def correct(self, flow: Flow, delta: float) -> None:
        """True usage differs from the charged estimate by `delta`."""
        was_last = flow.counter == self.last_served_counter
        flow.counter += delta / flow.weight
        flow.served += delta
        if was_last and delta < 0:
            # The floor a flow activating into an idle band is lifted to: a refunded estimate
            # (an engine's refusal) must not stay in it.
            self.last_served_counter = flow.counter
        if delta < 0 and flow.ready:
            self.push(flow)  # its key shrank: an old entry would serve it too late


class TokenFair(FairnessPolicy):
    name = TOKEN_FAIR

    def lift_floor(self) -> float:
        """What a flow becoming backlogged now is lifted to (see `on_enqueue`)."""
        floor = self._peek_min_key()
        return floor[0] if floor is not None else self.last_served_counter

    def key(self, flow: Flow) -> tuple[float, ...]:
        return (flow.counter + flow.remote,)

    def on_enqueue(self, flow: Flow, ticket: Ticket) -> None:
        if flow.ready:
            return
        # Newly backlogged: lift to the least-served backlogged flow (or, in an idle band, to
        # the flow served last) so that a flow cannot bank credit while it sends nothing.
        lift = self.lift_floor()
        if flow.counter + flow.remote < lift:
            flow.counter = lift - flow.remote
        self.push(flow)


class RoundRobin(FairnessPolicy):
    name = ROUND_ROBIN

    def __init__(self) -> None:
        super().__init__()
        self._turns = itertools.count()

    def push(self, flow: Flow) -> None:
        flow.turn = next(self._turns)
        super().push(flow)

    def key(self, flow: Flow) -> tuple[float, ...]:
        return (float(flow.turn),)


class GlobalStrict(FairnessPolicy):
    name = GLOBAL_STRICT

    def key(self, flow: Flow) -> tuple[float, ...]:
        head = flow.queue.head_key()
        return head if head is not None else (float("inf"), 0)

    def on_enqueue(self, flow: Flow, ticket: Ticket) -> None:
        # An arrival can become its flow's head (its first item, or an earlier EDF deadline).
        if not flow.ready or self.key(flow) < flow.ready_key:
            self.push(flow)


def new_policy(name: str) -> FairnessPolicy:
    if name == ROUND_ROBIN:
        return RoundRobin()
    if name == GLOBAL_STRICT:
        return GlobalStrict()
    return TokenFair()
