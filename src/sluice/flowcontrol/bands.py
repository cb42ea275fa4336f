"""A priority band: the flows of one priority, their policies, limits and accounting."""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from sluice.flowcontrol.fairness import FairnessPolicy, new_policy
from sluice.flowcontrol.flows import Flow, RecentService
from sluice.flowcontrol.limits import Limit
from sluice.flowcontrol.model import FlowKey, Ticket
from sluice.flowcontrol.ordering import new_queue

# A heavy hitter was served more than this many times the band's other flows' average, with
# requests more than this many times as large as theirs (see `Band.heavy_hitter`).
HEAVY_HITTER_FACTOR = 2.0


class Band:
    def __init__(
        self,
        priority: int,
        *,
        limit: Limit,
        fairness: str,
        ordering: str,
        share_window_s: float = 0.0,
    ) -> None:
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
        # Recent service, for `heavy_hitter` (window 0: off): the band's total, and the flows
        # served within the window, least recently served first.
        self._window = share_window_s
        self._recent = RecentService()
        self._active: dict[str, tuple[Flow, float]] = {}
        self._active_weight = 0.0

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

    def waiting(self) -> list[Ticket]:
        """Every item still waiting in the band, in no particular order."""
        return [ticket for _, ticket in self._newest if ticket.waiting]

    def _compact_newest(self) -> None:
        if len(self._newest) > 2 * self.queued_requests + 64:
            self._newest = [e for e in self._newest if e[1].waiting]
            heapq.heapify(self._newest)

    # -- service accounting ----------------------------------------------------------------

    def serve(self, flow: Flow, cost: float, now: float) -> None:
        before = flow.served / flow.weight
        self.fairness.charge(flow, cost)
        self._jain_update(before, flow.served / flow.weight)
        if self._window > 0:
            self._record(flow, cost, 1, now)
            fairness_id = flow.key.fairness_id
            if self._active.pop(fairness_id, None) is None:
                self._active_weight += flow.weight
            self._active[fairness_id] = (flow, now)  # re-inserted: now the most recent

    def correct(self, flow: Flow, delta: float, now: float) -> None:
        before = flow.served / flow.weight
        self.fairness.correct(flow, delta)
        self._jain_update(before, flow.served / flow.weight)
        if self._window > 0:
            self._record(flow, delta, 0, now)

    # -- heavy hitters --------------------------------------------------------------------

    def heavy_hitter(self, flow: Flow, now: float) -> bool:
        """Whether `flow` is living on what the rest of the band leaves, with requests large
        enough to keep the others waiting: over the fair-share window it was served more than
        `HEAVY_HITTER_FACTOR` times the average of the band's other flows served in that
        window (per unit of fairness weight, in the fairness policy's virtual tokens), and
        its requests were more than that many times as large as theirs.

        Its requests then say so when they ask for room (`CapacityView.has_room`), so that
        a tenant below its share finds an engine without a long prefill ahead of it. Either
        condition alone is not enough: a tenant that only sends more requests like everyone
        else's delays the others by about one of theirs, which the fairness policy already
        bounds; one that only sends larger requests is not ahead of anybody. The factor keeps
        tenants that differ by chance from counting; a band with one active flow has none."""
        if self._window <= 0:
            return False
        self._expire_active(now)
        if len(self._active) < 2 or flow.key.fairness_id not in self._active:
            return False
        window = self._window
        cost, requests = flow.recent.as_of(now, window)
        total_cost, total_requests = self._recent.as_of(now, window)
        others_cost = total_cost - cost
        others_requests = total_requests - requests
        others_weight = self._active_weight - flow.weight
        if others_requests <= 0 or others_weight <= 0 or requests <= 0:
            return False
        factor = HEAVY_HITTER_FACTOR
        ahead = cost / flow.weight > factor * others_cost / others_weight
        larger = cost / requests > factor * others_cost / others_requests
        return ahead and larger

    def _record(self, flow: Flow, cost: float, requests: int, now: float) -> None:
        """Add a charge (`requests` 1) or a correction at completion (0) to the recent sums."""
        flow.recent.add(cost, requests, now, self._window)
        self._recent.add(cost, requests, now, self._window)

    def _expire_active(self, now: float) -> None:
        active = self._active
        horizon = now - self._window
        while active:
            fairness_id, (flow, served_at) = next(iter(active.items()))
            if served_at >= horizon:
                break
            del active[fairness_id]
            self._active_weight -= flow.weight
        if not active:
            self._active_weight = 0.0  # no float drift left behind

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
