"""`render_crds()` produces CRDs semantically equal to the official v1.3.0 ones: same names,
group, scope, versions, subresources, printer columns and the same openAPIV3Schema (types,
required, patterns, bounds, enums, formats, defaults, list types and keys, CEL rules).
Descriptions are not compared: Sluice's are shorter, written from its own docstrings."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from sluice.api.crds import render_crds

from .official import official_crds


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


def rendered() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all(render_crds()))
    return {doc["spec"]["names"]["kind"]: doc for doc in docs}


def test_one_crd_per_resource_kind() -> None:
    assert sorted(rendered()) == sorted(official_crds())


@pytest.mark.parametrize("kind", ["InferencePool", "InferenceObjective", "InferenceModelRewrite"])
def test_generated_crd_equals_the_official_one(kind: str) -> None:
    ours, theirs = rendered()[kind], official_crds()[kind]
    assert ours["apiVersion"] == theirs["apiVersion"] == "apiextensions.k8s.io/v1"
    assert ours["kind"] == theirs["kind"]
    assert ours["metadata"] == theirs["metadata"]  # name and annotations
    # The whole spec: names, group, scope, versions with schema, subresources, columns.
    assert without_descriptions(ours["spec"]) == without_descriptions(theirs["spec"])


def test_generated_crds_describe_their_fields() -> None:
    schema = rendered()["InferencePool"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    target_ports = schema["properties"]["spec"]["properties"]["targetPorts"]
    assert "podIP:port" in target_ports["description"]


def test_the_output_is_a_stream_kubectl_can_apply() -> None:
    text = render_crds()
    assert text.startswith("---\n")
    assert text.count("\nkind: CustomResourceDefinition\n") == 3
