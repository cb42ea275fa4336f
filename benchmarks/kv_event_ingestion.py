"""CPU cost of ingesting KV events from N engines at R events/s each (target: 100 engines x
1,000 events/s <= 10% of one core).

A subprocess plays N vLLM engines: a ZMQ PUB socket and a replay ROUTER each, publishing
vLLM-encoded batches at the configured rate. This process runs Sluice's real subscribers (one
per engine, following an endpoint registry) into the real precise index and measures its own
CPU time over a window, after a warm-up that fills every engine's share. Every hash is new, so
nothing is a no-op for the index.

The traffic has the shape a real vLLM engine sends (vllm-project/vllm, read 2026-12-02):

* one ZMQ message per engine step, ``(topic, seq, payload)``: the scheduler collects the step's
  events (``kv_cache_manager.take_events()`` plus the connector's) and, if there are any,
  publishes one ``KVEventBatch(ts, events)``; ``ZmqEventPublisher`` adds
  ``data_parallel_rank`` and sends it as one multipart message
  (``vllm/v1/core/sched/scheduler.py``, ``vllm/distributed/kv_events.py``);
* one ``BlockStored`` per request per step that filled blocks, listing all of them
  (``BlockPool.cache_full_blocks``): a prefill chunk's many blocks, or one block for a decoding
  request every ``block_size`` (16) tokens, with the blocks' token ids;
* one ``BlockRemoved`` per evicted block, one hash each (``BlockPool._maybe_evict_cached_block``
  appends ``BlockRemoved(block_hashes=[hash], medium="GPU")`` for every block it takes from the
  free queue), so under eviction pressure the blocks removed equal the blocks stored and most
  events are removals;
* events as maps tagged by ``"type"`` (``--layout map``, vLLM after vllm-project/vllm#42892,
  with the fields a 0.26 engine sends: ``extra_keys``, ``group_idx``, ``kv_cache_spec_kind``;
  encoded by the simulator's vLLM encoder), or the older positional arrays (``--layout array``).

"Event" is vLLM's: one BlockStored, BlockRemoved or AllBlocksCleared entry of a batch (a
BlockStored names several blocks); the rate is events, not blocks and not messages.

Windows of the same length, one after the other against the same publishers:

1. Sluice's default where the extension is built: the native lane (`datalayer/kvevents/lane.py`:
   each engine's TCP connection read as ZMTP on the drain timer, in-order batches decoded and
   applied in C into the native key table), its own subscribers and index;
2. then, after a fresh warm-up, what an install without the extension runs: pyzmq SUB sockets,
   the Python path and a dict (`native_lane=False`) — what the lane is measured against, in
   this run;
3. that path's receive floor: the same sockets and stream state machines without decoding or
   applying (each batch only advances the stream's sequence) — what ZMQ, pyzmq and the event
   loop cost at this message rate before Python looks at a payload.

The defaults (per message ``--stored 2`` BlockStored of ``--blocks 8`` blocks, hence 16
single-block BlockRemoved: 18 events, 32 blocks, ~55 messages/s per engine at 1,000 events/s)
come from an assumed workload, not a trace: requests of ~1,000 new prompt tokens (62 blocks,
one BlockStored) and ~250 output tokens (15 decode blocks, 15 BlockStored), so a request is 16
BlockStored averaging 4.8 blocks and 77 BlockRemoved; 1,000 events/s is then ~11 requests/s
and ~830 blocks/s an engine, and at a ~20 ms decode step (~50 steps/s, nearly every one
filling some block) ~20 events a message.

Run: .venv/bin/python benchmarks/kv_event_ingestion.py [--engines 100] [--rate 1000]
     [--seconds 10] [--stored 2] [--blocks 8] [--layout map|array] [--key-space engine|own]
     [--drain-interval 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from sluice.bench.harness.child import child_env, exit_on_sigterm
from sluice.bench.harness.cpu import thread_cpu_seconds
from sluice.bench.harness.ports import free_port_block
from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.kvevents.lane import NATIVE
from sluice.datalayer.kvevents.manager import KVEventsSubscribers, SubscriberSettings
from sluice.datalayer.kvevents.stream import EndpointStream, StreamSettings
from sluice.datalayer.kvevents.streams import KVEventStreams
from sluice.datalayer.registry import EndpointRegistry
from sluice.scheduling.precise_hashing import BlockKeys
from sluice.scheduling.precise_index import PreciseIndex
from sluice.sim.block_hash import BlockHasher
from sluice.sim.kv_events import (
    FULL_ATTENTION,
    BlockRemoved,
    BlockStored,
    Event,
    KVEventBatch,
    Layout,
    encode_batch,
)


class Traffic:
    """One engine's batches: `stored` BlockStored of `blocks` new blocks each, then one
    single-hash BlockRemoved per block over `capacity` (oldest first), as vLLM's block pool
    reports a single-group (full-attention) model."""

    def __init__(self, stored: int, blocks: int, capacity: int, layout: Layout, seed: int) -> None:
        self.stored, self.blocks, self.capacity, self.layout = stored, blocks, capacity, layout
        self._rng = random.Random(seed)
        self._held: list[int] = []  # the engine's blocks, oldest first
        self._tokens = list(range(16 * blocks))
        self._extra = [None] * blocks  # vLLM sends one extra_keys entry per block
        # The first block is a real vLLM hash (seed "0"), so the index can check the seed; the
        # chain's later blocks are random 64-bit hashes (new every time, like new prompts).
        self._first = BlockHasher(16, "sha256", "0").hashes(self._tokens[:16])[0]

    def next(self, ts: float) -> bytes:
        held, rng = self._held, self._rng
        events: list[Event] = []
        for _ in range(self.stored):
            hashes = [rng.getrandbits(64) for _ in range(self.blocks)]
            parent = held[-1] if held else None
            if parent is None:
                hashes[0] = self._first
            stored = BlockStored(
                hashes, parent, self._tokens, 16, None, "GPU", None, self._extra, 0, FULL_ATTENTION
            )
            events.append(stored)
            held.extend(hashes)
        while len(held) > self.capacity:
            events.append(BlockRemoved([held.pop(0)], "GPU", 0))
        return encode_batch(KVEventBatch(ts, events, 0), layout=self.layout)


PUBLISHER = r"""
import sys, time
import zmq
sys.path.insert(0, {here!r})
from kv_event_ingestion import Traffic

