"""A rejected manifest names each problem the way the API server does: the JSON field path,
then the rule (`spec.poolRef.name: Required value`)."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.api import ResourceError, parse_resource

from .manifests import objective, pool, rewrite


def problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ResourceError) as caught:
        parse_resource(doc)
    return caught.value.problems


def test_a_missing_required_field() -> None:
    doc = objective()
    del doc["spec"]["poolRef"]["name"]
    assert problems(doc) == [("spec.poolRef.name", "Required value")]


def test_a_null_required_field_is_missing() -> None:
    doc = objective()
    doc["spec"]["poolRef"]["name"] = None
    assert problems(doc) == [("spec.poolRef.name", "Required value")]


def test_a_number_above_its_maximum() -> None:
    doc = pool()
    doc["spec"]["targetPorts"][0]["number"] = 70000
    assert problems(doc) == [
        ("spec.targetPorts[0].number", "Invalid value: 70000: must be less than or equal to 65535")
    ]


def test_a_map_with_too_many_entries() -> None:
    doc = pool()
    doc["spec"]["selector"]["matchLabels"] = {f"k{i}": "v" for i in range(65)}
    assert problems(doc) == [
        ("spec.selector.matchLabels", "Too many: 65: must have at most 64 items")
    ]


def test_a_missing_name() -> None:
    doc = pool()
    del doc["metadata"]["name"]
    assert problems(doc) == [("metadata.name", "Required value")]


def test_a_value_outside_its_enum() -> None:
    doc = pool()
    doc["spec"]["endpointPickerRef"]["failureMode"] = "FailSoft"
    assert problems(doc) == [
        (
            "spec.endpointPickerRef.failureMode",
            'Unsupported value: "FailSoft": supported values: "FailOpen", "FailClose"',
        )
    ]


def test_a_pattern_mismatch_quotes_the_pattern() -> None:
    doc = pool()
    doc["spec"]["selector"]["matchLabels"] = {"app": "-bad"}
    ((path, message),) = problems(doc)
    assert path == "spec.selector.matchLabels[app]"
    assert message == (
        """Invalid value: "-bad": must match '^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$'"""
    )


def test_a_string_that_is_too_long() -> None:
    doc = objective()
    doc["spec"]["poolRef"]["kind"] = "K" * 64
    assert problems(doc) == [("spec.poolRef.kind", "Too long: may not be more than 63 characters")]


def test_a_value_of_the_wrong_type() -> None:
    doc = pool()
    doc["spec"]["targetPorts"][0]["number"] = "8000"  # the API server does not coerce
    assert problems(doc) == [
        ("spec.targetPorts[0].number", 'Invalid value: "string": must be of type integer')
    ]


def test_cel_rules_report_their_message() -> None:
    doc = pool()
    del doc["spec"]["endpointPickerRef"]["port"]
    doc["spec"]["targetPorts"] = [{"number": 8000}, {"number": 8000}]
    assert sorted(problems(doc)) == [
        (
            "spec.endpointPickerRef",
            "Invalid value: \"object\": port is required when kind is 'Service' or unspecified"
            " (defaults to 'Service')",
        ),
        ("spec.targetPorts", 'Invalid value: "array": port number must be unique'),
    ]


def test_a_duplicate_list_map_key_points_at_the_second_entry() -> None:
    doc = rewrite()
    condition = {
        "type": "Accepted",
        "status": "True",
        "reason": "Accepted",
        "message": "",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }
    doc["status"] = {"conditions": [condition, condition]}
    assert problems(doc) == [("status.conditions[1]", 'Duplicate value: {"type": "Accepted"}')]


def test_an_empty_list_below_its_minimum() -> None:
    doc = rewrite()
    doc["spec"]["rules"][0]["targets"] = []
    assert problems(doc) == [
        ("spec.rules[0].targets", "Invalid value: 0: must have at least 1 items")
    ]


def test_every_problem_is_reported_at_once() -> None:
    doc = pool()
    doc["metadata"]["name"] = "Not_A_Name"
    doc["spec"]["targetPorts"][0]["number"] = 0
    del doc["spec"]["selector"]
    paths = [path for path, _ in problems(doc)]
    assert sorted(paths) == ["metadata.name", "spec.selector", "spec.targetPorts[0].number"]


def test_the_error_message_reads_like_kubectl() -> None:
    doc = objective()
    del doc["spec"]["poolRef"]["name"]
    with pytest.raises(ResourceError) as caught:
        parse_resource(doc)
    assert str(caught.value) == (
        'InferenceObjective.inference.networking.x-k8s.io "interactive" is invalid: '
        "spec.poolRef.name: Required value"
    )


def test_an_unknown_kind_is_named() -> None:
    with pytest.raises(ResourceError, match=r'Unsupported value: "Pod" \(apiVersion "v1"\)'):
        parse_resource({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})


def test_the_legacy_alpha_pool_is_not_an_inference_pool() -> None:
    doc = pool()
    doc["apiVersion"] = "inference.networking.x-k8s.io/v1alpha2"
    with pytest.raises(ResourceError) as caught:
        parse_resource(doc)
    assert caught.value.problems[0][0] == "kind"


def test_a_document_without_kind() -> None:
    assert problems({"metadata": {"name": "x"}}) == [
        ("apiVersion", "Required value"),
        ("kind", "Required value"),
    ]
