"""Small valid manifests, as a user would write them, for the example-based tests."""

from __future__ import annotations

import copy
from typing import Any

_POOL: dict[str, Any] = {
    "apiVersion": "inference.networking.k8s.io/v1",
    "kind": "InferencePool",
    "metadata": {"name": "vllm-llama3", "namespace": "default"},
    "spec": {
        "selector": {"matchLabels": {"app": "vllm-llama3"}},
        "targetPorts": [{"number": 8000}],
        "endpointPickerRef": {"name": "sluice", "port": {"number": 9002}},
    },
}
_OBJECTIVE: dict[str, Any] = {
    "apiVersion": "inference.networking.x-k8s.io/v1alpha2",
    "kind": "InferenceObjective",
    "metadata": {"name": "interactive", "namespace": "default"},
    "spec": {"poolRef": {"name": "vllm-llama3"}, "priority": 10},
}
_REWRITE: dict[str, Any] = {
    "apiVersion": "inference.networking.x-k8s.io/v1alpha2",
    "kind": "InferenceModelRewrite",
    "metadata": {"name": "canary", "namespace": "default"},
    "spec": {
        "poolRef": {"name": "vllm-llama3"},
        "rules": [
            {
                "matches": [{"model": {"value": "llama3"}}],
                "targets": [
                    {"modelRewrite": "llama3-v1", "weight": 90},
                    {"modelRewrite": "llama3-v2", "weight": 10},
                ],
            }
        ],
    },
}


def pool() -> dict[str, Any]:
    return copy.deepcopy(_POOL)


def objective() -> dict[str, Any]:
    return copy.deepcopy(_OBJECTIVE)


def rewrite() -> dict[str, Any]:
    return copy.deepcopy(_REWRITE)
