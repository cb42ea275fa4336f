"""InferencePool (`inference.networking.k8s.io/v1`): the set of model-server Pods an Endpoint
Picker chooses from, the ports they serve on, and which picker serves them."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from sluice.api._base import (
    CONTROLLER_NAME_PATTERN,
    GROUP_PATTERN,
    KIND_PATTERN,
    LABEL_VALUE_PATTERN,
    NAMESPACE_PATTERN,
    KubeModel,
    PortNumber,
)
from sluice.api.conditions import Conditions
from sluice.api.meta import ObjectMeta
from sluice.api.rules import invalid_value

LabelValue = Annotated[str, Field(min_length=0, max_length=63, pattern=LABEL_VALUE_PATTERN)]


class Port(KubeModel):
    """A network port of the pool's Pods."""

    number: PortNumber
    """The port number, 1 to 65535."""


PORT_REQUIRED_FOR_SERVICE = (
    "port is required when kind is 'Service' or unspecified (defaults to 'Service')"
)
PORT_NUMBERS_UNIQUE = "port number must be unique"


class EndpointPickerRef(KubeModel):
    """A reference to the Endpoint Picker extension serving this pool."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "message": PORT_REQUIRED_FOR_SERVICE,
                    "rule": "self.kind != 'Service' || has(self.port)",
                }
            ]
        }
    )

    failure_mode: Literal["FailOpen", "FailClose"] = "FailClose"
    """What the gateway does when the picker does not answer."""
    group: Annotated[str, Field(min_length=0, max_length=253, pattern=GROUP_PATTERN)] = ""
    """The API group of the referent; "" is the core group."""
    kind: Annotated[str, Field(min_length=1, max_length=63, pattern=KIND_PATTERN)] = "Service"
    """The kind of the referent; ExternalName Services are not supported."""
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The name of the referent."""
    port: Port | None = None
    """The Service port of the picker; required when kind is Service."""

    @model_validator(mode="after")
    def _service_needs_a_port(self) -> EndpointPickerRef:
        # CEL: self.kind != 'Service' || has(self.port)
        if self.kind == "Service" and self.port is None:
            raise invalid_value({}, PORT_REQUIRED_FOR_SERVICE)
        return self


class LabelSelector(KubeModel):
    """Which Pods of the pool's namespace are members: all labels must match."""

    match_labels: Annotated[dict[str, LabelValue], Field(min_length=1, max_length=64)]
    """Required {key: value} pairs; a Pod must carry every one."""


def _port_numbers_unique(ports: list[Port]) -> list[Port]:
    # CEL: self.all(p1, self.exists_one(p2, p1.number==p2.number))
    if len({p.number for p in ports}) != len(ports):
        raise invalid_value([], PORT_NUMBERS_UNIQUE)
    return ports


TargetPorts = Annotated[
    list[Port],
    Field(
        min_length=1,
        max_length=8,
        json_schema_extra={
            "x-kubernetes-list-type": "atomic",
            "x-kubernetes-validations": [
                {
                    "message": PORT_NUMBERS_UNIQUE,
                    "rule": "self.all(p1, self.exists_one(p2, p1.number==p2.number))",
                }
            ],
        },
    ),
    AfterValidator(_port_numbers_unique),
]


class InferencePoolSpec(KubeModel):
    """The desired state of an InferencePool."""

    endpoint_picker_ref: EndpointPickerRef
    """The Endpoint Picker that serves this pool."""
    selector: LabelSelector
    """Which Pods are members of the pool (same namespace only)."""
    target_ports: TargetPorts
    """The ports each member serves on; each podIP:port is a distinct endpoint."""


class ParentReference(KubeModel):
    """The parent (usually a Gateway) a status entry is about."""

    group: Annotated[str, Field(min_length=0, max_length=253, pattern=GROUP_PATTERN)] = (
        "gateway.networking.k8s.io"
    )
    """The API group of the parent."""
    kind: Annotated[str, Field(min_length=1, max_length=63, pattern=KIND_PATTERN)] = "Gateway"
    """The kind of the parent."""
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The name of the parent."""
    namespace: (
        Annotated[str, Field(min_length=1, max_length=63, pattern=NAMESPACE_PATTERN)] | None
    ) = None
    """The namespace of the parent; the pool's own namespace when unset."""


class ParentStatus(KubeModel):
    """The state of the pool as seen from one parent."""

    conditions: Conditions | None = None
    """Accepted, ResolvedRefs, ..."""
    controller_name: (
        Annotated[str, Field(min_length=1, max_length=253, pattern=CONTROLLER_NAME_PATTERN)] | None
    ) = None
    """The controller that wrote this entry (DOMAIN/PATH)."""
    parent_ref: ParentReference
    """The parent this entry is about."""


class InferencePoolStatus(KubeModel):
    """The observed state of an InferencePool."""

    parents: (
        Annotated[
            list[ParentStatus],
            Field(max_length=32, json_schema_extra={"x-kubernetes-list-type": "atomic"}),
        ]
        | None
    ) = None
    """One entry per parent (Gateway) the pool is associated with, at most 32."""


class InferencePool(KubeModel):
    """InferencePool is the Schema for the InferencePools API."""

    API_VERSION: ClassVar[str] = "inference.networking.k8s.io/v1"
    KIND: ClassVar[str] = "InferencePool"

    api_version: Literal["inference.networking.k8s.io/v1"] = "inference.networking.k8s.io/v1"
    kind: Literal["InferencePool"] = "InferencePool"
    metadata: ObjectMeta
    spec: InferencePoolSpec
    status: InferencePoolStatus | None = None
