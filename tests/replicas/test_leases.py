"""Room leases: N replicas' dispatches to one endpoint together stay within its cap, and a dead
replica's part returns to the others within one lease — against a real Redis."""

from __future__ import annotations

import asyncio

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcontrol.fc_harness import request
from sluice.bench.harness.store import StoreProcess
from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointRegistry
from sluice.flowcontrol import FlowController
from sluice.replicas.core import LeaseAsk, ReplicaCore
from sluice.replicas.leases import lease_target
from sluice.replicas.store import RedisStore
from sluice.replicas.summary import (
    VERSION,
    BandSummary,
    EndpointSummary,
    FlowSummary,
    ReplicaSummary,
)
from sluice.replicas.view import PeerView
from sluice.room import Room
from sluice.room.rules import room_left
from sluice.room.settings import RoomSettings

CAP = 6


def test_an_idle_pool_splits_the_free_room_evenly_and_every_replica_gets_a_slot_somewhere() -> None:
    replicas = [("a", 0, 0), ("b", 0, 0), ("c", 0, 0)]
    for cap in (2, 3, 6, 7):
        for endpoint in ("e1", "e2", "e3"):
            targets = [
                lease_target(endpoint, cap, r, [p for p in replicas if p != r]) for r in replicas
            ]
            assert sum(targets) == cap
            assert max(targets) - min(targets) <= 1
    # with 2 slots per endpoint and 3 replicas, the one left out differs between endpoints
    left_out = {
        next(r[0] for r in replicas if lease_target(e, 2, r, [p for p in replicas if p != r]) == 0)
        for e in (f"10.0.0.{i}:8000" for i in range(12))
    }
    assert left_out == {"a", "b", "c"}


def test_the_free_room_follows_eligible_demand() -> None:
    mine = ("a", 1, 9)  # one in flight, nine waiting it could release
    peers = [("b", 1, 0), ("c", 1, 1)]
    assert lease_target("e", 8, mine, peers) == 1 + 5  # 5 free, 9/10 of it
    assert lease_target("e", 8, ("b", 1, 0), [mine, ("c", 1, 1)]) == 1  # keeps what runs
    # a replica with nothing it may release asks only for what it has in flight
    assert lease_target("e", 8, ("a", 3, 0), [("b", 0, 4)]) == 3


async def grant(store: RedisStore, replica: str, target: int, in_flight: int) -> int:
    result = await store.sync(replica, b"", 0.5, [LeaseAsk("e", CAP, target, in_flight)], None)
    return result.granted["e"]


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 2 * CAP), st.integers(0, CAP)),
        min_size=1,
        max_size=30,
    )
)
def test_live_leases_never_sum_above_the_cap_nor_shrink_below_what_runs(
    redis: StoreProcess, steps: list[tuple[str, int, int]]
) -> None:
    async def run() -> None:
        store = RedisStore(f"redis://127.0.0.1:{redis.port}/0", f"p{id(steps)}", timeout_s=1)
        leases = {"a": 0, "b": 0, "c": 0}
        in_flight = {"a": 0, "b": 0, "c": 0}
        try:
            for replica, target, dispatch in steps:
                # between syncs a replica dispatches (or finishes) only within its lease
                in_flight[replica] = min(dispatch, leases[replica])
                granted = await grant(store, replica, target, in_flight[replica])
                assert granted >= in_flight[replica], "a lease never shrinks below what runs"
                leases[replica] = granted
                assert sum(leases.values()) <= CAP
                assert sum(in_flight.values()) <= CAP
        finally:
            await store.close()

    asyncio.run(run())


async def test_a_dead_replicas_part_returns_to_the_others_within_one_lease(
    redis: StoreProcess,
) -> None:
    store = RedisStore(f"redis://127.0.0.1:{redis.port}/0", "pool", timeout_s=1)
    try:
        assert await grant(store, "dead", CAP, 0) == CAP
        assert await grant(store, "alive", CAP, 0) == 0  # all of it is leased
        await asyncio.sleep(0.3)
        assert await grant(store, "alive", CAP, 0) == 0  # not yet: the lease is 0.5 s
        await asyncio.sleep(0.25)
        assert await grant(store, "alive", CAP, 0) == CAP
    finally:
        await store.close()


