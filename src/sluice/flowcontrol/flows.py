"""A flow: one tenant's queue within one priority band, with its fairness bookkeeping."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sluice.flowcontrol.model import FlowKey
from sluice.flowcontrol.ordering import OrderingQueue


@dataclass(slots=True)
class RecentService:
    """Service over a sliding window, as sums that decay by e every `window` seconds: virtual
    tokens charged (corrected at completion) and requests served."""

    cost: float = 0.0
    requests: float = 0.0
    at: float = 0.0  # when the sums were last brought up to date

    def add(self, cost: float, requests: int, now: float, window: float) -> None:
        keep = _decay(now - self.at, window)
        self.cost = max(0.0, self.cost * keep + cost)
        self.requests = self.requests * keep + requests
        self.at = now

    def as_of(self, now: float, window: float) -> tuple[float, float]:
        """(cost, requests) as of `now`."""
        keep = _decay(now - self.at, window)
        return self.cost * keep, self.requests * keep


def _decay(elapsed: float, window: float) -> float:
    return math.exp(-elapsed / window) if elapsed > 0 else 1.0


@dataclass(slots=True, eq=False)
class Flow:
    key: FlowKey
    queue: OrderingQueue
    weight: float = 1.0
    # Virtual token counter (VTC): weighted cost charged at dispatch, corrected at completion.
    counter: float = 0.0
    # The same flow's weighted service on the pool's other replicas (`sluice.replicas`): the
    # token-fair key is `counter + remote`, so a tenant spread over replicas is one tenant.
    remote: float = 0.0
    # Token cost actually served (unweighted), corrected at completion.
    served: float = 0.0
    queued_requests: int = 0
    queued_bytes: int = 0
    # Service over the band's fair-share window: what "heavy hitter" is measured on.
    recent: RecentService = field(default_factory=RecentService)
    # Bookkeeping of the band's ready set (see fairness.py).
    ready: bool = False
    ready_version: int = 0
    ready_key: tuple[float, ...] = ()
    turn: int = 0
    # Requests dispatched and not yet completed: a flow is idle (and may be forgotten, see
    # `Band.collect`) only with nothing queued and nothing in flight.
    in_flight: int = 0
    # Bumped each time the flow goes idle or active again: stale idle-heap entries skip.
    idle_version: int = 0

    @property
    def backlogged(self) -> bool:
        return self.queue.live > 0

    @property
    def idle(self) -> bool:
        return self.queued_requests == 0 and self.in_flight == 0
