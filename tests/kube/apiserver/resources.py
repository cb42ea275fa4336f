"""The resource types the test API server can serve, and what discovery says about them.

InferenceObjective and InferenceModelRewrite exist in two groups (`llm-d.ai` and the legacy
`inference.networking.x-k8s.io`); which of them are installed is the server's choice, so a test
can stand for a cluster with either CRD set or both (`served_types`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    has_status: bool = True  # a /status subresource: spec and status are written separately
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


POOL_GROUP = "inference.networking.k8s.io"
X_GROUP = "inference.networking.x-k8s.io"
LLMD_GROUP = "llm-d.ai"
OBJECTIVE_GROUPS = (LLMD_GROUP, X_GROUP)  # the groups whose objective/rewrite CRDs may be installed
_REVIEW_VERBS = ("create",)
_OBJECTIVE_KINDS = ("InferenceObjective", "InferenceModelRewrite")

RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "pods", "Pod"),
    ResourceType(POOL_GROUP, "v1", "inferencepools", "InferencePool"),
    ResourceType(X_GROUP, "v1alpha2", "inferencepools", "InferencePool"),
    ResourceType(X_GROUP, "v1alpha2", "inferenceobjectives", "InferenceObjective"),
    ResourceType(X_GROUP, "v1alpha2", "inferencemodelrewrites", "InferenceModelRewrite"),
    ResourceType(LLMD_GROUP, "v1alpha2", "inferenceobjectives", "InferenceObjective"),
    ResourceType(LLMD_GROUP, "v1alpha2", "inferencemodelrewrites", "InferenceModelRewrite"),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", has_status=False),
    ResourceType(
        "authentication.k8s.io",
        "v1",
        "tokenreviews",
        "TokenReview",
        namespaced=False,
        has_status=False,
        verbs=_REVIEW_VERBS,
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        namespaced=False,
        has_status=False,
        verbs=_REVIEW_VERBS,
    ),
)


def served_types(objective_groups: Collection[str]) -> tuple[ResourceType, ...]:
    """Every type, except the objective and rewrite CRDs of groups not installed."""
    return tuple(
        rt
        for rt in RESOURCE_TYPES
        if rt.kind not in _OBJECTIVE_KINDS or rt.group in objective_groups
    )


def find(
    group: str, version: str, plural: str, types: Iterable[ResourceType] = RESOURCE_TYPES
) -> ResourceType | None:
    for rt in types:
        if (rt.group, rt.version, rt.plural) == (group, version, plural):
            return rt
    return None


def group_versions(types: Iterable[ResourceType] = RESOURCE_TYPES) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rt in types:
        if rt.group and rt.version not in out.setdefault(rt.group, []):
            out[rt.group].append(rt.version)
    return out


def api_group(group: str, versions: list[str]) -> dict[str, object]:
    """An APIGroup as /apis/<group> returns it (and /apis lists)."""
    return {
        "name": group,
        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
    }


def resource_list(
    group: str, version: str, served: Iterable[ResourceType] = RESOURCE_TYPES
) -> dict[str, object] | None:
    """An APIResourceList as /api/v1 or /apis/<group>/<version> returns it."""
    types = [rt for rt in served if (rt.group, rt.version) == (group, version)]
    if not types:
        return None
    resources: list[dict[str, object]] = []
    for rt in types:
        resources.append(
            {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(rt.verbs),
            }
        )
        if rt.has_status:
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": types[0].api_version,
        "resources": resources,
    }
