"""The sans-I/O replica: what this replica publishes, and how the others' summaries apply.

The shell calls, every sync interval:

    summary = core.summary(now, wall)               # publish (summary.encode)
    asks = core.lease_asks(peers)                   # what to ask the store for
    core.apply(PeerView(peers), granted, now)       # the store answered
    core.go_local(now)                              # ... or it did not: local-only at once

and `core.expire_leases(now)` so that leases never outlive the period they were granted for.
Nothing here reads a clock or opens a socket.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sluice.datalayer.registry import EndpointRegistry
from sluice.flowcontrol.controller import FlowController
from sluice.replicas.leases import lease_target
from sluice.replicas.summary import (
    VERSION,
    BandSummary,
    EndpointSummary,
    FlowSummary,
    ReplicaSummary,
)
from sluice.replicas.view import EMPTY, PeerView
from sluice.room import Room

# The largest request cost remembered decays by this factor each sync, so one huge request
# does not widen the fairness slack for long.
_MAX_COST_DECAY = 0.98


@dataclass(frozen=True, slots=True)
class LeaseAsk:
    endpoint: str
    cap: int
    target: int
    in_flight: int


class ReplicaCore:
    def __init__(
        self,
        replica_id: str,
        *,
        flow: FlowController,
        registry: EndpointRegistry,
        room: Room,
        lease_s: float,
    ) -> None:
        self.replica_id = replica_id
        self.flow = flow
        self.registry = registry
        self.room = room
        self.lease_s = lease_s
        self.view: PeerView = EMPTY
        self.joined = False  # the last sync reached the store
        self._max_cost = 0.0
        self._leases_until = float("-inf")

    @property
    def cap(self) -> int | None:
        """The per-endpoint in-flight cap leases split (None: no cap, no leases)."""
        return self.room.settings.max_in_flight_requests

    # -- publish -----------------------------------------------------------------------------

    def summary(self, now: float, wall: float) -> ReplicaSummary:
        """This replica's queues per band and flow and its endpoints, as of `now`."""
        view = self.view if self.joined else EMPTY
        bands = []
        max_cost = self._max_cost * _MAX_COST_DECAY
        for band in self.flow.bands:
            oldest: dict[str, float] = {}
            for ticket in band.waiting():
                fid = ticket.flow.fairness_id
                oldest[fid] = min(oldest.get(fid, now), ticket.enqueued_at)
                max_cost = max(max_cost, ticket.cost_estimate)
            held_band = view.waiting_above(band.priority)
            flows = []
            for fid, flow in band.flows.items():
                if not flow.queued_requests and not flow.served:
                    continue
                key = flow.counter + flow.remote
                eligible = not held_band and not view.holds(band.priority, fid, key)
                since = oldest.get(fid, now)
                flows.append(
                    FlowSummary(fid, flow.queued_requests, now - since, flow.served, key, eligible)
                )
            band_oldest = min(oldest.values(), default=now)
            bands.append(
                BandSummary(band.priority, band.queued_requests, now - band_oldest, tuple(flows))
            )
        self._max_cost = max_cost
        endpoints = tuple(
            EndpointSummary(
                s.name,
                s.in_flight_requests,
                s.pending_prefills,
                s.pending_prefill_tokens,
                -1 if s.lease is None else s.lease,
            )
            for s in self.registry.snapshot()
        )
        return ReplicaSummary(VERSION, self.replica_id, wall, tuple(bands), endpoints, max_cost)

    def lease_asks(self, mine: ReplicaSummary, peers: Sequence[ReplicaSummary]) -> list[LeaseAsk]:
        """What to ask the store for on each endpoint (none without a cap).

        A lease that is to shrink shrinks here at once, to the target or what runs (never
        below), before the ask leaves: dispatches made while the sync is on its way stay
        within it. The ask's `in_flight` is that local lease — the most this replica can have
        running when the grant lands — so the store never grants the others room this replica
        may still be filling (it reported only what ran when it asked, and overfilled by the
        dispatches of one round trip)."""
        cap = self.cap
        if cap is None:
            return []
        by_peer = [(p.replica, {e.name: e.in_flight for e in p.endpoints}, p.demand) for p in peers]
        states = {s.name: s for s in self.registry.snapshot()}
        demand = mine.demand
        asks = []
        for endpoint in mine.endpoints:
            name = endpoint.name
            others = [(who, flights.get(name, 0), d) for who, flights, d in by_peer]
            target = lease_target(name, cap, (self.replica_id, endpoint.in_flight, demand), others)
            state = states.get(name)
            held = endpoint.in_flight
            if state is not None and state.lease is not None:
                if target < state.lease:
                    state.lease = max(target, state.in_flight_requests)
                held = max(held, state.lease)
            asks.append(LeaseAsk(name, cap, target, held))
        return asks

    # -- apply -------------------------------------------------------------------------------

    def apply(self, view: PeerView, granted: Mapping[str, int], now: float) -> None:
        """The store answered: the others' summaries (`view`) and this replica's leases."""
        self.view = view
        self.joined = True
        self.flow.peers = view
        self.room.peers = view
        self._set_remote(view)
        for state in self.registry.snapshot():
            state.peer_in_flight = view.in_flight(state.name)
            state.peer_pending_prefill_tokens = view.pending_prefill_tokens(state.name)
            if state.name in granted:
                state.lease = granted[state.name]
        if granted:
            self._leases_until = now + self.lease_s

    def go_local(self, now: float) -> None:
        """The store is unreachable: local-only flow control at once. Leases are kept until
        they expire (`expire_leases`): until then no other replica can be granted their room."""
        self.view = EMPTY
        self.joined = False
        self.flow.peers = None
        self.room.peers = None
        self._set_remote(EMPTY)
        for state in self.registry.snapshot():
            state.peer_in_flight = 0
            state.peer_pending_prefill_tokens = 0
        self.expire_leases(now)

    def expire_leases(self, now: float) -> bool:
        """Drop leases not renewed within their period (the whole cap is local again). True
        if any lease was dropped."""
        if now < self._leases_until:
            return False
        dropped = False
        for state in self.registry.snapshot():
            if state.lease is not None:
                state.lease = None
                dropped = True
        return dropped

    def _set_remote(self, view: PeerView) -> None:
        for band in self.flow.bands:
            policy = band.fairness
            for fid, flow in band.flows.items():
                remote = view.served(band.priority, fid) / flow.weight
                if remote != flow.remote:
                    policy.set_remote(flow, remote)