async def test_a_shrinking_lease_shrinks_before_the_ask_leaves_so_dispatches_meanwhile_fit(
    redis: StoreProcess,
) -> None:
    """A replica that reported one request running while it asked to shrink from 2 to 1 could
    dispatch a second one during the round trip; the store then granted the other replica the
    room that second request took (3 running under a cap of 2). The local lease now shrinks
    first, and the ask names it."""
    cap = 2
    registry = EndpointRegistry()
    registry.add(Endpoint("e", "127.0.0.1", 1))
    a = ReplicaCore(
        "a",
        flow=FlowController(),
        registry=registry,
        room=Room(RoomSettings(max_in_flight_requests=cap)),
        lease_s=60.0,
    )
    state = registry.snapshot()[0]
    state.lease, state.in_flight_requests = cap, 1  # a holds the whole cap, runs one request
    url = f"redis://127.0.0.1:{redis.port}/0"
    store_a, store_b = RedisStore(url, "p", timeout_s=1), RedisStore(url, "p", timeout_s=1)
    await store_a.sync("a", b"", 60, [LeaseAsk("e", cap, cap, 1)], None)
    # b has nine requests it could release: a's target drops to what it runs
    b_summary = ReplicaSummary(VERSION, "b", 0.0, (), (EndpointSummary("e", 0, 0, 0, -1),), 0.0)
    b_summary = replace_demand(b_summary, 9)
    [ask] = a.lease_asks(a.summary(0.0, 0.0), [b_summary])
    assert ask.target == 1
    assert room_left(state, a.room.settings) == 0, "no second dispatch while the ask travels"
    assert ask.in_flight == 1
    granted_a = (await store_a.sync("a", b"", 60, [ask], None)).granted["e"]
    granted_b = (await store_b.sync("b", b"", 60, [LeaseAsk("e", cap, cap, 0)], None)).granted
    assert granted_a + granted_b["e"] <= cap
    assert state.in_flight_requests <= granted_a
    await store_a.close()
    await store_b.close()


def replace_demand(summary: ReplicaSummary, waiting: int) -> ReplicaSummary:
    """`summary` with one band whose one flow has `waiting` requests it could release."""
    flow = FlowSummary("t", waiting, 0.0, 0.0, 0.0, True)
    return msgspec.structs.replace(summary, bands=(BandSummary(0, waiting, 0.0, (flow,)),))


async def test_a_lone_replica_holds_the_whole_cap_of_every_endpoint_idle_or_busy(
    redis: StoreProcess,
) -> None:
    """docs/replicas.md, "Decisions per CPU-second": one replica with the store looked half as
    fast as one without. Not its leases: alone in the store it is granted the whole cap at
    every sync — idle, with requests waiting, with endpoints full — and its room never shrinks
    while an ask is on its way, so it dispatches exactly what a replica without the store
    would."""
    registry = EndpointRegistry()
    for port in range(1, 4):
        registry.add(Endpoint(f"e{port}", "127.0.0.1", port))
    flow = FlowController()
    room_settings = RoomSettings(max_in_flight_requests=CAP)
    room = Room(room_settings)
    core = ReplicaCore("alone", flow=flow, registry=registry, room=room, lease_s=60.0)
    store = RedisStore(f"redis://127.0.0.1:{redis.port}/0", "lone", timeout_s=1)
    states = registry.snapshot()

    async def sync(now: float) -> None:
        mine = core.summary(now, 1000.0 + now)
        asks = core.lease_asks(mine, [])
        for state in states:  # the ask travels: nothing this replica could dispatch is taken
            assert room_left(state, room_settings) == CAP - state.in_flight_requests
        result = await store.sync(core.replica_id, b"", core.lease_s, asks, None)
        core.apply(PeerView(()), result.granted, now)
        assert [s.lease for s in states] == [CAP] * len(states)

    try:
        await sync(0.0)  # idle: nothing waits, nothing runs
        for _ in range(2 * CAP * len(states)):
            flow.enqueue(request("t"), 0.1)
        assert core.summary(0.1, 1000.1).demand > 0
        for in_flight in range(CAP + 1):  # requests waiting, the endpoints filling to the cap
            for state in states:
                state.in_flight_requests = in_flight
            await sync(0.2 + in_flight)
        assert all(room_left(s, room_settings) == 0 for s in states), "full at the cap, not before"
    finally:
        await store.close()
