"""Idle flows are forgotten without changing what flow control does (docs/flowcontrol.md,
"Idle flows"), and a flood of fresh fairness ids cannot grow flow control's memory without bound.

The reference for "changes nothing" is the same controller that keeps every flow: its bands'
floor threshold is -inf (no flow is ever at the floor), and no timeout and no cap leave
nothing else to collect.
"""

from __future__ import annotations

import gc
import math
import tracemalloc
from dataclasses import replace
from typing import Any

from fc_harness import SlotPool, request
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.config import parse_flow_control
from sluice.flowcontrol import Accepted, FlowController, Ticket
from sluice.flowcontrol.config import FlowControlConfig
from sluice.requests.model import InferenceRequest, Usage


def keeping(config: FlowControlConfig, priorities: tuple[int, ...] = (0,)) -> FlowController:
    """A controller that never forgets a flow (of the bands of `priorities`)."""
    fc = FlowController(replace(config, idle_flow_timeout_s=0, max_idle_flows=10**9))
    for priority in priorities:
        setattr(fc._band(priority), "_threshold", lambda: -math.inf)  # noqa: B010
    return fc


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("enqueue"),
            st.integers(0, 3),  # tenant
            st.sampled_from([0, 3]),  # priority
            st.integers(1, 3000),  # prompt tokens
            st.sampled_from([None, 1, 50, 400]),  # max_tokens
        ),
        st.tuples(st.just("dispatch")),
        # A completion with true usage (cached percent of the prompt, output) or none: large
        # refunds take a counter far back down.
        st.tuples(
            st.just("finish"),
            st.integers(0, 10**6),
            st.one_of(st.none(), st.tuples(st.integers(0, 100), st.sampled_from([0, 1, 600]))),
        ),
        st.tuples(st.just("cancel"), st.integers(0, 10**6)),
        st.tuples(st.just("advance"), st.sampled_from([0.01, 0.5, 2.0, 7.0])),
    ),
    min_size=5,
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(
    ops=operations,
    fairness=st.sampled_from(["token-fair", "round-robin", "global-strict"]),
    window=st.sampled_from(["0s", "3s"]),
    slots=st.integers(1, 2),
)
def test_forgetting_idle_flows_never_changes_the_dispatch_order(
    ops: list[tuple[Any, ...]], fairness: str, window: str, slots: int
) -> None:
    config = parse_flow_control(
        {
            "fairShareWindow": window,
            "defaultPriorityBand": {"fairnessPolicyRef": fairness},
            "flowGCTimeout": "0s",  # only the floor rule: the one that must change nothing
        }
    )
    collecting, kept = FlowController(config), keeping(config, (0, 3))
    pools = [SlotPool({"a": slots}), SlotPool({"a": slots})]
    released: list[list[str]] = [[], []]
    waiting: list[InferenceRequest] = []
    tickets: list[dict[str, Ticket]] = [{}, {}]
    in_flight: list[InferenceRequest] = []
    now = 0.0
    for op in ops:
        kind = op[0]
        for side, fc in enumerate((collecting, kept)):
            if kind == "enqueue" and side == 0:
                _, tenant, priority, prompt, max_tokens = op
                req = request(f"t{tenant}", priority, prompt_tokens=prompt, max_tokens=max_tokens)
                waiting.append(req)
            if kind == "enqueue":
                result = fc.enqueue(waiting[-1], now)
                assert isinstance(result, Accepted)
                tickets[side][waiting[-1].request_id] = result.ticket
            elif kind == "dispatch":
                for event in fc.dispatch(now, pools[side]):
                    released[side].append(event.ticket.request.request_id)
            elif kind == "finish" and in_flight:
                req = in_flight[op[1] % len(in_flight)]
                usage = None
                if op[2] is not None:
                    cached, output = op[2]
                    usage = Usage(req.prompt_tokens, output, req.prompt_tokens * cached // 100)
                fc.complete(tickets[side][req.request_id], usage, now)
                pools[side].busy["a"] -= 1
            elif kind == "cancel" and waiting:
                req = waiting[op[1] % len(waiting)]
                fc.cancel(tickets[side][req.request_id], now)
        if kind == "dispatch":
            assert released[0] == released[1]
            in_flight = [r for r in waiting if r.request_id in set(released[0])] + in_flight
            waiting = [r for r in waiting if r.request_id not in set(released[0])]
        elif kind == "finish" and in_flight:
            in_flight.pop(op[1] % len(in_flight))
        elif kind == "cancel" and waiting:
            waiting.pop(op[1] % len(waiting))
        elif kind == "advance":
            now += op[1]
        # Same releases, in the same order, asking for the same room (heavy hitters included).
        assert released[0] == released[1]
        assert pools[0].asked == pools[1].asked
        for band in collecting.bands:
            other = kept.band(band.priority)
            assert other is not None
            assert set(band.flows) <= set(other.flows)
            if fairness == "token-fair":  # the kept flows' counters: the same
                for fid, flow in band.flows.items():
                    assert flow.counter == other.flows[fid].counter
            assert band.jain_index >= 0.0
    assert sum(b.forgotten for b in kept.bands) == 0


def test_an_idle_flow_at_the_floor_goes_at_once_one_above_it_when_the_floor_passes() -> None:
    fc = FlowController(parse_flow_control({"fairShareWindow": "0s"}))
    pool = SlotPool({"a": 1})
    alone = fc.enqueue(request("alone", prompt_tokens=100, max_tokens=None), 0.0)
    assert isinstance(alone, Accepted)
    fc.dispatch(0.0, pool)
    band = fc.band(0)
    assert band is not None
    assert "alone" in band.flows  # in flight: kept
    fc.complete(alone.ticket, None, 1.0)
    # Served last, its counter is what a newcomer is lifted to: keeping it changes nothing.
    assert "alone" not in band.flows and band.forgotten == 1
    pool.busy["a"] = 0
    # Two backlogged tenants; "a" is served first and goes idle above "b", still waiting.
    a = [fc.enqueue(request("a", prompt_tokens=100, max_tokens=None), 2.0) for _ in range(1)]
    b = [fc.enqueue(request("b", prompt_tokens=40, max_tokens=None), 2.0) for _ in range(3)]
    tickets = [r.ticket for r in a + b if isinstance(r, Accepted)]
    fc.dispatch(2.0, pool)
    fc.complete(tickets[0], None, 2.0)
    pool.busy["a"] = 0
    assert tickets[0].request.fairness_id == "a"
    assert "a" in band.flows and band.idle_flows == 1  # above "b", the floor: kept
    a_counter = band.flows["a"].counter
    kept_while = []
    for ticket in tickets[1:]:
        fc.dispatch(3.0, pool)
        fc.complete(ticket, None, 3.0)
        pool.busy["a"] = 0
        if "b" in band.flows:
            kept_while.append(("a" in band.flows, band.flows["b"].counter < a_counter))
    # "a" (charged 100 + 2 x 256) is kept while "b" (40 + 2 x 256 a request) is below it,
    # and forgotten once "b" passes it; "b", served last, then goes too.
    assert kept_while == [(True, True), (False, False)]
    assert band.flows == {}


def test_an_idle_flow_above_the_floor_is_kept_until_the_timeout_and_the_cap_evicts_oldest() -> None:
    config = parse_flow_control({"fairShareWindow": "0s", "flowGCTimeout": "5m", "maxIdleFlows": 2})
    fc = FlowController(config)
    pool = SlotPool({"a": 1})
    # "stuck" waits for an endpoint the pool does not have: it holds the band's floor at 0.
    stuck = fc.enqueue(request("stuck", subset_hint=["z"]), 0.0)
    assert isinstance(stuck, Accepted)
    for i in range(4):  # each served once: lifted to the floor, charged, above it
        acc = fc.enqueue(request(f"t{i}", max_tokens=None), float(i))
        assert isinstance(acc, Accepted)
        fc.dispatch(float(i), pool)
        fc.complete(acc.ticket, None, float(i))
        pool.busy["a"] = 0
    band = fc.band(0)
    assert band is not None
    assert set(band.flows) == {"stuck", "t2", "t3"}  # the cap: the oldest idle went first
    fc.dispatch(3.0 + config.idle_flow_timeout_s - 1, pool)
    assert set(band.flows) == {"stuck", "t3"}  # t2 idle for the timeout (upstream's rule)
    fc.dispatch(3.0 + config.idle_flow_timeout_s, pool)
    assert set(band.flows) == {"stuck"}
    fc.cancel(stuck.ticket, 400.0)  # idle at 0, below what a newcomer is lifted to
    assert band.flows == {}


def _flood(fc: FlowController, distinct: int, step_s: float) -> int:
    """`distinct` requests, each with a fairness id of its own, served and completed once.
    Returns the most flows flow control held at once."""
    pool = SlotPool({"a": 4})
    now = 0.0
    most = 0
    for i in range(distinct):
        acc = fc.enqueue(request(f"tenant-{i:06d}", prompt_tokens=20, max_tokens=4), now)
        assert isinstance(acc, Accepted)
        fc.dispatch(now, pool)
        fc.complete(acc.ticket, Usage(20, 1 + i % 4), now)
        pool.busy["a"] -= 1
        most = max(most, sum(len(b.flows) for b in fc.bands))
        now += step_s
    return most


def _traced_growth(fc: FlowController, distinct: int, step_s: float) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _flood(fc, distinct, step_s)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_flood_of_100000_fairness_ids_served_once_keeps_flow_control_memory_bounded() -> None:
    distinct = 100_000
    step_s = 0.001  # 1,000 fresh ids a second: 30,000 inside the default 30 s window
    config = parse_flow_control({"maxIdleFlows": 2000})
    fc = FlowController(config)
    most = _flood(fc, distinct, step_s)
    band = fc.band(0)
    assert band is not None
    assert most <= config.max_idle_flows + 1  # the cap, and the one request in flight
    assert band.forgotten >= distinct - config.max_idle_flows
    # Memory: what one kept flow costs, on a controller that keeps every flow, against what
    # a flood as long as the cap costs one that forgets (tracemalloc, both on the same sizes).
    sample = 5 * config.max_idle_flows
    kept = _traced_growth(keeping(config), sample, step_s)
    forgetting = _traced_growth(FlowController(config), sample, step_s)
    per_flow = kept / sample
    # Forgotten flows stay alive until the lazily compacted idle heaps drop them (at most
    # twice the idle flows kept): three caps' worth of flows at most.
    assert forgetting <= 3 * config.max_idle_flows * per_flow
    assert forgetting < kept / 2


def test_without_a_window_a_flood_keeps_only_the_flows_at_the_top() -> None:
    fc = FlowController(parse_flow_control({"fairShareWindow": "0s"}))
    _flood(fc, 20_000, 0.001)
    band = fc.band(0)
    assert band is not None
    assert len(band.flows) <= 2  # only the flow served last (the floor) and none above it
    assert band.forgotten >= 20_000 - 2


def test_the_idle_flow_settings_are_read_from_the_config() -> None:
    config = parse_flow_control({"flowGCTimeout": "1h", "maxIdleFlows": 50})
    assert config.idle_flow_timeout_s == 3600
    assert config.max_idle_flows == 50
    assert FlowController(config)._band(0).max_idle_flows == 50


def test_a_refund_in_flight_lowers_the_floor_so_an_idle_flow_above_it_is_kept() -> None:
    """Why requests in flight bound the threshold: a completion's refund can take the floor
    below an idle flow's counter. f is kept, and returns above a tenant at the floor."""
    orders = []
    for fc in (FlowController(parse_flow_control({"fairShareWindow": "0s"})), None):
        fc = fc or keeping(parse_flow_control({"fairShareWindow": "0s"}))
        pool = SlotPool({"a": 3})
        f, g, h = (
            fc.enqueue(request(name, prompt_tokens=p, max_tokens=m), 0.0)
            for name, p, m in (("f", 100, 1), ("g", 1000, None), ("h", 1000, None))
        )
        assert isinstance(f, Accepted) and isinstance(g, Accepted) and isinstance(h, Accepted)
        fc.dispatch(0.0, pool)
        fc.complete(f.ticket, None, 1.0)  # f idles above 0, below the counter served last
        band = fc.band(0)
        assert band is not None and "f" in band.flows
        fc.complete(g.ticket, Usage(1000, 0, 1000), 1.0)  # refunded in full: the floor is 0
        fc.complete(h.ticket, Usage(1000, 0, 1000), 1.0)
        pool = SlotPool({"a": 1})
        for name in ("g", "g", "f"):
            fc.enqueue(request(name, prompt_tokens=10, max_tokens=1), 2.0)
        for _ in range(3):
            fc.dispatch(2.0, pool)
            pool.busy["a"] = 0
        orders.append([r.fairness_id for r in pool.released])
    # g, at the floor, is served until it passes f, who was served more (forgetting f would
    # have lifted it to g's 0: g, f, g)
    assert orders[0] == orders[1] == ["g", "g", "f"]
