"""Manifests for tests, as a user would write them."""

from __future__ import annotations

from typing import Any

X_GROUP = "inference.networking.x-k8s.io"  # the legacy group of objectives and rewrites
LLMD_GROUP = "llm-d.ai"  # where llm-d-router serves them now
POOL_GROUP = "inference.networking.k8s.io"
NS = "llm"


def pool(
    name: str = "vllm", labels: dict[str, str] | None = None, ports: tuple[int, ...] = (8000,)
) -> dict[str, Any]:
    return {
        "apiVersion": f"{POOL_GROUP}/v1",
        "kind": "InferencePool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "selector": {"matchLabels": labels or {"app": "vllm"}},
            "targetPorts": [{"number": p} for p in ports],
            "endpointPickerRef": {"name": "sluice", "port": {"number": 9002}},
        },
    }


def pod(
    name: str, ip: str, ready: bool = True, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {"app": "vllm"}},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def objective(
    name: str, priority: int | None = None, pool_name: str = "vllm", group: str = LLMD_GROUP
) -> dict[str, Any]:
    spec: dict[str, Any] = {"poolRef": {"name": pool_name}}
    if priority is not None:
        spec["priority"] = priority
    return {
        "apiVersion": f"{group}/v1alpha2",
        "kind": "InferenceObjective",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def rewrite(name: str, pool_name: str = "vllm", group: str = LLMD_GROUP) -> dict[str, Any]:
    return {
        "apiVersion": f"{group}/v1alpha2",
        "kind": "InferenceModelRewrite",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "poolRef": {"name": pool_name},
            "rules": [{"targets": [{"modelRewrite": "llama-3-8b-v2", "weight": 1}]}],
        },
    }
