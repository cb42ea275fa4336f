"""Redis vs NATS as the replicas' store: wall time of one sync round trip on loopback.

Redis: `RedisStore.sync` as Sluice runs it (summary, 3 lease grants, peers, prefix stream in one
pipelined round trip). NATS: the closest equivalent with JetStream KV (put the summary, read
two peers' keys). Same summary bytes. Run: python benchmarks/replicas_store.py [syncs]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import nats

from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.harness.store import nats_server, redis_server
from sluice.replicas.core import LeaseAsk
from sluice.replicas.store import RedisStore

SUMMARY = b"x" * 600  # about one replica's summary with a few bands and flows


async def redis_syncs(n: int) -> list[float]:
    with redis_server() as server:
        store = RedisStore(f"redis://127.0.0.1:{server.port}/0", "bench", timeout_s=1)
        asks = [LeaseAsk(f"e{i}", 4, 2, 1) for i in range(3)]
        for peer in ("b", "c"):
            await store.sync(peer, SUMMARY, 60, asks, None)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            await store.sync("a", SUMMARY, 60, asks, None)
            times.append(time.perf_counter() - t)
        await store.close()
        return times


async def nats_syncs(n: int) -> list[float]:
    server = nats_server()
    server.argv.append("-js")
    with server:
        client = await nats.connect(f"nats://127.0.0.1:{server.port}")
        kv = await client.jetstream().create_key_value(bucket="bench")
        for peer in ("b", "c"):
            await kv.put(peer, SUMMARY)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            await kv.put("a", SUMMARY)
            await asyncio.gather(kv.get("b"), kv.get("c"))
            times.append(time.perf_counter() - t)
        await client.close()
        return times


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    print("machine shared with other agents: compare the ratio, not the numbers")
    for name, run in (("redis", redis_syncs), ("nats", nats_syncs)):
        times = asyncio.run(run(n))
        print(
            f"{name}: median {statistics.median(times) * 1e3:.2f} ms per sync, "
            f"p90 {sorted(times)[int(0.9 * n)] * 1e3:.2f} ms ({n} syncs)"
        )


if __name__ == "__main__":
    exit_on_sigterm()
    main()
