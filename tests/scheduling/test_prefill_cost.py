"""The prefill-cost scorer: the endpoint where a request's first token waits behind the least
prefill wins — its own uncached prompt plus prefills already pending there."""

from __future__ import annotations

from sluice.datalayer.endpoint import EngineMetrics

from .helpers import NOW, pool, request, scheduler

PREFILL_ONLY = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: prefix-cache-scorer
- type: prefill-cost-scorer
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: prefill-cost-scorer}
"""
PREFIX_THEN_COST = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: prefix-cache-scorer
- type: prefill-cost-scorer
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: prefix-cache-scorer, weight: 1}
  - {pluginRef: prefill-cost-scorer, weight: 3}
"""


def test_an_endpoint_busy_prefilling_loses_to_an_idle_one() -> None:
    registry = pool(EngineMetrics(), EngineMetrics())
    registry.dispatch("pod-0", 5000, prefill_tokens=4000)  # a long prompt, no first byte yet
    sched = scheduler(PREFILL_ONLY)
    result = sched.schedule(request("short question " * 20), registry.snapshot(), NOW)
    assert result.primary.name == "pod-1"


def test_the_endpoint_holding_the_prefix_wins_while_it_is_not_busy() -> None:
    registry = pool(EngineMetrics(), EngineMetrics())
    sched = scheduler(PREFIX_THEN_COST)
    long_prompt = "the same long system prompt, " * 200
    first = request(long_prompt)
    placed = sched.schedule(first, registry.snapshot(), NOW).primary
    sched.on_dispatch(first, placed)
    again = sched.schedule(request(long_prompt), registry.snapshot(), NOW).primary
    assert again == placed


def test_a_hot_prefix_spreads_once_its_holder_is_busy_prefilling_for_others() -> None:
    registry = pool(EngineMetrics(), EngineMetrics())
    sched = scheduler(PREFIX_THEN_COST)
    long_prompt = "the same long system prompt, " * 200
    first = request(long_prompt)
    placed = sched.schedule(first, registry.snapshot(), NOW).primary
    sched.on_dispatch(first, placed)
    registry.dispatch(placed.name, 20_000, prefill_tokens=16_000)  # others' long prompts
    again = sched.schedule(request(long_prompt), registry.snapshot(), NOW).primary
    assert again != placed


def test_a_prefill_pending_on_another_replica_counts_as_one_pending_here() -> None:
    # Active-active replicas: the others' pending prefills, as of the last sync, weigh as this
    # replica's own do (as they do in the room's pending-prefill budget).
    registry = pool(EngineMetrics(), EngineMetrics())
    busy = {s.name: s for s in registry.snapshot()}["pod-0"]
    busy.peer_pending_prefill_tokens = 4000  # another replica's long prompt, no first byte yet
    registry.dispatch("pod-1", 1200, prefill_tokens=1000)  # a shorter one of this replica's
    sched = scheduler(PREFILL_ONLY)
    result = sched.schedule(request("short question " * 20), registry.snapshot(), NOW)
    assert result.primary.name == "pod-1"
