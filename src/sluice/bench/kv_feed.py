"""KV events in virtual time: each simulated engine's events reach the precise scorers' streams
as its vLLM ZMQ publisher would deliver them — one batch per drain, numbered from 0 per engine
process (a restarted engine starts over at 0), encoded as vLLM encodes them, replays answered
from the engine's buffer — only without sockets and without loss."""

from __future__ import annotations

from sluice.datalayer.kvevents.stream import EndpointStream
from sluice.scheduling.precise_scorer import PrecisePrefixCacheScorer
from sluice.scheduling.scheduler import Scheduler
from sluice.sim.kv_events import KVEventBatch, encode_batch
from sluice.sim.virtual import VirtualCluster


def precise_scorers(scheduler: Scheduler) -> list[PrecisePrefixCacheScorer]:
    found: dict[int, PrecisePrefixCacheScorer] = {}
    for profile in scheduler.profiles.values():
        for scorer, _ in profile.scorers:
            if isinstance(scorer, PrecisePrefixCacheScorer):
                found[id(scorer)] = scorer
    return list(found.values())


class VirtualKVEvents:
    def __init__(self, cluster: VirtualCluster, scorers: list[PrecisePrefixCacheScorer]) -> None:
        self.cluster = cluster
        self._buffers: dict[str, list[bytes]] = {eid: [] for eid in cluster.engines}
        self._restarts = dict(cluster.restarts)
        self._streams: dict[str, list[EndpointStream]] = {eid: [] for eid in cluster.engines}
        for scorer in scorers:
            for eid in cluster.engines:
                stream = scorer.streams.add(eid, replay=True)
                self._streams[eid].append(stream)
                self._replay(eid, stream, stream.on_connected(0.0), 0.0)

    def deliver(self, now: float) -> None:
        """Publish what every engine did since the last call."""
        for eid, engine in self.cluster.engines.items():
            if self.cluster.restarts[eid] != self._restarts[eid]:
                self._restarts[eid] = self.cluster.restarts[eid]
                self._buffers[eid] = []  # a new process: a new publisher
            events = engine.take_kv_events()
            if not events:
                continue
            buffer = self._buffers[eid]
            seq = len(buffer)
            payload = encode_batch(KVEventBatch(now, events, 0))
            buffer.append(payload)
            for stream in self._streams[eid]:
                self._replay(eid, stream, stream.on_live(seq, payload, now), now)

    def _replay(self, eid: str, stream: EndpointStream, start: int | None, now: float) -> None:
        while start is not None:
            for seq in range(start, len(self._buffers[eid])):
                stream.on_replayed(seq, self._buffers[eid][seq], now)
            start = stream.on_replay_done(now)
