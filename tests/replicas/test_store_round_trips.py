"""One sync is one pipelined round trip: redis-py's registered scripts asked SCRIPT EXISTS
before every pipeline (two round trips a sync, each a wake-up of both processes on a busy
machine). The script is loaded once, and again only when the store forgot it."""

from __future__ import annotations

import redis as redis_py

from sluice.bench.harness.store import StoreProcess
from sluice.replicas.core import LeaseAsk
from sluice.replicas.store import RedisStore

SYNCS = 5


def script_commands(port: int) -> dict[str, int]:
    stats = redis_py.Redis(port=port).info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name.startswith(("cmdstat_script", "cmdstat_evalsha"))
    }


async def test_syncs_load_the_script_once_and_never_ask_whether_it_exists(
    redis: StoreProcess,
) -> None:
    store = RedisStore(f"redis://127.0.0.1:{redis.port}/0", "p", timeout_s=1)
    asks = [LeaseAsk("e", 4, 2, 0)]
    for _ in range(SYNCS):
        assert (await store.sync("a", b"summary", 1.0, asks, None)).granted == {"e": 2}
    seen = script_commands(redis.port)
    assert seen.get("script|exists", 0) == 0
    assert seen.get("script|load") == 1
    assert seen.get("evalsha") == SYNCS + 1  # the first one found no script
    redis.stop()
    redis.start()  # a store that restarted forgot the script: loaded again, then it syncs
    store2 = RedisStore(f"redis://127.0.0.1:{redis.port}/0", "p", timeout_s=1)
    assert (await store2.sync("a", b"summary", 1.0, asks, None)).granted == {"e": 2}
    await store.close()
    await store2.close()
