"""Upstream's usage-limit rule (room/ceiling.py): each band's ceiling on pool saturation, as
llm-d-router v0.10's static and priority-holdback policies compute it, and the pool saturation
its utilization detector computes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.registry import EndpointRegistry
from sluice.room import (
    RANK,
    STATIC,
    VALUE,
    Room,
    RoomSettings,
    UsageLimit,
    ceilings,
    pool_saturation,
)
from sluice.room.ceiling import BAND_IDLE_S, ActiveBands
from sluice.room.rules import USAGE_LIMIT

LOW, HIGH = 0.4, 0.9  # upstream's README example


def test_the_static_policy_gives_every_band_its_threshold() -> None:
    threshold = 0.8
    limit = UsageLimit(STATIC, threshold, threshold)
    assert ceilings(limit, [10, 0, -1]) == [threshold] * 3


def test_rank_spaces_the_ceilings_in_equal_steps_from_max_to_min() -> None:
    limit = UsageLimit(RANK, LOW, HIGH)
    got = ceilings(limit, [100, 3, 2, -7])  # the values do not matter, only the order
    step = (HIGH - LOW) / 3
    assert got == pytest.approx([HIGH, HIGH - step, HIGH - 2 * step, LOW])
    assert got[0] == HIGH


def test_value_follows_the_priority_values_within_the_active_range() -> None:
    limit = UsageLimit(VALUE, LOW, HIGH)
    priorities = [10, 8, 0]
    got = ceilings(limit, priorities)
    expected = [LOW + (p - 0) / (10 - 0) * (HIGH - LOW) for p in priorities]
    assert got == expected
    # numerically close priorities behave alike; rank would have spread them evenly
    assert got[0] - got[1] < got[1] - got[2]


def test_one_active_band_or_one_value_gets_the_max_ceiling() -> None:
    for domain in (RANK, VALUE):
        assert ceilings(UsageLimit(domain, LOW, HIGH), [5]) == [HIGH]
    assert ceilings(UsageLimit(VALUE, LOW, HIGH), [5, 5]) == [HIGH, HIGH]


@given(
    priorities=st.lists(st.integers(-1000, 1000), min_size=1, max_size=12, unique=True),
    domain=st.sampled_from([STATIC, RANK, VALUE]),
    bounds=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).filter(lambda b: b[0] < b[1]),
)
def test_a_higher_band_never_gets_a_lower_ceiling(
    priorities: list[int], domain: str, bounds: tuple[float, float]
) -> None:
    low, high = bounds
    if domain == STATIC:
        low = high
    ordered = sorted(priorities, reverse=True)
    got = ceilings(UsageLimit(domain, low, high), ordered)
    assert len(got) == len(ordered)
    assert all(a >= b for a, b in itertools.pairwise(got)), got
    assert abs(got[0] - high) < 1e-12  # the highest band gets maxCeiling
    assert all(low - 1e-12 <= c <= high + 1e-12 for c in got)
    if len(ordered) > 1:
        assert abs(got[-1] - low) < 1e-12  # the lowest band gets minCeiling


def _pool(*metrics: EngineMetrics) -> EndpointRegistry:
    registry = EndpointRegistry()
    registry.set_endpoints(Endpoint(f"pod-{i}", f"10.0.0.{i}", 8000) for i in range(len(metrics)))
    for state, m in zip(registry.snapshot(), metrics):
        mark = registry.begin_scrape(state.name)
        assert mark is not None
        registry.record_scrape(mark, m)
    return registry


def test_pool_saturation_is_upstreams_utilization_detector() -> None:
    settings = RoomSettings()
    now = 10.0
    q, kv = settings.queue_depth, settings.kv_cache_util
    registry = _pool(
        EngineMetrics(waiting=q, kv_cache_usage=kv / 2, updated_at=now),  # queue-bound: 1.0
        EngineMetrics(waiting=0, kv_cache_usage=kv / 4, updated_at=now),  # KV-bound: 0.25
        EngineMetrics(waiting=1, updated_at=now - 2 * settings.metrics_staleness_s),  # stale: 1
    )
    assert pool_saturation(registry.snapshot(), now, settings) == (1.0 + 0.25 + 1.0) / 3
    assert pool_saturation([], now, settings) == 1.0  # an empty pool is saturated


def test_an_engine_without_kv_usage_is_judged_on_its_queue() -> None:
    settings = RoomSettings()
    registry = _pool(EngineMetrics(waiting=1, kv_cache_known=False, updated_at=0.0))
    assert pool_saturation(registry.snapshot(), 0.0, settings) == 1 / settings.queue_depth


def test_configured_bands_stay_active_and_others_lapse_after_upstreams_collection_time() -> None:
    bands = ActiveBands(configured=[5])
    bands.touched(-1, 0.0)
    assert bands.active(1.0, asking=0) == [5, 0, -1]
    assert bands.active(BAND_IDLE_S + 1.0, asking=0) == [5, 0]


def test_the_room_holds_a_band_at_its_ceiling_and_says_so_in_the_receipt() -> None:
    limit = UsageLimit(RANK, LOW, 1.0)  # maxCeiling 1.0: the top band is not gated
    settings = RoomSettings(usage_limit=limit)
    room = Room(settings)
    room.explain_holds = True
    now = 10.0
    between = (LOW + 1.0) / 2  # above the lower band's ceiling, below the top band's
    load = EngineMetrics(kv_cache_usage=settings.kv_cache_util * between, updated_at=now)
    registry = _pool(load, load)
    for priority in (10, 0):
        room.arrived(priority, "tenant", now)
    room.settle(registry, now)
    assert room.saturation == pytest.approx(between)
    states = registry.snapshot()
    assert room.has_room(states, 10, now)  # under every endpoint rule, ceiling 1.0
    assert not room.has_room(states, 0, now)  # saturation >= its ceiling
    assert room.holds[0].rule == USAGE_LIMIT
