"""The pure core of the watcher: list results and watch events applied to a `ClusterView`."""

from __future__ import annotations

from sluice.sources.kube_events import OBJECTIVES, PODS, POOLS, ClusterView
from sluice.sources.state import PoolKey

from . import objects

KEY = PoolKey("vllm", objects.NS)


ready_pod = objects.pod


def view_with_pool() -> ClusterView:
    view = ClusterView(KEY)
    view.replace_all(POOLS, [objects.pool()])
    return view


def test_ready_pods_become_endpoints_and_unready_ones_leave() -> None:
    view = view_with_pool()
    assert view.replace_all(PODS, [ready_pod("a", "10.0.0.1"), ready_pod("b", "10.0.0.2")])
    assert [e.hostport for e in view.state().endpoints] == ["10.0.0.1:8000", "10.0.0.2:8000"]
    assert view.apply(PODS, "MODIFIED", ready_pod("a", "10.0.0.1", ready=False))
    assert [e.hostport for e in view.state().endpoints] == ["10.0.0.2:8000"]


def test_an_event_that_changes_nothing_the_pool_uses_reports_no_change() -> None:
    view = view_with_pool()
    view.apply(PODS, "ADDED", ready_pod("a", "10.0.0.1"))
    churn = ready_pod("a", "10.0.0.1")
    churn["metadata"]["resourceVersion"] = "77"
    churn["metadata"]["annotations"] = {"kubelet": "touched"}
    assert not view.apply(PODS, "MODIFIED", churn)


def test_a_relist_replaces_everything_known_of_that_kind() -> None:
    view = view_with_pool()
    view.replace_all(PODS, [ready_pod("a", "10.0.0.1"), ready_pod("b", "10.0.0.2")])
    # While we were not watching, a was deleted and c appeared: the list is the truth.
    assert view.replace_all(PODS, [ready_pod("b", "10.0.0.2"), ready_pod("c", "10.0.0.3")])
    assert sorted(view.snapshot.pods) == ["llm/b", "llm/c"]
    assert not view.replace_all(PODS, [ready_pod("b", "10.0.0.2"), ready_pod("c", "10.0.0.3")])


def test_bookmarks_change_nothing_and_deletes_remove() -> None:
    view = view_with_pool()
    view.apply(OBJECTIVES, "ADDED", objects.objective("chat", 10))
    assert view.state().priorities.get("chat", 0) == 10
    assert not view.apply(OBJECTIVES, "BOOKMARK", {"metadata": {"resourceVersion": "9"}})
    assert view.apply(OBJECTIVES, "DELETED", objects.objective("chat", 10))
    assert view.state().priorities.get("chat", 0) == 0


def test_the_pod_selector_follows_the_pool() -> None:
    view = ClusterView(KEY)
    assert view.pod_selector() is None
    view.apply(POOLS, "ADDED", objects.pool(labels={"model": "llama", "app": "vllm"}))
    assert view.pod_selector() == "app=vllm,model=llama"
    view.apply(POOLS, "DELETED", objects.pool())
    assert view.pod_selector() is None
    assert not view.state().loaded


def test_an_object_sluice_cannot_parse_is_dropped_and_remembered() -> None:
    view = view_with_pool()
    view.apply(OBJECTIVES, "ADDED", objects.objective("chat", 10))
    broken = objects.objective("chat", 10)
    broken["spec"]["poolRef"] = {}
    assert view.apply(OBJECTIVES, "MODIFIED", broken)
    assert view.state().objectives == {}
    assert "inferenceobjectives llm/chat" in view.rejected
