"""Room leases: N replicas' dispatches to one endpoint together stay within its cap, and a dead
replica's part returns to the others within one lease — against a real Redis."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.bench.harness.store import StoreProcess
from sluice.replicas.core import LeaseAsk
from sluice.replicas.leases import lease_target
from sluice.replicas.store import RedisStore

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
