"""One picture of the pool for the dashboard and `sluice top`: bands, tenants, endpoints,
rejections and the newest receipts, as a plain JSON-able dict.

Sans-I/O: `now` is the director's clock (monotonic) and `wall` the epoch time shown. Requests
per second are the change of each endpoint's dispatch counter over the last few snapshots.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from sluice.datalayer.registry import EndpointRegistry
from sluice.flowcontrol.controller import FlowController
from sluice.receipts.query import DecisionFilter
from sluice.receipts.recorder import ReceiptRecorder

WAIT_WINDOW_S = 60.0  # the wait percentiles cover requests released this recently
RATE_WINDOW_S = 5.0  # requests per second, averaged over about this long
RECENT_DECISIONS = 25


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when there are none)."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


class DashboardView:
    """Builds snapshots; keeps only the short history the request rates need."""

    def __init__(
        self,
        *,
        flow: FlowController,
        registry: EndpointRegistry,
        recorder: ReceiptRecorder | None,
        staleness_s: float,
        pool: str = "",
        objectives: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self.flow = flow
        self.registry = registry
        self.recorder = recorder
        self.staleness_s = staleness_s
        self.pool = pool
        self.objectives = objectives  # objective name -> priority, as the pool has them now
        self._dispatches: deque[tuple[float, dict[str, int]]] = deque(maxlen=64)

    def snapshot(self, now: float, wall: float) -> dict[str, Any]:
        return {
            "at": wall,
            "pool": self.pool,
            "bands": self._bands(now),
            "endpoints": self._endpoints(now),
            "rejections": dict(self.recorder.rejections) if self.recorder else {},
            "outcomes": dict(self.recorder.outcomes) if self.recorder else {},
            "decisions": self._decisions(),
            "receipts": self.recorder is not None and self.recorder.ring.max_entries > 0,
            "queued": self.flow.queued_requests,
            "in_flight": sum(s.in_flight_requests for s in self.registry.snapshot()),
        }

    # -- bands and tenants -----------------------------------------------------------------------

    def _bands(self, now: float) -> list[dict[str, Any]]:
        by_priority: dict[int, list[str]] = {}
        for name, priority in self.objectives().items():
            by_priority.setdefault(priority, []).append(name)
        bands = {b.priority: b for b in self.flow.bands}
        in_flight = self.recorder.in_flight if self.recorder else {}
        priorities = sorted(set(bands) | set(by_priority) | {p for p, _ in in_flight}, reverse=True)
        out = []
        for priority in priorities:
            band = bands.get(priority)
            waits = self._waits(priority, now)
            tenants = self._tenants(priority, band, in_flight)
            out.append(
                {
                    "priority": priority,
                    "objectives": sorted(by_priority.get(priority, [])),
                    "queued": band.queued_requests if band else 0,
                    "queued_bytes": band.queued_bytes if band else 0,
                    "in_flight": sum(t["in_flight"] for t in tenants),
                    "wait_p50_s": percentile(waits, 0.5),
                    "wait_p90_s": percentile(waits, 0.9),
                    "wait_p99_s": percentile(waits, 0.99),
                    "waits_sampled": len(waits),
                    "tenants": tenants,
                }
            )
        return out

    def _waits(self, priority: int, now: float) -> list[float]:
        if self.recorder is None:
            return []
        samples = self.recorder.waits.get(priority, ())
        since = now - WAIT_WINDOW_S
        return sorted(w for at, w in samples if at >= since)

    def _tenants(
        self, priority: int, band: Any, in_flight: Mapping[tuple[int, str], int]
    ) -> list[dict[str, Any]]:
        flows = dict(band.flows) if band is not None else {}
        ids = set(flows) | {f for p, f in in_flight if p == priority}
        rows: list[dict[str, Any]] = []
        for fairness_id in sorted(ids):
            flow = flows.get(fairness_id)
            rows.append(
                {
                    "fairness_id": fairness_id,
                    "queued": flow.queued_requests if flow else 0,
                    "in_flight": in_flight.get((priority, fairness_id), 0),
                    "served_tokens": round(flow.served) if flow else 0,
                    "weight": flow.weight if flow else 1.0,
                }
            )
        # The fair share: weight over the weights of the tenants that are active (waiting, in
        # flight, or served at all); the share: what each got of the band's served tokens.
        active = [r for r in rows if r["queued"] or r["in_flight"] or r["served_tokens"]]
        total_weight = sum(r["weight"] for r in active)
        served = sum(r["served_tokens"] for r in rows)
        for r in rows:
            live = r in active and total_weight > 0
            r["fair_share"] = r["weight"] / total_weight if live else 0.0
            r["share"] = r["served_tokens"] / served if served else 0.0
        return rows

    # -- endpoints -------------------------------------------------------------------------------

    def _endpoints(self, now: float) -> list[dict[str, Any]]:
        states = sorted(self.registry.snapshot(), key=lambda s: s.name)
        counts = {s.name: s.dispatched_total for s in states}
        history = self._dispatches
        history.append((now, counts))
        while len(history) > 2 and now - history[1][0] >= RATE_WINDOW_S:
            history.popleft()
        then, old = history[0]
        span = now - then
        out = []
        for s in states:
            m = s.metrics
            age = None if m.updated_at == float("-inf") else now - m.updated_at
            rate = (counts[s.name] - old.get(s.name, counts[s.name])) / span if span > 0 else 0.0
            out.append(
                {
                    "name": s.name,
                    "address": s.endpoint.hostport,
                    "waiting": m.waiting,
                    "running": m.running,
                    "kv_cache_usage": m.kv_cache_usage if m.kv_cache_known else None,
                    "pending_prefill_tokens": s.pending_prefill_tokens,
                    "pending_prefills": s.pending_prefills,
                    "in_flight": s.in_flight_requests,
                    "dispatched": s.dispatched_total,
                    "age_s": age,
                    "fresh": age is not None and age <= self.staleness_s,
                    "req_per_s": rate,
                    "last_error": s.last_error,
                }
            )
        return out

    def _decisions(self) -> list[dict[str, Any]]:
        if self.recorder is None:
            return []
        blobs = DecisionFilter(limit=RECENT_DECISIONS).select(self.recorder.ring)
        return [orjson.loads(b) for b in blobs]
