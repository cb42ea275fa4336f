"""Two `sluice serve` apps sharing a real Redis: they see each other; stopping the store makes
each fall back to local-only at once, visibly; its return makes them rejoin."""

from __future__ import annotations

import asyncio
from pathlib import Path

from e2e.support import write_pool
from sluice.app import App
from sluice.bench.harness.ports import free_port
from sluice.bench.harness.store import StoreProcess
from sluice.cli.serve_options import parse_serve_options


def app(tmp: Path, store: StoreProcess, name: str, *flags: str) -> App:
    pool = write_pool(tmp, [free_port()])
    return App(
        parse_serve_options(
            [
                "--pool-name=pool",
                f"--resources={pool}",
                f"--grpc-port={free_port()}",
                f"--grpc-health-port={free_port()}",
                f"--metrics-port={free_port()}",
                "--grpc-host=127.0.0.1",
                "--secure-serving=false",
                f"--replicas-store=redis://127.0.0.1:{store.port}/0",
                f"--replica-id={name}",
                "--replicas-sync-interval=20ms",
                "--replicas-lease=200ms",
                *flags,
            ]
        )
    )


def metric(a: App, name: str) -> float:
    value = a.metrics_registry.get_sample_value(name, {"replica": a.replicas.core.replica_id})
    return value or 0.0


async def until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_replicas_join_fall_back_when_the_store_stops_and_rejoin(
    tmp_path: Path, redis: StoreProcess
) -> None:
    a, b = app(tmp_path, redis, "a"), app(tmp_path, redis, "b")
    await a.start()
    await b.start()
    try:
        assert a.replicas is not None and b.replicas is not None
        await until(lambda: metric(a, "sluice_replicas_peers") == 1)
        assert metric(a, "sluice_replicas_store_connected") == 1
        redis.stop()
        await until(lambda: not a.replicas.joined and not b.replicas.joined)
        assert metric(a, "sluice_replicas_store_connected") == 0
        assert metric(a, "sluice_replicas_fallbacks_total") == 1
        assert a.flow.peers is None, "local-only flow control"
        redis.start()
        await until(lambda: a.replicas.joined and b.replicas.joined)
        assert metric(a, "sluice_replicas_rejoins_total") == 1
        assert metric(b, "sluice_replicas_rejoins_total") == 1
    finally:
        await a.stop()
        await b.stop()
