"""The room's rules over live endpoint states: upstream's thresholds, Sluice's caps, the
heavy hitter's reserve."""

from __future__ import annotations

from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.registry import EndpointRegistry
from sluice.room import (
    RoomSettings,
    endpoints_with_room,
    has_room,
    has_room_for_background,
    is_saturated,
)
from sluice.room.rules import IN_FLIGHT_CAP, hold_rule


def _endpoint(i: int) -> Endpoint:
    return Endpoint(f"pod-{i}", f"10.0.0.{i}", 8000)


def _scrape(registry: EndpointRegistry, name: str, now: float, **fields: float) -> None:
    mark = registry.begin_scrape(name)
    assert mark is not None
    registry.record_scrape(mark, EngineMetrics(updated_at=now, **fields))  # type: ignore[arg-type]


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
    limits = RoomSettings(max_unseen_requests=2)
    registry.dispatch("pod-1", 1)
    assert endpoints_with_room(registry.snapshot(), 10.0, limits)
    registry.dispatch("pod-1", 1)
    assert not endpoints_with_room(registry.snapshot(), 10.0, limits)
    assert not endpoints_with_room(
        registry.snapshot(), 10.0, RoomSettings(max_in_flight_requests=2)
    )


def _pool(n: int) -> EndpointRegistry:
    registry = EndpointRegistry()
    registry.set_endpoints(_endpoint(i) for i in range(n))
    for state in registry.snapshot():
        _scrape(registry, state.name, 10.0)
    return registry


ONE_PREFILL = RoomSettings(max_pending_prefill_tokens=1, lower_priority_max_in_flight=24)


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
    limits = RoomSettings(lower_priority_max_in_flight=1)
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
    none = RoomSettings(max_pending_prefill_tokens=1, background_headroom_endpoints=0)
    assert has_room_for_background(registry.snapshot(), 10.0, none)


def test_an_engine_that_reports_slots_gets_no_more_and_a_lower_band_one_fewer() -> None:
    # llama.cpp runs `total_slots` requests and queues the rest in arrival order, where no
    # priority applies: beyond its slots the queue belongs in Sluice
    registry = _pool(2)
    registry.set_slots("pod-0", 2)
    registry.dispatch("pod-0", 100)
    pod0, pod1 = registry.snapshot()
    assert has_room(pod0, 10.0) and has_room(pod0, 10.0, lower_band=True) is False
    registry.dispatch("pod-0", 100)
    assert not has_room(pod0, 10.0)  # both slots taken
    assert hold_rule(pod0, 10.0) == IN_FLIGHT_CAP
    for _ in range(3):
        registry.dispatch("pod-1", 100)
    assert has_room(pod1, 10.0, lower_band=True)  # reports no slots: no slot cap
    # a one-slot engine keeps no reserve (it would idle the engine for every lower band)
    one = _pool(1)
    one.set_slots("pod-0", 1)
    (only,) = one.snapshot()
    assert has_room(only, 10.0, lower_band=True)
    one.dispatch("pod-0", 100)
    assert not has_room(only, 10.0)
    # the slot cap can be turned off; a tighter configured cap still wins over the slots
    assert has_room(only, 10.0, RoomSettings(cap_to_engine_slots=False))
    four = _pool(1)
    four.set_slots("pod-0", 4)
    (wide,) = four.snapshot()
    four.dispatch("pod-0", 100)
    four.dispatch("pod-0", 100)
    assert has_room(wide, 10.0) and not has_room(wide, 10.0, RoomSettings(max_in_flight_requests=2))


def test_a_dispatch_held_for_its_prefix_takes_no_slot_until_it_goes() -> None:
    # it waits in Sluice for the request ahead of it to end, then takes that request's slot
    registry = _pool(1)
    registry.set_slots("pod-0", 2)
    (state,) = registry.snapshot()
    registry.dispatch("pod-0", 100)  # computing the prefix
    behind = [registry.dispatch("pod-0", 100) for _ in range(3)]
    for ticket in behind:
        registry.hold(ticket)
    assert state.held_requests == 3 and has_room(state, 10.0)
    registry.unhold(behind[0])
    assert not has_room(state, 10.0)  # two at the engine now
    registry.complete(behind[1], got_first_token=False)  # its client left while held
    assert state.held_requests == 1 and state.in_flight_requests == 3


def test_the_slots_are_the_pools_the_other_replicas_dispatches_count() -> None:
    registry = _pool(1)
    registry.set_slots("pod-0", 2)
    (state,) = registry.snapshot()
    registry.dispatch("pod-0", 100)
    assert has_room(state, 10.0)
    state.peer_in_flight = 1  # another replica's request runs there (as of the last sync)
    assert not has_room(state, 10.0)
