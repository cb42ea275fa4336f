"""KV events over real ZMQ sockets on loopback: simulated engines publish as vLLM does, Sluice's
subscribers follow the endpoint registry, and the precise index must end up holding exactly
what each engine's allocator holds — after a lost message, an engine restart and a subscriber
that dies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest

from sluice.bench.harness.ports import free_port_block
from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.kvevents.lane import NATIVE
from sluice.datalayer.kvevents.manager import KVEventsSubscribers, SubscriberSettings
from sluice.datalayer.kvevents.stream import StreamSettings
from sluice.datalayer.kvevents.streams import KVEventStreams
from sluice.datalayer.kvevents.wire import Event
from sluice.datalayer.registry import EndpointRegistry
from sluice.scheduling.precise_hashing import BlockKeys
from sluice.scheduling.precise_index import KEY_MASK, PreciseIndex
from sluice.sim.kv_events import KVEventsConfig
from sluice.sim.pool import EngineSpec, SimPool, start_pool
from sluice.sim.profiles import get_profile, with_engine

SEED = "11"

# Every test over both connections: Sluice's own (ZMTP read by the native lane, the default
# where the extension is built) and pyzmq SUB sockets (an install without it).
pytestmark = pytest.mark.parametrize(
    "native",
    [
        pytest.param(
            True,
            id="own-zmtp",
            marks=pytest.mark.skipif(NATIVE is None, reason="the native lane is not built"),
        ),
        pytest.param(False, id="pyzmq"),
    ],
)


class FlakySink:
    """The precise index, with a switch that makes the next apply raise (a bug)."""

    def __init__(self, index: PreciseIndex) -> None:
        self.index = index
        self.fail_next = False

    def apply(self, endpoint: str, events: Sequence[Event]) -> bool:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("injected failure while applying events")
        return self.index.apply(endpoint, events)

    def clear(self, endpoint: str) -> None:
        self.index.clear(endpoint)

    def forget(self, endpoint: str) -> None:
        self.index.forget(endpoint)


@dataclass
class Harness:
    pool: SimPool
    index: PreciseIndex
    sink: FlakySink
    streams: KVEventStreams
    subscribers: KVEventsSubscribers
    http: aiohttp.ClientSession

    def name(self, i: int) -> str:
        return f"pod-rank-{i}"

    def truth(self, i: int) -> set[int]:
        """The blocks engine i holds, as the index keys them."""
        return {h & KEY_MASK for h in self.pool.engines[i].engine.kv.cached_hashes()}

    def consistent(self, i: int) -> bool:
        return self.streams.mode(self.name(i))[0] == "precise" and self.index.held(
            self.name(i)
        ) == self.truth(i)

    async def complete(self, i: int, prompt: str) -> None:
        body = {"prompt": prompt, "max_tokens": 2}
        async with self.http.post(f"{self.pool.urls[i]}/v1/completions", json=body) as response:
            assert response.status == 200, await response.text()
            await response.read()


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def harness(native: bool, engines: int = 2) -> AsyncIterator[Harness]:
    profile = get_profile("llama-8b-h100")
    config = with_engine(profile, num_gpu_blocks=48, hash_seed=SEED)
    pub, replay = free_port_block(engines), free_port_block(engines)
    kv = KVEventsConfig(
        enable_kv_cache_events=True,
        endpoint=f"tcp://*:{pub}",
        replay_endpoint=f"tcp://*:{replay}",
    )
    specs = [EngineSpec(config, profile.cost, kv_events=kv, rank=i) for i in range(engines)]
    pool = await start_pool(specs)
    registry = EndpointRegistry()
    registry.set_endpoints(
        Endpoint(f"pod-rank-{i}", "127.0.0.1", e.port) for i, e in enumerate(pool.engines)
    )
    index = PreciseIndex(BlockKeys(16, hash_seed=SEED))
    sink = FlakySink(index)
    streams = KVEventStreams(
        sink, StreamSettings(probe_interval_s=0.2, replay_timeout_s=1.0, replay_cooldown_s=0.3)
    )
    subscribers = KVEventsSubscribers(
        registry,
        streams,
        SubscriberSettings(
            socket_port=pub,
            replay_socket_port=replay,
            tick_s=0.02,
            restart_backoff_s=0.2,
            native_lane=native,
        ),
    )
    await subscribers.start()
    http = aiohttp.ClientSession()
    h = Harness(pool, index, sink, streams, subscribers, http)
    try:
        await eventually(lambda: all(h.consistent(i) for i in range(engines)))
        yield h
    finally:
        await http.close()
        await subscribers.stop()
        await pool.close()


def prompts(n: int, tag: str) -> list[str]:
    """Distinct prompts of ~7 blocks each: enough of them evict (48 blocks an engine)."""
    return [f"{tag} prompt {i}: " + "lorem ipsum " * 40 for i in range(n)]


async def test_blocks_stored_and_evicted_by_the_engines_reach_the_index(native: bool) -> None:
    async with harness(native) as h:
        for prompt in prompts(10, "a"):
            await h.complete(0, prompt)
        await h.complete(1, "only one prompt on engine 1 " * 20)
        await eventually(lambda: h.consistent(0) and h.consistent(1))
        assert h.truth(0) and h.truth(1) and not h.truth(0) & h.truth(1)
        counters = h.streams.get("pod-rank-0").counters  # type: ignore[union-attr]
        assert counters.events > 10 and counters.gaps == 0


async def test_a_lost_message_is_detected_replayed_and_the_index_is_consistent_again(
    native: bool,
) -> None:
    async with harness(native) as h:
        await h.complete(0, prompts(1, "warm")[0])
        await eventually(lambda: h.consistent(0))
        publisher = h.pool.engines[0].publisher
        assert publisher is not None
        publisher.drop_next = 1  # the network loses the next batch
        for prompt in prompts(6, "b"):
            await h.complete(0, prompt)
        stream = h.streams.get("pod-rank-0")
        assert stream is not None
        await eventually(lambda: h.consistent(0))
        assert stream.counters.gaps >= 1 and stream.counters.replays >= 2


async def test_a_restarted_engine_is_detected_and_its_old_entries_cleared(native: bool) -> None:
    async with harness(native) as h:
        for prompt in prompts(3, "before"):
            await h.complete(0, prompt)
        await eventually(lambda: h.consistent(0))
        old = h.index.held("pod-rank-0")
        assert old
        await h.pool.restart(0)  # same ports, empty cache, sequence numbers from 0 again
        await eventually(lambda: h.consistent(0))
        assert h.index.held("pod-rank-0") == set()
        await h.complete(0, prompts(1, "after")[0])
        await eventually(lambda: h.consistent(0) and bool(h.truth(0)))
        assert not h.index.held("pod-rank-0") & old


async def test_a_dead_subscriber_is_restarted_and_its_endpoint_falls_back_meanwhile(
    native: bool,
) -> None:
    async with harness(native) as h:
        h.sink.fail_next = True  # the subscriber dies applying the next batch
        await h.complete(0, prompts(1, "crash")[0])
        await eventually(lambda: h.streams.mode("pod-rank-0") == ("fallback", "subscriber down"))
        assert h.streams.mode("pod-rank-1")[0] == "precise"  # the others are unaffected
        await eventually(lambda: h.subscribers.restarts >= 1 and h.consistent(0))
        # A subscriber whose socket is gone is caught the same way.
        subscriber = h.subscribers.subscriber("pod-rank-0")
        assert subscriber is not None
        subscriber.close()
        await eventually(lambda: h.subscribers.restarts >= 2 and h.consistent(0))
        await h.complete(0, prompts(1, "after")[0])
        await eventually(lambda: h.consistent(0))


async def test_endpoints_that_leave_the_pool_are_unsubscribed_and_forgotten(native: bool) -> None:
    async with harness(native) as h:
        await h.complete(1, prompts(1, "gone")[0])
        await eventually(lambda: h.consistent(1) and bool(h.index.held("pod-rank-1")))
        h.subscribers._registry.set_endpoints(
            [Endpoint("pod-rank-0", "127.0.0.1", h.pool.engines[0].port)]
        )
        await eventually(lambda: h.subscribers.subscriber("pod-rank-1") is None)
        assert h.index.held("pod-rank-1") == set() and h.streams.get("pod-rank-1") is None


async def test_a_message_that_is_not_three_frames_is_counted_malformed_and_reading_goes_on(
    native: bool,
) -> None:
    """The subscriber reads vLLM's three frames without asking ZMQ for message boundaries
    (that costs more than the reads): a publisher's message of two or four frames is detected
    by its sequence frame, counted, and the batches after it still apply."""
    import zmq

    from sluice.sim.kv_events import BlockStored, KVEventBatch, encode_batch

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    registry = EndpointRegistry()
    registry.set_endpoints([Endpoint("pod", "127.0.0.1", 8000)])
    index = PreciseIndex(BlockKeys(16, hash_seed=SEED))
    streams = KVEventStreams(index)
    subscribers = KVEventsSubscribers(
        registry, streams, SubscriberSettings(socket_port=port, tick_s=0.02, native_lane=native)
    )
    await subscribers.start()

    def batch(seq: int, first_hash: int) -> tuple[bytes, bytes, bytes]:
        # A chain continuing a block we never saw: no first block for the seed check.
        stored = BlockStored([first_hash, first_hash + 1], 7, [1] * 32, 16, None, "GPU", None)
        payload = encode_batch(KVEventBatch(0.0, [stored], 0))
        return (b"", seq.to_bytes(8, "big"), payload)

    try:
        while 100 not in index.held("pod"):  # until the subscription has taken hold
            pub.send_multipart(batch(0, 100))  # (a repeated batch 0: a reset, harmless)
            await asyncio.sleep(0.05)
        stream = streams.get("pod")
        assert stream is not None
        pub.send_multipart((b"", (1).to_bytes(8, "big")))  # two frames
        pub.send_multipart(batch(2, 200))  # read out of step: lost, then a gap
        pub.send_multipart((*batch(3, 300), b"extra"))  # four frames: its batch applies
        pub.send_multipart(batch(4, 400))  # behind the extra frame: lost
        pub.send_multipart(batch(5, 500))
        await eventually(lambda: 500 in index.held("pod"))
        assert stream.counters.malformed >= 2
        assert 501 in index.held("pod") and stream.last_seq == 5
    finally:
        await subscribers.stop()
        pub.close(linger=0)
        ctx.term()
