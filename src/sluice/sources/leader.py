"""Leader election on a `coordination.k8s.io/v1` Lease, with client-go's rules.

The holder renews every `retry_period`; if it cannot renew for `renew_deadline` it steps down.
A candidate takes the lease once the record has not changed for `lease_duration` by its own
clock (clocks of different machines are never compared). Every write is a PUT carrying the
resourceVersion it read, so two candidates cannot both win: the loser gets 409.

Only the status writer and readiness depend on `is_leader()`; watching does not, so a standby
holds a warm state and failover needs no resync.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from sluice.logs import get_logger

log = get_logger("sluice.sources.leader")


def lease_name(namespace: str, pool: str) -> str:
    """The name upstream's EPP uses, so Sluice and upstream replicas never both lead a pool."""
    return f"epp-{namespace}-{pool}.gateway-api-inference-extension.sigs.k8s.io"


def default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass(frozen=True)
class LeaseTiming:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


@dataclass
class _Observed:
    """The last lease record seen and when (local monotonic clock) it last changed."""

    holder: str
    renew_time: Any
    transitions: int
    changed_at: float


class LeaderElector:
    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str,
        identity: str | None = None,
        timing: LeaseTiming = LeaseTiming(),
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leases: Any = client.CoordinationV1Api(api_client)
        self.namespace, self.name = namespace, name
        self.identity = identity or default_identity()
        self.timing = timing
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock
        self._observed: _Observed | None = None
        self._leader = False

    def is_leader(self) -> bool:
        return self._leader

    async def run(self) -> None:
        """Campaign, lead, and campaign again after losing, until cancelled. On cancellation the
        lease is released so a standby takes over at once."""
        try:
            while True:
                while not await self._try_acquire_or_renew():
                    await asyncio.sleep(self.timing.retry_period)
                self._set_leader(True)
                await self._keep_renewing()
                self._set_leader(False)
        finally:
            if self._leader:
                await asyncio.shield(self.release())

    async def _keep_renewing(self) -> None:
        last_renewed = self._clock()
        while True:
            await asyncio.sleep(self.timing.retry_period)
            try:
                renewed = await asyncio.wait_for(
                    self._try_acquire_or_renew(), self.timing.renew_deadline
                )
            except TimeoutError:
                renewed = False
            if renewed:
                last_renewed = self._clock()
            elif (
                self._lost_to_other() or self._clock() - last_renewed >= self.timing.renew_deadline
            ):
                log.warning("lost the lease", lease=self.name, identity=self.identity)
                return

    def _lost_to_other(self) -> bool:
        return self._observed is not None and self._observed.holder not in ("", self.identity)

    def _set_leader(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        log.info("leadership", leader=leader, lease=self.name, identity=self.identity)
        callback = self._on_started if leader else self._on_stopped
        if callback is not None:
            callback()

    async def release(self) -> None:
        """Give the lease up (holder "" and a 1 s duration), as client-go's ReleaseOnCancel."""
        self._leader = False
        try:
            lease = await self._leases.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = ""
            lease.spec.lease_duration_seconds = 1
            await self._leases.replace_namespaced_lease(self.name, self.namespace, lease)
        except Exception as err:
            log.warning("could not release the lease", error=repr(err))

    async def _try_acquire_or_renew(self) -> bool:
        now = datetime.now(UTC)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.timing.lease_duration)),
            "acquireTime": now.isoformat(),
            "renewTime": now.isoformat(),
            "leaseTransitions": 0,
        }
        try:
            lease = await self._leases.read_namespaced_lease(self.name, self.namespace)
        except ApiException as err:
            if err.status != 404:
                return False
            body = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
            try:
                await self._leases.create_namespaced_lease(self.namespace, body)
            except ApiException:
                return False  # someone else created it first
            self._observe(self.identity, now, 0)
            return True
        except Exception:
            return False

        record = lease.spec
        holder = record.holder_identity or ""
        transitions = record.lease_transitions or 0
        self._observe(holder, record.renew_time, transitions)
        assert self._observed is not None
        expired = self._clock() >= self._observed.changed_at + self.timing.lease_duration
        if holder not in ("", self.identity) and not expired:
            return False
        next_transitions = transitions if holder == self.identity else transitions + 1
        spec["leaseTransitions"] = next_transitions
        if holder == self.identity:
            spec["acquireTime"] = (
                record.acquire_time.isoformat() if record.acquire_time else now.isoformat()
            )
        body = {
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": lease.metadata.resource_version,  # optimistic concurrency
            },
            "spec": spec,
        }
        try:
            await self._leases.replace_namespaced_lease(self.name, self.namespace, body)
        except Exception:
            return False  # 409: another candidate wrote first
        self._observe(self.identity, now, next_transitions)
        return True

    def _observe(self, holder: str, renew_time: Any, transitions: int) -> None:
        seen = self._observed
        if seen is None or (seen.holder, seen.renew_time, seen.transitions) != (
            holder,
            renew_time,
            transitions,
        ):
            self._observed = _Observed(holder, renew_time, transitions, self._clock())