engines, rate, stored, blocks, pub, replay, seconds, capacity, layout = {args}
ctx = zmq.Context()
pubs, routers = [], []
for i in range(engines):
    p = ctx.socket(zmq.PUB)
    p.setsockopt(zmq.SNDHWM, 100000)
    p.bind(f"tcp://127.0.0.1:{{pub + i}}")
    r = ctx.socket(zmq.ROUTER)
    r.bind(f"tcp://127.0.0.1:{{replay + i}}")
    pubs.append(p)
    routers.append(r)
events_per_batch = stored + stored * blocks
batches_per_s = rate / events_per_batch
traffic = [Traffic(stored, blocks, capacity, layout, seed=1 + i) for i in range(engines)]
seqs = [0] * engines
buffers = [[] for _ in range(engines)]

poller = zmq.Poller()
for r in routers:
    poller.register(r, zmq.POLLIN)
time.sleep(1.0)  # subscribers connect
print("ready", flush=True)
start = time.monotonic()
sent = 0
tick = 0.01
while time.monotonic() - start < seconds:
    due = int((time.monotonic() - start) * batches_per_s) + 1
    for i in range(engines):
        while seqs[i] < due:
            payload = traffic[i].next(time.time())
            pubs[i].send_multipart((b"", seqs[i].to_bytes(8, "big"), payload))
            buffers[i].append((seqs[i], payload))
            if len(buffers[i]) > 10000:
                buffers[i].pop(0)
            seqs[i] += 1
            sent += 1
    for sock, _ in poller.poll(0):
        client, _, start_seq = sock.recv_multipart()
        i = routers.index(sock)
        first = int.from_bytes(start_seq, "big")
        for seq, payload in buffers[i]:
            if seq >= first:
                sock.send_multipart((client, b"", seq.to_bytes(8, "big"), payload))
        sock.send_multipart((client, b"", (-1).to_bytes(8, "big", signed=True), b""))
    time.sleep(tick)
