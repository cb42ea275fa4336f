"""The pending-prefill budget in the release gate and in placement: a band that keeps headroom
for a higher one is placed only where the budget has room, and never where a higher band's
prefill is pending (it would be prefilled in the same engine step, and the higher band's first
token would wait for it)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sluice.datalayer.registry import EndpointRegistry, EndpointState
from sluice.room import Room, RoomSettings, has_room, hold_rule, placeable, rule_inputs
from sluice.room.rules import HIGHER_BAND_PREFILL, PENDING_PREFILL

from .pools import fresh_pool

HIGH, LOW = 10, 0
BUDGET = RoomSettings(max_pending_prefill_tokens=300)
NOW = 10.0


def _pool(n: int) -> EndpointRegistry:
    return fresh_pool(n, NOW)


def _state(registry: EndpointRegistry, name: str) -> EndpointState:
    return next(s for s in registry.snapshot() if s.name == name)


def test_a_higher_bands_pending_prefill_takes_the_whole_budget_from_the_bands_below() -> None:
    registry = _pool(1)
    registry.dispatch("pod-0", 100, prefill_tokens=50, priority=HIGH)  # well under the budget
    pod = _state(registry, "pod-0")
    lower: dict[str, Any] = {"lower_band": True, "contended": True, "priority": LOW}
    assert hold_rule(pod, NOW, BUDGET, **lower) == HIGHER_BAND_PREFILL
    assert rule_inputs(pod, NOW, LOW)["higher_band_prefills"] == 1
    # The higher band itself, and any band while nobody else is expected, still has room.
    assert has_room(pod, NOW, BUDGET, contended=True, priority=HIGH)
    assert has_room(pod, NOW, BUDGET, lower_band=True, contended=False, priority=LOW)
    # Without a budget there is no pending-prefill rule at all.
    assert has_room(pod, NOW, RoomSettings(), **lower)


def test_a_lower_band_is_placed_only_where_the_budget_has_room() -> None:
    registry = _pool(3)
    registry.dispatch("pod-0", 900, prefill_tokens=800, priority=LOW)  # the budget is full
    registry.dispatch("pod-1", 100, prefill_tokens=60, priority=HIGH)  # a higher band prefills
    states = registry.snapshot()
    released = placeable(states, NOW, BUDGET, priority=LOW, lower_band=True, contended=True)
    assert [s.name for s in released] == ["pod-2"]
    # The higher band is steered by the scorers and `steer_prefills`, not by the budget: it
    # avoids the lower band's pending prefill.
    high = placeable(states, NOW, BUDGET, priority=HIGH, lower_band=False, contended=True)
    assert "pod-0" not in {s.name for s in high}


def test_placement_narrows_but_never_empties() -> None:
    registry = _pool(2)
    registry.dispatch("pod-0", 900, prefill_tokens=800, priority=LOW)
    registry.dispatch("pod-1", 100, prefill_tokens=60, priority=HIGH)
    released = placeable(
        registry.snapshot(), NOW, BUDGET, priority=LOW, lower_band=True, contended=True
    )
    assert released, "a released request is always placed somewhere"


def test_the_gate_and_placement_agree_on_a_higher_bands_prefill() -> None:
    """What broke two-bands at a larger budget (seed 1, t = 9.02 s): an interactive request went
    to the one endpoint under the budget, and a batch request released the same instant was
    placed after it there, its 2,000-token prompt in the interactive request's step."""
    room = Room(RoomSettings(max_pending_prefill_tokens=300))
    for band, flow in ((HIGH, "interactive"), (LOW, "batch")):
        room.arrived(band, flow, NOW)
    registry = _pool(2)
    registry.dispatch("pod-0", 1600, prefill_tokens=1475, priority=LOW)
    states = registry.snapshot()
    assert room.has_room(states, HIGH, NOW)
    [chosen] = room.placeable(states, HIGH, NOW)
    assert chosen.name == "pod-1"
    interactive = registry.dispatch("pod-1", 300, prefill_tokens=141, priority=HIGH)
    room.explain_holds = True
    assert not room.has_room(registry.snapshot(), LOW, NOW), "the batch request waits in Sluice"
    assert room.holds[LOW].rules == {"pod-0": PENDING_PREFILL, "pod-1": HIGHER_BAND_PREFILL}
    # The interactive request's first byte ends its prefill: the batch request may go there.
    assert registry.first_byte(interactive)
    states = registry.snapshot()
    assert room.has_room(states, LOW, NOW)
    assert [s.name for s in room.placeable(states, LOW, NOW)] == ["pod-1"]


