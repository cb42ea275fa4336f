"""The controller's guarantees, one example each (the property tests generalize them)."""

from __future__ import annotations

import math

import pytest
from fc_harness import SlotPool, request

from sluice.config import parse_flow_control
from sluice.flowcontrol import (
    Accepted,
    Finalized,
    FlowControlConfig,
    FlowController,
    QueueOutcome,
    error_for,
)
from sluice.requests.errors import ErrorCode
from sluice.requests.model import InferenceRequest, Usage


def accepted(result: object) -> Accepted:
    assert isinstance(result, Accepted), result
    return result


def test_an_idle_pool_dispatches_at_once() -> None:
    fc = FlowController()
    pool = SlotPool({"a": 1})
    ticket = accepted(fc.enqueue(request(), now=5.0)).ticket
    [event] = fc.dispatch(5.0, pool)
    assert event.ticket is ticket
    assert event.outcome is QueueOutcome.DISPATCHED
    assert event.waited_s == 0.0
    assert pool.placed == {ticket.request.request_id: "a"}


def test_a_full_pool_queues_and_releases_when_room_appears() -> None:
    fc = FlowController()
    pool = SlotPool({"a": 1})
    first = accepted(fc.enqueue(request(), 0.0)).ticket
    second = accepted(fc.enqueue(request(), 0.0)).ticket
    assert [e.ticket for e in fc.dispatch(0.0, pool)] == [first]
    assert fc.dispatch(1.0, pool) == []
    assert second.waiting
    pool.finish(first.request)
    [event] = fc.dispatch(2.0, pool)
    assert event.ticket is second and event.waited_s == 2.0


def test_a_higher_band_always_goes_first() -> None:
    fc = FlowController()
    pool = SlotPool({"a": 0})
    low = accepted(fc.enqueue(request("x", priority=-1), 0.0)).ticket
    mid = accepted(fc.enqueue(request("x", priority=0), 1.0)).ticket
    high = accepted(fc.enqueue(request("y", priority=10), 2.0)).ticket
    pool.resize("a", 1)
    order = []
    for now in (3.0, 4.0, 5.0):
        [event] = fc.dispatch(now, pool)
        order.append(event.ticket)
        pool.finish(event.ticket.request)
    assert order == [high, mid, low]


def test_an_item_whose_candidates_are_full_does_not_block_others() -> None:
    fc = FlowController()
    pool = SlotPool({"a": 0, "b": 1})
    stuck = accepted(fc.enqueue(request("t", subset_hint={"a"}), 0.0)).ticket
    free = accepted(fc.enqueue(request("t", subset_hint={"b"}), 0.0)).ticket
    [event] = fc.dispatch(0.0, pool)
    assert event.ticket is free
    assert stuck.waiting


def test_a_lower_band_takes_only_room_no_waiting_higher_item_could_use() -> None:
    fc = FlowController()
    pool = SlotPool({"a": 0, "b": 1})
    high = accepted(fc.enqueue(request("h", priority=5, subset_hint={"a"}), 0.0)).ticket
    low = accepted(fc.enqueue(request("l", priority=0), 0.0)).ticket
    # Room only on `b`, which the high item cannot use: the low item may take it.
    [event] = fc.dispatch(0.0, pool)
    assert event.ticket is low and pool.placed[low.request.request_id] == "b"
    assert high.waiting
    # Room on `a`: the high item can use it, so a new low item must not take it.
    later_low = accepted(fc.enqueue(request("l", priority=0), 1.0)).ticket
    pool.resize("a", 1)
    [event] = fc.dispatch(1.0, pool)
    assert event.ticket is high
    assert later_low.waiting


def test_ttl_expiry_frees_queue_space_at_once() -> None:
    fc = FlowController(parse_flow_control({"maxRequests": 1, "defaultRequestTTL": "2s"}))
    ticket = accepted(fc.enqueue(request(), 10.0)).ticket
    assert fc.next_deadline() == 12.0
    assert fc.expire(11.9) == []
    [event] = fc.expire(12.0)
    assert event.outcome is QueueOutcome.EXPIRED and event.ticket is ticket
    assert (fc.queued_requests, fc.queued_bytes, fc.next_deadline()) == (0, 0, None)
    assert isinstance(fc.enqueue(request(), 12.0), Accepted)


def test_dispatch_expires_overdue_items_instead_of_releasing_them() -> None:
    fc = FlowController()
    pool = SlotPool({"a": 0})
    ticket = accepted(fc.enqueue(request(ttl_s=1.0), 0.0)).ticket  # per-request TTL
    pool.resize("a", 1)
    [event] = fc.dispatch(1.5, pool)
    assert event.ticket is ticket and event.outcome is QueueOutcome.EXPIRED
    assert pool.released == []


def test_cancel_frees_queue_space_at_once_and_only_once() -> None:
    fc = FlowController(parse_flow_control({"maxRequests": 1}))
    ticket = accepted(fc.enqueue(request(), 0.0)).ticket
    event = fc.cancel(ticket, 1.0)
    assert event is not None and event.outcome is QueueOutcome.CANCELLED
    assert fc.queued_requests == 0
    assert fc.cancel(ticket, 2.0) is None
    assert isinstance(fc.enqueue(request(), 2.0), Accepted)


