"""The test API server rejects and accepts what a real kube-apiserver would — checked through
kubernetes_asyncio over HTTP, the only way Sluice's code talks to it."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from . import objects
from .apiserver import ApiServer

NS = objects.NS
X = objects.X_GROUP
MERGE = "application/merge-patch+json"


def lease(name: str = "l", holder: str = "a") -> dict:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
    }


async def test_discovery_lists_the_groups_and_resources(kube: client.ApiClient) -> None:
    groups = await client.ApisApi(kube).get_api_versions()
    names = {g.name for g in groups.groups}
    assert {"inference.networking.k8s.io", X, "coordination.k8s.io"} <= names
    resources = await client.CoreV1Api(kube).get_api_resources()
    assert {"pods", "pods/status"} <= {r.name for r in resources.resources}
    custom = await client.CustomObjectsApi(kube).get_api_resources(X, "v1alpha2")
    assert "inferenceobjectives/status" in {r.name for r in custom.resources}


async def test_a_stale_update_is_rejected_with_409(kube: client.ApiClient) -> None:
    leases = client.CoordinationV1Api(kube)
    created = await leases.create_namespaced_lease(NS, lease())
    first = await leases.read_namespaced_lease("l", NS)
    first.spec.holder_identity = "b"
    await leases.replace_namespaced_lease("l", NS, first)

    stale = created  # still carries the resourceVersion from before b's update
    stale.spec.holder_identity = "c"
    with pytest.raises(ApiException) as err:
        await leases.replace_namespaced_lease("l", NS, stale)
    assert err.value.status == 409
    status = json.loads(err.value.body)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Conflict", 409)
    assert (await leases.read_namespaced_lease("l", NS)).spec.holder_identity == "b"


async def test_resource_versions_increase_across_all_objects(kube: client.ApiClient) -> None:
    leases = client.CoordinationV1Api(kube)
    a = await leases.create_namespaced_lease(NS, lease("a"))
    b = await leases.create_namespaced_lease(NS, lease("b"))
    a.spec.holder_identity = "z"
    a2 = await leases.replace_namespaced_lease("a", NS, a)
    versions = [int(x.metadata.resource_version) for x in (a, b, a2)]
    assert versions == sorted(versions) and len(set(versions)) == 3


async def test_errors_are_status_objects(kube: client.ApiClient) -> None:
    leases = client.CoordinationV1Api(kube)
    with pytest.raises(ApiException) as missing:
        await leases.read_namespaced_lease("nope", NS)
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["reason"] == "NotFound"
    with pytest.raises(ApiException) as invalid:
        await leases.create_namespaced_lease(NS, lease("Not_A_Name"))
    assert invalid.value.status == 422
    await leases.create_namespaced_lease(NS, lease("x"))
    with pytest.raises(ApiException) as exists:
        await leases.create_namespaced_lease(NS, lease("x"))
    assert (exists.value.status, json.loads(exists.value.body)["reason"]) == (409, "AlreadyExists")


async def test_status_and_spec_are_written_separately(kube: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(kube)
    args = (X, "v1alpha2", NS, "inferenceobjectives")
    created = await custom.create_namespaced_custom_object(*args, objects.objective("chat", 1))
    # The CRD default status appears on create, generation starts at 1.
    assert created["status"]["conditions"][0]["reason"] == "Pending"
    assert created["metadata"]["generation"] == 1

    # A status write ignores spec...
    await custom.patch_namespaced_custom_object_status(
        *args, "chat", {"spec": {"priority": 99}, "status": {"conditions": []}}, _content_type=MERGE
    )
    after_status = await custom.get_namespaced_custom_object(*args, "chat")
    assert after_status["spec"]["priority"] == 1
    assert after_status["status"]["conditions"] == []
    assert after_status["metadata"]["generation"] == 1  # status never bumps generation

    # ...and a main-resource write ignores status, bumping generation on the spec change.
    body = dict(after_status, spec={"poolRef": {"name": "vllm"}, "priority": 5}, status={"x": 1})
    replaced = await custom.replace_namespaced_custom_object(*args, "chat", body)
    assert replaced["spec"]["priority"] == 5
    assert replaced["status"] == {"conditions": []}
    assert replaced["metadata"]["generation"] == 2


async def test_json_patch_test_operation_guards_a_write(kube: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(kube)
    args = (X, "v1alpha2", NS, "inferenceobjectives")
    await custom.create_namespaced_custom_object(*args, objects.objective("chat", 1))
    patch = [
        {"op": "test", "path": "/spec/priority", "value": 2},
        {"op": "replace", "path": "/spec/priority", "value": 3},
    ]
    with pytest.raises(ApiException) as err:
        await custom.patch_namespaced_custom_object(*args, "chat", patch)
    assert err.value.status == 422
    patch[0]["value"] = 1
    patched = await custom.patch_namespaced_custom_object(*args, "chat", patch)
    assert patched["spec"]["priority"] == 3


async def test_merge_patch_with_a_stale_resource_version_conflicts(kube: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(kube)
    args = (X, "v1alpha2", NS, "inferenceobjectives")
    created = await custom.create_namespaced_custom_object(*args, objects.objective("chat"))
    await custom.patch_namespaced_custom_object(
        *args, "chat", {"spec": {"priority": 4}}, _content_type=MERGE
    )
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}}
    with pytest.raises(ApiException) as err:
        await custom.patch_namespaced_custom_object_status(
            *args, "chat", {**stale, "status": {}}, _content_type=MERGE
        )
    assert err.value.status == 409


async def test_pod_status_strategic_merge_merges_conditions_by_type(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    created = await core.create_namespaced_pod(NS, objects.pod("p", "10.0.0.1"))
    assert created.status is None or not created.status.conditions  # status is the kubelet's
    await core.patch_namespaced_pod_status("p", NS, objects.pod("p", "10.0.0.1"))
    ready_false = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    await core.patch_namespaced_pod_status(
        "p", NS, {"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}
    )
    pod = await core.patch_namespaced_pod_status("p", NS, ready_false)
    assert {c.type: c.status for c in pod.status.conditions} == {
        "Ready": "False",
        "PodScheduled": "True",
    }


async def test_label_and_field_selectors(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    for name, labels in [
        ("a", {"app": "vllm", "tier": "gpu"}),
        ("b", {"app": "vllm", "tier": "cpu"}),
        ("c", {"app": "other"}),
    ]:
        await core.create_namespaced_pod(NS, objects.pod(name, "10.0.0.1", labels=labels))

    async def names(**kw: str) -> list[str]:
        return [p.metadata.name for p in (await core.list_namespaced_pod(NS, **kw)).items]

    assert await names(label_selector="app=vllm") == ["a", "b"]
    assert await names(label_selector="app==vllm,tier!=gpu") == ["b"]
    assert await names(label_selector="tier in (gpu, tpu)") == ["a"]
    assert await names(label_selector="tier notin (gpu)") == ["b", "c"]
    assert await names(label_selector="tier") == ["a", "b"]
    assert await names(label_selector="!tier") == ["c"]
    assert await names(field_selector="metadata.name=c") == ["c"]


async def test_watch_streams_changes_bookmarks_and_410(
    kube: client.ApiClient, apiserver: ApiServer
) -> None:
    core = client.CoreV1Api(kube)
    listed = await core.list_namespaced_pod(NS)
    start = listed.metadata.resource_version
    await core.create_namespaced_pod(NS, objects.pod("a", "10.0.0.1"))
    await core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"app": "other"}}})

    response = await core.list_namespaced_pod(
        NS,
        watch=True,
        resource_version=start,
        label_selector="app=vllm",
        allow_watch_bookmarks=True,
        timeout_seconds=1,
        _preload_content=False,
    )
    events = [json.loads(line) async for line in response.content if line.strip()]
    types = [e["type"] for e in events]
    # The pod entered the selector (ADDED), then left it (DELETED), then bookmarks only.
    assert types[:2] == ["ADDED", "DELETED"]
    assert set(types[2:]) == {"BOOKMARK"}
    bookmark_rv = int(events[-1]["object"]["metadata"]["resourceVersion"])
    assert bookmark_rv >= int(events[1]["object"]["metadata"]["resourceVersion"])

    apiserver.compact()
    gone = await core.list_namespaced_pod(
        NS, watch=True, resource_version=start, timeout_seconds=1, _preload_content=False
    )
    line = await gone.content.readline()
    error = json.loads(line)
    assert error["type"] == "ERROR"
    assert (error["object"]["code"], error["object"]["reason"]) == (410, "Expired")


async def test_token_and_subject_access_reviews(
    kube: client.ApiClient, apiserver: ApiServer
) -> None:
    from .apiserver import User

    apiserver.tokens["good"] = User(
        "system:serviceaccount:mon:prometheus", allowed={("get", "/metrics")}
    )
    review = await client.AuthenticationV1Api(kube).create_token_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "good"}}
    )
    assert review.status.authenticated
    assert review.status.user.username == "system:serviceaccount:mon:prometheus"
    sar = await client.AuthorizationV1Api(kube).create_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": review.status.user.username,
                "nonResourceAttributes": {"path": "/metrics", "verb": "get"},
            },
        }
    )
    assert sar.status.allowed
