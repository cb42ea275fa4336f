"""`metadata`: the part of ObjectMeta Sluice reads, validated as the API server validates the
metadata of a custom resource (name: DNS-1123 subdomain, namespace: DNS-1123 label, labels:
qualified keys and label values). Fields Sluice does not model (managedFields, ownerReferences,
...) are kept as they are, so a resource survives `to_dict` unchanged."""

from __future__ import annotations

import re

from pydantic import ConfigDict, Field, field_validator

from sluice.api._base import DateTime, Int64, KubeModel
from sluice.api.rules import invalid_value

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")

SUBDOMAIN_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character"
)
LABEL_RULE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character"
)
QUALIFIED_NAME_RULE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character"
)


def is_dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and _DNS_SUBDOMAIN.fullmatch(value) is not None


def is_dns_label(value: str) -> bool:
    return len(value) <= 63 and _DNS_LABEL.fullmatch(value) is not None


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a valid label key (`[prefix/]name`), or None if it is."""
    prefix, slash, name = key.rpartition("/")
    if slash and not is_dns_subdomain(prefix):
        return f"prefix part {SUBDOMAIN_RULE}"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _QUALIFIED_NAME.fullmatch(name):
        return QUALIFIED_NAME_RULE
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a valid label value, or None if it is."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if value and not _QUALIFIED_NAME.fullmatch(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, '-', "
            "'_' or '.', and must start and end with an alphanumeric character"
        )
    return None


class ObjectMeta(KubeModel):
    """Standard object metadata. `name` is required: Sluice reads manifests, and a manifest
    without a name cannot be applied (generateName only works on create)."""

    model_config = ConfigDict(extra="allow")

    name: str
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: Int64 | None = None
    creation_timestamp: DateTime | None = None
    deletion_timestamp: DateTime | None = None

    @field_validator("name")
    @classmethod
    def _name_is_a_subdomain(cls, name: str) -> str:
        if not is_dns_subdomain(name):
            raise invalid_value(name, SUBDOMAIN_RULE)
        return name

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_label(cls, namespace: str) -> str:
        if not is_dns_label(namespace):
            raise invalid_value(namespace, LABEL_RULE)
        return namespace

    @field_validator("labels")
    @classmethod
    def _labels_are_valid(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            problem = label_key_problem(key)
            if problem is not None:
                raise invalid_value(key, problem)
            problem = label_value_problem(value)
            if problem is not None:
                raise invalid_value(value, problem)
        return labels
