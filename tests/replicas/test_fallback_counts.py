"""A replica that could not reach the store at its first sync counted a fall-back; the sync that
later reaches it counts the rejoin, so while connected, fall-backs and rejoins are equal."""

from __future__ import annotations

from pathlib import Path

from replicas.test_app_store import app, metric, until
from sluice.bench.harness.store import StoreProcess


async def test_a_first_sync_that_failed_is_followed_by_a_counted_rejoin(
    tmp_path: Path, redis: StoreProcess
) -> None:
    redis.stop()  # the store is down when the replica starts
    replica = app(tmp_path, redis, "a")
    await replica.start()
    try:
        sync = replica.replicas
        assert sync is not None
        await until(lambda: sync.failures >= 1)
        assert metric(replica, "sluice_replicas_fallbacks_total") == 1
        assert metric(replica, "sluice_replicas_store_connected") == 0
        redis.start()
        await until(lambda: sync.joined)
        assert metric(replica, "sluice_replicas_rejoins_total") == 1
        assert metric(replica, "sluice_replicas_fallbacks_total") == 1
    finally:
        await replica.stop()
