"""The endpoint registry: membership, staleness, in-flight accounting; the room check."""

from __future__ import annotations

from dataclasses import fields

from sluice.datalayer.capacity import (
    CapacityThresholds,
    endpoints_with_room,
    has_room,
    has_room_for_background,
    is_saturated,
)
from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.registry import EndpointRegistry


def _endpoint(i: int) -> Endpoint:
    return Endpoint(f"pod-{i}", f"10.0.0.{i}", 8000)


def _scrape(registry: EndpointRegistry, name: str, now: float, **fields: float) -> None:
    mark = registry.begin_scrape(name)
    assert mark is not None
    registry.record_scrape(mark, EngineMetrics(updated_at=now, **fields))  # type: ignore[arg-type]


def test_endpoints_that_stay_keep_their_state_across_membership_updates() -> None:
    registry = EndpointRegistry()
    registry.set_endpoints([_endpoint(1), _endpoint(2)])
    _scrape(registry, "pod-1", 1.0, waiting=4)
    registry.set_endpoints([_endpoint(1), _endpoint(3)])
    assert [s.name for s in registry.snapshot()] == ["pod-1", "pod-3"]
    state = registry.get("pod-1")
    assert state is not None and state.metrics.waiting == 4


def test_a_failing_scrape_never_removes_an_endpoint_it_only_goes_stale() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    _scrape(registry, "pod-1", 1.0)
    mark = registry.begin_scrape("pod-1")
    assert mark is not None
    registry.record_scrape_failure(mark, "timeout")
    state = registry.get("pod-1")
    assert state is not None and state.consecutive_failures == 1
    assert state.is_fresh(1.1, 0.2) and not state.is_fresh(1.3, 0.2)


def test_dispatches_after_a_scrape_started_stay_unseen_until_the_next_scrape() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    registry.dispatch("pod-1", 100)  # before the scrape: the engine will report it
    mark = registry.begin_scrape("pod-1")
    assert mark is not None
    ticket = registry.dispatch("pod-1", 50)  # in flight while the scrape is answered
    registry.record_scrape(mark, EngineMetrics(waiting=1, updated_at=1.0))
    state = registry.get("pod-1")
    assert state is not None
    assert (state.in_flight_requests, state.in_flight_tokens) == (2, 150)
    assert (state.unseen_requests, state.unseen_tokens) == (1, 50)
    registry.complete(ticket)
    assert (state.in_flight_requests, state.unseen_requests, state.unseen_tokens) == (1, 0, 0)


def test_a_late_answer_to_an_older_scrape_is_ignored() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    old, new = registry.begin_scrape("pod-1"), registry.begin_scrape("pod-1")
    assert old is not None and new is not None
    registry.record_scrape(new, EngineMetrics(waiting=2, updated_at=2.0))
    registry.record_scrape(old, EngineMetrics(waiting=9, updated_at=2.1))
    state = registry.get("pod-1")
    assert state is not None and state.metrics.waiting == 2


def test_completing_on_a_removed_endpoint_is_harmless() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    ticket = registry.dispatch("pod-1", 10)
    registry.remove("pod-1")
    registry.complete(ticket)
    assert len(registry) == 0


def test_room_follows_upstreams_detector_thresholds() -> None:
    registry = EndpointRegistry()
    registry.set_endpoints(_endpoint(i) for i in range(5))
    _scrape(registry, "pod-0", 10.0, waiting=5, kv_cache_usage=0.8)  # at the limits: room
    _scrape(registry, "pod-1", 10.0, waiting=6)  # queue too deep
    _scrape(registry, "pod-2", 10.0, kv_cache_usage=0.81)  # KV too full
    _scrape(registry, "pod-3", 9.7)  # stale (300 ms > 200 ms)
    # pod-4 never scraped
    room = endpoints_with_room(registry.snapshot(), now=10.0)
    assert [s.name for s in room] == ["pod-0"]
    assert is_saturated([], now=10.0)


def test_optional_in_flight_limits_count_sluices_own_dispatches() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    _scrape(registry, "pod-1", 10.0)
    limits = CapacityThresholds(max_unseen_requests=2)
    registry.dispatch("pod-1", 1)
    assert endpoints_with_room(registry.snapshot(), 10.0, limits)
    registry.dispatch("pod-1", 1)
    assert not endpoints_with_room(registry.snapshot(), 10.0, limits)
    assert not endpoints_with_room(
        registry.snapshot(), 10.0, CapacityThresholds(max_in_flight_requests=2)
    )


def _pool(n: int) -> EndpointRegistry:
    registry = EndpointRegistry()
    registry.set_endpoints(_endpoint(i) for i in range(n))
    for state in registry.snapshot():
        _scrape(registry, state.name, 10.0)
    return registry


ONE_PREFILL = CapacityThresholds(max_pending_prefill_tokens=1, lower_priority_max_in_flight=24)


def test_a_heavy_hitter_leaves_the_last_endpoint_with_room_to_the_rest_of_its_band() -> None:
    registry = _pool(3)
    registry.dispatch("pod-0", 4200, prefill_tokens=4000)  # busy prefilling a long prompt
    assert has_room_for_background(registry.snapshot(), 10.0, ONE_PREFILL)
    registry.dispatch("pod-1", 4200, prefill_tokens=4000)
    states = registry.snapshot()
    assert not has_room_for_background(states, 10.0, ONE_PREFILL)
    assert has_room(states[2], 10.0, ONE_PREFILL)  # still room for everybody else


def test_a_heavy_hitter_gets_the_lower_band_cap() -> None:
    registry = _pool(3)
    limits = CapacityThresholds(lower_priority_max_in_flight=1)
    for name in ("pod-0", "pod-1", "pod-2"):
        registry.dispatch(name, 100)
    assert not has_room_for_background(registry.snapshot(), 10.0, limits)
    assert endpoints_with_room(registry.snapshot(), 10.0, limits)


def test_the_headroom_never_shuts_out_a_subset_no_larger_than_it() -> None:
    registry = _pool(2)
    registry.dispatch("pod-0", 4200, prefill_tokens=4000)
    only = [s for s in registry.snapshot() if s.name == "pod-1"]
    assert has_room_for_background(only, 10.0, ONE_PREFILL)
    assert not has_room_for_background(registry.snapshot(), 10.0, ONE_PREFILL)


def test_no_headroom_is_the_lower_band_rule() -> None:
    registry = _pool(2)
    registry.dispatch("pod-0", 4200, prefill_tokens=4000)
    none = CapacityThresholds(max_pending_prefill_tokens=1, background_headroom_endpoints=0)
    assert has_room_for_background(registry.snapshot(), 10.0, none)


def test_restamped_copies_every_field() -> None:
    # restamped() lists the fields by hand for speed: a new field must be added there too.
    assert [f.name for f in fields(EngineMetrics)] == [
        "waiting",
        "running",
        "kv_cache_usage",
        "active_adapters",
        "waiting_adapters",
        "max_adapters",
        "cache_block_size",
        "cache_num_blocks",
        "updated_at",
        "extra",
    ]
    original = EngineMetrics(
        waiting=1,
        running=2,
        kv_cache_usage=0.3,
        active_adapters=frozenset({"a"}),
        waiting_adapters=frozenset({"b"}),
        max_adapters=4,
        cache_block_size=16,
        cache_num_blocks=99,
        updated_at=5.0,
        extra={"x": 1.0},
    )
    copy = original.restamped(7.0)
    assert copy is not original and copy.updated_at == 7.0
    for f in fields(EngineMetrics):
        if f.name != "updated_at":
            assert getattr(copy, f.name) == getattr(original, f.name), f.name
