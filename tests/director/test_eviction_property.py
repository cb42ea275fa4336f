"""Eviction (`enableEviction`), whatever happens: Hypothesis interleaves arrivals of four bands
(10, 0, -1, -5) behind front ends that can or cannot take a request back, first tokens,
completions, client cancellations, scrapes and time passing, on the sans-I/O director core.

Every eviction ends a request of a **negative** band that has **no first token**, whose front
end offered to take it back, at most **one per endpoint per scrape**; and every request gets
**exactly one outcome** — rejected, completed, cancelled or evicted — with the accounting back
at zero once everything has ended.
"""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.bench.harness.core import core_from_config
from sluice.config import load_sluice_config
from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.director import DispatchedRequest
from sluice.director.contract import Outcome
from sluice.flowcontrol.model import Ticket
from sluice.requests.errors import SluiceError
from sluice.requests.model import InferenceRequest
from sluice.sources.state import PoolKey, PoolState

CONFIG = """
saturationDetector:
  maxInFlightPerEndpoint: 1
  maxInFlightPerEndpointBelowTopPriority: 0
  maxPendingPrefillTokensPerEndpoint: 0
  metricsStalenessThreshold: 1h
flowControl:
  fairShareWindow: 0s
"""
ENDPOINTS = ("e0", "e1")
OBJECTIVES = {"interactive": 10, "batch": -1, "bulk": -5}
BANDS = {10: "interactive", 0: None, -1: "batch", -5: "bulk"}


