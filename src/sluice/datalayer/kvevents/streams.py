"""Every endpoint's KV-event stream, and where each one's sockets are (pure).

Addresses follow upstream's per-pod discovery (``kvEventsConfig.podDiscoveryConfig``): the
endpoint's address, port ``socketPort + rank`` for the PUB socket and ``replaySocketPort +
rank`` for the replay ROUTER, ``rank`` being the index of the pool's target port (the
``-rank-<i>`` of the endpoint's name) — vLLM offsets a data-parallel rank's ports the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.kvevents.stream import EndpointStream, KVEventSink, Mode, StreamSettings

_RANK = re.compile(r"-rank-(\d+)$")


@dataclass(frozen=True, slots=True)
class StreamAddress:
    publisher: str  # tcp://host:port of the engine's PUB socket
    replay: str | None  # tcp://host:port of its replay ROUTER, if it has one


def rank_of(endpoint: Endpoint) -> int:
    match = _RANK.search(endpoint.name)
    return int(match.group(1)) if match else 0


def address_of(endpoint: Endpoint, socket_port: int, replay_socket_port: int) -> StreamAddress:
    rank = rank_of(endpoint)
    host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
    replay = f"tcp://{host}:{replay_socket_port + rank}" if replay_socket_port > 0 else None
    return StreamAddress(f"tcp://{host}:{socket_port + rank}", replay)


class KVEventStreams:
    """The streams of the pool's endpoints, all feeding one sink."""

    def __init__(self, sink: KVEventSink, settings: StreamSettings | None = None) -> None:
        self.sink = sink
        self.settings = settings or StreamSettings()
        self._streams: dict[str, EndpointStream] = {}

    def add(self, name: str, *, replay: bool) -> EndpointStream:
        """A fresh stream for `name` (replacing any old one: its entries are cleared)."""
        old = self._streams.get(name)
        if old is not None:
            self.sink.clear(name)
        stream = EndpointStream(name, self.sink, replace(self.settings, replay=replay))
        self._streams[name] = stream
        return stream

    def remove(self, name: str) -> None:
        """The endpoint left the pool: forget its entries."""
        if self._streams.pop(name, None) is not None:
            self.sink.forget(name)

    def get(self, name: str) -> EndpointStream | None:
        return self._streams.get(name)

    def mode(self, name: str) -> tuple[Mode, str]:
        stream = self._streams.get(name)
        if stream is None:
            return "fallback", "no subscriber"
        return stream.mode()

    def __iter__(self) -> Iterator[EndpointStream]:
        return iter(list(self._streams.values()))

    def __len__(self) -> int:
        return len(self._streams)
