"""InferenceObjective (`inference.networking.x-k8s.io/v1alpha2`): a named use case of a pool
and the priority its requests get under scarcity (unset is treated as 0 by consumers)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from sluice.api._base import GROUP_PATTERN, KIND_PATTERN, Integer, KubeModel
from sluice.api.conditions import Conditions, waiting_for_controller
from sluice.api.meta import ObjectMeta

POOL_GROUP = "inference.networking.k8s.io"
POOL_KIND = "InferencePool"


class PoolObjectReference(KubeModel):
    """A reference to an InferencePool in the same namespace."""

    group: Annotated[str, Field(max_length=253, pattern=GROUP_PATTERN)] = POOL_GROUP
    """The API group of the pool."""
    kind: Annotated[str, Field(min_length=1, max_length=63, pattern=KIND_PATTERN)] = POOL_KIND
    """The kind of the referent, InferencePool."""
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The name of the pool."""


class InferenceObjectiveSpec(KubeModel):
    """The desired state of a model use case."""

    pool_ref: PoolObjectReference
    """The pool this objective belongs to (same namespace)."""
    priority: Integer | None = None
    """Higher is served first; negative is allowed; consumers treat unset as 0."""


class InferenceObjectiveStatus(KubeModel):
    """The observed state of an InferenceObjective."""

    conditions: Conditions = waiting_for_controller("Ready")
    """Known type: Accepted."""


class InferenceObjective(KubeModel):
    """InferenceObjective is the Schema for the InferenceObjectives API."""

    API_VERSION: ClassVar[str] = "inference.networking.x-k8s.io/v1alpha2"
    KIND: ClassVar[str] = "InferenceObjective"

    api_version: Literal["inference.networking.x-k8s.io/v1alpha2"] = (
        "inference.networking.x-k8s.io/v1alpha2"
    )
    kind: Literal["InferenceObjective"] = "InferenceObjective"
    metadata: ObjectMeta
    # Optional in the official schema: an objective without spec is accepted (binds to no pool).
    spec: InferenceObjectiveSpec | None = None
    status: InferenceObjectiveStatus | None = None
