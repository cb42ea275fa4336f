"""A priority band: the flows of one priority, their policies, limits and accounting.

Idle flows (nothing queued, nothing in flight) are forgotten (`Band.collect`) when keeping
them would change nothing, and in any case after `idle_timeout_s` or beyond `max_idle_flows`;
docs/flowcontrol.md ("Idle flows") gives the rule and why it is fair.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping

from sluice.flowcontrol.fairness import TOKEN_FAIR, FairnessPolicy, new_policy
from sluice.flowcontrol.flows import Flow, RecentService
from sluice.flowcontrol.limits import Limit
from sluice.flowcontrol.model import FlowKey, Ticket
from sluice.flowcontrol.ordering import new_queue

# A heavy hitter was served more than this many times the band's other flows' average, with
# requests more than this many times as large as theirs (see `Band.heavy_hitter`).
HEAVY_HITTER_FACTOR = 2.0

# Upstream's `FlowGCTimeout` (llm-d-router: 5 minutes; GIE: 1 hour) and the most idle flows a
# band keeps above its floor (see `Band.collect`).
IDLE_FLOW_TIMEOUT_S = 300.0
MAX_IDLE_FLOWS = 10_000


class Band:
    def __init__(
        self,
        priority: int,
        *,
        limit: Limit,
        fairness: str,
        ordering: str,
        share_window_s: float = 0.0,
        idle_timeout_s: float = IDLE_FLOW_TIMEOUT_S,
        max_idle_flows: int = MAX_IDLE_FLOWS,
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
        # Idle flows kept (see `collect`): oldest idle first, with when each went idle; those
        # above the floor by key; those at or below it that wait for the window to pass them.
        self.idle_timeout_s = idle_timeout_s
        self.max_idle_flows = max_idle_flows
        self._idle: dict[str, tuple[Flow, float]] = {}
        self._above_floor: list[tuple[float, int, int, Flow]] = []
        self._in_window: list[tuple[float, int, int, Flow]] = []
        # Key before dispatch of each request in flight, by ticket seq: a completion's
        # correction can take a flow's key back down to it, never lower (see `_threshold`).
        self._in_flight_keys: list[tuple[float, int]] = []
        self._in_flight: dict[int, float] = {}
        # False while the pool's other replicas feed `Flow.remote` (`FlowController.peers`):
        # a remote term may shrink, so the floor rule is off and only the timeout and the
        # cap collect.
        self.local_only = True
        self.forgotten = 0  # flows forgotten so far

    def flow(self, fairness_id: str, weights: Mapping[str, float]) -> Flow:
        flow = self.flows.get(fairness_id)
        if flow is None:
            key = FlowKey(fairness_id, self.priority)
            flow = Flow(key, new_queue(self.ordering), weights.get(fairness_id, 1.0))
            self.flows[fairness_id] = flow
        return flow

    # -- membership ------------------------------------------------------------------------

    def add(self, flow: Flow, ticket: Ticket) -> None:
        if flow.idle:  # active again: no longer a candidate for collection
            flow.idle_version += 1
            self._idle.pop(flow.key.fairness_id, None)
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
        """`ticket` was taken from `flow`'s queue for dispatch (before it is charged)."""
        self._account_removal(flow, ticket)
        self._compact_newest()
        flow.in_flight += 1
        key = flow.counter + flow.remote
        live, keys = self._in_flight, self._in_flight_keys
        live[ticket.seq] = key
        heapq.heappush(keys, (key, ticket.seq))
        if len(keys) > 2 * len(live) + 64:  # entries of finished dispatches: bounded here
            keys[:] = [(k, seq) for seq, k in live.items()]
            heapq.heapify(keys)

    def finished(self, flow: Flow, ticket: Ticket, now: float) -> None:
        """A dispatched `ticket` of `flow` completed (after its correction, if any)."""
        flow.in_flight -= 1
        self._in_flight.pop(ticket.seq, None)
        if flow.idle:
            self.went_idle(flow, now)

    def dropped(self, ticket: Ticket, now: float) -> None:
        """`ticket` left without dispatch (already finalized): free its room at once."""
        flow = self.flows[ticket.flow.fairness_id]
        flow.queue.forget(ticket)
        self._account_removal(flow, ticket)
        if not flow.backlogged:
            self.fairness.deactivate(flow)
        self._compact_newest()
        if flow.idle:
            self.went_idle(flow, now)

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

    # -- idle flows ------------------------------------------------------------------------

    def went_idle(self, flow: Flow, now: float) -> None:
        """`flow` has nothing queued and nothing in flight: forget it at once if keeping it
        would change nothing, else keep it until `collect` may."""
        fairness_id = flow.key.fairness_id
        if fairness_id in self._idle or self.flows.get(fairness_id) is not flow:
            return
        flow.idle_version += 1
        entry = (flow.counter + flow.remote, flow.idle_version, id(flow), flow)
        if self._at_floor(flow, self._threshold()):
            until = self._window_ends(flow)
            if until <= now:
                self._forget(flow, now)
                return
            heapq.heappush(self._in_window, (until, *entry[1:]))
        elif self.local_only and self.fairness.name == TOKEN_FAIR and flow.remote == 0:
            heapq.heappush(self._above_floor, entry)
        self._idle[fairness_id] = (flow, now)
        self._cap(now)

    def collect(self, now: float) -> None:
        """Forget the idle flows that need no keeping: those whose key the band's floor has
        reached (once the heavy-hitter window has passed them), those idle for
        `idle_timeout_s` (upstream's rule), and the oldest idle ones beyond `max_idle_flows`.
        Amortized O(log flows) per flow forgotten; O(1) when none is."""
        above = self._above_floor
        # The threshold is only needed to forget idle flows above the floor: skip it (and its
        # heap upkeep) on the common path where there are none (flowcontrol_overhead.py).
        threshold = self._threshold() if above else -math.inf
        while above and above[0][0] <= threshold:
            _, version, _, flow = heapq.heappop(above)
            if version != flow.idle_version:
                continue  # active again since
            until = self._window_ends(flow)
            if until <= now:
                self._forget(flow, now)
            else:
                heapq.heappush(self._in_window, (until, version, id(flow), flow))
        in_window = self._in_window
        while in_window and in_window[0][0] <= now:
            _, version, _, flow = heapq.heappop(in_window)
            if version == flow.idle_version:
                self._forget(flow, now)
        idle = self._idle
        if idle and self.idle_timeout_s > 0:
            cut = now - self.idle_timeout_s
            while idle:
                flow, since = next(iter(idle.values()))
                if since > cut:
                    break
                self._forget(flow, now)
        if len(idle) > self.max_idle_flows:
            self._cap(now)
        for heap in (above, in_window):
            if len(heap) > 2 * len(idle) + 64:
                heap[:] = [e for e in heap if e[1] == e[3].idle_version]
                heapq.heapify(heap)

    @property
    def idle_flows(self) -> int:
        """Idle flows kept (the rest of `flows` has something queued or in flight)."""
        return len(self._idle)

    def _cap(self, now: float) -> None:
        idle = self._idle
        while len(idle) > self.max_idle_flows:
            self._forget(next(iter(idle.values()))[0], now)

    def _threshold(self) -> float:
        """A key no future floor of the band goes below (-inf when there is none).

        A flow that becomes backlogged is lifted to the floor: the least key among backlogged
        flows, or in an idle band the counter of the flow served last. Neither falls below
        the least of (the floor now, that last counter, the key before dispatch of any
        request in flight): serving only raises keys, a lift raises a key to the floor, and a
        completion's correction takes a flow back at most to its key before that dispatch.
        So an idle flow at or below this threshold returns lifted to exactly what it would be
        lifted to if forgotten: forgetting it changes nothing."""
        policy = self.fairness
        if policy.name != TOKEN_FAIR:
            return math.inf  # round-robin and global-strict keep no state across idleness
        if not self.local_only:
            return -math.inf
        keys, live = self._in_flight_keys, self._in_flight
        while keys and keys[0][1] not in live:
            heapq.heappop(keys)
        floor = policy.lift_floor()
        threshold = min(floor, policy.last_served_counter)
        return min(threshold, keys[0][0]) if keys else threshold

    def _at_floor(self, flow: Flow, threshold: float) -> bool:
        if threshold == math.inf:
            return True
        return flow.remote == 0 and flow.counter <= threshold

    def _window_ends(self, flow: Flow) -> float:
        """When the heavy-hitter window stops counting `flow`'s service (-inf: it does not)."""
        if self._window <= 0:
            return -math.inf
        entry = self._active.get(flow.key.fairness_id)
        return -math.inf if entry is None else entry[1] + self._window

    def _forget(self, flow: Flow, now: float) -> None:
        fairness_id = flow.key.fairness_id
        del self.flows[fairness_id]
        self._idle.pop(fairness_id, None)
        flow.idle_version += 1
        self.forgotten += 1
        self._jain_update(flow.served / flow.weight, 0.0)
        entry = self._active.pop(fairness_id, None)
        if entry is not None:  # still in the window: its share leaves the band's sums too
            self._active_weight -= flow.weight
            cost, requests = flow.recent.as_of(now, self._window)
            self._recent.add(-cost, 0, now, self._window)
            self._recent.requests = max(0.0, self._recent.requests - requests)
            if not self._active:
                self._active_weight = 0.0

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
