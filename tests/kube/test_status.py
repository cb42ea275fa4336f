"""Status conditions Sluice writes on the objectives and rewrites of its pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from sluice.sources.kube import KubeSource
from sluice.sources.kube_events import OBJECTIVES, POOLS, ClusterView
from sluice.sources.state import PoolKey
from sluice.sources.status import StatusWriter, merge_own_conditions, status_patch

from . import objects
from .helpers import GROUP, MERGE, NS, add_pod, create_custom, eventually, set_pod_ready

FOREIGN = {
    "type": "gateway.example.com/Routed",
    "status": "True",
    "reason": "Routed",
    "message": "by the gateway",
    "lastTransitionTime": "2020-01-01T00:00:00Z",
}


def own(kind: str, status: str, when: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": "R",
        "message": "",
        "lastTransitionTime": when,
    }


# ---- the pure merge -------------------------------------------------------------------------


def test_merge_replaces_only_our_types_and_keeps_foreign_ones_in_place() -> None:
    existing = [FOREIGN, own("Ready", "Unknown", "1970-01-01T00:00:00Z")]
    merged = merge_own_conditions(
        existing, [own("Ready", "True", "T1"), own("Accepted", "True", "T1")]
    )
    assert merged[0] == FOREIGN
    assert [c["type"] for c in merged] == [FOREIGN["type"], "Ready", "Accepted"]
    assert merged[1]["lastTransitionTime"] == "T1"  # Unknown → True is a transition


def test_merge_keeps_last_transition_time_when_the_status_does_not_change() -> None:
    merged = merge_own_conditions([own("Ready", "True", "T1")], [own("Ready", "True", "T2")])
    assert merged[0]["lastTransitionTime"] == "T1"


def test_merge_never_exceeds_eight_conditions_nor_drops_foreign_ones() -> None:
    foreign = [dict(FOREIGN, type=f"example.com/C{i}") for i in range(7)]
    merged = merge_own_conditions(
        foreign, [own("Accepted", "True", "T"), own("Ready", "True", "T")]
    )
    assert len(merged) == 8
    assert merged[:7] == foreign


def test_nothing_to_write_when_the_conditions_already_hold() -> None:
    obj = {
        "metadata": {"resourceVersion": "5"},
        "status": {"conditions": [own("Ready", "True", "T1")]},
    }
    assert status_patch(obj, [own("Ready", "True", "T2")]) is None
    patch = status_patch(obj, [own("Ready", "False", "T2")])
    assert patch is not None and patch["metadata"] == {"resourceVersion": "5"}


# ---- against the API server -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self) -> str:
        self.now += timedelta(minutes=1)
        return self.now.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Controller:
    source: KubeSource
    writer: StatusWriter
    clock: Clock
    leader: list[bool]


@pytest.fixture
async def controller(new_client: Callable[[], client.ApiClient]) -> AsyncIterator[Controller]:
    api = new_client()
    clock, leader = Clock(), [True]
    holder: list[StatusWriter] = []
    source = KubeSource(
        PoolKey("vllm", NS), lambda state: None, api, on_change=lambda: holder[0].notify()
    )
    writer = StatusWriter(api, source.view, is_leader=lambda: leader[0], clock=clock)
    holder.append(writer)
    tasks = [asyncio.create_task(source.run()), asyncio.create_task(writer.run())]
    yield Controller(source, writer, clock, leader)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def read_objective(kube: client.ApiClient, name: str = "chat") -> dict[str, Any]:
    return await client.CustomObjectsApi(kube).get_namespaced_custom_object(
        GROUP, "v1alpha2", NS, "inferenceobjectives", name
    )


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"]["conditions"]}


async def ready_is(kube: client.ApiClient, status: str, within: float = 2.0) -> dict[str, Any]:
    """The objective, once its Ready condition says `status` (fails after `within` seconds)."""
    deadline = time.monotonic() + within
    while True:
        obj = await read_objective(kube)
        listed = obj.get("status", {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == status for c in listed):
            return obj
        assert time.monotonic() < deadline, f"Ready never {status}: {listed}"
        await asyncio.sleep(0.01)


async def test_objective_conditions_follow_the_endpoints(
    kube: client.ApiClient, controller: Controller
) -> None:
    await create_custom(kube, objects.pool())
    await add_pod(kube, "a", "10.0.0.1")
    await create_custom(kube, objects.objective("chat", 10))
    first = controller.clock.now.strftime("%Y-%m-%dT%H:%M:%SZ")

    obj = await ready_is(kube, "True")
    cs = conditions(obj)
    assert list(cs) == ["Ready", "Accepted"]  # the CRD default entry was replaced in place
    assert cs["Ready"] | {"message": ""} == {
        "type": "Ready",
        "status": "True",
        "reason": "Ready",
        "message": "",
        "observedGeneration": 1,
        "lastTransitionTime": first,
    }
    assert (cs["Accepted"]["status"], cs["Accepted"]["reason"]) == ("True", "Accepted")

    second = controller.clock.advance()
    await set_pod_ready(kube, "a", False)
    cs = conditions(await ready_is(kube, "False"))
    assert (cs["Ready"]["reason"], cs["Ready"]["lastTransitionTime"]) == (
        "NoReadyEndpoints",
        second,
    )
    assert cs["Accepted"]["lastTransitionTime"] == first  # no transition, no new time


async def test_a_spec_change_updates_observed_generation_but_not_transition_times(
    kube: client.ApiClient, controller: Controller
) -> None:
    await create_custom(kube, objects.pool())
    await add_pod(kube, "a", "10.0.0.1")
    await create_custom(kube, objects.objective("chat", 10))
    await eventually(lambda: controller.writer.writes >= 1)
    before = conditions(await ready_is(kube, "True"))  # settled: the pod's readiness seen
    controller.clock.advance()
    await client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        GROUP,
        "v1alpha2",
        NS,
        "inferenceobjectives",
        "chat",
        {"spec": {"priority": 11}},
        _content_type=MERGE,
    )
    # (not `writes >= 2`: a second write of the first generation, as the pod's readiness is
    # seen, may come first)
    deadline = time.monotonic() + 2
    while True:
        obj = await read_objective(kube)
        after = conditions(obj)
        if all(after.get(k, {}).get("observedGeneration") == 2 for k in ("Ready", "Accepted")):
            break
        assert time.monotonic() < deadline, f"observedGeneration still {after}"
        await asyncio.sleep(0.01)
    assert obj["metadata"]["generation"] == 2
    for kind in ("Ready", "Accepted"):
        assert after[kind]["lastTransitionTime"] == before[kind]["lastTransitionTime"]


async def test_foreign_conditions_survive_and_a_settled_status_is_not_rewritten(
    kube: client.ApiClient, controller: Controller
) -> None:
    await create_custom(kube, objects.pool())
    await add_pod(kube, "a", "10.0.0.1")
    await create_custom(kube, objects.objective("chat", 10))
    # Settled: Ready. (The first write may come before the pod reaches Sluice's view, Ready
    # False, and the pod's event then brings a second.)
    await ready_is(kube, "True")
    settled = controller.writer.writes
    obj = await read_objective(kube)
    obj["status"]["conditions"].append(FOREIGN)  # the gateway controller adds its own
    await client.CustomObjectsApi(kube).replace_namespaced_custom_object_status(
        GROUP, "v1alpha2", NS, "inferenceobjectives", "chat", obj
    )
    await set_pod_ready(kube, "a", False)
    await eventually(lambda: controller.writer.writes >= settled + 1)
    await asyncio.sleep(0.2)  # our own write's watch event must settle, not loop
    final = await read_objective(kube)
    assert conditions(final)[FOREIGN["type"]] == FOREIGN
    assert conditions(final)["Ready"]["status"] == "False"
    assert controller.writer.writes == settled + 1  # one write for one change


async def test_a_write_that_raced_a_foreign_one_rereads_and_keeps_it(
    kube: client.ApiClient, new_client: Callable[[], client.ApiClient]
) -> None:
    await create_custom(kube, objects.pool())
    await add_pod(kube, "a", "10.0.0.1")
    created = await create_custom(kube, objects.objective("chat", 10))
    view = ClusterView(PoolKey("vllm", NS))
    view.replace_all(POOLS, [objects.pool()])
    view.apply(OBJECTIVES, "ADDED", created)  # what we saw; stale from here on
    custom = client.CustomObjectsApi(kube)
    await custom.patch_namespaced_custom_object_status(
        GROUP,
        "v1alpha2",
        NS,
        "inferenceobjectives",
        "chat",
        {"status": {"conditions": [FOREIGN]}},
        _content_type=MERGE,
    )
    writer = StatusWriter(new_client(), view)
    assert await writer.reconcile() == 1  # a 409 first, then a re-read and a good write
    cs = conditions(await read_objective(kube))
    assert cs[FOREIGN["type"]] == FOREIGN
    assert cs["Accepted"]["status"] == "True"


async def test_rewrites_are_accepted_and_a_standby_writes_nothing(
    kube: client.ApiClient, controller: Controller
) -> None:
    controller.leader[0] = False
    await create_custom(kube, objects.pool())
    await create_custom(kube, objects.rewrite("v2"))
    await eventually(lambda: controller.source.state and controller.source.state.rewrites)
    await asyncio.sleep(0.1)
    assert controller.writer.writes == 0
    controller.leader[0] = True
    controller.writer.notify()  # what becoming leader does
    await eventually(lambda: controller.writer.writes == 1)
    rewrite = await client.CustomObjectsApi(kube).get_namespaced_custom_object(
        GROUP, "v1alpha2", NS, "inferencemodelrewrites", "v2"
    )
    assert [(c["type"], c["status"], c["reason"]) for c in rewrite["status"]["conditions"]] == [
        ("Accepted", "True", "Accepted")
    ]
