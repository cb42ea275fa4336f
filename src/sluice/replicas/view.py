"""The other replicas' summaries merged into the questions flow control and the room ask.

Implements `flowcontrol.peers.Peers` and `room.peers.PeerDemand`. Built once per sync from the
summaries read; every question is then a dict lookup, so the request path pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sluice.replicas.summary import ReplicaSummary

# How many of the largest request costs a flow may be ahead of a less-served flow waiting on
# another replica before it is held: the skew one sync interval of staleness can add.
SLACK_REQUESTS = 2.0


@dataclass(slots=True)
class _BandView:
    waiting: int = 0
    # (pool-wide key, fairness id) of the two least-served eligible waiting flows: enough to
    # answer "someone other than me, less served" for any asker.
    least: list[tuple[float, str]] = field(default_factory=list)
    waiting_flows: set[str] = field(default_factory=set)


class PeerView:
    def __init__(self, peers: Iterable[ReplicaSummary]) -> None:
        self.peers: tuple[ReplicaSummary, ...] = tuple(peers)
        self._bands: dict[int, _BandView] = {}
        self._served: dict[tuple[int, str], float] = {}
        self._in_flight: dict[str, int] = {}
        self._pending_tokens: dict[str, int] = {}
        max_cost = 0.0
        for peer in self.peers:
            max_cost = max(max_cost, peer.max_cost)
            for band in peer.bands:
                view = self._bands.get(band.priority)
                if view is None:
                    view = self._bands[band.priority] = _BandView()
                view.waiting += band.waiting
                for flow in band.flows:
                    key = (band.priority, flow.fairness_id)
                    self._served[key] = self._served.get(key, 0.0) + flow.served
                    if flow.waiting:
                        view.waiting_flows.add(flow.fairness_id)
                        if flow.eligible:
                            view.least.append((flow.key, flow.fairness_id))
            for endpoint in peer.endpoints:
                name = endpoint.name
                self._in_flight[name] = self._in_flight.get(name, 0) + endpoint.in_flight
                self._pending_tokens[name] = (
                    self._pending_tokens.get(name, 0) + endpoint.pending_prefill_tokens
                )
        for view in self._bands.values():
            view.least = _two_least(view.least)
        self._top_waiting = max((p for p, v in self._bands.items() if v.waiting), default=None)
        self.max_cost = max_cost

    # -- flowcontrol.peers.Peers and room.peers.PeerDemand -----------------------------------

    def waiting_above(self, priority: int) -> bool:
        top = self._top_waiting
        return top is not None and top > priority

    def holds(self, priority: int, fairness_id: str, key: float, slack: float = 0.0) -> bool:
        view = self._bands.get(priority)
        if view is None:
            return False
        allowance = max(slack, SLACK_REQUESTS * self.max_cost)
        for other_key, other in view.least:
            if other != fairness_id:
                return other_key + allowance < key
        return False

    def others_waiting(self, priority: int, fairness_id: str) -> bool:
        view = self._bands.get(priority)
        if view is None:
            return False
        flows = view.waiting_flows
        return len(flows) > 1 or (bool(flows) and fairness_id not in flows)

    def any_waiting(self) -> bool:
        return self._top_waiting is not None

    # -- what the replica core applies -------------------------------------------------------

    def served(self, priority: int, fairness_id: str) -> float:
        """The flow's unweighted service on the other replicas."""
        return self._served.get((priority, fairness_id), 0.0)

    def in_flight(self, endpoint: str) -> int:
        return self._in_flight.get(endpoint, 0)

    def pending_prefill_tokens(self, endpoint: str) -> int:
        return self._pending_tokens.get(endpoint, 0)


def _two_least(entries: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """The least-keyed entry and the least one of a different flow (ties: any)."""
    entries.sort()
    out: list[tuple[float, str]] = []
    for entry in entries:
        if not out or entry[1] != out[0][1]:
            out.append(entry)
            if len(out) == 2:
                break
    return out


EMPTY = PeerView(())
