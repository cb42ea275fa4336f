"""KV cache: usage tracks blocks in use, prefix caching with salts, LRU eviction, preemption."""

from __future__ import annotations

from sluice.sim.kvcache import BlockPool
from sluice.sim.request import SimRequest
from sluice.sim.virtual import VirtualCluster

from .helpers import completed, engine, request


def test_kv_usage_tracks_the_blocks_requests_hold() -> None:
    eng = engine(num_gpu_blocks=100, block_size=16)
    eng.add_request(request("r", 160, max_tokens=40), now=0.0)
    now = 1.0  # past the front end's overhead
    for _ in range(20):  # prefill, then 19 decode steps
        duration = eng.start_step(now)
        assert duration is not None
        now += duration
        eng.finish_step(now)
        seq = eng.running[0]
        assert eng.metrics().kv_cache_usage_perc == len(seq.blocks) / 100
        assert len(seq.blocks) == -(-seq.num_computed // 16)
    assert (
        eng.metrics().kv_cache_usage_perc == 12 / 100
    )  # 160 prompt + 19 outputs: 179 tokens, 12 blocks


def test_finished_requests_free_their_blocks_but_keep_them_cached() -> None:
    eng = engine(num_gpu_blocks=100)
    cluster = VirtualCluster({"e": eng})
    cluster.submit("e", request("r", 160, max_tokens=4))
    cluster.run()
    assert eng.metrics().kv_cache_usage_perc == 0.0
    assert eng.kv.num_cached == 10  # every full prompt block stays a future hit


def test_preemption_happens_when_the_kv_cache_is_full() -> None:
    eng = engine(num_gpu_blocks=20, block_size=16)
    cluster = VirtualCluster({"e": eng})
    for i in range(4):  # 4 × (64 prompt + 96 output) tokens need 40 blocks; only 20 exist
        cluster.submit("e", request(f"r{i}", 64, max_tokens=96))
    peak = 0.0
    while cluster.next_event_time() is not None:
        cluster.run_until(cluster.next_event_time() or 0.0)
        peak = max(peak, cluster.metrics("e").kv_cache_usage_perc)
    assert eng.metrics().num_preemptions > 0
    assert peak <= 1.0
    assert eng.metrics().kv_cache_usage_perc == 0.0


def test_preempted_requests_are_recomputed_and_still_complete() -> None:
    eng = engine(num_gpu_blocks=20, block_size=16)
    cluster = VirtualCluster({"e": eng})
    for i in range(4):
        cluster.submit("e", request(f"r{i}", 64, max_tokens=96))
    done = completed(cluster.run())
    assert {c.usage.completion_tokens for c in done.values()} == {96}
    assert sum(c.num_preemptions for c in done.values()) == eng.metrics().num_preemptions > 0


def test_lru_evicts_the_least_recently_freed_cached_blocks_first() -> None:
    pool = BlockPool(4)
    a, b = pool.allocate(1), pool.allocate(1)
    assert a is not None and b is not None
    pool.cache(a[0], 111)
    pool.cache(b[0], 222)
    pool.free(a)
    pool.free(b)  # a was freed first: it is the least recently used
    pool.allocate(3)  # two never-used blocks, then evicts a
    assert pool.longest_prefix((111,), 1) == []
    assert pool.longest_prefix((222,), 1) == b


def test_blocks_in_use_are_never_evicted() -> None:
    pool = BlockPool(2)
    held = pool.allocate(1)
    assert held is not None
    pool.cache(held[0], 7)
    assert pool.allocate(2) is None
    assert pool.longest_prefix((7,), 1) == held


def test_the_same_text_under_another_adapter_or_salt_is_not_a_hit() -> None:
    text = "p" * 4 * 512
    plain = SimRequest.from_text("plain", text, max_tokens=1)
    variants = [
        SimRequest.from_text("salted", text, max_tokens=1, cache_salt="tenant-b"),
        SimRequest.from_text("lora", text, max_tokens=1, lora="sql-adapter"),
        SimRequest.from_text("again", text, max_tokens=1),
    ]
    cluster = VirtualCluster({"e": engine(max_loras=1)})
    cluster.submit("e", plain)
    for i, req in enumerate(variants, start=1):
        cluster.submit("e", req, at=float(i))
    done = completed(cluster.run())
    assert [done[r.request_id].usage.cached_tokens for r in variants] == [0, 0, 511 // 16 * 16]


def test_prefix_cache_metrics_count_queried_and_hit_tokens() -> None:
    eng = engine()
    cluster = VirtualCluster({"e": eng})
    cluster.submit("e", request("a", 320, max_tokens=1))
    cluster.submit("e", SimRequest.from_text("b", "a:".ljust(4 * 320, "x"), max_tokens=1), at=1.0)
    cluster.run()
    m = eng.metrics()
    assert (m.prefix_cache_queries, m.prefix_cache_hits) == (640, 304)  # all but the last block hit
