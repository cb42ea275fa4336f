"""The native fast lane (`datalayer/kvevents/lane.py`) takes only what the Python path would do
the same with, and hands everything else back: whatever the batches — both of vLLM's layouts,
other cache tiers, other KV-cache groups, a group still to learn, a wrong block size, a first
block hashed with another seed, an AllBlocksCleared, gaps and sequence resets, blocks two
endpoints share — the subscribers reading real ZMQ sockets through the lane end with the same
index and the same streams as the Python path fed the same batches."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.bench.harness.ports import free_port_block
from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.kvevents.lane import NATIVE
from sluice.datalayer.kvevents.manager import KVEventsSubscribers, SubscriberSettings
from sluice.datalayer.kvevents.stream import EndpointStream, StreamSettings
from sluice.datalayer.kvevents.streams import KVEventStreams
from sluice.datalayer.registry import EndpointRegistry
from sluice.scheduling.precise_hashing import BlockKeys
from sluice.scheduling.precise_index import PreciseIndex
from sluice.sim.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    Event,
    KVEventBatch,
    encode_batch,
)

SEED = "7"
KEYS = BlockKeys(16, hash_seed=SEED)
TOKENS = list(range(16 * 3))
FIRST = KEYS.engine_hash_of_first_block(TOKENS, None)  # a first block the index accepts
# Hashes the endpoints share (so blocks held by both take the shared-bits paths); two above
# 2**63, whose low 60 bits are the key.
POOL = [FIRST, 11, 12, 13, 14, 15, 16, (1 << 64) - 5, (1 << 63) + 11]
NAMES = ["pod-rank-0", "pod-rank-1"]

needs_lane = pytest.mark.skipif(NATIVE is None, reason="the native lane is not built")


def test_the_native_lane_is_built_and_bound() -> None:
    """`pip install -e .` (the Makefile's) compiles it; a missing compiler would silently leave
    the subscribers on their Python path, so the suite says so."""
    if os.environ.get("SLUICE_KV_LANE") == "0":
        pytest.skip("SLUICE_KV_LANE=0 turns the lane off")
    assert NATIVE is not None
    assert type(NATIVE.Lane()).__name__ == "Lane"


hashes = st.lists(st.sampled_from(POOL), min_size=1, max_size=4)
medium = st.sampled_from(["GPU", "GPU", "GPU", None, "CPU"])
group = st.sampled_from([None, None, 0, 0, 1])
kind = st.sampled_from([None, "full_attention", "sliding_window"])


@st.composite
def stored(draw: st.DrawFn) -> BlockStored:
    blocks = draw(hashes)
    first = draw(st.integers(0, 3))
    parent = None if first == 0 else draw(st.sampled_from(POOL))
    if parent is None:
        blocks[0] = FIRST if first == 0 and draw(st.booleans()) else blocks[0]
    size = draw(st.sampled_from([16, 16, 16, 16, 32]))
    return BlockStored(
        blocks,
        parent,
        TOKENS,
        size,
        None,
        draw(medium),
        None,
        None,
        draw(group),
        draw(kind),
    )


events = st.one_of(
    stored(),
    stored(),
    st.builds(BlockRemoved, hashes, medium, group),
    st.builds(BlockRemoved, hashes, medium, group),
    st.just(AllBlocksCleared()),
)


@st.composite
def streams_of_batches(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """One endpoint's messages: (sequence number, payload), mostly in order, with gaps and
    resets; batches in either layout."""
    out: list[tuple[int, bytes]] = []
    seq = 0
    for _ in range(draw(st.integers(1, 25))):
        batch = KVEventBatch(0.5, draw(st.lists(events, max_size=5)), 0)
        out.append((seq, encode_batch(batch, layout=draw(st.sampled_from(["map", "array"])))))
        step = draw(st.sampled_from([1, 1, 1, 1, 1, 1, 2, -1]))
        seq = 0 if step < 0 else seq + step
    return out


@dataclass
class Outcome:
    held: dict[str, set[int]]
    counts: dict[str, int]
    streams: dict[str, tuple[object, ...]]
    index: tuple[int, int, dict[str, str]]


def outcome(index: PreciseIndex, streams: dict[str, EndpointStream]) -> Outcome:
    return Outcome(
        {n: index.held(n) for n in NAMES},
        {n: index.count(n) for n in NAMES},
        {n: (s.last_seq, s.complete, s.mode(), asdict(s.counters)) for n, s in streams.items()},
        (index.other_tiers, index.other_groups, dict(index.unusable)),
    )


def python_path(messages: list[list[tuple[int, bytes]]]) -> Outcome:
    index = PreciseIndex(KEYS)
    streams = {}
    for name, batches in zip(NAMES, messages):
        stream = streams[name] = EndpointStream(name, index, StreamSettings(replay=False))
        stream.on_connected(0.0)
        for seq, payload in batches:
            stream.on_live(seq, payload, 0.0)
    return outcome(index, streams)


async def through_the_lane(
    messages: list[list[tuple[int, bytes]]], *, first_alone: bool = False
) -> Outcome:
    """The same batches from two real publishers, read by the subscribers (lane on);
    `first_alone`: each stream's first batch, then — once it is applied — the rest."""
    ctx = zmq.Context()
    port = free_port_block(2)
    publishers = []
    for i in range(2):
        pub = ctx.socket(zmq.XPUB)  # a PUB that also sees the subscription arrive
        pub.bind(f"tcp://127.0.0.1:{port + i}")
        publishers.append(pub)
    registry = EndpointRegistry()
    registry.set_endpoints(Endpoint(n, "127.0.0.1", 8000 + i) for i, n in enumerate(NAMES))
    index = PreciseIndex(KEYS)
    streams = KVEventStreams(index)
    subscribers = KVEventsSubscribers(
        registry,
        streams,
        SubscriberSettings(socket_port=port, tick_s=0.01, drain_interval_s=0.002),
    )
    await subscribers.start()
    try:
        for pub in publishers:
            deadline = time.monotonic() + 10
            while not pub.poll(0):
                assert time.monotonic() < deadline, "the subscription never arrived"
                await asyncio.sleep(0.002)
            assert pub.recv() == b"\x01"  # subscribed to every topic
        deadline = time.monotonic() + 10
        while not all((s := streams.get(n)) is not None and s.connected for n in NAMES):
            assert time.monotonic() < deadline, "the subscribers never connected"
            await asyncio.sleep(0.002)
        by_name = {n: streams.get(n) for n in NAMES}
        if first_alone:
            for pub, batches in zip(publishers, messages):
                seq, payload = batches[0]
                pub.send_multipart((b"", seq.to_bytes(8, "big"), payload))
            while any(s is None or s.counters.applied < 1 for s in by_name.values()):
                assert time.monotonic() < deadline, "the first batches never arrived"
                await asyncio.sleep(0.002)
        for pub, batches in zip(publishers, messages):
            for seq, payload in batches[1 if first_alone else 0 :]:
                pub.send_multipart((b"", seq.to_bytes(8, "big"), payload))
        deadline = time.monotonic() + 10
        while any(
            s is None or s.counters.batches < len(b) for s, b in zip(by_name.values(), messages)
        ):
            assert time.monotonic() < deadline, "the batches never all arrived"
            await asyncio.sleep(0.005)
        return outcome(index, {n: s for n, s in by_name.items() if s is not None})
    finally:
        await subscribers.stop()
        for pub in publishers:
            pub.close(linger=0)
        ctx.term()


@needs_lane
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(streams_of_batches(), min_size=2, max_size=2))
def test_the_lane_ends_where_the_python_path_ends(messages: list[list[tuple[int, bytes]]]) -> None:
    expected = python_path(messages)
    assert asyncio.run(through_the_lane(messages)) == expected


