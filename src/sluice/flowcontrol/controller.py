"""The flow controller: a sans-I/O state machine that decides *when* each request may go.

The shell drives it with the current time and a view of the pool's room:

    result = fc.enqueue(request, now)            # Accepted (maybe displacing others) | Finalized
    events = fc.dispatch(now, capacity)          # releases all that fit; also expires
    fc.cancel(ticket, now)                       # the client went away
    events = fc.expire(now)                      # at fc.next_deadline()
    fc.complete(ticket, usage, now)              # true usage corrects the fairness charge
    fc.set_pool_empty(empty, now)                # the pool lost or regained its endpoints

Two regimes, as upstream's: while the pool has endpoints a request may wait its TTL
(`defaultRequestTTL`, or the request's own) and then gets a 429; while it has none the queue is
a waiting room for scale-from-zero, bounded by `noEndpointRequestTTL`, and expiry is a 503. Each
change of regime starts every waiting item's budget afresh, so a request that waited for the
first endpoint is not expired the moment one appears.

Release order: the highest non-empty band first; within a band the fairness policy picks the
flow and the ordering policy the item; an item whose candidate endpoints are all full is
skipped, never blocking the others, and a lower band is only served when every waiting
higher-band item has been found to have no room (room only shrinks during one dispatch, so the
room a lower band takes is room no waiting higher-band item could use).

A heavy hitter — a flow served far more than the rest of its band lately, with far larger
requests (`Band.heavy_hitter`) — says so when it asks for room (`has_room(..., heavy_hitter=id)`),
and the pool may offer it less, so that a tenant below its share finds room at once.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterator

from sluice.flowcontrol.bands import Band
from sluice.flowcontrol.classify import engine_priority, flow_of
from sluice.flowcontrol.config import LEGACY, FlowControlConfig
from sluice.flowcontrol.fairness import TOKEN_FAIR
from sluice.flowcontrol.limits import DrainRate, Limit
from sluice.flowcontrol.model import (
    Accepted,
    CapacityView,
    Finalized,
    QueueOutcome,
    Ticket,
)
from sluice.flowcontrol.observer import FlowObserver, NullObserver
from sluice.flowcontrol.peers import Peers
from sluice.requests.errors import DroppedReason, SluiceError, contended, unavailable
from sluice.requests.model import DEFAULT_FAIRNESS_ID, InferenceRequest, Usage

_ALL: frozenset[str] | None = None  # the candidate set "any endpoint of the pool"


class FlowController:
    def __init__(
        self, config: FlowControlConfig | None = None, *, observer: FlowObserver | None = None
    ) -> None:
        self.config = config or FlowControlConfig()
        self.observer: FlowObserver = observer or NullObserver()
        self._legacy = self.config.mode == LEGACY
        self._global = Limit(self.config.max_requests, self.config.max_bytes)
        self._flow_limit = Limit(self.config.per_flow_max_requests, self.config.per_flow_max_bytes)
        self._bands: dict[int, Band] = {}
        self._order: list[Band] = []  # highest priority first
        self._order_keys: list[int] = []  # -priority, for bisect
        self._deadlines: list[tuple[float, int, Ticket]] = []
        self._pending: list[Ticket] = []  # legacy mode: waiting for the next dispatch
        self._seq = 0
        self._cost = self.config.token_cost
        self._weights = self.config.fairness_weights
        self._drain = DrainRate()
        self._pool_empty = False
        # The pool's other replicas (flowcontrol/peers.py); None: this replica alone decides.
        self.peers: Peers | None = None
        self.queued_requests = 0
        self.queued_bytes = 0

    # -- reading ---------------------------------------------------------------------------

    @property
    def bands(self) -> tuple[Band, ...]:
        """Bands that have seen traffic, highest priority first."""
        return tuple(self._order)

    def band(self, priority: int) -> Band | None:
        return self._bands.get(priority)

    def next_deadline(self) -> float | None:
        """When the next queued item expires (the shell should call `expire` then)."""
        deadlines = self._deadlines
        while deadlines and not _current(deadlines[0]):
            heapq.heappop(deadlines)
        return deadlines[0][0] if deadlines else None

    @property
    def pool_empty(self) -> bool:
        return self._pool_empty

    def top_waiting_priority(self) -> int | None:
        """The highest band with requests waiting (None: nothing waits)."""
        return next((b.priority for b in self._order if b.queued_requests), None)

    def waiting_above(self, priority: int) -> int:
        """How many requests of bands above `priority` wait."""
        return sum(b.queued_requests for b in self._order if b.priority > priority)

    def engine_priority_for(self, request: InferenceRequest) -> int | None:
        """The vLLM `priority` to write into the body, or None when the option is off."""
        return engine_priority(request.priority) if self.config.engine_priority else None

    # -- enqueue ---------------------------------------------------------------------------

    def enqueue(self, request: InferenceRequest, now: float) -> Accepted | Finalized:
        """Queue a request. Returns `Accepted`, or the `Finalized` rejection (429)."""
        self._seq += 1
        deadline = self._deadline(request, now)
        cost = self._cost.estimate(request)
        size = len(request.body)
        if self._legacy:
            ticket = Ticket(self._seq, request, flow_of(request), now, deadline, cost, size)
            self._pending.append(ticket)
            return Accepted(ticket)

        band = self._bands.get(request.priority) or self._band(request.priority)
        flow = band.flow(request.fairness_id or DEFAULT_FAIRNESS_ID, self._weights)
        ticket = Ticket(self._seq, request, flow.key, now, deadline, cost, size)
        local_ok = (
            self._flow_limit.unlimited
            or self._flow_limit.fits(flow.queued_requests, flow.queued_bytes, size)
        ) and (
            band.limit.unlimited or band.limit.fits(band.queued_requests, band.queued_bytes, size)
        )
        displaced: tuple[Finalized, ...] = ()
        if (
            local_ok
            and not self._global.unlimited
            and not self._global.fits(self.queued_requests, self.queued_bytes, size)
        ):
            displaced_or_none = self._displace_for(ticket, now)
            if displaced_or_none is None:
                local_ok = False
            else:
                displaced = displaced_or_none
        if not local_ok:
            if flow.idle:  # made for this arrival, or kept idle: a candidate for collection
                band.went_idle(flow, now)
            if self._pool_empty:  # a full waiting room: no endpoint exists to be contended
                return self._finalize(ticket, QueueOutcome.REJECTED_NO_ENDPOINTS, now, band)
            return self._finalize(
                ticket, QueueOutcome.REJECTED_CAPACITY, now, band, self._retry_after(band.priority)
            )

        band.add(flow, ticket)
        self.queued_requests += 1
        self.queued_bytes += size
        if deadline != math.inf:
            heapq.heappush(self._deadlines, (deadline, ticket.seq, ticket))
        self.observer.on_enqueued(ticket, band)
        return Accepted(ticket, displaced)

    def _deadline(self, request: InferenceRequest, start: float) -> float:
        """When `request`, waiting since `start` in the regime in force, expires."""
        if self._legacy:
            return math.inf
        ttl = request.ttl_s
        if ttl is None:
            config = self.config
            ttl = config.no_endpoint_ttl_s if self._pool_empty else config.default_request_ttl_s
        return start + ttl if ttl else math.inf

    def set_pool_empty(self, empty: bool, now: float) -> None:
        """The pool has (no longer) any endpoints: every waiting item's budget starts again at
        `now`, under the new regime's TTL. O(1) when nothing changed."""
        if empty == self._pool_empty:
            return
        self._pool_empty = empty
        for band in self._order:
            for ticket in band.waiting():
                ticket.deadline = self._deadline(ticket.request, now)
                if ticket.deadline != math.inf:
                    heapq.heappush(self._deadlines, (ticket.deadline, ticket.seq, ticket))

    def _band(self, priority: int) -> Band:
        band = self._bands.get(priority)
        if band is None:
            cfg = self.config.band(priority)
            limit = Limit(cfg.max_requests, cfg.max_bytes)
            band = Band(
                priority,
                limit=limit,
                fairness=cfg.fairness,
                ordering=cfg.ordering,
                share_window_s=self.config.fair_share_window_s,
                idle_timeout_s=self.config.idle_flow_timeout_s,
                max_idle_flows=self.config.max_idle_flows,
            )
            self._bands[priority] = band
            index = bisect.bisect(self._order_keys, -priority)
            self._order_keys.insert(index, -priority)
            self._order.insert(index, band)
        return band

    def _displace_for(self, ticket: Ticket, now: float) -> tuple[Finalized, ...] | None:
        """Make global room for `ticket` by displacing the lowest-priority, most recently
        queued items — only if that suffices; otherwise displace nothing and return None."""
        need_requests, need_bytes = self._global.shortfall(
            self.queued_requests, self.queued_bytes, ticket.byte_size
        )
        if not self._global.can_ever_fit(ticket.byte_size):
            return None
        lower = [b for b in reversed(self._order) if b.priority < ticket.priority]
        if (
            sum(b.queued_requests for b in lower) < need_requests
            or sum(b.queued_bytes for b in lower) < need_bytes
        ):
            return None
        events: list[Finalized] = []
        retry_after = self._retry_after(ticket.priority)
        for band in lower:
            while need_requests > 0 or need_bytes > 0:
                victim = band.newest_waiting()
                if victim is None:
                    break
                need_requests -= 1
                need_bytes -= victim.byte_size
                events.append(self._drop(victim, QueueOutcome.DISPLACED, now, retry_after))
            if need_requests <= 0 and need_bytes <= 0:
                break
        return tuple(events)

    # -- dispatch --------------------------------------------------------------------------

    def dispatch(self, now: float, capacity: CapacityView) -> list[Finalized]:
        """Release every queued item that has room, in priority ▸ fairness ▸ ordering order.

        Also expires items whose TTL has passed (they are in the returned events too).
        For each released item the controller calls `capacity.take_room(request)` before
        looking for the next, so the caller binds the endpoint at the moment of release.
        """
        events = self.expire(now)
        if self._legacy:
            events.extend(self._dispatch_legacy(now, capacity))
            return events
        top = next((b.priority for b in self._order if b.queued_requests), None)
        if top is None or not capacity.has_room(_ALL, top):
            return events

        # Candidate sets found full this call: `full` for every request of the band (and so of
        # the bands below), `full_heavy` for a heavy hitter's requests. Room only shrinks
        # within a call and the CapacityView contract orders it (a band's requests >= its
        # heavy hitter's; a higher band >= a lower one), so "full" stays true.
        full: set[frozenset[str] | None] = set()
        full_heavy: set[tuple[frozenset[str] | None, str]] = set()
        priority = top
        heavy: str | None = None

        def fits(ticket: Ticket) -> bool:
            candidates = ticket.candidates
            if candidates in full or (heavy is not None and (candidates, heavy) in full_heavy):
                return False
            if capacity.has_room(candidates, priority, heavy_hitter=heavy):
                return True
            if heavy is None:
                full.add(candidates)
            else:
                full_heavy.add((candidates, heavy))
            return False

        released = 0
        peers = self.peers
        for band in self._order:
            band.local_only = peers is None
            band.collect(now)
            if not band.queued_requests:
                continue
            priority = band.priority
            if peers is not None and peers.waiting_above(priority):
                break  # one pool-wide priority order: a higher band waits on another replica
            policy = band.fairness
            pool_fair = peers is not None and policy.name == TOKEN_FAIR
            blocked = []  # flows whose every item's candidates are full (or held for peers)
            while True:
                flow = policy.pop()
                if flow is None:
                    break
                if pool_fair and peers.holds(  # type: ignore[union-attr]
                    priority, flow.key.fairness_id, flow.counter + flow.remote
                ):
                    blocked.append(flow)
                    continue
                heavy = flow.key.fairness_id if band.heavy_hitter(flow, now) else None
                ticket = flow.queue.take_first(fits)
                if ticket is None:
                    blocked.append(flow)
                    continue
                band.took(flow, ticket)
                self.queued_requests -= 1
                self.queued_bytes -= ticket.byte_size
                events.append(self._finalize(ticket, QueueOutcome.DISPATCHED, now, band))
                ticket.charged = ticket.cost_estimate
                band.serve(flow, ticket.cost_estimate, now)
                self.observer.on_served(flow, band)
                released += 1
                capacity.take_room(ticket.request, heavy_hitter=heavy)
                if flow.backlogged:
                    policy.push(flow)
                if not capacity.has_room(_ALL, priority):
                    full.add(_ALL)
                    break
            for flow in blocked:
                policy.push(flow)
            policy.compact_if_needed(len(band.flows))
            if _ALL in full:
                break
        if released:
            self._drain.record(now, released)
        return events

    def _dispatch_legacy(self, now: float, capacity: CapacityView) -> Iterator[Finalized]:
        """Upstream's legacy admission: no queue; priority < 0 is shed when saturated."""
        pending, self._pending = self._pending, []
        for ticket in pending:
            if not ticket.waiting:
                continue  # cancelled before this dispatch
            if ticket.priority < 0 and not capacity.has_room(ticket.candidates, ticket.priority):
                yield self._finalize(ticket, QueueOutcome.SHED, now, None, 1.0)
                continue
            yield self._finalize(ticket, QueueOutcome.DISPATCHED, now, None)
            capacity.take_room(ticket.request)

    # -- leaving without dispatch ----------------------------------------------------------

    def cancel(self, ticket: Ticket, now: float) -> Finalized | None:
        """The client went away: the item leaves the queue at once. None if already final."""
        if not ticket.waiting:
            return None
        if self._legacy:
            return self._finalize(ticket, QueueOutcome.CANCELLED, now, None)
        return self._drop(ticket, QueueOutcome.CANCELLED, now)

    def expire(self, now: float) -> list[Finalized]:
        """Finalize every item whose deadline is at or before `now`."""
        events: list[Finalized] = []
        deadlines = self._deadlines
        outcome = QueueOutcome.EXPIRED_NO_ENDPOINTS if self._pool_empty else QueueOutcome.EXPIRED
        while deadlines and deadlines[0][0] <= now:
            entry = heapq.heappop(deadlines)
            if _current(entry):
                events.append(self._drop(entry[2], outcome, now))
        if len(deadlines) > 2 * self.queued_requests + 64:
            self._deadlines = [e for e in deadlines if _current(e)]
            heapq.heapify(self._deadlines)
        return events

    def drop_unreachable(self, ticket: Ticket, now: float) -> Finalized | None:
        """A waiting item no endpoint of the pool may serve (its subset matches none, now that
        the pool has endpoints again) leaves with a 503. None if it was already final."""
        if not ticket.waiting or self._legacy:
            return None
        return self._drop(ticket, QueueOutcome.EXPIRED_NO_ENDPOINTS, now)

    def _drop(
        self, ticket: Ticket, outcome: QueueOutcome, now: float, retry_after: float | None = None
    ) -> Finalized:
        band = self._bands[ticket.priority]
        event = self._finalize(ticket, outcome, now, band, retry_after, notify=False)
        band.local_only = self.peers is None
        band.dropped(ticket, now)
        self.queued_requests -= 1
        self.queued_bytes -= ticket.byte_size
        self.observer.on_finalized(event, band)
        return event

    def _finalize(
        self,
        ticket: Ticket,
        outcome: QueueOutcome,
        now: float,
        band: Band | None,
        retry_after: float | None = None,
        *,
        notify: bool = True,
    ) -> Finalized:
        if ticket.outcome is not None:  # the exactly-once guard; a bug if ever hit
            raise RuntimeError(f"ticket {ticket.seq} finalized twice ({ticket.outcome}, {outcome})")
        ticket.outcome = outcome
        ticket.finalized_at = now
        event = Finalized(ticket, outcome, now, retry_after)
        if notify:
            self.observer.on_finalized(event, band)
        return event

    def _retry_after(self, priority: int) -> float:
        ahead = sum(b.queued_requests for b in self._order if b.priority >= priority)
        return self._drain.retry_after(ahead)

    # -- completion ------------------------------------------------------------------------

    def complete(self, ticket: Ticket, usage: Usage | None, now: float) -> None:
        """A dispatched request finished: replace its estimated charge with its true cost.

        Idempotent; ignored for items that were not dispatched or when usage is unknown.
        """
        if ticket.outcome is not QueueOutcome.DISPATCHED or ticket.completed:
            return
        ticket.completed = True
        if self._legacy:
            return
        band = self._bands[ticket.priority]
        flow = band.flows[ticket.flow.fairness_id]  # kept: it has this request in flight
        if usage is not None:
            actual = self.config.token_cost.actual(usage)
            delta = actual - ticket.charged
            ticket.charged = actual
            if delta:
                band.correct(flow, delta, now)
                self.observer.on_served(flow, band)
        band.local_only = self.peers is None
        band.finished(flow, ticket, now)
        band.collect(now)


