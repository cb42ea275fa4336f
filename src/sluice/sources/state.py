"""The one in-memory picture of the pool that every source builds.

Both the manifest-directory source and the Kubernetes watcher collect raw objects (pools,
objectives, rewrites, pods) into a `Snapshot` and call `build_state`: the rules for which Pods
become endpoints and which objectives belong to the pool live here, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from sluice.datalayer.endpoint import Endpoint

POOL_GROUP = "inference.networking.k8s.io"


@dataclass(frozen=True, slots=True)
class PodInfo:
    """The few Pod fields an EPP reads."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    ip: str
    ready: bool
    deleting: bool = False

    @classmethod
    def from_manifest(cls, doc: Mapping[str, Any]) -> PodInfo:
        meta = doc.get("metadata") or {}
        status = doc.get("status") or {}
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and str(c.get("status")) == "True" for c in conditions)
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace") or "default"),
            labels=dict(meta.get("labels") or {}),
            ip=str(status.get("podIP") or ""),
            ready=ready,
            deleting=meta.get("deletionTimestamp") is not None,
        )


@dataclass(frozen=True, slots=True)
class PoolKey:
    name: str
    namespace: str
    group: str = POOL_GROUP


@dataclass(frozen=True)
class PoolState:
    """What Sluice knows about its pool at one moment. Immutable: sources publish new ones."""

    key: PoolKey
    pool: Any | None  # sluice.api InferencePool
    endpoints: tuple[Endpoint, ...] = ()
    objectives: Mapping[str, Any] = field(default_factory=dict)  # "ns/name" → InferenceObjective
    rewrites: Mapping[str, Any] = field(default_factory=dict)  # "ns/name" → InferenceModelRewrite

    @property
    def loaded(self) -> bool:
        return self.pool is not None

    def objective(self, name: str) -> Any | None:
        """Objectives are looked up in the pool's namespace (upstream ignores the namespace)."""
        return self.objectives.get(f"{self.key.namespace}/{name}")

    @cached_property
    def priorities(self) -> Mapping[str, int]:
        """Objective name (in the pool's namespace) → the priority its requests get."""
        prefix = f"{self.key.namespace}/"
        return MappingProxyType(
            {
                key[len(prefix) :]: objective.priority
                for key, objective in self.objectives.items()
                if key.startswith(prefix)
            }
        )

    def describe(self) -> str:
        return (
            f"pool={self.key.namespace}/{self.key.name} loaded={self.loaded} "
            f"endpoints={len(self.endpoints)} objectives={len(self.objectives)} "
            f"rewrites={len(self.rewrites)}"
        )


@dataclass
class Snapshot:
    """Raw objects as a source currently sees them, keyed "namespace/name"."""

    pools: dict[str, Any] = field(default_factory=dict)
    objectives: dict[str, Any] = field(default_factory=dict)
    rewrites: dict[str, Any] = field(default_factory=dict)
    pods: dict[str, PodInfo] = field(default_factory=dict)


def _refers_to_pool(resource: Any, key: PoolKey) -> bool:
    """Whether an objective or rewrite names this pool (one without spec names none)."""
    if resource.metadata.namespace != key.namespace or resource.spec is None:
        return False
    pool_ref = resource.spec.pool_ref
    group = getattr(pool_ref, "group", None) or POOL_GROUP
    return bool(pool_ref.name == key.name and group == key.group)


def endpoints_of(pool: Any, pods: Iterable[PodInfo]) -> tuple[Endpoint, ...]:
    """Ready, not-deleting Pods in the pool's namespace matching its selector: one endpoint per
    target port, named `<pod>-rank-<i>` as upstream does."""
    namespace = pool.metadata.namespace or "default"
    selector = dict(pool.spec.selector.match_labels)
    ports = [p.number for p in pool.spec.target_ports]
    out: list[Endpoint] = []
    for pod in sorted(pods, key=lambda p: p.name):
        if pod.namespace != namespace or not pod.ready or pod.deleting or not pod.ip:
            continue
        if any(pod.labels.get(k) != v for k, v in selector.items()):
            continue
        for rank, port in enumerate(ports):
            out.append(
                Endpoint(
                    name=f"{pod.name}-rank-{rank}",
                    address=pod.ip,
                    port=port,
                    pod_name=pod.name,
                    namespace=pod.namespace,
                    labels=tuple(sorted(pod.labels.items())),
                )
            )
    return tuple(out)


def build_state(key: PoolKey, snapshot: Snapshot) -> PoolState:
    pool = snapshot.pools.get(f"{key.namespace}/{key.name}")
    if pool is None:
        return PoolState(key=key, pool=None)
    objectives = {k: o for k, o in sorted(snapshot.objectives.items()) if _refers_to_pool(o, key)}
    rewrites = {k: r for k, r in sorted(snapshot.rewrites.items()) if _refers_to_pool(r, key)}
    return PoolState(
        key=key,
        pool=pool,
        endpoints=endpoints_of(pool, snapshot.pods.values()),
        objectives=MappingProxyType(objectives),
        rewrites=MappingProxyType(rewrites),
    )


def standalone_pool_manifest(
    name: str, namespace: str, selector: str, target_ports: str
) -> dict[str, Any]:
    """The InferencePool that upstream's standalone mode implies (`--endpoint-selector
    app=vllm,tier=gpu --endpoint-target-ports 8000,8001`), so one code path selects endpoints.

    Raises ValueError naming the flag and the accepted form.
    """
    labels: dict[str, str] = {}
    for part in (p.strip() for p in selector.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"--endpoint-selector: {part!r} is not key=value; use a form like app=vllm,tier=gpu"
            )
        labels[key.strip()] = value.strip()
    if not labels:
        raise ValueError("--endpoint-selector: empty; use a form like app=vllm")
    try:
        ports = [int(p) for p in target_ports.split(",") if p.strip()]
    except ValueError:
        raise ValueError(
            f"--endpoint-target-ports: {target_ports!r} is not a list of ports; "
            "use 8000 or 8000,8001"
        ) from None
    if not ports:
        raise ValueError("--endpoint-target-ports: required with --endpoint-selector (e.g. 8000)")
    return {
        "apiVersion": f"{POOL_GROUP}/v1",
        "kind": "InferencePool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "targetPorts": [{"number": p} for p in ports],
            "endpointPickerRef": {"name": name, "port": {"number": 9002}},
        },
    }
