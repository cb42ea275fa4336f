"""The in-flight-load scorer counts the pool's dispatches Sluice knows of, not only what the
engines last reported: its own, and with active-active replicas the others' too."""

from __future__ import annotations

from sluice.datalayer.endpoint import EngineMetrics
from sluice.scheduling.framework import CycleState
from sluice.scheduling.scorers import InFlightLoadScorer

from .helpers import NOW, pool, request, scheduler

LOAD_ONLY = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: in-flight-load-scorer
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: in-flight-load-scorer}
"""


def test_requests_another_replica_sent_count_before_the_engine_reports_them() -> None:
    # Both engines still report nothing running (a long prefill step had not ended when they
    # were scraped); the other replicas said at the last sync that two of theirs run on pod-0.
    registry = pool(EngineMetrics(), EngineMetrics())
    busy = {s.name: s for s in registry.snapshot()}["pod-0"]
    busy.peer_in_flight = 2
    sched = scheduler(LOAD_ONLY)
    for _ in range(5):  # not a tie broken at random
        result = sched.schedule(request("a question " * 20), registry.snapshot(), NOW)
        assert result.primary.name == "pod-1"


def test_the_others_in_flight_weigh_as_much_as_this_replicas_own() -> None:
    mine, theirs = pool(EngineMetrics(), EngineMetrics()), pool(EngineMetrics(), EngineMetrics())
    mine.dispatch("pod-0", 0)  # one request of this replica's (no tokens counted)
    {s.name: s for s in theirs.snapshot()}["pod-0"].peer_in_flight = 1  # one of another's
    scorer = InFlightLoadScorer("load", request_scale=4.0, token_scale=16384.0)
    cycle = CycleState(request("a question " * 20), NOW)
    assert scorer.score(cycle, mine.snapshot()) == scorer.score(cycle, theirs.snapshot())
