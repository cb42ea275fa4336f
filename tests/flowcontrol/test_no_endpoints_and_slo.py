"""Flow control's two regimes (a pool with endpoints, a pool without: `noEndpointRequestTTL`)
and the slo-deadline ordering policy, as llm-d-router defines them."""

from __future__ import annotations

from dataclasses import replace

from fc_harness import SlotPool, request

from sluice.config import parse_flow_control
from sluice.flowcontrol import Accepted, FlowControlConfig, FlowController, QueueOutcome, error_for


def accepted(result: object) -> Accepted:
    assert isinstance(result, Accepted), result
    return result


def with_ttls(default: str | None, no_endpoint_s: float | None) -> FlowControlConfig:
    base = parse_flow_control({"defaultRequestTTL": default} if default else {})
    return replace(base, no_endpoint_request_ttl_s=no_endpoint_s)


def test_unset_no_endpoint_ttl_follows_the_default_ttl_else_sixty_seconds() -> None:
    assert with_ttls(None, None).no_endpoint_ttl_s == 60.0
    assert with_ttls("5s", None).no_endpoint_ttl_s == 5.0
    assert with_ttls("5s", 120.0).no_endpoint_ttl_s == 120.0
    assert with_ttls("5s", 0.0).no_endpoint_ttl_s is None  # 0: no limit, as upstream


def test_a_request_waiting_for_the_first_endpoint_expires_with_a_503() -> None:
    fc = FlowController(with_ttls("1s", 30.0))
    fc.set_pool_empty(True, 0.0)
    ticket = accepted(fc.enqueue(request(), 0.0)).ticket
    assert ticket.deadline == 30.0  # noEndpointRequestTTL, not the 1 s defaultRequestTTL
    assert fc.expire(29.9) == []
    [event] = fc.expire(30.0)
    assert event.outcome is QueueOutcome.EXPIRED_NO_ENDPOINTS
    error = error_for(event)
    assert error is not None
    assert (error.http_status, error.dropped_reason) == (503, "rejected-no-endpoints")
    assert "no endpoints are available" in error.message


def test_endpoints_appearing_start_the_default_budget_afresh() -> None:
    fc = FlowController(with_ttls("1s", 30.0))
    fc.set_pool_empty(True, 0.0)
    ticket = accepted(fc.enqueue(request(), 0.0)).ticket
    fc.set_pool_empty(False, 20.0)  # scaled up after 20 s: not expired on the spot
    assert ticket.deadline == 21.0 and fc.next_deadline() == 21.0
    assert fc.expire(20.5) == []
    [event] = fc.expire(21.0)
    assert event.outcome is QueueOutcome.EXPIRED
    error = error_for(event)
    assert error is not None
    assert (error.http_status, error.dropped_reason) == (429, "rejected-ttl-expired")


def test_losing_every_endpoint_moves_waiting_requests_onto_the_no_endpoint_budget() -> None:
    fc = FlowController(with_ttls(None, 10.0))  # no TTL while the pool has endpoints
    ticket = accepted(fc.enqueue(request(), 0.0)).ticket
    assert fc.next_deadline() is None
    fc.set_pool_empty(True, 5.0)
    assert ticket.deadline == 15.0
    [event] = fc.expire(15.0)
    assert event.outcome is QueueOutcome.EXPIRED_NO_ENDPOINTS


def test_a_full_waiting_room_is_a_503_not_a_429() -> None:
    fc = FlowController(replace(parse_flow_control({"maxRequests": 1})))
    fc.set_pool_empty(True, 0.0)
    accepted(fc.enqueue(request(), 0.0))
    rejected = fc.enqueue(request(), 0.0)
    assert not isinstance(rejected, Accepted)
    assert rejected.outcome is QueueOutcome.REJECTED_NO_ENDPOINTS
    error = error_for(rejected)
    assert error is not None and (error.http_status, error.dropped_reason) == (
        503,
        "rejected-no-endpoints",
    )
    assert fc.queued_requests == 1


def test_a_request_no_endpoint_may_serve_leaves_with_a_503() -> None:
    fc = FlowController()
    fc.set_pool_empty(True, 0.0)
    ticket = accepted(fc.enqueue(request(subset_hint=["10.9.9.9"]), 0.0)).ticket
    event = fc.drop_unreachable(ticket, 1.0)
    assert event is not None and event.outcome is QueueOutcome.EXPIRED_NO_ENDPOINTS
    assert fc.queued_requests == 0
    assert fc.drop_unreachable(ticket, 1.0) is None  # one outcome only


def test_slo_deadline_orders_by_arrival_plus_the_ttft_objective() -> None:
    """Upstream's slo-deadline-ordering-policy: deadline = arrival + x-llm-d-slo-ttft-ms; no
    objective sorts after every request with one; ties in arrival order."""
    fc = FlowController(
        parse_flow_control(
            {"defaultPriorityBand": {"orderingPolicyRef": "slo-deadline-ordering-policy"}}
        )
    )
    pool = SlotPool({"a": 0})
    relaxed = accepted(fc.enqueue(request("t", slo_ttft_s=5.0), 0.0)).ticket  # due at 5.0
    none = accepted(fc.enqueue(request("t"), 0.5)).ticket  # no objective: last
    urgent = accepted(fc.enqueue(request("t", slo_ttft_s=0.2), 1.0)).ticket  # due at 1.2
    tied = accepted(fc.enqueue(request("t", slo_ttft_s=0.1), 1.1)).ticket  # due at 1.2 too
    pool.resize("a", 1)
    order = []
    for step in range(4):
        [event] = fc.dispatch(2.0 + step, pool)
        order.append(event.ticket)
        pool.finish(event.ticket.request)
    assert order == [urgent, tied, relaxed, none]


def test_slo_deadline_is_accepted_under_both_names() -> None:
    for name in ("slo-deadline", "slo-deadline-ordering-policy"):
        config = parse_flow_control({"priorityBands": [{"priority": 1, "orderingPolicyRef": name}]})
        assert config.band(1).ordering == "slo-deadline"
