"""The replica's asyncio shell: one sync with the store every interval, and the fall-back.

A failed sync (unreachable, refused, too slow) switches this replica to local-only flow
control at once — logged, `sluice_replicas_store_connected` 0, the `sluice.replicas` health
service NOT_SERVING — and every later interval tries again; the first sync that succeeds
rejoins the pool-wide order. Requests never wait for the store: syncs run beside them.

A band that starts waiting above everything this replica last published is published at once
(an early sync, at most one per `interval / EARLY_SYNC_DIVISOR`), not at the next interval: the
others then see it within one of their intervals, not two (docs/replicas.md). Only while there
are others: a replica alone at its last sync waits for the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from sluice.datalayer.registry import EndpointRegistry
from sluice.flowcontrol.model import Finalized, Ticket
from sluice.flowcontrol.observer import BandView, FlowObserver, FlowView
from sluice.logs import get_logger
from sluice.replicas.core import ReplicaCore
from sluice.replicas.metrics import ReplicaMetrics
from sluice.replicas.prefix_share import PrefixShare
from sluice.replicas.store import RedisStore, StoreError
from sluice.replicas.summary import ReplicaSummary, decode, encode
from sluice.replicas.view import PeerView

log = get_logger("replicas")
HEALTH_SERVICE = "sluice.replicas"
# Early syncs (a new higher band waiting) come at most this many times per interval.
EARLY_SYNC_DIVISOR = 5


class ReplicaSync:
    def __init__(
        self,
        core: ReplicaCore,
        store: RedisStore,
        *,
        interval_s: float,
        registry: EndpointRegistry,
        pump: Callable[[], None],
        metrics: ReplicaMetrics | None = None,
        prefix: PrefixShare | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
        self.store = store
        self.interval_s = interval_s
        self.registry = registry
        self.pump = pump
        self.metrics = metrics
        self.prefix = prefix
        self.clock = clock
        self.wall = wall
        self.syncs = 0
        self.failures = 0
        self._peers: list[
            ReplicaSummary
        ] = []  # the last sync's peer summaries (for the next lease asks)
        self._ever_joined = False
        self._fell_back = False  # a fall-back was counted and no rejoin yet
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._early = False  # a band above the published ones started waiting
        self._waiter: asyncio.Future[None] | None = None  # the pause until the next sync
        self._published_top: int | None = None  # the highest waiting band last published
        self.early_syncs = 0

    @property
    def joined(self) -> bool:
        return self.core.joined

    def health(self) -> dict[str, Callable[[], bool]]:
        """The `sluice.replicas` gRPC health service: SERVING while the store is reached
        (NOT_SERVING: local-only; the replica itself still serves)."""
        return {HEALTH_SERVICE: lambda: self.core.joined}

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="sluice-replicas")

    async def stop(self) -> None:
        # The flag, not only the cancel, ends the loop: a cancel that lands as redis-py's
        # connect timeout fires comes back as a TimeoutError — one more failed sync.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.store.close()

    def on_enqueued(self, priority: int) -> None:
        """A request joined band `priority` here: publish early if the others do not know a
        band this high waits here (the flow controller's observer calls it). Not while the last
        sync saw no other replica (or failed): nobody would read it, and a replica alone whose
        queue keeps emptying would sync up to `EARLY_SYNC_DIVISOR` times an interval for
        nothing. One that joins reads this summary at its own first sync."""
        top = self._published_top
        if self.core.view.peers and (top is None or priority > top):
            self._early = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def run(self) -> None:
        while not self._stopping:
            started = self.clock()
            early = self._early
            self._early = False
            await self.sync_once()
            if early:
                self.early_syncs += 1
            await self._pause(started)

    async def _pause(self, started: float) -> None:
        """Until the next interval, or an early wake (not sooner than the minimum gap). One
        timer per interval while nothing wakes it early (no task, no second sleep): an idle
        replica's syncs are most of what it spends."""
        remaining = self.interval_s - (self.clock() - started)
        if remaining > 0 and not self._early:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(remaining, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self._early:
            early_gap = started + self.interval_s / EARLY_SYNC_DIVISOR - self.clock()
            if early_gap > 0:
                await asyncio.sleep(early_gap)

    async def sync_once(self) -> bool:
        """One sync; False if the store did not answer (then this replica is local-only)."""
        core = self.core
        now = self.clock()
        mine = core.summary(now, self.wall())
        self._published_top = max((b.priority for b in mine.bands if b.waiting), default=None)
        blob = encode(mine)
        asks = core.lease_asks(mine, self._peers)
        prefix_out = self.prefix.take() if self.prefix is not None else None
        try:
            result = await self.store.sync(core.replica_id, blob, core.lease_s, asks, prefix_out)
        except StoreError as exc:
            self._failed(exc, self.clock())
            return False
        done = self.clock()
        peers = [p for b in result.peers if (p := decode(b)) is not None]
        self._peers = peers
        rejoined = not core.joined
        # leases run from when the sync was sent: the store granted them later, so this
        # replica's view of them never outlives the store's
        core.apply(PeerView(peers), result.granted, now)
        if self.prefix is not None and result.prefix_entries:
            self.prefix.apply(result.prefix_entries, {s.name for s in self.registry.snapshot()})
        self.syncs += 1
        if rejoined:
            if self._fell_back:
                log.warning(
                    "replicas: store reachable again, rejoined the pool-wide order",
                    store=self.store.url,
                    peers=len(peers),
                )
                if self.metrics is not None:
                    self.metrics.rejoins.inc()
                self._fell_back = False
            else:
                log.info("replicas: joined", store=self.store.url, peers=len(peers))
            self._ever_joined = True
        metrics = self.metrics
        if metrics is not None:
            metrics.connected.set(1)
            metrics.peers.set(len(peers))
            metrics.sync_seconds.observe(done - now)
            metrics.bytes_sent.inc(len(blob) + len(prefix_out or b""))
            metrics.bytes_received.inc(
                sum(len(b) for b in result.peers) + sum(len(e) for e in result.prefix_entries)
            )
            for name, lease in result.granted.items():
                metrics.set_lease(name, lease)
        self.pump()  # the others' queues changed what may go here
        return True

    def _failed(self, exc: BaseException, now: float) -> None:
        self.failures += 1
        core = self.core
        if core.joined or (not self._ever_joined and self.failures == 1):
            log.warning(
                "replicas: store unreachable, local-only flow control until it returns",
                store=self.store.url,
                error=f"{type(exc).__name__}: {exc}",
            )
            self._fell_back = True
            if self.metrics is not None:
                self.metrics.fallbacks.inc()
                self.metrics.connected.set(0)
                self.metrics.peers.set(0)
        core.go_local(now)
        if self.metrics is not None and not any(
            s.lease is not None for s in self.registry.snapshot()
        ):
            self.metrics.clear_leases()
        self.pump()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class EnqueueTee:
    """The flow controller's observer, with every enqueue also told to the replica sync."""

    def __init__(self, inner: FlowObserver, sync: ReplicaSync) -> None:
        self.inner = inner
        self.sync = sync

    def on_enqueued(self, ticket: Ticket, band: BandView) -> None:
        self.inner.on_enqueued(ticket, band)
        self.sync.on_enqueued(band.priority)

    def on_finalized(self, event: Finalized, band: BandView | None) -> None:
        self.inner.on_finalized(event, band)

    def on_served(self, flow: FlowView, band: BandView) -> None:
        self.inner.on_served(flow, band)
