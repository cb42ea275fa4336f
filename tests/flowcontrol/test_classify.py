"""A flow = (fairness id, priority); the engine priority a band maps to."""

from __future__ import annotations

from fc_harness import request

from sluice.flowcontrol import FlowKey, engine_priority, flow_of


def test_a_flow_is_the_fairness_id_at_a_priority() -> None:
    assert flow_of(request("tenant-a", 5)) == FlowKey("tenant-a", 5)
    assert flow_of(request("", 0)) == FlowKey("default-flow", 0)


def test_engine_priority_keeps_band_order_with_lower_meaning_sooner() -> None:
    bands = [10, 5, 0, -1]
    assert [engine_priority(b) for b in bands] == sorted(engine_priority(b) for b in bands)