@pytest.mark.parametrize(
    ("block", "second"),
    [
        ({"maxRequests": 1}, {}),
        ({"maxBytes": 150}, {}),
        ({"priorityBands": [{"priority": 0, "maxRequests": 1}]}, {}),
        ({"perFlowMaxRequests": 1}, {}),
        ({"perFlowMaxBytes": "150"}, {}),
    ],
)
def test_a_full_queue_rejects_with_a_retry_after_hint(block: dict, second: dict) -> None:
    fc = FlowController(parse_flow_control(block))
    accepted(fc.enqueue(request("t", body_bytes=100), 0.0))
    rejection = fc.enqueue(request("t", body_bytes=100, **second), 0.0)
    assert not isinstance(rejection, Accepted)
    assert rejection.outcome is QueueOutcome.REJECTED_CAPACITY
    error = error_for(rejection)
    assert error is not None and error.http_status == 429
    assert error.retry_after_s is not None and error.retry_after_s >= 1.0
    assert fc.queued_requests == 1


CONTENDED = {
    QueueOutcome.REJECTED_CAPACITY,
    QueueOutcome.DISPLACED,
    QueueOutcome.SHED,
    QueueOutcome.EXPIRED,
}


@pytest.mark.parametrize("outcome", [o for o in QueueOutcome if o is not QueueOutcome.DISPATCHED])
def test_every_outcome_but_a_dispatch_is_a_429_when_contended_else_a_503(
    outcome: QueueOutcome,
) -> None:
    ticket = accepted(FlowController().enqueue(request("t"), 0.0)).ticket
    error = error_for(Finalized(ticket, outcome, 1.0, retry_after_s=2.0))
    assert error is not None and error.http_status == (429 if outcome in CONTENDED else 503)
    assert error.retry_after_s == (2.0 if outcome in CONTENDED else None)
    assert error.dropped_reason.startswith("rejected-")


def test_per_flow_limits_leave_other_flows_alone() -> None:
    fc = FlowController(parse_flow_control({"perFlowMaxRequests": 1}))
    accepted(fc.enqueue(request("a"), 0.0))
    assert not isinstance(fc.enqueue(request("a"), 0.0), Accepted)
    assert isinstance(fc.enqueue(request("b"), 0.0), Accepted)


def test_a_higher_priority_arrival_displaces_the_lowest_newest_item() -> None:
    fc = FlowController(parse_flow_control({"maxRequests": 3}))
    old_low = accepted(fc.enqueue(request("x", priority=-1), 0.0)).ticket
    new_low = accepted(fc.enqueue(request("x", priority=-1), 1.0)).ticket
    mid = accepted(fc.enqueue(request("x", priority=0), 2.0)).ticket
    result = accepted(fc.enqueue(request("y", priority=5), 3.0))
    [event] = result.displaced
    assert event.ticket is new_low and event.outcome is QueueOutcome.DISPLACED
    assert old_low.waiting and mid.waiting and result.ticket.waiting
    assert fc.queued_requests == 3
    error = error_for(event)
    assert error is not None and error.code is ErrorCode.RESOURCE_EXHAUSTED


def test_an_equal_priority_arrival_to_a_full_queue_is_rejected() -> None:
    fc = FlowController(parse_flow_control({"maxRequests": 1}))
    first = accepted(fc.enqueue(request("x", priority=0), 0.0)).ticket
    rejection = fc.enqueue(request("y", priority=0), 1.0)
    assert not isinstance(rejection, Accepted)
    assert rejection.outcome is QueueOutcome.REJECTED_CAPACITY
    assert first.waiting


def test_displacement_happens_only_if_it_makes_enough_room() -> None:
    fc = FlowController(parse_flow_control({"maxBytes": 300}))
    low = accepted(fc.enqueue(request("x", priority=-1, body_bytes=100), 0.0)).ticket
    accepted(fc.enqueue(request("x", priority=9, body_bytes=200), 0.0))
    # Needs 250 bytes of room; displacing every lower item frees only 100: reject, displace none.
    rejection = fc.enqueue(request("y", priority=5, body_bytes=250), 1.0)
    assert not isinstance(rejection, Accepted)
    assert low.waiting


def test_legacy_mode_sheds_negative_priority_when_saturated_and_never_queues() -> None:
    fc = FlowController(parse_flow_control({"mode": "legacy"}))
    pool = SlotPool({"a": 0})
    sheddable = accepted(fc.enqueue(request(priority=-1), 0.0)).ticket
    normal = accepted(fc.enqueue(request(priority=0), 0.0)).ticket
    pool.resize("a", 1)
    pool.busy["a"] = 1  # saturated
    events = {e.ticket.seq: e for e in fc.dispatch(0.0, pool)}
    assert events[sheddable.seq].outcome is QueueOutcome.SHED
    assert events[normal.seq].outcome is QueueOutcome.DISPATCHED  # goes at once, even saturated
    error = error_for(events[sheddable.seq])
    assert error is not None and error.http_status == 429
    assert error.message == "system saturated, sheddable request dropped"
    assert fc.queued_requests == 0


