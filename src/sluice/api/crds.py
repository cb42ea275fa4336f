"""`sluice crds`: CustomResourceDefinition manifests for the three resources, generated from
Sluice's own models (not copied), so the models and the CRDs cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from sluice.api.inferencemodelrewrite import InferenceModelRewrite
from sluice.api.inferenceobjective import InferenceObjective
from sluice.api.inferencepool import InferencePool
from sluice.api.resources import ResourceType
from sluice.api.schema import open_api_schema

# The upstream bundle whose API these CRDs reproduce.
BUNDLE_VERSION = "v1.3.0"


@dataclass(frozen=True)
class CrdFacts:
    """What a CRD needs beyond the schema: names, printer columns, annotations."""

    model: ResourceType
    plural: str
    short_names: tuple[str, ...] = ()
    printer_columns: tuple[dict[str, str], ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)


_POOL_NAME_COLUMN = {"jsonPath": ".spec.poolRef.name", "name": "Inference Pool", "type": "string"}
_AGE_COLUMN = {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"}

CRDS = (
    CrdFacts(
        InferencePool,
        plural="inferencepools",
        short_names=("infpool",),
        # *.k8s.io groups need an approved API review before the API server serves them.
        annotations={
            "api-approved.kubernetes.io": (
                "https://github.com/kubernetes-sigs/gateway-api-inference-extension/pull/1173"
            )
        },
    ),
    CrdFacts(
        InferenceObjective,
        plural="inferenceobjectives",
        printer_columns=(
            _POOL_NAME_COLUMN,
            {"jsonPath": ".spec.priority", "name": "Priority", "type": "string"},
            _AGE_COLUMN,
        ),
    ),
    CrdFacts(
        InferenceModelRewrite,
        plural="inferencemodelrewrites",
        printer_columns=(_POOL_NAME_COLUMN, _AGE_COLUMN),
    ),
)


def crd(facts: CrdFacts) -> dict[str, Any]:
    """One CustomResourceDefinition as a dict."""
    model = facts.model
    group, version = model.API_VERSION.split("/")
    names: dict[str, Any] = {
        "kind": model.KIND,
        "listKind": f"{model.KIND}List",
        "plural": facts.plural,
    }
    if facts.short_names:
        names["shortNames"] = list(facts.short_names)
    names["singular"] = model.KIND.lower()
    served_version: dict[str, Any] = {}
    if facts.printer_columns:
        served_version["additionalPrinterColumns"] = [dict(c) for c in facts.printer_columns]
    served_version |= {
        "name": version,
        "schema": {"openAPIV3Schema": open_api_schema(model)},
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "annotations": {
                **facts.annotations,
                "inference.networking.k8s.io/bundle-version": BUNDLE_VERSION,
            },
            "name": f"{facts.plural}.{group}",
        },
        "spec": {
            "group": group,
            "names": names,
            "scope": "Namespaced",
            "versions": [served_version],
        },
    }


class _CrdDumper(yaml.SafeDumper):
    """Writes multi-line descriptions as `|` blocks, as controller-gen does."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_CrdDumper.add_representer(str, _represent_str)


def render_crds() -> str:
    """All CRDs as one multi-document YAML stream, ready for `kubectl apply -f -`."""
    return yaml.dump_all(
        [crd(facts) for facts in CRDS],
        Dumper=_CrdDumper,
        sort_keys=False,
        explicit_start=True,
        width=100,
    )
