"""InferenceObjective and InferenceModelRewrite in both API groups, against the test API server.

Which group Sluice reads is decided by discovery, per kind, as upstream does: `llm-d.ai` when its
CRDs are installed (the legacy group's objects are then ignored, said once in the log), else the
legacy `inference.networking.x-k8s.io` (with a deprecation warning, once). Status conditions go to
the group that is read, never to the other."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from sluice.sources.kube import KubeSource
from sluice.sources.state import PoolKey, PoolState
from sluice.sources.status import StatusWriter

from . import objects
from .apiserver import ApiServer
from .helpers import NS, add_pod, create_custom, eventually

LLMD, LEGACY = objects.LLMD_GROUP, objects.X_GROUP
PENDING = {"type": "Ready", "status": "Unknown", "reason": "Pending"}


@dataclass
class Cluster:
    """A test API server with a chosen CRD set, and Sluice's source and status writer on it."""

    server: ApiServer
    kube: client.ApiClient
    source: KubeSource
    writer: StatusWriter
    states: list[PoolState] = field(default_factory=list)

    @property
    def latest(self) -> PoolState:
        return self.states[-1]

    async def read(self, group: str, plural: str, name: str) -> dict[str, Any]:
        return await client.CustomObjectsApi(self.kube).get_namespaced_custom_object(
            group, "v1alpha2", NS, plural, name
        )

    async def conditions(self, group: str, plural: str, name: str) -> list[dict[str, Any]]:
        obj = await self.read(group, plural, name)
        return [
            {k: c[k] for k in ("type", "status", "reason")} for c in obj["status"]["conditions"]
        ]


StartCluster = Callable[[tuple[str, ...]], Awaitable[Cluster]]


@pytest.fixture
async def start_cluster() -> AsyncIterator[StartCluster]:
    started: list[tuple[ApiServer, client.ApiClient, list[asyncio.Task[None]]]] = []

    async def start(objective_groups: tuple[str, ...]) -> Cluster:
        server = ApiServer(bookmark_interval=0.2, objective_groups=objective_groups)
        await server.start()
        kube = client.ApiClient(client.Configuration(host=server.url))
        states: list[PoolState] = []
        writers: list[StatusWriter] = []
        source = KubeSource(
            PoolKey("vllm", NS),
            states.append,
            kube,
            backoff_initial=0.05,
            backoff_maximum=0.2,
            rediscover_seconds=0.1,
            on_change=lambda: writers[0].notify() if writers else None,
        )
        writer = StatusWriter(kube, source.view)
        writers.append(writer)
        tasks = [asyncio.create_task(source.run()), asyncio.create_task(writer.run())]
        started.append((server, kube, tasks))
        return Cluster(server, kube, source, writer, states)

    yield start
    for server, kube, tasks in started:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await kube.close()
        await server.stop()


async def populate(cluster: Cluster, *groups: str) -> None:
    """A pool with one endpoint; in each group an objective `chat` and a rewrite `v2`, with a
    priority that tells the groups apart (llm-d.ai 10, legacy -5)."""
    await create_custom(cluster.kube, objects.pool())
    await add_pod(cluster.kube, "a", "10.0.0.1")
    for group in groups:
        priority = 10 if group == LLMD else -5
        await create_custom(cluster.kube, objects.objective("chat", priority, group=group))
        await create_custom(cluster.kube, objects.rewrite("v2", group=group))


def group_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.endswith("sources.kube") and r.levelno >= logging.INFO
    ]


