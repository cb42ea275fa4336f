"""The pure core of the Kubernetes source: list results and watch events applied to a `Snapshot`.

No I/O. `ClusterView` is what the watcher knows about the cluster; every method says whether the
pool's picture changed, so the shell publishes a new `PoolState` only when something did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sluice.api.groups import LLMD_GROUP, OBJECTIVE_GROUPS, POOL_GROUP, VERSION
from sluice.sources.state import PodInfo, PoolKey, PoolState, Snapshot, build_state

Obj = dict[str, Any]
Parser = Callable[[Obj], Any]


@dataclass(frozen=True)
class Kind:
    """A watched resource type and where it lives in the `Snapshot`."""

    group: str  # "" = core
    version: str
    plural: str
    snapshot_field: str  # "pools" | "objectives" | "rewrites" | "pods"
    kind: str = ""  # as discovery names it

    def in_group(self, group: str) -> Kind:
        """The same resource served by another API group."""
        return replace(self, group=group)

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups that may serve this resource, preferred first (see `api.groups`)."""
        return OBJECTIVE_GROUPS if self.snapshot_field in ("objectives", "rewrites") else ()


POOLS = Kind(POOL_GROUP, "v1", "inferencepools", "pools", "InferencePool")
# Objectives and rewrites are watched in the group discovery finds (llm-d.ai preferred);
# these are the llm-d.ai forms, `in_group` gives the legacy one.
OBJECTIVES = Kind(LLMD_GROUP, VERSION, "inferenceobjectives", "objectives", "InferenceObjective")
REWRITES = Kind(LLMD_GROUP, VERSION, "inferencemodelrewrites", "rewrites", "InferenceModelRewrite")
PODS = Kind("", "v1", "pods", "pods", "Pod")
KINDS = (POOLS, OBJECTIVES, REWRITES, PODS)


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}"


def resource_version_of(obj: Mapping[str, Any]) -> str | None:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None


def default_parser(doc: Obj) -> Any:
    from sluice.api import parse_resource  # the resource models; imported late, they are big

    return parse_resource(doc)


def label_selector(match_labels: Mapping[str, str]) -> str:
    """The `labelSelector` query for a pool's `selector.matchLabels` (sorted: a stable string
    means "unchanged selector" compares equal)."""
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


@dataclass
class ClusterView:
    """Raw objects (for the status writer) and the parsed `Snapshot` (for `build_state`)."""

    key: PoolKey
    parse: Parser = default_parser
    snapshot: Snapshot = field(default_factory=Snapshot)
    raw: dict[str, dict[str, Obj]] = field(
        default_factory=lambda: {k.snapshot_field: {} for k in KINDS}
    )
    rejected: dict[str, str] = field(default_factory=dict)  # "plural ns/name" → why

    def state(self) -> PoolState:
        return build_state(self.key, self.snapshot)

    def pod_selector(self) -> str | None:
        """The label selector the Pod watch must use now, or None while there is no pool."""
        pool = self.snapshot.pools.get(f"{self.key.namespace}/{self.key.name}")
        if pool is None:
            return None
        return label_selector(pool.spec.selector.match_labels)

    def apply(self, kind: Kind, event_type: str, obj: Obj) -> bool:
        """One watch event. BOOKMARK and unknown types change nothing."""
        if event_type in ("ADDED", "MODIFIED"):
            return self._put(kind, obj)
        if event_type == "DELETED":
            return self._remove(kind, object_key(obj))
        return False

    def replace_all(self, kind: Kind, items: Iterable[Obj]) -> bool:
        """A list result is the whole truth for `kind`: objects missing from it are gone. This is
        what makes a relist after 410 Gone lose nothing and duplicate nothing."""
        items = list(items)
        seen = {object_key(o) for o in items}
        changed = False
        for stale in [k for k in self.raw[kind.snapshot_field] if k not in seen]:
            changed |= self._remove(kind, stale)
        for obj in items:
            changed |= self._put(kind, obj)
        return changed

    def _put(self, kind: Kind, obj: Obj) -> bool:
        key = object_key(obj)
        self.raw[kind.snapshot_field][key] = obj
        parsed: Any
        if kind.snapshot_field == "pods":
            parsed = PodInfo.from_manifest(obj)
        else:
            try:
                parsed = self.parse(obj)
            except Exception as err:  # an object the API server took but Sluice cannot use
                self.rejected[f"{kind.plural} {key}"] = str(err)
                return self._forget(kind, key)
            self.rejected.pop(f"{kind.plural} {key}", None)
        table: dict[str, Any] = getattr(self.snapshot, kind.snapshot_field)
        if table.get(key) == parsed:
            return False  # e.g. a Pod's status churn that no endpoint depends on
        table[key] = parsed
        return True

    def _remove(self, kind: Kind, key: str) -> bool:
        self.raw[kind.snapshot_field].pop(key, None)
        self.rejected.pop(f"{kind.plural} {key}", None)
        return self._forget(kind, key)

    def _forget(self, kind: Kind, key: str) -> bool:
        table: dict[str, Any] = getattr(self.snapshot, kind.snapshot_field)
        return table.pop(key, None) is not None
