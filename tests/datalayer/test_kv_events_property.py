"""The invariant KV-event routing rests on: whatever happens to the batches on the way — lost,
delivered twice through replays, interleaved with other endpoints' batches, an engine restarted
— once the stream has caught up, the precise index holds exactly the block set the engine's
allocator holds. Real simulated engines produce the events; the index is the real one."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hypothesis import given
from hypothesis import strategies as st

from sluice.datalayer.kvevents.stream import EndpointStream, StreamSettings
from sluice.scheduling.precise_hashing import BlockKeys
from sluice.scheduling.precise_index import KEY_MASK, PreciseIndex
from sluice.sim.engine import Engine
from sluice.sim.kv_events import KVEventBatch, encode_batch
from sluice.sim.request import SimRequest

SEED = "0"
PREFIXES = ["system: you are terse. ", "system: you are verbose! ", "tool: sql. "]


@dataclass
class SimulatedEngine:
    """An engine in virtual time plus what its ZMQ publisher has sent (its replay buffer)."""

    engine: Engine
    published: list[bytes] = field(default_factory=list)
    now: float = 0.0
    requests: int = 0

    @classmethod
    def fresh(cls) -> SimulatedEngine:
        engine = Engine.from_profile(
            num_gpu_blocks=12, hash_seed=SEED, enable_kv_cache_events=True, max_num_seqs=4
        )
        engine.cost = replace(engine.cost, frontend_s=0.0)  # requests reach the queue at once
        return cls(engine)

    def publish(self) -> None:
        events = self.engine.take_kv_events()
        if events:
            batch = KVEventBatch(ts=self.now, events=events, data_parallel_rank=0)
            self.published.append(encode_batch(batch))

    def serve(self, prefix: int, suffix: int, length: int) -> None:
        text = (PREFIXES[prefix] * 8)[: 40 * length] + f" question {suffix}" * length
        self.requests += 1
        request = SimRequest.from_text(f"r{self.requests}", text, max_tokens=3)
        self.engine.add_request(request, self.now)
        while self.engine.has_work:
            duration = self.engine.start_step(self.now)
            self.publish()
            if duration is None:
                break
            self.now += duration
            self.engine.finish_step(self.now)
            self.publish()


# One step of the world: an engine serves a request, a batch is delivered or lost, an engine
# restarts.
serve = st.tuples(
    st.just("serve"),
    st.integers(0, 1),
    st.integers(0, len(PREFIXES) - 1),
    st.integers(0, 5),
    st.integers(1, 6),
)
deliver = st.tuples(st.just("deliver"), st.integers(0, 1), st.booleans())
restart = st.tuples(st.just("restart"), st.integers(0, 1))
steps = st.lists(st.one_of(serve, serve, deliver, deliver, deliver, restart), max_size=60)


@given(steps)
def test_any_delivery_of_the_batches_rebuilds_the_allocators_true_block_set(plan: list) -> None:
    index = PreciseIndex(BlockKeys(16, hash_seed=SEED))
    engines = [SimulatedEngine.fresh(), SimulatedEngine.fresh()]
    streams = [EndpointStream(f"e{i}", index, StreamSettings()) for i in range(2)]
    delivered = [0, 0]  # how many of each engine's batches went out live (or were lost)
    clock = 0.0

    def replay(i: int, start: int | None) -> None:
        """The engine's ROUTER answers at once with what it buffered."""
        while start is not None:
            for seq, payload in enumerate(engines[i].published):
                if seq >= start:
                    streams[i].on_replayed(seq, payload, clock)
            start = streams[i].on_replay_done(clock)

    for i in range(2):
        replay(i, streams[i].on_connected(clock))
    for step in plan:
        clock += 0.01
        kind, i = step[0], step[1]
        if kind == "serve":
            engines[i].serve(*step[2:])
        elif kind == "deliver":
            if delivered[i] < len(engines[i].published):
                seq = delivered[i]
                delivered[i] += 1
                if step[2]:  # not lost
                    replay(i, streams[i].on_live(seq, engines[i].published[seq], clock))
        else:  # the engine restarts: a new allocator, sequence numbers from 0 again
            engines[i] = SimulatedEngine.fresh()
            delivered[i] = 0
            # Its PUB socket is a new connection, which the subscriber's socket monitor reports.
            # (Without that word, a restart whose first batch is lost is indistinguishable from
            # the old stream going on: the next sequence number is the one expected.)
            replay(i, streams[i].on_connected(clock))
    # Catch up: the rest arrives live, then a probe asks each engine what was missed.
    clock += 100.0
    for i in range(2):
        for seq in range(delivered[i], len(engines[i].published)):
            replay(i, streams[i].on_live(seq, engines[i].published[seq], clock))
        replay(i, streams[i].tick(clock))
    for i in range(2):
        truth = {h & KEY_MASK for h in engines[i].engine.kv.cached_hashes()}
        assert index.held(f"e{i}") == truth
        assert streams[i].mode()[0] in ("precise", "partial")
