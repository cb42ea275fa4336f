"""`render_crds()` produces CRDs semantically equal to the official ones (GIE v1.3.0 for the pool
and the legacy group, llm-d-router v0.10.0 for `llm-d.ai`): same names, group, scope, versions,
subresources, printer columns and the same openAPIV3Schema (types, required, patterns, bounds,
enums, formats, defaults, list types and keys, CEL rules). Descriptions are not compared:
Sluice's are shorter, written from its own docstrings."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from sluice.api.crds import render_crds

from .official import LEGACY, LLMD, RESOURCES, GroupKind, official_crds


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


def rendered(group: str | None = None) -> dict[GroupKind, dict[str, Any]]:
    docs = list(yaml.safe_load_all(render_crds(group)))
    return {(doc["spec"]["group"], doc["spec"]["names"]["kind"]): doc for doc in docs}


def test_one_crd_per_resource_kind_and_group() -> None:
    assert list(rendered()) == RESOURCES
    assert sorted(rendered()) == sorted(official_crds())


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: f"{r[1]}.{r[0]}")
def test_generated_crd_equals_the_official_one(resource: GroupKind) -> None:
    ours, theirs = rendered()[resource], official_crds()[resource]
    assert ours["apiVersion"] == theirs["apiVersion"] == "apiextensions.k8s.io/v1"
    assert ours["kind"] == theirs["kind"]
    assert ours["metadata"]["name"] == theirs["metadata"]["name"]
    # The same bundle annotation key; llm-d-router's files say `main-dev` even at the v0.10.0
    # tag, Sluice names the release whose API it reproduces.
    assert ours["metadata"]["annotations"].keys() == theirs["metadata"]["annotations"].keys()
    # The whole spec: names, group, scope, versions with schema, subresources, columns.
    assert without_descriptions(ours["spec"]) == without_descriptions(theirs["spec"])


def test_the_two_groups_differ_only_where_upstream_does() -> None:
    """llm-d.ai's priority is an int32; everything else of the objective and rewrite CRDs is
    the same in both groups."""
    crds = rendered()
    for kind in ("InferenceObjective", "InferenceModelRewrite"):
        new, old = (without_descriptions(crds[(g, kind)]["spec"]) for g in (LLMD, LEGACY))
        new_priority = new["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        if kind == "InferenceObjective":
            assert new_priority["properties"]["priority"].pop("format") == "int32"
        assert {**new, "group": LEGACY} == old


@pytest.mark.parametrize("group", [LLMD, LEGACY])
def test_one_group_can_be_rendered_alone(group: str) -> None:
    assert sorted(rendered(group)) == sorted(
        [("inference.networking.k8s.io", "InferencePool")]
        + [(group, kind) for kind in ("InferenceObjective", "InferenceModelRewrite")]
    )
    with pytest.raises(ValueError, match=r"unknown API group 'example\.com'"):
        render_crds("example.com")


def test_generated_crds_describe_their_fields() -> None:
    schema = rendered()[RESOURCES[0]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    target_ports = schema["properties"]["spec"]["properties"]["targetPorts"]
    assert "podIP:port" in target_ports["description"]


def test_the_output_is_a_stream_kubectl_can_apply() -> None:
    text = render_crds()
    assert text.startswith("---\n")
    assert text.count("\nkind: CustomResourceDefinition\n") == 5