@given(
    pending=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from([HIGH, LOW]), st.integers(0, 1000)),
        max_size=8,
    ),
    budget=st.integers(1, 600),
)
def test_a_lower_band_is_placed_where_the_gate_found_room(
    pending: list[tuple[int, int, int]], budget: int
) -> None:
    """Whatever the pending prefills: if the gate lets a lower band go, every endpoint it may be
    placed on has room under the same rules."""
    settings = RoomSettings(max_pending_prefill_tokens=budget)
    registry = _pool(3)
    for pod, band, tokens in pending:
        registry.dispatch(f"pod-{pod}", tokens + 1, prefill_tokens=tokens, priority=band)
    states = registry.snapshot()
    kw: dict[str, Any] = {"lower_band": True, "contended": True, "priority": LOW}
    if any(has_room(s, NOW, settings, **kw) for s in states):
        placed = placeable(states, NOW, settings, priority=LOW, lower_band=True, contended=True)
        assert placed
        assert all(has_room(s, NOW, settings, **kw) for s in placed)


def test_a_router_without_sluices_steering_sees_every_endpoint() -> None:
    """The benchmarks' plain routers (round-robin, upstream's profile) place as the routers they
    stand for: a lower band's pending prefill does not steer a higher band away."""
    registry = _pool(3)
    registry.dispatch("pod-0", 900, prefill_tokens=800, priority=LOW)
    states = registry.snapshot()
    plain = RoomSettings(steer_prefills=False)
    assert placeable(states, NOW, plain, priority=HIGH, lower_band=False) == list(states)
    steered = placeable(states, NOW, RoomSettings(), priority=HIGH, lower_band=False)
    assert [s.name for s in steered] == ["pod-1", "pod-2"]


def test_a_heavy_hitter_goes_where_the_gate_found_it_room() -> None:
    """noisy-neighbour's worst light request (seed 3, 1.79x unloaded): the heavy hitter's gate
    found room on an idle endpoint and kept another for the light tenant, but placement weighed
    every endpoint, and a 4,000-token prompt went 10 ms after two light ones to the endpoint
    they had filled: their first tokens waited for its 800 ms step."""
    room = _band_room(RoomSettings(max_pending_prefill_tokens=1), "heavy", "light")
    registry = _pool(3)
    registry.dispatch("pod-0", 400, prefill_tokens=300, priority=LOW)  # the light tenant's
    states = registry.snapshot()
    assert room.has_room(states, LOW, NOW, heavy_hitter="heavy")
    placed = {s.name for s in room.placeable(states, LOW, NOW, heavy_hitter="heavy")}
    assert placed == {"pod-1", "pod-2"}
    # The rest of the band is not steered by the heavy hitter's rules (but by the highest
    # band's own: tests/room/test_prefill_ending.py).
    plain = _band_room(
        RoomSettings(max_pending_prefill_tokens=1, prefill_ending_s=0), "heavy", "light"
    )
    assert len(plain.placeable(states, LOW, NOW)) == 3
    # With nobody else in its band expected there is no one to protect: no narrowing.
    alone = _band_room(RoomSettings(max_pending_prefill_tokens=1), "heavy")
    assert len(alone.placeable(states, LOW, NOW, heavy_hitter="heavy")) == 3


def _band_room(settings: RoomSettings, *tenants: str) -> Room:
    """A room where each tenant of band LOW has just sent a request, and it was released."""
    room = Room(settings)
    for tenant in tenants:
        room.arrived(LOW, tenant, NOW)
        room.left(LOW, tenant)
    return room


@given(
    pending=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1000)), max_size=8),
    keep=st.integers(0, 2),
)
def test_a_heavy_hitter_is_placed_where_the_gate_found_room(
    pending: list[tuple[int, int]], keep: int
) -> None:
    """Whatever the pending prefills: when the gate lets a heavy hitter go, it is placed only on
    endpoints with room under the rules the gate applied to it (a lower band's)."""
    settings = RoomSettings(max_pending_prefill_tokens=1, background_headroom_endpoints=keep)
    room = _band_room(settings, "heavy", "light")
    registry = _pool(4)
    for pod, tokens in pending:
        registry.dispatch(f"pod-{pod}", tokens + 1, prefill_tokens=tokens, priority=LOW)
    states = registry.snapshot()
    if room.has_room(states, LOW, NOW, heavy_hitter="heavy"):
        placed = room.placeable(states, LOW, NOW, heavy_hitter="heavy")
        kw: dict[str, Any] = {"lower_band": True, "contended": True, "priority": LOW}
        assert placed
        assert all(has_room(s, NOW, settings, **kw) for s in placed)