async def test_with_both_groups_installed_only_llm_d_is_reconciled_and_gets_status(
    start_cluster: StartCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sluice")
    cluster = await start_cluster((LLMD, LEGACY))
    await populate(cluster, LLMD, LEGACY)
    await eventually(lambda: cluster.states and cluster.latest.priorities.get("chat", 0) == 10)
    await eventually(lambda: cluster.writer.writes >= 2)  # the objective and the rewrite

    assert cluster.source.groups_used == {"objectives": LLMD, "rewrites": LLMD}
    assert list(cluster.latest.objectives) == ["llm/chat"]
    assert list(cluster.latest.rewrites) == ["llm/v2"]
    assert await cluster.conditions(LLMD, "inferenceobjectives", "chat") == [
        {"type": "Ready", "status": "True", "reason": "Ready"},
        {"type": "Accepted", "status": "True", "reason": "Accepted"},
    ]
    assert await cluster.conditions(LLMD, "inferencemodelrewrites", "v2") == [
        {"type": "Accepted", "status": "True", "reason": "Accepted"}
    ]
    # The legacy objects are never written: they keep the CRD's default condition.
    assert await cluster.conditions(LEGACY, "inferenceobjectives", "chat") == [PENDING]
    legacy_rewrite = await cluster.conditions(LEGACY, "inferencemodelrewrites", "v2")
    assert legacy_rewrite == [{**PENDING, "type": "Accepted"}]
    # Sluice neither lists, watches nor writes the legacy group (the test created and read it).
    legacy = [(m, p.split("?")[0]) for m, p in cluster.server.requests if f"/{LEGACY}/" in p]
    assert {m for m, _ in legacy} == {"POST", "GET"}
    collections = (
        f"/namespaces/{NS}/inferenceobjectives",
        f"/namespaces/{NS}/inferencemodelrewrites",
    )
    assert not [p for m, p in legacy if m == "GET" and p.endswith(collections)]

    # Which group is used is said once per kind, not on every event.
    await create_custom(cluster.kube, objects.objective("batch", -1))
    await eventually(lambda: cluster.latest.priorities.get("batch", 0) == -1)
    said = sorted(m for m in group_messages(caplog) if "reading llm-d.ai only" in m)
    assert said == [
        f"{kind} is served by {LLMD} and {LEGACY}; reading {LLMD} only, as upstream does "
        "(objects of the other group are ignored)"
        for kind in ("InferenceModelRewrite", "InferenceObjective")
    ]


async def test_the_legacy_group_alone_works_with_a_deprecation_warning(
    start_cluster: StartCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sluice")
    cluster = await start_cluster((LEGACY,))
    await populate(cluster, LEGACY)
    await eventually(lambda: cluster.states and cluster.latest.priorities.get("chat", 0) == -5)
    await eventually(lambda: cluster.writer.writes >= 2)

    assert cluster.source.groups_used == {"objectives": LEGACY, "rewrites": LEGACY}
    assert list(cluster.latest.rewrites) == ["llm/v2"]
    assert await cluster.conditions(LEGACY, "inferenceobjectives", "chat") == [
        {"type": "Ready", "status": "True", "reason": "Ready"},
        {"type": "Accepted", "status": "True", "reason": "Accepted"},
    ]
    assert await cluster.conditions(LEGACY, "inferencemodelrewrites", "v2") == [
        {"type": "Accepted", "status": "True", "reason": "Accepted"}
    ]
    # A later object of the legacy group does not repeat the warning: once per kind.
    await create_custom(cluster.kube, objects.objective("batch", -1, group=LEGACY))
    await eventually(lambda: cluster.latest.priorities.get("batch", 0) == -1)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "is deprecated" in r.getMessage()
    ]
    assert sorted(warnings) == [
        f"apiVersion {LEGACY}/v1alpha2 InferenceModelRewrite is deprecated; use apiVersion "
        f"{LLMD}/v1alpha2 (same fields)",
        f"apiVersion {LEGACY}/v1alpha2 InferenceObjective is deprecated; use apiVersion "
        f"{LLMD}/v1alpha2 (same fields)",
    ]


async def test_the_llm_d_group_alone_is_read_without_warnings(
    start_cluster: StartCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sluice")
    cluster = await start_cluster((LLMD,))
    await populate(cluster, LLMD)
    await eventually(lambda: cluster.states and cluster.latest.priorities.get("chat", 0) == 10)
    assert cluster.source.groups_used == {"objectives": LLMD, "rewrites": LLMD}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "reading InferenceObjective from llm-d.ai" in group_messages(caplog)


async def test_without_either_crd_the_pool_syncs_with_none_and_a_later_install_is_found(
    start_cluster: StartCluster,
) -> None:
    cluster = await start_cluster(())
    await create_custom(cluster.kube, objects.pool())
    await asyncio.wait_for(cluster.source.synced.wait(), 2)  # not held up by missing CRDs
    # The source may have listed the pools before the pool was created (and synced with none):
    # its watch brings the pool soon after.
    await eventually(lambda: cluster.latest.loaded)
    assert not cluster.latest.objectives
    assert cluster.source.groups_used == {"objectives": "", "rewrites": ""}

    cluster.server.install(LEGACY)
    await create_custom(cluster.kube, objects.objective("chat", 3, group=LEGACY))
    await eventually(lambda: cluster.latest.priorities.get("chat", 0) == 3)
    assert cluster.source.groups_used["objectives"] == LEGACY


async def test_when_the_llm_d_crds_are_removed_the_legacy_group_is_read(
    start_cluster: StartCluster,
) -> None:
    cluster = await start_cluster((LLMD, LEGACY))
    await populate(cluster, LLMD, LEGACY)
    await eventually(lambda: cluster.states and cluster.latest.priorities.get("chat", 0) == 10)
    cluster.server.uninstall(LLMD)
    await eventually(lambda: cluster.latest.priorities.get("chat", 0) == -5)
    assert cluster.source.groups_used == {"objectives": LEGACY, "rewrites": LEGACY}


# ---- the test API server serves and discovers exactly the installed groups -----------------


async def test_discovery_lists_only_the_installed_objective_groups(
    start_cluster: StartCluster,
) -> None:
    cluster = await start_cluster((LEGACY,))
    groups = await client.ApisApi(cluster.kube).get_api_versions()
    names = {g.name for g in groups.groups}
    assert LEGACY in names and LLMD not in names
    custom = client.CustomObjectsApi(cluster.kube)
    served = await custom.get_api_resources(LEGACY, "v1alpha2")
    assert {r.name for r in served.resources} >= {
        "inferenceobjectives",
        "inferenceobjectives/status",
        "inferencemodelrewrites",
    }
    with pytest.raises(ApiException) as missing:
        await custom.get_api_resources(LLMD, "v1alpha2")
    assert missing.value.status == 404
    with pytest.raises(ApiException) as listing:
        await custom.list_namespaced_custom_object(LLMD, "v1alpha2", NS, "inferenceobjectives")
    assert listing.value.status == 404

    cluster.server.install(LLMD)
    served = await custom.get_api_resources(LLMD, "v1alpha2")
    assert served.group_version == f"{LLMD}/v1alpha2"
    assert {r.kind for r in served.resources} == {"InferenceObjective", "InferenceModelRewrite"}
    group = await client.ApisApi(cluster.kube).api_client.call_api(
        f"/apis/{LLMD}", "GET", response_types_map={200: "V1APIGroup"}, _return_http_data_only=True
    )
    assert group.preferred_version.group_version == f"{LLMD}/v1alpha2"