@needs_lane
def test_a_steady_in_order_stream_is_applied_by_the_lane_not_the_python_path() -> None:
    """The point of the lane: once a stream is live, its batches never reach `on_live`. (What
    arrives together with a batch the lane hands back goes the Python way too, in order: a
    burst before a stream is live is read by the Python path.)"""
    messages = []
    for name_index in range(2):
        batches = [(0, encode_batch(KVEventBatch(0.0, [], 0)))]
        for seq in range(1, 200):
            block = 1000 * (name_index + 1) + seq
            events: list[Event] = [
                BlockStored([block], block - 1, TOKENS[:16], 16, None, "GPU", None)
            ]
            if seq > 50:
                events.append(BlockRemoved([block - 50], "GPU"))
            batches.append((seq, encode_batch(KVEventBatch(0.0, events, 0))))
        messages.append(batches)
    calls = 0
    original = EndpointStream.on_live

    def counted(self: EndpointStream, seq: int, payload: bytes, now: float) -> int | None:
        nonlocal calls
        calls += 1
        return original(self, seq, payload, now)

    EndpointStream.on_live = counted  # type: ignore[method-assign]
    try:
        got = asyncio.run(through_the_lane(messages, first_alone=True))
    finally:
        EndpointStream.on_live = original  # type: ignore[method-assign]
    assert got == python_path(messages)
    assert got.counts == {n: 50 for n in NAMES}
    assert calls == 2, f"{calls} batches took the Python path"  # each stream's first


