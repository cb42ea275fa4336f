"""A store that is slow but answers is not a store that is gone: a sync waits up to
`--replicas-store-timeout` before the replica falls back to local-only. The store here really
stalls (a busy Lua script blocks a real Redis), as a loaded machine stalls it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import redis as redis_py

from replicas.test_app_store import app, metric, until
from sluice.app import App
from sluice.bench.harness.store import StoreProcess

STALL_S = 0.15  # each stall of the store
STALLS = 3
# A busy script: the store answers nobody else until it returns.
BUSY = """
local t0 = redis.call('TIME')
local start = t0[1] * 1000000 + t0[2]
while true do
  local t = redis.call('TIME')
  if t[1] * 1000000 + t[2] - start >= tonumber(ARGV[1]) then return 1 end
end
"""


def stall(port: int, seconds: float) -> None:
    redis_py.Redis(port=port).eval(BUSY, 0, int(seconds * 1e6))


async def stall_the_store(replica: App, port: int) -> int:
    """`STALLS` stalls of the store while `replica` syncs; returns how many syncs the replica
    finished in the meantime."""
    sync = replica.replicas
    assert sync is not None
    await until(lambda: sync.joined)
    before = sync.syncs + sync.failures
    for _ in range(STALLS):
        thread = threading.Thread(target=stall, args=(port, STALL_S))
        thread.start()
        await asyncio.to_thread(thread.join)
        await asyncio.sleep(0.1)
    await until(lambda: sync.joined)
    return sync.syncs + sync.failures - before


def slow_syncs(replica: App, above_s: float) -> float:
    """Syncs the replica's own histogram counts as slower than `above_s`."""
    labels = {"replica": replica.replicas.core.replica_id}  # type: ignore[union-attr]
    name = "sluice_replicas_sync_duration_seconds"
    total = replica.metrics_registry.get_sample_value(f"{name}_count", labels) or 0.0
    fast = replica.metrics_registry.get_sample_value(
        f"{name}_bucket", {**labels, "le": str(above_s)}
    )
    return total - (fast or 0.0)


async def test_a_sync_the_store_answers_within_the_timeout_does_not_fall_back(
    tmp_path: Path, redis: StoreProcess
) -> None:
    replica = app(tmp_path, redis, "a", "--replicas-lease=2s", "--replicas-store-timeout=800ms")
    await replica.start()
    try:
        assert await stall_the_store(replica, redis.port) > STALLS
        assert slow_syncs(replica, 0.1) >= 1, "a sync did wait for a stalled store"
        assert metric(replica, "sluice_replicas_fallbacks_total") == 0
        assert metric(replica, "sluice_replicas_store_connected") == 1
    finally:
        await replica.stop()


async def test_a_sync_past_the_timeout_falls_back_and_the_next_one_rejoins(
    tmp_path: Path, redis: StoreProcess
) -> None:
    replica = app(tmp_path, redis, "a", "--replicas-store-timeout=40ms")
    await replica.start()
    try:
        await stall_the_store(replica, redis.port)
        fallbacks = metric(replica, "sluice_replicas_fallbacks_total")
        assert fallbacks >= 1, "a stall past the timeout is a fall-back"
        assert metric(replica, "sluice_replicas_rejoins_total") == fallbacks
        assert metric(replica, "sluice_replicas_store_connected") == 1
    finally:
        await replica.stop()
