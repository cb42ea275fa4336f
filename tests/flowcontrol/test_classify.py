"""Classification: priority from the objective, flow = (fairness id, priority)."""

from __future__ import annotations

from fc_harness import request

from sluice.flowcontrol import FlowKey, engine_priority, flow_of, priority_of

OBJECTIVES = {"premium": 10, "batch": -1, "no-priority": None}


def test_priority_is_the_objectives_priority_and_unknown_or_unset_is_zero() -> None:
    assert priority_of("premium", OBJECTIVES.get) == 10
    assert priority_of("batch", OBJECTIVES.get) == -1
    assert priority_of("no-priority", OBJECTIVES.get) == 0
    assert priority_of("unknown", OBJECTIVES.get) == 0
    assert priority_of(None, OBJECTIVES.get) == 0


def test_a_flow_is_the_fairness_id_at_a_priority() -> None:
    assert flow_of(request("tenant-a", 5)) == FlowKey("tenant-a", 5)
    assert flow_of(request("", 0)) == FlowKey("default-flow", 0)


def test_engine_priority_keeps_band_order_with_lower_meaning_sooner() -> None:
    bands = [10, 5, 0, -1]
    assert [engine_priority(b) for b in bands] == sorted(engine_priority(b) for b in bands)
