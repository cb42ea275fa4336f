"""A pending prefill about to end: for the highest band's requests it no longer fills the
pending-prefill budget (they could not join the engine step in progress, and sent now they reach
the engine as it ends), and for a heavy hitter's band it counts as room kept for the rest while
none of them waits. Measured in noisy-neighbour at 150 % (docs/room.md, "About to end")."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sluice.datalayer.registry import EndpointRegistry
from sluice.room import Room, RoomSettings, has_room
from sluice.room.rules import Ending

from .pools import fresh_pool

HIGH, LOW = 10, 0
NOW = 10.0
SETTINGS = RoomSettings(
    max_pending_prefill_tokens=1, prefill_ending_s=0.05, background_ending_s=0.2
)


def _pool(n: int) -> EndpointRegistry:
    return fresh_pool(n, NOW)


def _prefill(
    registry: EndpointRegistry,
    pod: int,
    tokens: int,
    ends_in: float,
    band: int,
    sent_ago: float = 1.0,
) -> None:
    registry.dispatch(
        f"pod-{pod}",
        tokens + 100,
        prefill_tokens=tokens,
        priority=band,
        prefill_expected=(NOW - sent_ago, NOW + ends_in),
    )


def _room(*flows: tuple[int, str], waiting: tuple[tuple[int, str], ...] = ()) -> Room:
    """A room where each flow has just sent a request that was released, and each of
    `waiting` one that still waits."""
    room = Room(SETTINGS)
    for band, tenant in flows:
        room.arrived(band, tenant, NOW)
        room.left(band, tenant)
    for band, tenant in waiting:
        room.arrived(band, tenant, NOW)
    return room


def test_a_prefill_about_to_end_leaves_room_for_the_highest_band() -> None:
    room = _room((HIGH, "interactive"), (LOW, "batch"))
    registry = _pool(1)
    _prefill(registry, 0, 4000, ends_in=0.03, band=HIGH)
    assert room.has_room(registry.snapshot(), HIGH, NOW)
    # A band below keeps waiting: its prefill would be the step a higher arrival waits for.
    assert not room.has_room(registry.snapshot(), LOW, NOW)
    # Not about to end: the budget holds.
    later = _pool(1)
    _prefill(later, 0, 4000, ends_in=0.2, band=HIGH)
    assert not room.has_room(later.snapshot(), HIGH, NOW)


def test_a_prefill_sent_just_now_holds_however_short() -> None:
    """A short prompt sent 10 ms ago may still be in the engine's front end or queue: a request
    sent now would join its step, and its first token would wait for both."""
    room = _room((HIGH, "interactive"), (LOW, "batch"))
    registry = _pool(1)
    _prefill(registry, 0, 60, ends_in=0.02, band=HIGH, sent_ago=0.01)
    assert not room.has_room(registry.snapshot(), HIGH, NOW)


def test_a_prefill_without_an_expected_end_and_the_other_replicas_always_count() -> None:
    registry = _pool(2)
    registry.dispatch("pod-0", 500, prefill_tokens=400)  # no expected end given
    _prefill(registry, 1, 400, ends_in=0.01, band=HIGH)
    pod0, pod1 = registry.snapshot()
    assert pod0.pending_prefill_tokens_not_ending(NOW, NOW + 1.0) == 400
    assert pod1.pending_prefill_tokens_not_ending(NOW, NOW + 0.05) == 0
    assert pod1.pending_prefill_tokens_not_ending(NOW - 2.0, NOW + 0.05) == 400  # sent later
    pod1.peer_pending_prefill_tokens = 300
    kw = {"contended": True, "priority": HIGH, "ending": Ending.within(NOW, 0.05)}
    assert not has_room(pod1, NOW, SETTINGS, **kw)  # type: ignore[arg-type]


def test_the_highest_band_is_placed_where_the_prefill_is_about_to_end() -> None:
    """The scorers count pending tokens, not time, and would prefer an engine whose shorter
    prefill has only begun: placement follows the gate to the one about to end."""
    room = _room((HIGH, "interactive"), (LOW, "batch"))
    registry = _pool(2)
    _prefill(registry, 0, 1350, ends_in=0.3, band=HIGH, sent_ago=0.01)  # just begun
    _prefill(registry, 1, 2000, ends_in=0.02, band=HIGH)  # about to end
    states = registry.snapshot()
    assert room.has_room(states, HIGH, NOW)
    assert [s.name for s in room.placeable(states, HIGH, NOW)] == ["pod-1"]


def test_within_one_band_the_budget_stays_whole() -> None:
    """With no band below, the budget is what keeps backlogged tenants' service even and a
    request near the engine holding its prefix (`sluice bench fairness`, `shared-prefix`)."""
    room = _room((LOW, "a"), (LOW, "b"))
    registry = _pool(1)
    _prefill(registry, 0, 4000, ends_in=0.02, band=LOW)
    assert not room.has_room(registry.snapshot(), LOW, NOW)


def test_an_endpoint_about_to_end_counts_as_headroom_while_nobody_of_the_band_waits() -> None:
    registry = _pool(3)
    _prefill(registry, 1, 4000, ends_in=0.1, band=LOW)
    _prefill(registry, 2, 4000, ends_in=0.7, band=LOW)
    states = registry.snapshot()
    # pod-0 has room now and pod-1 will within 0.2 s: the heavy hitter may take pod-0.
    quiet = _room((LOW, "light"), (LOW, "heavy"))
    assert quiet.has_room(states, LOW, NOW, heavy_hitter="heavy")
    assert [s.name for s in quiet.placeable(states, LOW, NOW, heavy_hitter="heavy")] == ["pod-0"]
    # A light request is waiting: it needs room now, and pod-0 is the only one.
    waiting = _room((LOW, "heavy"), waiting=((LOW, "light"),))
    assert not waiting.has_room(states, LOW, NOW, heavy_hitter="heavy")
    assert waiting.has_room(states, LOW, NOW)  # ... and the light request may go


@given(
    pending=st.lists(
        st.tuples(
            st.integers(0, 2),
            st.sampled_from([HIGH, LOW]),
            st.integers(0, 2000),
            st.floats(0.0, 1.0),
            st.floats(0.0, 1.0),
        ),
        max_size=8,
    ),
    ahead=st.floats(0.001, 0.5),
)
def test_the_highest_band_is_placed_where_the_gate_found_room(
    pending: list[tuple[int, int, int, float, float]], ahead: float
) -> None:
    """Whatever the pending prefills and how soon they end: if the gate lets the highest band's
    request go, every endpoint it may be placed on has room under the same rule. (With the rule
    off, `prefill_ending_s` 0, the scorers weigh every endpoint, as upstream.)"""
    settings = RoomSettings(max_pending_prefill_tokens=1, prefill_ending_s=ahead)
    room = Room(settings)
    for band, tenant in ((HIGH, "interactive"), (LOW, "batch")):
        room.arrived(band, tenant, NOW)
        room.left(band, tenant)
    registry = _pool(3)
    for pod, band, tokens, ends_in, sent_ago in pending:
        _prefill(registry, pod, tokens, ends_in, band, sent_ago)
    states = registry.snapshot()
    if room.has_room(states, HIGH, NOW):
        placed = room.placeable(states, HIGH, NOW)
        assert placed
        kw = {"contended": True, "priority": HIGH, "ending": Ending.within(NOW, ahead)}
        assert all(has_room(s, NOW, settings, **kw) for s in placed)  # type: ignore[arg-type]
