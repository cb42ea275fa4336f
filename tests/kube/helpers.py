"""Small async helpers shared by the Kubernetes tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client

from . import objects

NS = objects.NS
X = objects.X_GROUP
GROUP = objects.LLMD_GROUP  # where Sluice reads objectives when both groups are installed
MERGE = "application/merge-patch+json"


async def eventually(check: Callable[[], Any], within: float = 2.0, step: float = 0.01) -> float:
    """Wait until `check()` is truthy; return how long it took. Fails after `within` seconds."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(step)


async def add_pod(kube: client.ApiClient, name: str, ip: str, ready: bool = True) -> None:
    """Create a Pod and let "the kubelet" report its IP and readiness on /status."""
    core = client.CoreV1Api(kube)
    manifest = objects.pod(name, ip, ready)
    await core.create_namespaced_pod(NS, manifest)
    await core.patch_namespaced_pod_status(name, NS, {"status": manifest["status"]})


async def set_pod_ready(kube: client.ApiClient, name: str, ready: bool) -> None:
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    await client.CoreV1Api(kube).patch_namespaced_pod_status(
        name, NS, {"status": {"conditions": [condition]}}
    )


async def create_custom(kube: client.ApiClient, manifest: dict[str, Any]) -> dict[str, Any]:
    group, version = manifest["apiVersion"].split("/")
    plural = manifest["kind"].lower() + "s"
    return await client.CustomObjectsApi(kube).create_namespaced_custom_object(
        group, version, NS, plural, manifest
    )
