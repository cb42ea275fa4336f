"""parse_resource / to_dict: typed access with snake_case names, the CRD defaults, pruning of
unknown fields, and a lossless round trip."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import yaml

from sluice.api import (
    InferenceModelRewrite,
    InferenceObjective,
    InferencePool,
    ResourceError,
    parse_resource,
    pruned_fields,
    to_dict,
)

from .manifests import objective, pool, rewrite


def test_a_pool_reads_with_python_names() -> None:
    parsed = parse_resource(pool())
    assert isinstance(parsed, InferencePool)
    assert parsed.metadata.name == "vllm-llama3"
    assert parsed.metadata.namespace == "default"
    assert parsed.spec.selector.match_labels == {"app": "vllm-llama3"}
    assert [p.number for p in parsed.spec.target_ports] == [8000]
    assert parsed.spec.endpoint_picker_ref.port is not None
    assert parsed.spec.endpoint_picker_ref.port.number == 9002


def test_pool_defaults_are_the_crd_defaults() -> None:
    ref = parse_resource(pool()).spec.endpoint_picker_ref  # type: ignore[union-attr]
    assert (ref.group, ref.kind, ref.failure_mode) == ("", "Service", "FailClose")


def test_an_objective_reads_with_python_names_and_defaults() -> None:
    parsed = parse_resource(objective())
    assert isinstance(parsed, InferenceObjective)
    assert parsed.spec is not None
    assert parsed.spec.priority == 10
    ref = parsed.spec.pool_ref
    assert (ref.name, ref.group, ref.kind) == (
        "vllm-llama3",
        "inference.networking.k8s.io",
        "InferencePool",
    )


def test_priority_is_optional_and_may_be_negative() -> None:
    doc = objective()
    del doc["spec"]["priority"]
    assert parse_resource(doc).spec.priority is None  # type: ignore[union-attr]
    doc["spec"]["priority"] = -1
    assert parse_resource(doc).spec.priority == -1  # type: ignore[union-attr]


def test_a_rewrite_reads_with_python_names_and_defaults() -> None:
    parsed = parse_resource(rewrite())
    assert isinstance(parsed, InferenceModelRewrite)
    assert parsed.spec is not None
    rule = parsed.spec.rules[0]
    assert rule.matches is not None and rule.targets is not None
    assert (rule.matches[0].model.type, rule.matches[0].model.value) == ("Exact", "llama3")
    assert [(t.model_rewrite, t.weight) for t in rule.targets] == [
        ("llama3-v1", 90),
        ("llama3-v2", 10),
    ]


def test_an_objective_without_spec_is_accepted_as_the_schema_allows() -> None:
    doc = objective()
    del doc["spec"]
    assert parse_resource(doc).spec is None


def test_status_conditions_default_to_waiting_for_controller_when_status_exists() -> None:
    doc = objective()
    assert parse_resource(doc).status is None  # no status object: nothing to default into
    doc["status"] = {}
    parsed = parse_resource(doc)
    assert isinstance(parsed, InferenceObjective) and parsed.status is not None
    (condition,) = parsed.status.conditions
    assert (condition.type, condition.status, condition.reason, condition.message) == (
        "Ready",
        "Unknown",
        "Pending",
        "Waiting for controller",
    )
    assert condition.last_transition_time == datetime(1970, 1, 1, tzinfo=UTC)

    doc = rewrite()
    doc["status"] = {}
    parsed_rewrite = parse_resource(doc)
    assert isinstance(parsed_rewrite, InferenceModelRewrite) and parsed_rewrite.status is not None
    assert [(c.type, c.status, c.reason) for c in parsed_rewrite.status.conditions] == [
        ("Accepted", "Unknown", "Pending")
    ]


def test_metadata_fields_for_the_kubernetes_client() -> None:
    doc = pool()
    doc["metadata"] |= {
        "generation": 3,
        "resourceVersion": "12345",
        "uid": "0b7f0e8c",
        "labels": {"team": "ml"},
        "creationTimestamp": "2025-06-01T12:00:00Z",
        "managedFields": [{"manager": "kubectl"}],
    }
    meta = parse_resource(doc).metadata
    assert (meta.generation, meta.resource_version, meta.uid) == (3, "12345", "0b7f0e8c")
    assert meta.labels == {"team": "ml"}
    assert meta.creation_timestamp == datetime(2025, 6, 1, 12, tzinfo=UTC)
    # Metadata Sluice does not model is kept, so writing the object back loses nothing.
    assert to_dict(parse_resource(doc))["metadata"]["managedFields"] == [{"manager": "kubectl"}]


def test_yaml_timestamps_are_read_as_times() -> None:
    text = "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata:\n"
    text += "  name: p\n  creationTimestamp: 2025-06-01T12:00:00Z\n"
    text += "spec:\n  selector: {matchLabels: {app: x}}\n  targetPorts: [{number: 80}]\n"
    text += "  endpointPickerRef: {name: e, port: {number: 9002}}\n"
    meta = parse_resource(yaml.safe_load(text)).metadata
    assert meta.creation_timestamp == datetime(2025, 6, 1, 12, tzinfo=UTC)


def test_to_dict_is_the_camel_case_wire_form_with_defaults() -> None:
    wire = to_dict(parse_resource(pool()))
    assert wire["spec"]["endpointPickerRef"] == {
        "failureMode": "FailClose",
        "group": "",
        "kind": "Service",
        "name": "sluice",
        "port": {"number": 9002},
    }
    assert "status" not in wire  # unset stays unset


@pytest.mark.parametrize("manifest", [pool, objective, rewrite])
def test_round_trip_is_lossless(manifest) -> None:  # type: ignore[no-untyped-def]
    parsed = parse_resource(manifest())
    assert parse_resource(to_dict(parsed)) == parsed


def test_unknown_fields_are_pruned_and_can_be_listed() -> None:
    doc = pool()
    doc["spec"]["targetPort"] = 8000  # a typo
    doc["spec"]["selector"]["matchExpressions"] = []
    doc["metadata"]["ownerReferences"] = []  # metadata keeps what it does not model
    parsed = parse_resource(doc)
    assert "targetPort" not in to_dict(parsed)["spec"]
    assert pruned_fields(doc) == ["spec.selector.matchExpressions", "spec.targetPort"]


def test_integral_floats_are_integers_as_in_json() -> None:
    doc = pool()
    doc["spec"]["targetPorts"][0]["number"] = 8000.0
    assert parse_resource(doc).spec.target_ports[0].number == 8000  # type: ignore[union-attr]


def test_strings_are_not_coerced() -> None:
    doc = pool()
    doc["spec"]["selector"]["matchLabels"] = {"version": 1}  # YAML `version: 1` is a number
    with pytest.raises(ResourceError, match="must be of type string"):
        parse_resource(doc)


def test_validation_takes_well_under_a_millisecond() -> None:
    doc = rewrite()
    parse_resource(doc)
    rounds = 500
    start = time.perf_counter()
    for _ in range(rounds):
        parse_resource(doc)
    per_resource = (time.perf_counter() - start) / rounds
    assert per_resource < 0.001  # typically ~30 µs; generous for a busy CI machine


@pytest.mark.parametrize(
    ("api_version", "objective_class", "rewrite_class"),
    [
        ("llm-d.ai/v1alpha2", "InferenceObjective", "InferenceModelRewrite"),
        (
            "inference.networking.x-k8s.io/v1alpha2",
            "LegacyInferenceObjective",
            "LegacyInferenceModelRewrite",
        ),
    ],
)
def test_both_api_groups_parse_to_their_own_class_and_round_trip(
    api_version: str, objective_class: str, rewrite_class: str
) -> None:
    for doc, expected in ((objective(), objective_class), (rewrite(), rewrite_class)):
        doc["apiVersion"] = api_version
        parsed = parse_resource(doc)
        assert type(parsed).__name__ == expected
        assert parsed.api_version == api_version
        assert parse_resource(to_dict(parsed)) == parsed
    # A legacy object is an InferenceObjective too: code that reads one reads both.
    assert isinstance(
        parse_resource({**objective(), "apiVersion": api_version}), InferenceObjective
    )


def test_an_api_version_sluice_does_not_serve_is_named_with_the_ones_it_does() -> None:
    with pytest.raises(ResourceError, match=r"llm-d\.ai/v1alpha2"):
        parse_resource({**objective(), "apiVersion": "llm-d.ai/v1alpha1"})