# outcome -> (message, dropped reason): 429, the pool has endpoints but they are contended
_CONTENDED = {
    QueueOutcome.REJECTED_CAPACITY: (
        "request rejected pre-queue: queue at capacity",
        DroppedReason.SATURATED,
    ),
    QueueOutcome.DISPLACED: (
        "displaced from the queue by a higher-priority request",
        DroppedReason.SATURATED,
    ),
    QueueOutcome.SHED: ("system saturated, sheddable request dropped", DroppedReason.SATURATED),
    QueueOutcome.EXPIRED: (
        "request timed out in queue: request TTL expired",
        DroppedReason.TTL_EXPIRED,
    ),
}
# ... 503, it has none (or none the request may use), or the client left
_UNAVAILABLE = {
    QueueOutcome.REJECTED_NO_ENDPOINTS: (
        "no endpoints available: queue at capacity",
        DroppedReason.NO_ENDPOINTS,
    ),
    QueueOutcome.EXPIRED_NO_ENDPOINTS: (
        "request timed out in queue and no endpoints are available",
        DroppedReason.NO_ENDPOINTS,
    ),
    QueueOutcome.CANCELLED: ("client disconnected", DroppedReason.CONTEXT_CANCELLED),
}


def error_for(event: Finalized) -> SluiceError | None:
    """The error a front end answers with for an outcome (None for a dispatch).

    As upstream (llm-d-router): 429 when the pool has endpoints but they are contended (queue
    full, displaced, shed, TTL expired), 503 when it has none (or none the request may use) and
    when the client left; every rejection names its `x-llm-d-request-dropped-reason`.
    """
    outcome = event.outcome
    if outcome is QueueOutcome.DISPATCHED:
        return None
    if outcome in _CONTENDED:
        message, reason = _CONTENDED[outcome]
        return contended(message, reason, event.retry_after_s)
    message, reason = _UNAVAILABLE[outcome]
    return unavailable(message, reason)


def _current(entry: tuple[float, int, Ticket]) -> bool:
    """Whether a deadline-heap entry still stands: its item waits with that deadline (a regime
    change gives waiting items new deadlines and leaves the old entries behind)."""
    ticket = entry[2]
    return ticket.waiting and ticket.deadline == entry[0]