print("sent", sent, flush=True)
"""


class ReceiveOnlyStream(EndpointStream):
    """The stream's state machine without decoding or applying: a batch only advances the
    sequence (the receive floor)."""

    def _apply(self, seq: int, payload: bytes) -> None:
        self.counters.applied += 1
        self.last_seq = seq
        self._last_payload = payload


def core_cost_per_batch(
    stored: int, blocks: int, capacity: int, layout: Layout, count: int = 5000
) -> float:
    """CPU per batch of the sans-I/O part alone: one stream into a fresh index."""
    traffic = Traffic(stored, blocks, capacity, layout, seed=2)
    payloads = [traffic.next(0.0) for _ in range(count)]
    index = PreciseIndex(BlockKeys(16, hash_seed="0"))
    stream = EndpointStream("e", index, StreamSettings(replay=False))
    stream.on_connected(0.0)
    warm = count // 2
    for seq in range(warm):
        stream.on_live(seq, payloads[seq], 0.0)
    t0 = time.process_time()
    for seq in range(warm, count):
        stream.on_live(seq, payloads[seq], 0.0)
    return (time.process_time() - t0) / (count - warm) * 1e6


def reference_loop_s() -> float:
    t0 = time.process_time()
    x = 0
    for i in range(10_000_000):
        x += i
    return time.process_time() - t0


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engines", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s per engine")
    parser.add_argument("--seconds", type=float, default=10.0, help="each measured window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--stored", type=int, default=2, help="BlockStored events per batch")
    parser.add_argument("--blocks", type=int, default=8, help="blocks per BlockStored")
    parser.add_argument("--key-space", choices=("engine", "own"), default="engine")
    parser.add_argument(
        "--layout",
        choices=("map", "array"),
        default="map",
        help="events as maps (vLLM after #42892) or positional arrays (before)",
    )
    parser.add_argument(
        "--capacity", type=int, default=2000, help="blocks an engine keeps before it evicts"
    )
    parser.add_argument(
        "--drain-interval",
        type=float,
        default=SubscriberSettings().drain_interval_s,
        help="seconds between reads of every SUB socket (the subscribers' setting)",
    )
    args = parser.parse_args()
    args.pub_port = free_port_block(args.engines, below_ephemeral=True)
    args.replay_port = free_port_block(args.engines, avoid=args.pub_port, below_ephemeral=True)
    total = 2 * args.warmup + 3 * args.seconds + 4
    code = PUBLISHER.format(
        here=str(Path(__file__).resolve().parent),
        args=(
            args.engines,
            args.rate,
            args.stored,
            args.blocks,
            args.pub_port,
            args.replay_port,
            total,
            args.capacity,
            args.layout,
        ),
    )
    publisher = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=child_env()
    )
    registry = EndpointRegistry()
    registry.set_endpoints(
        Endpoint(f"engine-rank-{i}", "127.0.0.1", 8000 + i) for i in range(args.engines)
    )
    seed = "0" if args.key_space == "engine" else ""

    def subscribing(native: bool) -> tuple[PreciseIndex, KVEventStreams, KVEventsSubscribers]:
        """A fresh index and the subscribers feeding it (native: lane, ZMTP reader, key table
        where built; else pyzmq SUB sockets, the Python path and a dict)."""
        index = PreciseIndex(BlockKeys(16, hash_seed=seed))
        if not native:
            index._owners = {}  # the dict the Python-only install has
        streams = KVEventStreams(index)
        settings = SubscriberSettings(
            socket_port=args.pub_port,
            replay_socket_port=args.replay_port,
            drain_interval_s=args.drain_interval,
            native_lane=native,
        )
        return index, streams, KVEventsSubscribers(registry, streams, settings)

    arms = [True, False] if NATIVE is not None else [False]
    index, streams, subscribers = subscribing(arms[0])
    await subscribers.start()
    assert publisher.stdout is not None
    ready = await asyncio.get_running_loop().run_in_executor(None, publisher.stdout.readline)
    if not ready.startswith("ready"):
        raise SystemExit("the publisher process failed to start (see above)")
    await asyncio.sleep(args.warmup)  # long enough for every engine to reach its capacity
    main_thread = threading.get_native_id()
    events_per_batch = args.stored + args.stored * args.blocks

    async def window(streams: KVEventStreams) -> tuple[float, float, int, int, dict[str, float]]:
        """(wall s, CPU s, batches, gaps, CPU share by thread) over one window."""
        b0 = sum(s.counters.applied for s in streams)
        g0 = sum(s.counters.gaps for s in streams)
        t0 = thread_cpu_seconds()
        c0, w0 = time.process_time(), time.monotonic()
        await asyncio.sleep(args.seconds)
        c1, w1 = time.process_time(), time.monotonic()
        t1 = thread_cpu_seconds()
        wall = w1 - w0
        split = {
            ("event loop" if tid == main_thread else f"thread {tid}"): (t1[tid] - t0.get(tid, 0.0))
            / wall
            for tid in t1
        }
        batches = sum(s.counters.applied for s in streams) - b0
        return wall, c1 - c0, batches, sum(s.counters.gaps for s in streams) - g0, split

    def report(label: str, wall: float, cpu: float, batches: int, split: dict[str, float]) -> None:
        events = batches * events_per_batch
        print(
            f"{label}: {cpu / wall * 100:.1f}% of one core at {events / wall:,.0f} events/s "
            f"({batches / wall:,.0f} batches/s; {cpu / max(events, 1) * 1e6:.2f} us per event, "
            f"{cpu / max(batches, 1) * 1e6:.1f} us per batch)"
        )
        print(
            "  by thread: "
            + ", ".join(f"{name} {share * 100:.1f}%" for name, share in split.items() if share > 0)
            + " (with pyzmq sockets, the other thread is libzmq's I/O: TCP and framing)"
        )

    names = [f"engine-rank-{i}" for i in range(args.engines)]
    laned = None
    if arms[0]:
        laned = await window(streams)
        lane_held = len(index)
        await subscribers.stop()
        index, streams, subscribers = subscribing(False)  # the Python path, same publishers
        await subscribers.start()
        await asyncio.sleep(args.warmup)
    wall, cpu, batches, gaps, split = await window(streams)
    modes = [streams.mode(name)[0] for name in names]
    held = len(index)
    for stream in streams:
        stream.__class__ = ReceiveOnlyStream
    floor_wall, floor_cpu, floor_batches, floor_gaps, floor_split = await window(streams)
    await subscribers.stop()
    publisher.wait(timeout=30)
    print(
        f"engines={args.engines} target={args.rate:.0f} events/s each "
        f"({args.stored} BlockStored x {args.blocks} blocks + removals per batch: "
        f"{events_per_batch} events, {2 * args.stored * args.blocks} blocks) "
        f"key space={args.key_space} layout={args.layout} drain interval={args.drain_interval} s"
    )
    print(
        f"ingesting: gaps {gaps}; endpoints precise {modes.count('precise')}/{args.engines}; "
        f"index holds {held:,} blocks"
    )
    if laned is None:
        print("the native lane is not built: the Python path alone")
    else:
        lane_wall, lane_cpu, lane_batches, lane_gaps, lane_split = laned
        report(
            f"native lane (gaps {lane_gaps}; index {lane_held:,} blocks)",
            lane_wall,
            lane_cpu,
            lane_batches,
            lane_split,
        )
    report("Python path (pyzmq, decode, apply, dict)", wall, cpu, batches, split)
    if laned is not None:
        print(
            f"native lane / Python path, CPU per batch: "
            f"{lane_cpu / max(lane_batches, 1) / (cpu / max(batches, 1)):.2f}"
        )
    report(
        f"Python path's receive floor (no decode, no apply; gaps {floor_gaps})",
        floor_wall,
        floor_cpu,
        floor_batches,
        floor_split,
    )
    per_batch = cpu / max(batches, 1) - floor_cpu / max(floor_batches, 1)
    print(f"Python decoding + applying, by difference: {per_batch * 1e6:.1f} us per batch")
    core_us = core_cost_per_batch(args.stored, args.blocks, args.capacity, args.layout)
    print(
        f"decoding + applying alone (no sockets, one stream into a fresh index, same process, "
        f"after the windows): {core_us:.1f} us per batch. "
        f"Reference: {reference_loop_s():.2f} s for 10 M loop iterations here"
    )


if __name__ == "__main__":
    exit_on_sigterm()
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
