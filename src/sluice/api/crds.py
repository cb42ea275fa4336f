"""`sluice crds`: CustomResourceDefinition manifests for InferencePool and, in both API groups,
InferenceObjective and InferenceModelRewrite, generated from Sluice's own models (not copied), so
the models and the CRDs cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from sluice.api.groups import LLMD_GROUP
from sluice.api.inferencemodelrewrite import InferenceModelRewrite, LegacyInferenceModelRewrite
from sluice.api.inferenceobjective import InferenceObjective, LegacyInferenceObjective
from sluice.api.inferencepool import InferencePool
from sluice.api.resources import ResourceType
from sluice.api.schema import open_api_schema

# The upstream bundles whose API these CRDs reproduce, under the annotation each project uses:
# GIE v1.3.0 for InferencePool and the legacy group, llm-d-router v0.10.0 for llm-d.ai.
GIE_BUNDLE = ("inference.networking.k8s.io/bundle-version", "v1.3.0")
LLMD_BUNDLE = ("llm-d.ai/bundle-version", "v0.10.0")


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

_OBJECTIVE_COLUMNS = (
    _POOL_NAME_COLUMN,
    {"jsonPath": ".spec.priority", "name": "Priority", "type": "string"},
    _AGE_COLUMN,
)
_REWRITE_COLUMNS = (_POOL_NAME_COLUMN, _AGE_COLUMN)

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
    CrdFacts(InferenceObjective, "inferenceobjectives", printer_columns=_OBJECTIVE_COLUMNS),
    CrdFacts(InferenceModelRewrite, "inferencemodelrewrites", printer_columns=_REWRITE_COLUMNS),
    CrdFacts(LegacyInferenceObjective, "inferenceobjectives", printer_columns=_OBJECTIVE_COLUMNS),
    CrdFacts(
        LegacyInferenceModelRewrite, "inferencemodelrewrites", printer_columns=_REWRITE_COLUMNS
    ),
)


def _group_of(facts: CrdFacts) -> str:
    return facts.model.API_VERSION.split("/")[0]


GROUPS = tuple(dict.fromkeys(_group_of(facts) for facts in CRDS))


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
    bundle_key, bundle_version = LLMD_BUNDLE if group == LLMD_GROUP else GIE_BUNDLE
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "annotations": {**facts.annotations, bundle_key: bundle_version},
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


def render_crds(group: str | None = None) -> str:
    """The CRDs as one multi-document YAML stream, ready for `kubectl apply -f -`: all of them,
    or InferencePool plus the objective and rewrite CRDs of one `group`."""
    if group is not None and group not in GROUPS:
        raise ValueError(f"unknown API group {group!r}: use one of {', '.join(GROUPS[1:])}")
    chosen = [
        facts
        for facts in CRDS
        if group is None or facts.model is InferencePool or _group_of(facts) == group
    ]
    return yaml.dump_all(
        [crd(facts) for facts in chosen],
        Dumper=_CrdDumper,
        sort_keys=False,
        explicit_start=True,
        width=100,
    )
