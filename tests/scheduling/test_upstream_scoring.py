"""Sluice reproduces upstream's scoring decisions (issue 4, "Done means")."""

from __future__ import annotations

from sluice.datalayer.endpoint import EngineMetrics

from .helpers import NOW, pool, request, scheduler

ALL_FOUR_AT_WEIGHT_ONE = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: lora-affinity-scorer
"""


def test_least_loaded_pod_wins_with_queue_kv_prefix_lora_at_weight_one() -> None:
    registry = pool(
        EngineMetrics(waiting=3, kv_cache_usage=0.2),
        EngineMetrics(waiting=0, kv_cache_usage=0.1),
        EngineMetrics(waiting=10, kv_cache_usage=0.2),
    )
    result = scheduler(ALL_FOUR_AT_WEIGHT_ONE).schedule(request("hi"), registry.snapshot(), NOW)
    assert result.primary.name == "pod-1"


def test_pod_with_the_requested_adapter_active_wins_despite_higher_kv_use() -> None:
    registry = pool(
        EngineMetrics(kv_cache_usage=0.1, active_adapters=frozenset({"other"}), max_adapters=1),
        EngineMetrics(kv_cache_usage=0.5, active_adapters=frozenset({"sql-lora"}), max_adapters=1),
        EngineMetrics(kv_cache_usage=0.2, active_adapters=frozenset({"other"}), max_adapters=1),
    )
    result = scheduler(ALL_FOUR_AT_WEIGHT_ONE).schedule(
        request("hi", model="sql-lora"), registry.snapshot(), NOW
    )
    assert result.primary.name == "pod-1"


def test_the_same_512_char_prompt_twice_goes_to_the_same_endpoint() -> None:
    registry = pool(*(EngineMetrics() for _ in range(8)))
    sched = scheduler(ALL_FOUR_AT_WEIGHT_ONE)
    prompt = ("The quick brown fox jumps over the lazy dog. " * 12)[:512]
    first = sched.schedule(request(prompt), registry.snapshot(), NOW)
    sched.on_dispatch(request(prompt), first.primary)
    second = sched.schedule(request(prompt), registry.snapshot(), NOW)
    assert second.primary == first.primary
    assert (
        second.profile_results["default"].targets[0].score
        > first.profile_results["default"].targets[0].score
    )


def test_max_num_of_endpoints_two_gives_two_distinct_endpoints_in_score_order() -> None:
    registry = pool(
        EngineMetrics(waiting=5),
        EngineMetrics(waiting=0),
        EngineMetrics(waiting=9),
        EngineMetrics(waiting=2),
    )
    sched = scheduler(
        """
plugins:
- type: queue-scorer
- type: max-score-picker
  parameters: {maxNumOfEndpoints: 2}
"""
    )
    result = sched.schedule(request("hi"), registry.snapshot(), NOW)
    assert [e.name for e in result.endpoints] == ["pod-1", "pod-3"]
    scores = [t.score for t in result.profile_results["default"].targets]
    assert scores == sorted(scores, reverse=True)


def test_queue_scorer_is_min_max_and_kv_scorer_absolute() -> None:
    from sluice.scheduling.scorers import KvCacheUtilizationScorer, min_max_inverted

    assert min_max_inverted([3, 0, 10]) == [0.7, 1.0, 0.0]
    assert min_max_inverted([4, 4]) == [1.0, 1.0]
    registry = pool(EngineMetrics(kv_cache_usage=0.25))
    from sluice.scheduling.framework import CycleState

    scores = KvCacheUtilizationScorer("kv").score(CycleState(request(), NOW), registry.snapshot())
    assert scores == [0.75]


def test_lora_affinity_scores_follow_upstream_ladder() -> None:
    from sluice.scheduling.affinity import LoraAffinityScorer
    from sluice.scheduling.framework import CycleState

    registry = pool(
        EngineMetrics(active_adapters=frozenset({"a"}), max_adapters=2),  # active → 1.0
        EngineMetrics(active_adapters=frozenset({"b"}), max_adapters=2),  # free slot → 0.8
        EngineMetrics(
            active_adapters=frozenset({"b"}), waiting_adapters=frozenset({"a"}), max_adapters=2
        ),
        EngineMetrics(active_adapters=frozenset({"b", "c"}), max_adapters=2),  # full → 0
    )
    cycle = CycleState(request(model="a"), NOW)
    assert LoraAffinityScorer("l").score(cycle, registry.snapshot()) == [1.0, 0.8, 0.6, 0.0]
