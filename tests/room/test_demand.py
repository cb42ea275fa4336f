"""Who is expected to want room soon: every reserve is held only while someone could use it."""

from __future__ import annotations

from sluice.room.demand import Demand, HoldTimes

HOLD = HoldTimes(gaps=10, min_s=2, max_s=30)


def test_a_steady_flow_is_expected_for_ten_of_its_gaps_between_arrivals() -> None:
    demand = Demand(HOLD)
    for t in range(20):  # one arrival a second, each leaving the queue at once
        demand.arrived(10, "alice", float(t))
        demand.left(10, "alice")
    assert demand.expected_above(0, 19 + 9.5)
    assert not demand.expected_above(0, 19 + 10.5)


def test_a_single_arrival_is_expected_for_the_longest_hold() -> None:
    demand = Demand(HOLD)
    demand.arrived(10, "alice", 0.0)
    demand.left(10, "alice")
    assert demand.expected_above(0, 29.0) and not demand.expected_above(0, 31.0)


def test_a_fast_stream_keeps_its_reserve_at_least_the_shortest_hold() -> None:
    demand = Demand(HOLD)
    for i in range(100):
        demand.arrived(10, "alice", i * 0.01)
        demand.left(10, "alice")
    assert demand.expected_above(0, 0.99 + 1.9)
    assert not demand.expected_above(0, 0.99 + 2.1)


def test_a_flow_with_requests_waiting_is_expected_however_long_ago_it_arrived() -> None:
    demand = Demand(HOLD)
    demand.arrived(0, "alice", 0.0)  # still queued
    demand.arrived(0, "bob", 100.0)
    demand.left(0, "bob")
    assert demand.shared(100.5)
    assert demand.others_expected(0, "bob", 1000.0)
    demand.left(0, "alice")
    assert not demand.others_expected(0, "bob", 1000.0)


def test_only_bands_above_count_for_headroom() -> None:
    demand = Demand(HOLD)
    demand.arrived(0, "batch", 0.0)
    assert not demand.expected_above(0, 1.0)
    assert demand.expected_above(-1, 1.0)


def test_a_pool_is_shared_when_two_flows_of_any_bands_are_expected() -> None:
    demand = Demand(HOLD)
    demand.arrived(0, "alice", 0.0)
    demand.left(0, "alice")
    assert not demand.shared(1.0), "one tenant alone competes with nobody"
    demand.arrived(10, "alice", 1.0)
    demand.left(10, "alice")
    assert demand.shared(2.0), "the same tenant in another band is another flow"
    assert not demand.shared(40.0)


def test_the_rest_of_a_band_excludes_the_flow_asking() -> None:
    demand = Demand(HOLD)
    demand.arrived(0, "heavy", 0.0)
    demand.left(0, "heavy")
    assert not demand.others_expected(0, "heavy", 1.0)
    demand.arrived(0, "light", 1.0)
    demand.left(0, "light")
    assert demand.others_expected(0, "heavy", 2.0)
    assert demand.others_expected(0, "light", 2.0)
    assert not demand.others_expected(0, "heavy", 35.0)


def test_flows_silent_for_longer_than_any_hold_are_forgotten() -> None:
    demand = Demand(HOLD)
    for i in range(1000):
        demand.arrived(0, f"tenant-{i}", 0.0)
        demand.left(0, f"tenant-{i}")
    demand.arrived(0, "late", 100.0)
    assert len(demand._flows) == 1
