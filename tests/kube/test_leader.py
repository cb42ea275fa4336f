"""Leader election between replicas sharing one Lease on the test API server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from kubernetes_asyncio import client

from sluice.sources.leader import LeaderElector, LeaseTiming, lease_name

from .helpers import NS, eventually

TIMING = LeaseTiming(lease_duration=1.0, renew_deadline=0.6, retry_period=0.1)
LEASE = lease_name(NS, "vllm")


def test_the_lease_is_named_as_upstream_names_it() -> None:
    assert LEASE == "epp-llm-vllm.gateway-api-inference-extension.sigs.k8s.io"


class Replica:
    def __init__(self, api: client.ApiClient, identity: str) -> None:
        self.elector = LeaderElector(api, NS, LEASE, identity, TIMING)
        self.task = asyncio.create_task(self.elector.run())

    async def crash(self) -> None:
        """Die without releasing: the others must wait for the lease to expire."""
        self.task.cancel()
        self.elector._leader = False  # a dead process renews nothing and leads nothing
        self.elector.release = _noop  # type: ignore[method-assign]
        await asyncio.gather(self.task, return_exceptions=True)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def _noop() -> None:
    return None


@pytest.fixture
async def replicas(new_client: Callable[[], client.ApiClient]) -> AsyncIterator[list[Replica]]:
    made = [Replica(new_client(), "sluice-0"), Replica(new_client(), "sluice-1")]
    yield made
    for replica in made:
        await replica.stop()


def leaders(replicas: list[Replica]) -> list[str]:
    return [r.elector.identity for r in replicas if r.elector.is_leader()]


async def test_two_replicas_elect_exactly_one_leader(replicas: list[Replica]) -> None:
    await eventually(lambda: len(leaders(replicas)) == 1)
    seen = set()
    deadline = time.monotonic() + 1.5  # longer than a lease: renewals keep the same leader
    while time.monotonic() < deadline:
        current = leaders(replicas)
        assert len(current) == 1
        seen.add(current[0])
        await asyncio.sleep(0.02)
    assert len(seen) == 1


async def test_a_crashed_leader_is_replaced_within_the_lease_duration(
    replicas: list[Replica],
) -> None:
    await eventually(lambda: len(leaders(replicas)) == 1)
    leader = next(r for r in replicas if r.elector.is_leader())
    standby = next(r for r in replicas if r is not leader)
    await leader.crash()
    took = await eventually(standby.elector.is_leader, within=3.0)
    # The standby saw the last renewal at most one retry period before the crash.
    assert took <= TIMING.lease_duration + TIMING.retry_period + 0.2


async def test_a_leader_that_stops_releases_the_lease_at_once(replicas: list[Replica]) -> None:
    await eventually(lambda: len(leaders(replicas)) == 1)
    leader = next(r for r in replicas if r.elector.is_leader())
    standby = next(r for r in replicas if r is not leader)
    await leader.stop()
    took = await eventually(standby.elector.is_leader, within=2.0)
    assert took < TIMING.lease_duration / 2


async def test_a_leader_whose_lease_is_taken_steps_down(
    replicas: list[Replica], kube: client.ApiClient
) -> None:
    await eventually(lambda: len(leaders(replicas)) == 1)
    leader = next(r for r in replicas if r.elector.is_leader())
    for replica in replicas:
        if replica is not leader:
            await replica.stop()
    leases = client.CoordinationV1Api(kube)
    lease = await leases.read_namespaced_lease(LEASE, NS)
    lease.spec.holder_identity = "intruder"
    await leases.replace_namespaced_lease(LEASE, NS, lease)
    await eventually(lambda: not leader.elector.is_leader(), within=1.0)
    # It stepped down without overwriting the new holder's record.
    assert (await leases.read_namespaced_lease(LEASE, NS)).spec.holder_identity == "intruder"