@needs_lane
async def test_a_lane_that_fails_is_a_dead_subscriber_restarted_like_any_other() -> None:
    """An error inside the native drain (here: a lane left without its index entry, as a bug
    would) must not stop ingestion: every laned subscriber dies, falls back, and is restarted
    with a fresh lane after the backoff, and its batches apply again."""
    ctx = zmq.Context()
    port = free_port_block(1)
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # the restarted subscriber's subscription shows too
    pub.bind(f"tcp://127.0.0.1:{port}")
    registry = EndpointRegistry()
    registry.set_endpoints([Endpoint("pod", "127.0.0.1", 8000)])
    index = PreciseIndex(KEYS)
    streams = KVEventStreams(index)
    subscribers = KVEventsSubscribers(
        registry,
        streams,
        SubscriberSettings(
            socket_port=port, tick_s=0.01, drain_interval_s=0.002, restart_backoff_s=0.05
        ),
    )
    await subscribers.start()

    def send(seq: int, block: int) -> None:
        stored = BlockStored([block], block - 1, TOKENS[:16], 16, None, "GPU", None)
        pub.send_multipart((b"", seq.to_bytes(8, "big"), encode_batch(KVEventBatch(0, [stored]))))

    async def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.005)

    try:
        while not pub.poll(0):
            await asyncio.sleep(0.002)
        pub.recv()
        await until(lambda: (s := streams.get("pod")) is not None and s.connected)
        send(0, 101)
        send(1, 102)
        await until(lambda: index.held("pod") == {101, 102})
        subscriber = subscribers.subscriber("pod")
        assert subscriber is not None and subscriber.lane is not None and subscriber.lane.open
        subscriber.lane.owners = None  # the next drain raises inside the lane
        send(2, 103)
        await until(lambda: subscribers.restarts >= 1)
        restarted = subscribers.subscriber("pod")
        assert restarted is not None and restarted is not subscriber and restarted.alive
        # connected again (which clears the view: a reconnect may be a restarted engine), and
        # subscribed again
        await until(lambda: (s := streams.get("pod")) is not None and s.connected)
        while not (pub.poll(0) and pub.recv() == b"\x01"):
            await asyncio.sleep(0.002)
        for seq in range(0, 3):  # the engine's next batches (as a restart of ours sees them)
            send(seq, 201 + seq)
        await until(lambda: {201, 202, 203} <= index.held("pod"))
    finally:
        await subscribers.stop()
        pub.close(linger=0)
        ctx.term()