class Pool:
    def __init__(self) -> None:
        config = load_sluice_config(CONFIG)
        self.now = 0.0
        self.core = core_from_config(
            config, self._released, flow=replace(config.flow, enable_eviction=True)
        )
        endpoints = tuple(Endpoint(n, f"10.0.0.{i + 1}", 8000) for i, n in enumerate(ENDPOINTS))
        objectives = {f"ns/{n}": SimpleNamespace(priority=p) for n, p in OBJECTIVES.items()}
        state = PoolState(
            PoolKey("pool", "ns"),
            pool=SimpleNamespace(),
            endpoints=endpoints,
            objectives=objectives,
        )
        self.core.set_state(state, 0.0)
        self.takes_back: dict[int, bool] = {}  # by id(request): the front end can evict
        self.outcomes: dict[int, list[str]] = {}  # by id(request): every outcome it got
        self.tickets: list[Ticket] = []
        self.running: list[DispatchedRequest] = []
        self.first_token: set[int] = set()  # ids of requests that produced one
        self.evicted_since_scrape = dict.fromkeys(ENDPOINTS, 0)
        self.last_eviction = dict.fromkeys(ENDPOINTS, float("-inf"))
        self.evictions = 0
        for name in ENDPOINTS:
            self.scrape(name, 0)

    def outcome(self, request: InferenceRequest, what: str) -> None:
        self.outcomes.setdefault(id(request), []).append(what)

    # -- what the director reports ------------------------------------------------------------

    def _released(self, ticket: Ticket, result: DispatchedRequest | SluiceError) -> None:
        if isinstance(result, SluiceError):
            self.outcome(ticket.request, f"rejected {result.http_status}")
            return
        self.running.append(result)
        if self.takes_back[id(result.request)] and self.core.may_evict(result):
            result.allow_eviction(lambda error, placed=result: self._evicted(placed, error))

    def _evicted(self, victim: DispatchedRequest, error: SluiceError) -> None:
        request = victim.request
        assert request.priority < 0, "a non-negative band was evicted"
        assert id(request) not in self.first_token, "evicted after its first token"
        assert self.takes_back[id(request)], "evicted although its front end could not"
        assert (error.http_status, error.dropped_reason) == (429, "evicted")
        name = victim.endpoint.name
        assert self.evicted_since_scrape[name] == 0, "two evictions on one endpoint, one scrape"
        self.evicted_since_scrape[name] += 1
        self.last_eviction[name] = self.now
        self.evictions += 1
        self.outcome(request, "evicted")

    # -- what the outside world does ----------------------------------------------------------

    def arrive(self, priority: int, takes_back: bool, subset: bool) -> None:
        headers = {"x-llm-d-inference-fairness-id": f"t{priority}"}
        if BANDS[priority]:
            headers["x-llm-d-inference-objective"] = BANDS[priority]
        body = json.dumps({"model": "m", "prompt": "hello there", "stream": True}).encode()
        hint = frozenset({"10.0.0.1:8000"}) if subset else None
        request = self.core.parse(headers, body, path="/v1/completions", subset_hint=hint)
        self.takes_back[id(request)] = takes_back
        try:
            self.tickets.append(self.core.submit(request, self.now))
        except SluiceError as error:
            self.outcome(request, f"rejected {error.http_status}")
            return
        self.core.pump(self.now)

    def first_byte(self, index: int) -> None:
        live = [d for d in self.running if not d.finished and d.first_byte_at is None]
        if live:
            placed = live[index % len(live)]
            self.first_token.add(id(placed.request))
            placed.first_byte(self.now)

    def complete(self, index: int) -> None:
        live = [d for d in self.running if not d.finished]
        if live:
            placed = live[index % len(live)]
            placed.finish(Outcome.COMPLETED, self.now)
            self.outcome(placed.request, "completed")

    def cancel(self, index: int) -> None:
        waiting = [t for t in self.tickets if t.waiting]
        if waiting:
            ticket = waiting[index % len(waiting)]
            self.core.cancel(ticket, self.now)
            self.outcome(ticket.request, "cancelled")

    def scrape(self, name: str, waiting: int) -> None:
        registry = self.core.registry
        mark = registry.begin_scrape(name)
        assert mark is not None
        registry.record_scrape(mark, EngineMetrics(waiting=waiting, updated_at=self.now))
        if self.now > self.last_eviction[name]:  # a scrape that can show the eviction
            self.evicted_since_scrape[name] = 0
        self.core.pump(self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.core.pump(self.now)

    # -- the end -------------------------------------------------------------------------------

    def finish_everything(self) -> None:
        for ticket in [t for t in self.tickets if t.waiting]:
            self.core.cancel(ticket, self.now)
            self.outcome(ticket.request, "cancelled")
        while live := [d for d in self.running if not d.finished]:
            live[0].finish(Outcome.COMPLETED, self.now)
            self.outcome(live[0].request, "completed")
        for placed in self.running:
            placed.finish(Outcome.COMPLETED, self.now)  # a late finish changes nothing
        for outcomes in self.outcomes.values():
            assert len(outcomes) == 1, f"more than one outcome: {outcomes}"
        assert set(self.outcomes) == set(self.takes_back)  # every request has its outcome
        assert self.core.in_flight == 0 and self.core.flow.queued_requests == 0
        assert all(s.in_flight_requests == 0 for s in self.core.registry.snapshot())


arrival = st.tuples(
    st.just("arrive"),
    st.sampled_from([10, 0, -1, -1, -5, -5]),  # band
    st.sampled_from([True, True, False]),  # the front end can take it back
    st.sampled_from([False, False, True]),  # a subset hint (one endpoint)
)
steps = st.lists(
    st.one_of(
        arrival,
        arrival,
        arrival,
        st.tuples(st.just("first_byte"), st.integers(0, 99)),
        st.tuples(st.just("complete"), st.integers(0, 99)),
        st.tuples(st.just("cancel"), st.integers(0, 99)),
        st.tuples(st.just("scrape"), st.sampled_from(ENDPOINTS), st.integers(0, 8)),
        st.tuples(st.just("advance"), st.sampled_from([0.001, 0.01, 0.1])),
    ),
    min_size=20,
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(steps=steps)
def test_eviction_only_takes_negative_bands_before_their_first_token_once_each(steps) -> None:
    pool = Pool()
    for step in steps:
        getattr(pool, step[0])(*step[1:])
    pool.finish_everything()


def test_the_property_sees_evictions() -> None:
    """The model above does evict: two batch requests fill an endpoint's room, an interactive
    one arrives, and the newest batch request goes."""
    pool = Pool()
    for _ in range(len(ENDPOINTS)):  # every endpoint busy with batch work (one each)
        pool.arrive(-1, True, False)
    pool.arrive(10, True, False)
    assert pool.evictions == 1
    newest = max(
        (d for d in pool.running if pool.outcomes.get(id(d.request)) == ["evicted"]),
        key=lambda d: d.dispatch_order,
    )
    assert newest is pool.running[-2]  # the interactive request took its place, last
    assert pool.running[-1].request.priority == 10
    pool.finish_everything()
