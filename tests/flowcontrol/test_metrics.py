"""Metrics: upstream's series with upstream's labels, plus Sluice's fairness observability."""

from __future__ import annotations

from fc_harness import SlotPool, request
from prometheus_client import CollectorRegistry

from sluice.config import parse_flow_control
from sluice.flowcontrol import Accepted, FlowController
from sluice.flowcontrol.metrics import FlowControlMetrics
from sluice.requests.model import Usage


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_metrics_follow_a_request_through_the_queue() -> None:
    registry = CollectorRegistry()
    fc = FlowController(
        parse_flow_control({"maxRequests": 2}),
        observer=FlowControlMetrics(registry, inference_pool="pool"),
    )
    pool = SlotPool({"a": 0})
    first = fc.enqueue(request("t", priority=1, body_bytes=40), 0.0)
    fc.enqueue(request("t", priority=1, body_bytes=60), 0.0)
    fc.enqueue(request("t", priority=1), 0.0)  # rejected: queue full
    upstream = {"fairness_id": "t", "priority": "1", "inference_pool": "pool",
                "model_name": "m", "target_model_name": "m"}  # fmt: skip
    assert sample(registry, "inference_extension_flow_control_queue_size", **upstream) == 2
    assert sample(registry, "sluice_flow_control_queue_bytes", priority="1") == 100

    pool.resize("a", 1)
    fc.dispatch(0.25, pool)
    assert isinstance(first, Accepted)
    fc.complete(first.ticket, Usage(prompt_tokens=100, completion_tokens=5), 1.0)

    assert sample(registry, "inference_extension_flow_control_queue_size", **upstream) == 1
    assert sample(registry, "sluice_flow_control_queue_bytes", priority="1") == 60
    duration = "inference_extension_flow_control_request_queue_duration_seconds"
    assert sample(registry, f"{duration}_count", outcome="Dispatched", **upstream) == 1
    assert sample(registry, f"{duration}_sum", outcome="Dispatched", **upstream) == 0.25
    assert sample(registry, f"{duration}_count", outcome="RejectedCapacity", **upstream) == 1
    assert sample(registry, "sluice_flow_control_outcomes_total", priority="1",
                  outcome="rejected_capacity") == 1  # fmt: skip
    served = sample(registry, "sluice_flow_control_served_token_cost", fairness_id="t",
                    priority="1")  # fmt: skip
    assert served == 100 + 2 * 5  # corrected to true usage
    assert sample(registry, "sluice_flow_control_virtual_counter", fairness_id="t",
                  priority="1") == served  # fmt: skip
    assert sample(registry, "sluice_flow_control_jain_fairness_index", priority="1") == 1.0


def test_jain_index_drops_when_one_flow_is_served_more() -> None:
    registry = CollectorRegistry()
    fc = FlowController(observer=FlowControlMetrics(registry))
    pool = SlotPool({"a": 3})
    fc.enqueue(request("big", prompt_tokens=9000, max_tokens=0), 0.0)
    fc.enqueue(request("small", prompt_tokens=1000, max_tokens=0), 0.0)
    fc.dispatch(0.0, pool)
    index = sample(registry, "sluice_flow_control_jain_fairness_index", priority="0")
    assert index is not None
    assert abs(index - (10_000**2 / (2 * (9000**2 + 1000**2)))) < 1e-9
