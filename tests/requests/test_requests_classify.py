"""A request's class is decided once, when it is parsed: the priority of the objective it
names (unknown or none: band 0) and its flow (the fairness id, defaulted)."""

from __future__ import annotations

import json

from sluice.api import parse_resource
from sluice.requests.classify import priority_of
from sluice.requests.parse import parse_request

PRIORITIES = {"premium": 10, "batch": -1}
BODY = json.dumps({"model": "m", "prompt": "hi"}).encode()


def test_the_band_is_the_objectives_priority_and_unknown_or_none_is_zero() -> None:
    assert priority_of("premium", PRIORITIES) == 10
    assert priority_of("batch", PRIORITIES) == -1
    assert priority_of("unknown", PRIORITIES) == 0
    assert priority_of(None, PRIORITIES) == 0


def test_the_parser_carries_the_class_on_the_request() -> None:
    request = parse_request(
        {"x-gateway-inference-objective": "premium"},
        BODY,
        path="/v1/completions",
        priorities=PRIORITIES,
    )
    assert (request.objective, request.priority, request.fairness_id) == (
        "premium",
        10,
        "default-flow",
    )


def test_an_objective_without_a_priority_is_band_zero() -> None:
    objective = parse_resource(
        {
            "apiVersion": "llm-d.ai/v1alpha2",
            "kind": "InferenceObjective",
            "metadata": {"name": "plain", "namespace": "ns"},
            "spec": {"poolRef": {"name": "pool"}},
        }
    )
    assert objective.priority == 0
