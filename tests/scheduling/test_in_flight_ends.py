"""The in-flight load scorer between scrapes: what Sluice saw end no longer weighs."""

from __future__ import annotations

from sluice.datalayer.endpoint import EngineMetrics
from sluice.scheduling.framework import CycleState
from sluice.scheduling.scorers import InFlightLoadScorer

from .helpers import NOW, pool, request


def test_the_in_flight_load_scorer_does_not_weigh_requests_that_ended_since_the_scrape() -> None:
    # Two engines scraped at 8 running; all 8 of one's end. Until the next scrape it must look
    # empty, or the clients' next requests spread over the full ones instead (docs/room.md, 3a).
    registry = pool(EngineMetrics(), EngineMetrics())
    tickets = {n: [registry.dispatch(n, 100) for _ in range(8)] for n in ("pod-0", "pod-1")}
    for name in tickets:
        mark = registry.begin_scrape(name)
        assert mark is not None
        registry.record_scrape(mark, EngineMetrics(running=8, updated_at=NOW))
    for ticket in tickets["pod-0"]:
        registry.complete(ticket)
    scorer = InFlightLoadScorer("in-flight", request_scale=4.0, token_scale=16384.0)
    idle, busy = scorer.score(CycleState(request(), NOW), registry.snapshot())
    assert idle == 1.0 and busy < 0.5
