"""CPU of one replica sync, on the store's side and the client's, against a real Redis.

Three `RedisStore`s (three replicas' clients) sync in turn against one fresh `redis-server` on
loopback, as `sluice serve` does (a 600-byte summary, 4 endpoint leases, the prefix stream),
and every `--entry-every`-th sync carries one prefix-index entry of `--hashes` block hashes
(the shared-prefix benchmark at 10 QPS over 3 replicas syncing every 50 ms adds about one
entry per 6 syncs). Measured over `--syncs` syncs: redis-server's CPU from /proc (utime +
stime), this process's CPU (the three clients), wall time per sync. Rounds alternate nothing
by themselves: run it once per tree with that tree's `src` on PYTHONPATH, in turn.

    PYTHONPATH=src python benchmarks/replicas_sync_cpu.py [--syncs 6000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time

import msgspec

from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.harness.cpu import cpu_seconds, tree_cpu_seconds
from sluice.bench.harness.store import redis_server
from sluice.replicas.core import LeaseAsk
from sluice.replicas.store import RedisStore

SUMMARY = b"x" * 600  # about one replica's summary with a few bands and flows
REPLICAS = ("r0", "r1", "r2")


def entry(hashes: int, rng: random.Random) -> bytes:
    blocks = [rng.getrandbits(63) for _ in range(hashes)]
    return msgspec.msgpack.encode([("prefix-cache-scorer", "default/e0", 31250, blocks)])


async def one_round(args: argparse.Namespace, rng: random.Random) -> tuple[float, float, float]:
    """(store µs CPU per sync, client µs CPU per sync, wall µs per sync)."""
    with redis_server() as server:
        assert server.process is not None
        url = f"redis://127.0.0.1:{server.port}/0"
        stores = [RedisStore(url, "bench", timeout_s=5) for _ in REPLICAS]
        asks = [LeaseAsk(f"default/e{i}", 4, 1, 0) for i in range(4)]
        blobs = [entry(args.hashes, rng) for _ in range(64)]
        for store, me in zip(stores, REPLICAS, strict=True):  # load the script, join
            await store.sync(me, SUMMARY, 1.0, asks, None)
        store0, self0 = tree_cpu_seconds(server.process.pid), cpu_seconds(os.getpid())
        wall0 = time.perf_counter()
        for i in range(args.syncs):
            k = i % len(REPLICAS)
            out = blobs[i % len(blobs)] if i % args.entry_every == 0 else None
            await stores[k].sync(REPLICAS[k], SUMMARY, 1.0, asks, out)
        wall = time.perf_counter() - wall0
        store_s = tree_cpu_seconds(server.process.pid) - store0
        self_s = cpu_seconds(os.getpid()) - self0
        for store in stores:
            await store.close()
    n = args.syncs
    return store_s / n * 1e6, self_s / n * 1e6, wall / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--syncs", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--entry-every", type=int, default=6)
    parser.add_argument("--hashes", type=int, default=190, help="block hashes per entry")
    args = parser.parse_args()
    rng = random.Random(1)
    for round_ in range(args.rounds):
        load = os.getloadavg()[0]
        store_us, client_us, wall_us = asyncio.run(one_round(args, rng))
        print(
            f"round {round_ + 1}: store {store_us:.0f} µs CPU per sync, clients {client_us:.0f}"
            f" µs CPU per sync, {wall_us:.0f} µs wall per sync ({args.syncs} syncs, load"
            f" average {load:.2f} -> {os.getloadavg()[0]:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    exit_on_sigterm()
    main()
