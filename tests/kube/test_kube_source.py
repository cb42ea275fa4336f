"""`KubeSource` against the test API server: list, watch, resync and reconnect, end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from kubernetes_asyncio import client

from sluice.sources.kube import KubeSource
from sluice.sources.state import PoolKey, PoolState

from . import objects
from .apiserver import ApiServer
from .helpers import GROUP, MERGE, NS, add_pod, create_custom, eventually, set_pod_ready


@dataclass
class Watcher:
    source: KubeSource
    states: list[PoolState] = field(default_factory=list)

    @property
    def latest(self) -> PoolState:
        return self.states[-1]

    def endpoints(self) -> list[str]:
        return [e.hostport for e in self.latest.endpoints] if self.states else []


@pytest.fixture
async def watcher(new_client: Callable[[], client.ApiClient]) -> AsyncIterator[Watcher]:
    states: list[PoolState] = []
    source = KubeSource(
        PoolKey("vllm", NS), states.append, new_client(), backoff_initial=0.05, backoff_maximum=0.2
    )
    task = asyncio.create_task(source.run())
    yield Watcher(source, states)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def populate(kube: client.ApiClient) -> None:
    await create_custom(kube, objects.pool())
    await add_pod(kube, "a", "10.0.0.1")
    await add_pod(kube, "b", "10.0.0.2")
    await create_custom(kube, objects.objective("chat", 10))
    await create_custom(kube, objects.objective("elsewhere", 5, pool_name="other-pool"))
    await create_custom(kube, objects.rewrite("v2"))


async def test_the_first_state_has_the_pool_its_endpoints_and_objectives(
    kube: client.ApiClient, watcher: Watcher
) -> None:
    await populate(kube)
    await eventually(lambda: len(watcher.endpoints()) == 2 and watcher.latest.rewrites)
    await asyncio.wait_for(watcher.source.synced.wait(), 2)
    assert not watcher.source.view.rejected
    state = watcher.latest
    assert state.loaded
    assert watcher.endpoints() == ["10.0.0.1:8000", "10.0.0.2:8000"]
    assert list(state.objectives) == ["llm/chat"]  # not the other pool's objective
    assert state.priorities.get("chat", 0) == 10
    assert list(state.rewrites) == ["llm/v2"]


async def test_a_pod_becoming_unready_leaves_the_endpoint_set_within_one_second(
    kube: client.ApiClient, watcher: Watcher
) -> None:
    await populate(kube)
    await eventually(lambda: len(watcher.endpoints()) == 2)
    await set_pod_ready(kube, "a", False)
    took = await eventually(lambda: watcher.endpoints() == ["10.0.0.2:8000"], within=1.0)
    assert took < 1.0
    await set_pod_ready(kube, "a", True)
    await eventually(lambda: len(watcher.endpoints()) == 2, within=1.0)


async def test_watch_expiry_resyncs_without_losing_or_duplicating_state(
    kube: client.ApiClient, watcher: Watcher, apiserver: ApiServer
) -> None:
    await populate(kube)
    await eventually(lambda: len(watcher.endpoints()) == 2)
    lists_before = dict(watcher.source.relists)

    # A partition: watches end; meanwhile the cluster changes and etcd compacts its history.
    apiserver.pause_watches()
    await client.CoreV1Api(kube).delete_namespaced_pod("a", NS)
    await add_pod(kube, "c", "10.0.0.3")
    await client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        GROUP,
        "v1alpha2",
        NS,
        "inferenceobjectives",
        "chat",
        {"spec": {"priority": 20}},
        _content_type=MERGE,
    )
    apiserver.compact()
    apiserver.resume_watches()

    await eventually(lambda: watcher.endpoints() == ["10.0.0.2:8000", "10.0.0.3:8000"])
    await eventually(lambda: watcher.latest.priorities.get("chat", 0) == 20)
    assert watcher.source.relists["pods"] == lists_before["pods"] + 1  # 410 → exactly one relist
    assert watcher.source.relists["inferenceobjectives"] == lists_before["inferenceobjectives"] + 1
    names = [e.name for e in watcher.latest.endpoints]
    assert len(names) == len(set(names)) == 2


async def test_a_dropped_watch_resumes_from_its_resource_version_without_a_relist(
    kube: client.ApiClient, watcher: Watcher, apiserver: ApiServer
) -> None:
    await populate(kube)
    await eventually(lambda: len(watcher.endpoints()) == 2)
    lists_before = dict(watcher.source.relists)
    apiserver.drop_watches()
    await add_pod(kube, "c", "10.0.0.3")
    await eventually(lambda: len(watcher.endpoints()) == 3)
    assert watcher.source.relists == lists_before


async def test_a_new_pool_selector_relists_pods(kube: client.ApiClient, watcher: Watcher) -> None:
    await populate(kube)
    await eventually(lambda: len(watcher.endpoints()) == 2)
    core = client.CoreV1Api(kube)
    await core.patch_namespaced_pod(
        "b", NS, {"metadata": {"labels": {"app": "vllm", "gpu": "h100"}}}
    )
    await client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        objects.POOL_GROUP,
        "v1",
        NS,
        "inferencepools",
        "vllm",
        {"spec": {"selector": {"matchLabels": {"app": "vllm", "gpu": "h100"}}}},
        _content_type=MERGE,
    )
    await eventually(lambda: watcher.endpoints() == ["10.0.0.2:8000"])


async def test_deleting_the_pool_empties_the_state(
    kube: client.ApiClient, watcher: Watcher
) -> None:
    await populate(kube)
    await eventually(lambda: len(watcher.endpoints()) == 2)
    await client.CustomObjectsApi(kube).delete_namespaced_custom_object(
        objects.POOL_GROUP, "v1", NS, "inferencepools", "vllm"
    )
    await eventually(lambda: not watcher.latest.loaded)
    assert watcher.latest.endpoints == ()


async def test_the_watcher_reconnects_after_the_api_server_restarts(
    new_client: Callable[[], client.ApiClient],
) -> None:
    server = ApiServer(bookmark_interval=0.2)
    await server.start()
    port = server.port
    states: list[PoolState] = []
    config = client.Configuration(host=server.url)
    async with client.ApiClient(config) as api:
        source = KubeSource(
            PoolKey("vllm", NS), states.append, api, backoff_initial=0.05, backoff_maximum=0.2
        )
        task = asyncio.create_task(source.run())
        try:
            await create_custom(api, objects.pool())
            await eventually(lambda: states and states[-1].loaded)
            store = server.store
            await server.stop()
            await asyncio.sleep(0.3)  # a few failed reconnects, backing off
            revived = ApiServer(bookmark_interval=0.2)
            revived.store = store  # same etcd, new process on the same port
            await revived.start(port)
            await add_pod(api, "a", "10.0.0.1")
            await eventually(lambda: len(states[-1].endpoints) == 1, within=3)
            await revived.stop()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
