"""A priority band: the flows of one priority, their policies, limits and accounting."""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from sluice.flowcontrol.fairness import FairnessPolicy, new_policy
from sluice.flowcontrol.flows import Flow
from sluice.flowcontrol.limits import Limit
from sluice.flowcontrol.model import FlowKey, Ticket
from sluice.flowcontrol.ordering import new_queue


class Band:
    def __init__(self, priority: int, *, limit: Limit, fairness: str, ordering: str) -> None:
        self.priority = priority
        self.limit = limit
        self.ordering = ordering
        self.fairness: FairnessPolicy = new_policy(fairness)
        self.flows: dict[str, Flow] = {}
        self.queued_requests = 0
        self.queued_bytes = 0
        # Newest-first index of waiting items: who is displaced when a higher band needs room.
        self._newest: list[tuple[int, Ticket]] = []
        # Jain's fairness index over per-flow weighted service, kept incrementally (O(1)).
        self._jain_sum = 0.0
        self._jain_sum_sq = 0.0
        self._jain_n = 0

    def flow(self, fairness_id: str, weights: Mapping[str, float]) -> Flow:
        flow = self.flows.get(fairness_id)
        if flow is None:
            key = FlowKey(fairness_id, self.priority)
            flow = Flow(key, new_queue(self.ordering), weights.get(fairness_id, 1.0))
            self.flows[fairness_id] = flow
        return flow

    # -- membership ------------------------------------------------------------------------

    def add(self, flow: Flow, ticket: Ticket) -> None:
        flow.queue.push(ticket)
        flow.queued_requests += 1
        flow.queued_bytes += ticket.byte_size
        self.queued_requests += 1
        self.queued_bytes += ticket.byte_size
        heapq.heappush(self._newest, (-ticket.seq, ticket))
        self.fairness.on_enqueue(flow, ticket)

    def _account_removal(self, flow: Flow, ticket: Ticket) -> None:
        flow.queued_requests -= 1
        flow.queued_bytes -= ticket.byte_size
        self.queued_requests -= 1
        self.queued_bytes -= ticket.byte_size

    def took(self, flow: Flow, ticket: Ticket) -> None:
        """`ticket` was taken from `flow`'s queue for dispatch."""
        self._account_removal(flow, ticket)
        self._compact_newest()

    def dropped(self, ticket: Ticket) -> None:
        """`ticket` left without dispatch (already finalized): free its room at once."""
        flow = self.flows[ticket.flow.fairness_id]
        flow.queue.forget(ticket)
        self._account_removal(flow, ticket)
        if not flow.backlogged:
            self.fairness.deactivate(flow)
        self._compact_newest()

    def newest_waiting(self) -> Ticket | None:
        newest = self._newest
        while newest:
            ticket = newest[0][1]
            if ticket.waiting:
                return ticket
            heapq.heappop(newest)
        return None

    def _compact_newest(self) -> None:
        if len(self._newest) > 2 * self.queued_requests + 64:
            self._newest = [e for e in self._newest if e[1].waiting]
            heapq.heapify(self._newest)

    # -- service accounting ----------------------------------------------------------------

    def serve(self, flow: Flow, cost: float) -> None:
        before = flow.served / flow.weight
        self.fairness.charge(flow, cost)
        self._jain_update(before, flow.served / flow.weight)

    def correct(self, flow: Flow, delta: float) -> None:
        before = flow.served / flow.weight
        self.fairness.correct(flow, delta)
        self._jain_update(before, flow.served / flow.weight)

    def _jain_update(self, before: float, after: float) -> None:
        if before == 0.0 and after != 0.0:
            self._jain_n += 1
        elif before != 0.0 and after == 0.0:
            self._jain_n -= 1
        self._jain_sum += after - before
        self._jain_sum_sq += after * after - before * before

    @property
    def jain_index(self) -> float:
        """Jain's index over the weighted service of every flow served in this band (1 = equal)."""
        if self._jain_n == 0 or self._jain_sum_sq <= 0.0:
            return 1.0
        return min(1.0, self._jain_sum * self._jain_sum / (self._jain_n * self._jain_sum_sq))
