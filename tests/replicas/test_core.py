"""The sans-I/O replica: what a replica publishes and how the others' summaries change what its
flow controller releases — one pool-wide priority order and one fair share."""

from __future__ import annotations

from flowcontrol.fc_harness import SlotPool, request
from sluice.datalayer.registry import EndpointRegistry
from sluice.flowcontrol import FlowController
from sluice.replicas.core import ReplicaCore
from sluice.replicas.summary import decode, encode
from sluice.replicas.view import PeerView
from sluice.room import Room


def replica(name: str) -> ReplicaCore:
    return ReplicaCore(
        name, flow=FlowController(), registry=EndpointRegistry(), room=Room(), lease_s=1.0
    )


def exchange(*replicas: ReplicaCore, now: float = 0.0) -> None:
    """One sync round through encoded summaries, as the store relays them."""
    blobs = {r.replica_id: encode(r.summary(now, 1000.0 + now)) for r in replicas}
    for r in replicas:
        peers = [decode(b) for who, b in blobs.items() if who != r.replica_id]
        r.apply(PeerView(p for p in peers if p is not None), {}, now)


def test_a_lower_band_waits_while_a_higher_band_waits_on_another_replica() -> None:
    a, b = replica("a"), replica("b")
    full = SlotPool({"e": 0})
    a.flow.enqueue(request("batch", priority=-1), 0.0)
    b.flow.enqueue(request("chat", priority=10), 0.0)
    b.flow.dispatch(0.0, full)  # b's share of the room is full: its request waits
    exchange(a, b)
    room = SlotPool({"e": 1})
    assert a.flow.dispatch(0.1, room) == [], "the room belongs to the higher band"
    assert a.room.keeps_headroom_above(-1, 0.1)
    b.flow.dispatch(0.1, SlotPool({"e": 1}))  # b got room: nothing waits there any more
    exchange(a, b, now=0.2)
    [event] = a.flow.dispatch(0.2, room)
    assert event.ticket.request.fairness_id == "batch"


def test_a_tenants_service_on_other_replicas_counts_against_its_share() -> None:
    a, b = replica("a"), replica("b")
    # "big" was served 10 requests on b; on a, big and small each wait with 3 requests
    pool_b = SlotPool({"e": 10})
    for _ in range(10):
        b.flow.enqueue(request("big"), 0.0)
    b.flow.dispatch(0.0, pool_b)
    for _ in range(3):
        a.flow.enqueue(request("big"), 0.0)
        a.flow.enqueue(request("small"), 0.0)
    exchange(a, b)
    pool_a = SlotPool({"e": 3})
    released = [e.ticket.request.fairness_id for e in a.flow.dispatch(0.1, pool_a)]
    assert released == ["small", "small", "small"]


def test_a_flow_ahead_of_a_less_served_one_waiting_elsewhere_is_held() -> None:
    a, b = replica("a"), replica("b")
    pool = SlotPool({"e": 20})
    for _ in range(20):
        a.flow.enqueue(request("spread"), 0.0)
    a.flow.dispatch(0.0, pool)  # "spread" was served 20 requests on a
    for _ in range(2):
        a.flow.enqueue(request("spread"), 0.1)
    b.flow.enqueue(request("lonely"), 0.1)
    b.flow.dispatch(0.1, SlotPool({"e": 0}))  # b has no room: "lonely" waits there
    exchange(a, b, now=0.1)
    assert a.flow.dispatch(0.2, SlotPool({"e": 5})) == [], "held for the less-served tenant"
    [mine] = a.summary(0.2, 1000.2).bands
    assert [(f.fairness_id, f.waiting, f.eligible) for f in mine.flows] == [("spread", 2, False)]


def test_without_the_store_the_replica_decides_alone_at_once() -> None:
    a, b = replica("a"), replica("b")
    a.flow.enqueue(request("batch", priority=-1), 0.0)
    b.flow.enqueue(request("chat", priority=10), 0.0)
    b.flow.dispatch(0.0, SlotPool({"e": 0}))
    exchange(a, b)
    a.go_local(0.1)
    assert not a.joined
    assert len(a.flow.dispatch(0.1, SlotPool({"e": 1}))) == 1


def test_a_summary_says_what_waits_how_long_and_what_was_served() -> None:
    a = replica("a")
    a.flow.enqueue(request("t1", priority=5), 1.0)
    a.flow.enqueue(request("t1", priority=5), 2.0)
    a.flow.enqueue(request("t2", priority=0), 3.0)
    summary = decode(encode(a.summary(4.0, 1004.0)))
    assert summary is not None and summary.replica == "a"
    high, low = summary.bands
    assert (high.priority, high.waiting, high.oldest_wait_s) == (5, 2, 3.0)
    assert (low.priority, low.waiting, low.oldest_wait_s) == (0, 1, 1.0)
    assert summary.demand == 3
    assert decode(b"not a summary") is None
