"""A band that starts waiting above everything a replica last published is published at once,
not at the next interval: the others then see it within one of their intervals, not two."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from e2e.support import write_pool
from replicas.test_app_store import until
from sluice.app import App
from sluice.bench.harness.ports import free_port
from sluice.bench.harness.store import StoreProcess
from sluice.cli.serve_options import parse_serve_options
from sluice.replicas.shell import EARLY_SYNC_DIVISOR, EnqueueTee, ReplicaSync
from sluice.replicas.store import RedisStore
from sluice.replicas.summary import VERSION, ReplicaSummary, encode

INTERVAL_S = 2.0  # long, so an early sync cannot be mistaken for a scheduled one


def slow_syncing_app(tmp: Path, store: StoreProcess) -> App:
    return App(
        parse_serve_options(
            [
                "--pool-name=pool",
                f"--resources={write_pool(tmp, [free_port()])}",
                f"--grpc-port={free_port()}",
                f"--grpc-health-port={free_port()}",
                f"--metrics-port={free_port()}",
                "--grpc-host=127.0.0.1",
                "--secure-serving=false",
                f"--replicas-store=redis://127.0.0.1:{store.port}/0",
                "--replica-id=a",
                f"--replicas-sync-interval={INTERVAL_S:g}s",
                f"--replicas-lease={3 * INTERVAL_S:g}s",
            ]
        )
    )


async def another_replica(store: StoreProcess, of: App) -> None:
    """A second replica of `of`'s pool in the store (its summary only, live for a while):
    someone to tell."""
    pool = f"{of.key.namespace}/{of.key.name}"
    peer = RedisStore(f"redis://127.0.0.1:{store.port}/0", pool, timeout_s=1)
    summary = ReplicaSummary(VERSION, "b", time.time(), (), (), 0.0)
    await peer.sync("b", encode(summary), 10 * INTERVAL_S, [], None)
    await peer.close()


async def started(replica: App) -> ReplicaSync:
    await replica.start()
    sync = replica.replicas
    assert sync is not None
    assert isinstance(replica.flow.observer, EnqueueTee), "every enqueue reaches the sync"
    await until(lambda: sync.joined)
    return sync


async def test_a_new_higher_band_is_published_within_the_early_sync_gap(
    tmp_path: Path, redis: StoreProcess
) -> None:
    replica = slow_syncing_app(tmp_path, redis)
    await another_replica(redis, replica)
    try:
        sync = await started(replica)
        await until(lambda: bool(sync.core.view.peers), timeout=2 * INTERVAL_S)
        await asyncio.sleep(INTERVAL_S / EARLY_SYNC_DIVISOR)  # past the minimum gap
        before = sync.syncs
        sync.on_enqueued(10)  # nothing was published waiting: band 10 is news
        await until(lambda: sync.syncs > before, timeout=INTERVAL_S / 2)
        assert sync.early_syncs == 1
    finally:
        await replica.stop()


async def test_a_replica_alone_makes_no_early_sync_nobody_would_read(
    tmp_path: Path, redis: StoreProcess
) -> None:
    """Alone in the store, a replica whose queue keeps emptying made up to EARLY_SYNC_DIVISOR
    syncs an interval (51 a second against 20 at 50 ms on a quiet machine) with no one to read
    them: it now waits for its interval."""
    replica = slow_syncing_app(tmp_path, redis)
    try:
        sync = await started(replica)
        assert not sync.core.view.peers
        sync.on_enqueued(10)  # news, but for nobody
        await asyncio.sleep(INTERVAL_S + INTERVAL_S / EARLY_SYNC_DIVISOR)  # a whole interval
        assert sync.syncs >= 2, "the scheduled syncs ran"
        assert sync.early_syncs == 0
    finally:
        await replica.stop()
