"""Typed Kubernetes resources (InferencePool; InferenceObjective and InferenceModelRewrite in the
`llm-d.ai` group and the deprecated `inference.networking.x-k8s.io` one) with the validation and
defaults of the official CRDs. Pure; imports nothing of ours.

    pool = parse_resource(yaml.safe_load(text))   # ResourceError lists every problem
    pool.spec.target_ports[0].number
    to_dict(pool)                                  # camelCase wire form, defaults included
    pruned_fields(doc)                             # unknown fields Kubernetes would drop
    sluice.api.crds.render_crds()                  # the CRDs, generated from these models
"""

from sluice.api.conditions import Condition, merge_conditions, pending_condition
from sluice.api.errors import Problem, ResourceError
from sluice.api.inferencemodelrewrite import (
    InferenceModelRewrite,
    InferenceModelRewriteRule,
    InferenceModelRewriteSpec,
    InferenceModelRewriteStatus,
    LegacyInferenceModelRewrite,
    Match,
    ModelMatch,
    TargetModel,
)
from sluice.api.inferenceobjective import (
    InferenceObjective,
    InferenceObjectiveSpec,
    InferenceObjectiveStatus,
    LegacyInferenceObjective,
    PoolObjectReference,
)
from sluice.api.inferencepool import (
    EndpointPickerRef,
    InferencePool,
    InferencePoolSpec,
    InferencePoolStatus,
    LabelSelector,
    ParentReference,
    ParentStatus,
    Port,
)
from sluice.api.meta import ObjectMeta
from sluice.api.pruning import pruned_fields
from sluice.api.resources import Resource, parse_resource, to_dict

__all__ = [
    "Condition",
    "EndpointPickerRef",
    "InferenceModelRewrite",
    "InferenceModelRewriteRule",
    "InferenceModelRewriteSpec",
    "InferenceModelRewriteStatus",
    "InferenceObjective",
    "InferenceObjectiveSpec",
    "InferenceObjectiveStatus",
    "InferencePool",
    "InferencePoolSpec",
    "InferencePoolStatus",
    "LabelSelector",
    "LegacyInferenceModelRewrite",
    "LegacyInferenceObjective",
    "Match",
    "ModelMatch",
    "ObjectMeta",
    "ParentReference",
    "ParentStatus",
    "PoolObjectReference",
    "Port",
    "Problem",
    "Resource",
    "ResourceError",
    "TargetModel",
    "merge_conditions",
    "parse_resource",
    "pending_condition",
    "pruned_fields",
    "to_dict",
]
