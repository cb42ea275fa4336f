"""InferenceModelRewrite: rules that rewrite the `model` of a request, optionally splitting
traffic between weighted target models.

Served in two groups with identical fields (`sluice.api.groups`): `llm-d.ai/v1alpha2`
(`InferenceModelRewrite`) and the deprecated `inference.networking.x-k8s.io/v1alpha2`
(`LegacyInferenceModelRewrite`)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from sluice.api._base import KubeModel, Weight
from sluice.api.conditions import Conditions, waiting_for_controller
from sluice.api.groups import LEGACY_GROUP, LLMD_GROUP, VERSION
from sluice.api.inferenceobjective import PoolObjectReference, VersionedKind
from sluice.api.meta import ObjectMeta


class ModelMatch(KubeModel):
    """How to match the `model` field of a request body."""

    type: Literal["Exact"] = "Exact"
    """The kind of string match; only Exact is supported."""
    value: Annotated[str, Field(min_length=1)]
    """The model name to match."""


class Match(KubeModel):
    """The criteria a request must meet for a rule to apply."""

    model: ModelMatch
    """Matches the `model` field of the request body."""


class TargetModel(KubeModel):
    """A weighted destination model."""

    model_rewrite: str
    """The model name to put in the request."""
    weight: Weight | None = None
    """Share of traffic: weight / sum of weights. Set on all targets or on none."""


class InferenceModelRewriteRule(KubeModel):
    """Match criteria and the rewrite to apply. No matches means every request matches."""

    matches: list[Match] | None = None
    """Any one match selects the rule; absent or empty matches everything."""
    targets: Annotated[list[TargetModel], Field(min_length=1)] | None = None
    """Where matching requests go, split by weight."""


class InferenceModelRewriteSpec(KubeModel):
    """The desired state of an InferenceModelRewrite."""

    pool_ref: PoolObjectReference
    """The pool whose requests are rewritten."""
    rules: list[InferenceModelRewriteRule]
    """Rewrite rules; precedence: exact matches, then oldest resource, then list order."""


class InferenceModelRewriteStatus(KubeModel):
    """The observed state of an InferenceModelRewrite."""

    conditions: Conditions = waiting_for_controller("Accepted")
    """Known type: Accepted."""


class InferenceModelRewrite(VersionedKind):
    """InferenceModelRewrite is the Schema for the InferenceModelRewrite API."""

    API_VERSION: ClassVar[str] = f"{LLMD_GROUP}/{VERSION}"
    KIND: ClassVar[str] = "InferenceModelRewrite"

    api_version: str = f"{LLMD_GROUP}/{VERSION}"
    kind: Literal["InferenceModelRewrite"] = "InferenceModelRewrite"
    metadata: ObjectMeta
    # Optional in the official schema, like InferenceObjective's.
    spec: InferenceModelRewriteSpec | None = None
    status: InferenceModelRewriteStatus | None = None


class LegacyInferenceModelRewrite(InferenceModelRewrite):
    """InferenceModelRewrite in the deprecated `inference.networking.x-k8s.io` group."""

    API_VERSION: ClassVar[str] = f"{LEGACY_GROUP}/{VERSION}"

    api_version: str = f"{LEGACY_GROUP}/{VERSION}"
