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


async def test_prefix_entries_reach_the_other_replicas_once_and_never_come_back(
    redis: StoreProcess,
) -> None:
    url = f"redis://127.0.0.1:{redis.port}/0"
    a, b = RedisStore(url, "p", timeout_s=1), RedisStore(url, "p", timeout_s=1)
    late = RedisStore(url, "p", timeout_s=1)
    asks = [LeaseAsk("e", 4, 2, 0)]
    assert (await a.sync("a", b"sa", 1.0, asks, b"from-a-1")).prefix_entries == []
    assert (await b.sync("b", b"sb", 1.0, asks, b"from-b-1")).prefix_entries == [b"from-a-1"]
    assert (await a.sync("a", b"sa", 1.0, asks, b"from-a-2")).prefix_entries == [b"from-b-1"]
    seen = await b.sync("b", b"sb", 1.0, asks, None)
    assert seen.prefix_entries == [b"from-a-2"] and seen.peers == [b"sa"]
    assert (await b.sync("b", b"sb", 1.0, asks, None)).prefix_entries == []
    # a replica that joins later reads what the stream still holds, from its start
    joined = await late.sync("c", b"sc", 1.0, asks, None)
    assert joined.prefix_entries == [b"from-a-1", b"from-b-1", b"from-a-2"]
    assert sorted(joined.peers) == [b"sa", b"sb"]
    # a replica that does not share prefixes reads none
    quiet = RedisStore(url, "p", timeout_s=1, share_prefixes=False)
    assert (await quiet.sync("d", b"sd", 1.0, asks, None)).prefix_entries == []
    for store in (a, b, late, quiet):
        await store.close()