def test_legacy_mode_admits_negative_priority_when_there_is_room() -> None:
    fc = FlowController(FlowControlConfig(mode="legacy"))
    pool = SlotPool({"a": 1})
    ticket = accepted(fc.enqueue(request(priority=-3), 0.0)).ticket
    [event] = fc.dispatch(0.0, pool)
    assert event.ticket is ticket and event.outcome is QueueOutcome.DISPATCHED


def test_completion_replaces_the_estimate_with_true_usage_incl_cached_tokens() -> None:
    fc = FlowController()  # w_in = 1, w_out = 2
    pool = SlotPool({"a": 1})
    ticket = accepted(fc.enqueue(request("t", prompt_tokens=1000, max_tokens=100), 0.0)).ticket
    fc.dispatch(0.0, pool)
    band = fc.band(0)
    assert band is not None
    flow = band.flows["t"]
    assert flow.counter == 1000 + 2 * 100  # estimate: all prompt uncached, output = max_tokens
    fc.complete(ticket, Usage(prompt_tokens=1000, completion_tokens=10, cached_tokens=800), 1.0)
    assert flow.counter == 200 + 2 * 10
    fc.complete(ticket, Usage(prompt_tokens=1, completion_tokens=1), 2.0)  # idempotent
    assert flow.counter == 220


def test_engine_priority_is_off_by_default_and_maps_bands_lower_is_sooner() -> None:
    assert FlowController().engine_priority_for(request(priority=10)) is None
    fc = FlowController(parse_flow_control({"enginePriority": True}))
    values = [fc.engine_priority_for(request(priority=p)) for p in (10, 0, -5)]
    assert values == sorted(values)  # higher band → lower (sooner) engine priority
    assert values[1] == 0


@pytest.mark.parametrize(
    ("outcome", "status", "reason"),
    [
        (QueueOutcome.REJECTED_CAPACITY, 429, "rejected-saturated"),
        (QueueOutcome.DISPLACED, 429, "rejected-saturated"),
        (QueueOutcome.SHED, 429, "rejected-saturated"),
        (QueueOutcome.EXPIRED, 429, "rejected-ttl-expired"),
        (QueueOutcome.REJECTED_NO_ENDPOINTS, 503, "rejected-no-endpoints"),
        (QueueOutcome.EXPIRED_NO_ENDPOINTS, 503, "rejected-no-endpoints"),
        (QueueOutcome.CANCELLED, 503, "rejected-context-cancelled"),
    ],
)
def test_error_mapping_follows_upstream(outcome: QueueOutcome, status: int, reason: str) -> None:
    """llm-d-router's contract: 429 while the pool has endpoints (they are contended), 503
    when it has none; each rejection names its dropped reason."""
    ticket = accepted(FlowController().enqueue(request(), 0.0)).ticket
    error = error_for(Finalized(ticket, outcome, 1.0, retry_after_s=2.0))
    assert error is not None
    assert (error.http_status, error.dropped_reason) == (status, reason)
    assert error.retry_after_s == (2.0 if status == 429 else None)


def test_a_ttl_expiry_on_a_pool_with_endpoints_is_a_429() -> None:
    fc = FlowController(parse_flow_control({"defaultRequestTTL": "500ms"}))
    expired_ticket = accepted(fc.enqueue(request(), 0.0)).ticket
    [expired] = fc.expire(0.5)
    assert expired.ticket is expired_ticket and expired.outcome is QueueOutcome.EXPIRED
    error = error_for(expired)
    assert error is not None and error.http_status == 429
    assert error.message == "request timed out in queue: request TTL expired"


def test_no_ttl_means_no_deadline() -> None:
    fc = FlowController()
    ticket = accepted(fc.enqueue(request(), 0.0)).ticket
    assert ticket.deadline == math.inf
    assert fc.next_deadline() is None


class ReservedSlots:
    """One slot that any band may use, one more kept for band 10 and above."""

    def __init__(self) -> None:
        self.busy = 0
        self.taken: list[int] = []

    def has_room(
        self, candidates: frozenset[str] | None, priority: int, *, heavy_hitter: str | None = None
    ) -> bool:
        limit = 2 if priority >= 10 else 1
        return self.busy < limit

    def take_room(self, request: InferenceRequest, *, heavy_hitter: str | None = None) -> None:
        self.busy += 1
        self.taken.append(request.priority)


def test_a_lower_band_is_held_back_from_room_kept_for_a_higher_one() -> None:
    fc = FlowController()
    pool = ReservedSlots()
    fc.enqueue(request(priority=0), 0.0)
    fc.enqueue(request(priority=0), 0.0)
    fc.dispatch(0.0, pool)
    assert pool.taken == [0], "band 0 gets only the unreserved slot"
    fc.enqueue(request(priority=10), 0.1)
    fc.dispatch(0.1, pool)
    assert pool.taken == [0, 10], "the reserved slot goes to band 10 while band 0 still waits"
    assert fc.queued_requests == 1
