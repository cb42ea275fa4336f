"""InferenceObjective: a named use case of a pool and the priority its requests get under
scarcity (unset is treated as 0 by consumers).

Served in two groups with the same fields (`sluice.api.groups`): `llm-d.ai/v1alpha2`
(`InferenceObjective`, priority an int32) and the deprecated `inference.networking.x-k8s.io/
v1alpha2` (`LegacyInferenceObjective`, priority any 64-bit integer, as GIE v1.3's CRD says)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from sluice.api._base import GROUP_PATTERN, KIND_PATTERN, Int32, Integer, KubeModel
from sluice.api.conditions import Conditions, waiting_for_controller
from sluice.api.groups import LEGACY_GROUP, LLMD_GROUP, POOL_GROUP, VERSION
from sluice.api.meta import ObjectMeta
from sluice.api.rules import invalid_value

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
    priority: Int32 | None = None
    """Higher is served first; negative is allowed; consumers treat unset as 0."""


class LegacyInferenceObjectiveSpec(InferenceObjectiveSpec):
    """The legacy group's spec: the same fields, `priority` without the int32 format."""

    priority: Integer | None = None
    """Higher is served first; negative is allowed; consumers treat unset as 0."""


class InferenceObjectiveStatus(KubeModel):
    """The observed state of an InferenceObjective."""

    conditions: Conditions = waiting_for_controller("Ready")
    """Known type: Accepted."""


class VersionedKind(KubeModel):
    """A top-level resource: `apiVersion` must be the one its class serves."""

    API_VERSION: ClassVar[str]
    KIND: ClassVar[str]

    @classmethod
    def group(cls) -> str:
        return cls.API_VERSION.split("/")[0]

    @field_validator("api_version", check_fields=False)
    @classmethod
    def _is_our_api_version(cls, value: str) -> str:
        if value != cls.API_VERSION:
            raise invalid_value(value, f"must be {cls.API_VERSION}")
        return value


class InferenceObjective(VersionedKind):
    """InferenceObjective is the Schema for the InferenceObjectives API."""

    API_VERSION: ClassVar[str] = f"{LLMD_GROUP}/{VERSION}"
    KIND: ClassVar[str] = "InferenceObjective"

    api_version: str = f"{LLMD_GROUP}/{VERSION}"
    kind: Literal["InferenceObjective"] = "InferenceObjective"
    metadata: ObjectMeta
    # Optional in the official schema: an objective without spec is accepted (binds to no pool).
    spec: InferenceObjectiveSpec | None = None
    status: InferenceObjectiveStatus | None = None

    @property
    def priority(self) -> int:
        """The band its requests get: `spec.priority`, unset as 0 (as the CRD says)."""
        spec = self.spec
        return 0 if spec is None or spec.priority is None else int(spec.priority)


class LegacyInferenceObjective(InferenceObjective):
    """InferenceObjective in the deprecated `inference.networking.x-k8s.io` group."""

    API_VERSION: ClassVar[str] = f"{LEGACY_GROUP}/{VERSION}"

    api_version: str = f"{LEGACY_GROUP}/{VERSION}"
    spec: LegacyInferenceObjectiveSpec | None = None
