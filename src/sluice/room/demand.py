"""Who is expected to want room soon: the measure that bounds every reserve in time.

A reserve — headroom kept for a higher band, an endpoint kept for the rest of a band, an engine
held to one prefill at a time so that someone else's first token is not stuck behind a queue of
prefills — is worth keeping only while someone could use it soon; otherwise it is an idle engine
while work waits. "Soon" is measured per flow (tenant and band) and per band: one is expected
while it has requests waiting in Sluice, and for `hold` after its last arrival, where `hold` is a
number of its own mean gaps between arrivals (`reserve_hold_gaps`), at least
`reserve_hold_min_s` (a steady stream keeps its reserve without flicker) and at most
`reserve_hold_max_s` (a rare arrival does not pin a reserve for minutes).

The hold is long on purpose: a reserve is given up at once but taken back only as fast as the
work let in meanwhile drains, so it must lapse only for a flow that has really gone quiet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

# Weight of the newest gap in the moving mean of gaps between arrivals, and the most a single
# gap counts for, in mean gaps: the silence after a burst says the burst ended, not that the
# flow is slow, and must not stretch its hold to the maximum.
_GAP_WEIGHT = 0.2
_GAP_CLIP = 4.0


@dataclass(slots=True)
class _Arrivals:
    last_at: float
    mean_gap: float = float("inf")  # unknown until the second arrival

    def arrived(self, now: float) -> None:
        gap = max(0.0, now - self.last_at)
        if self.mean_gap == float("inf"):
            self.mean_gap = gap
        else:
            gap = min(gap, _GAP_CLIP * self.mean_gap) if self.mean_gap > 0 else gap
            self.mean_gap += _GAP_WEIGHT * (gap - self.mean_gap)
        self.last_at = now


@dataclass(frozen=True, slots=True)
class HoldTimes:
    gaps: float = 10.0
    min_s: float = 2.0
    max_s: float = 30.0

    def recent(self, arrivals: _Arrivals, now: float) -> bool:
        """Whether less than the hold has passed since the last arrival."""
        hold = min(self.max_s, max(self.min_s, self.gaps * arrivals.mean_gap))
        return now - arrivals.last_at <= hold


@dataclass(slots=True)
class _Band:
    arrivals: _Arrivals
    # fairness id -> arrivals, least recent first (re-inserted on each arrival)
    flows: dict[str, _Arrivals] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)  # fairness id -> requests waiting


class Demand:
    """Arrivals and waiting requests per band and per flow, and who is expected soon."""

    def __init__(self, hold: HoldTimes | None = None) -> None:
        self.hold = hold or HoldTimes()
        self._bands: dict[int, _Band] = {}
        self._by_priority: list[int] = []  # highest first
        # every band's flows, least recent first: (priority, fairness id) -> the band's entry
        self._flows: dict[tuple[int, str], _Arrivals] = {}
        self._waiting_flows = 0  # flows of any band with requests waiting

    # -- events ----------------------------------------------------------------------------

    def arrived(self, priority: int, fairness_id: str, now: float) -> None:
        """A request of this flow was queued (call `left` once it leaves the queue)."""
        band = self._bands.get(priority)
        if band is None:
            band = self._bands[priority] = _Band(_Arrivals(now))
            self._by_priority = sorted(self._bands, reverse=True)
        else:
            band.arrivals.arrived(now)
        flow = band.flows.pop(fairness_id, None)
        if flow is None:
            flow = _Arrivals(now)
        else:
            flow.arrived(now)
        band.flows[fairness_id] = flow
        key = (priority, fairness_id)
        self._flows.pop(key, None)
        self._flows[key] = flow
        waiting = band.waiting.get(fairness_id, 0)
        if waiting == 0:
            self._waiting_flows += 1
        band.waiting[fairness_id] = waiting + 1
        self._forget_old(band, now)

    def left(self, priority: int, fairness_id: str) -> None:
        """A queued request of this flow left the queue (dispatched, rejected, expired, ...)."""
        band = self._bands.get(priority)
        waiting = band.waiting.get(fairness_id, 0) if band is not None else 0
        if band is None or waiting == 0:
            return
        if waiting == 1:
            del band.waiting[fairness_id]
            self._waiting_flows -= 1
        else:
            band.waiting[fairness_id] = waiting - 1

    # -- questions -------------------------------------------------------------------------

    def expected_above(self, priority: int, now: float) -> bool:
        """Whether a band above `priority` is expected to want room soon."""
        for other in self._by_priority:
            if other <= priority:
                return False
            if self._band_expected(other, now):
                return True
        return False

    def expected_below(self, priority: int, now: float) -> bool:
        """Whether a band below `priority` is expected to want room soon."""
        for other in reversed(self._by_priority):
            if other >= priority:
                return False
            if self._band_expected(other, now):
                return True
        return False

    def _band_expected(self, priority: int, now: float) -> bool:
        band = self._bands[priority]
        return bool(band.waiting) or self.hold.recent(band.arrivals, now)

    def others_waiting(self, priority: int, fairness_id: str) -> bool:
        """Whether a flow of band `priority` other than `fairness_id` has a request waiting."""
        band = self._bands.get(priority)
        if band is None:
            return False
        waiting = band.waiting
        return len(waiting) > 1 or bool(waiting and fairness_id not in waiting)

    def others_expected(self, priority: int, fairness_id: str, now: float) -> bool:
        """Whether a flow of band `priority` other than `fairness_id` is expected soon."""
        band = self._bands.get(priority)
        if band is None:
            return False
        if self.others_waiting(priority, fairness_id):
            return True
        for other in reversed(band.flows):
            if other == fairness_id:
                continue
            arrivals = band.flows[other]
            if now - arrivals.last_at > self.hold.max_s:
                return False  # the rest arrived even earlier
            if self.hold.recent(arrivals, now):
                return True
        return False

    def shared(self, now: float) -> bool:
        """Whether more than one flow, of any band, is expected soon."""
        expected = self._waiting_flows
        if expected > 1:
            return True
        for (priority, fairness_id), arrivals in reversed(self._flows.items()):
            if now - arrivals.last_at > self.hold.max_s:
                break
            if fairness_id in self._bands[priority].waiting:
                continue  # counted already
            if self.hold.recent(arrivals, now):
                expected += 1
                if expected > 1:
                    return True
        return False

    # -- housekeeping ----------------------------------------------------------------------

    def _forget_old(self, band: _Band, now: float) -> None:
        """Forget flows whose last arrival is older than any hold (a flow that still waits is
        counted by its waiting requests)."""
        horizon = now - self.hold.max_s
        _drop_before(band.flows, horizon)
        _drop_before(self._flows, horizon)


_Key = TypeVar("_Key")


def _drop_before(flows: dict[_Key, _Arrivals], horizon: float) -> None:
    """Drop the flows last seen before `horizon` from the front of `flows` (kept in order of
    last arrival, oldest first)."""
    while flows:
        oldest = next(iter(flows))
        if flows[oldest].last_at >= horizon:
            break
        del flows[oldest]
