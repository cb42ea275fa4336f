"""The shell that keeps one subscriber per endpoint of the pool, as endpoints come and go.

It follows the endpoint registry's membership (polling its version, as the scraper does), opens
a subscriber for each new endpoint, closes and forgets removed ones, ticks every stream, and
restarts a subscriber that died (a socket error, a bug in applying events) after a short
backoff. While a subscriber is down its endpoint reports ``fallback`` ("subscriber down").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from sluice.datalayer.kvevents.lane import NATIVE
from sluice.datalayer.kvevents.streams import KVEventStreams, StreamAddress, address_of
from sluice.datalayer.kvevents.subscriber import EndpointSubscriber
from sluice.datalayer.registry import EndpointRegistry

log = logging.getLogger("sluice.kvevents")


@dataclass(frozen=True, slots=True)
class SubscriberSettings:
    """Upstream's ``kvEventsConfig``: ``topicFilter`` and ``podDiscoveryConfig``'s ports."""

    topic_filter: str = ""
    socket_port: int = 5557
    replay_socket_port: int = 0  # 0: the engines have no replay endpoint
    tick_s: float = 0.1
    restart_backoff_s: float = 0.5
    # Read every SUB socket this often (0: as soon as each signals). Batches then wait at most
    # this long, and one wake-up reads many: ZMQ's per-message signalling is most of the cost.
    drain_interval_s: float = 0.02
    # Read in-order streams with the native lane where it is built (lane.py); False: the
    # Python path alone.
    native_lane: bool = True


class KVEventsSubscribers:
    def __init__(
        self,
        registry: EndpointRegistry,
        streams: KVEventStreams,
        settings: SubscriberSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self.streams = streams
        self.settings = settings or SubscriberSettings()
        self._clock = clock
        self._ctx: zmq.Context = zmq.Context()  # type: ignore[type-arg]
        self._subscribers: dict[str, EndpointSubscriber] = {}
        self._down_since: dict[str, float] = {}
        self._seen_version = -1
        self._task: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._poller = zmq.Poller()
        self._polled: dict[zmq.Socket, EndpointSubscriber] = {}  # type: ignore[type-arg]
        self._laned: dict[Any, EndpointSubscriber] = {}  # lane -> its subscriber
        self.restarts = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sluice-kv-events")
        if self.settings.drain_interval_s > 0:
            self._drainer = asyncio.create_task(self._drain(), name="sluice-kv-events-drain")

    async def stop(self) -> None:
        for task in (self._task, self._drainer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._drainer = None
        for subscriber in self._subscribers.values():
            subscriber.close()
        self._subscribers.clear()
        self._ctx.term()

    def subscriber(self, name: str) -> EndpointSubscriber | None:
        return self._subscribers.get(name)

    async def _drain(self) -> None:
        interval = self.settings.drain_interval_s
        while True:
            await asyncio.sleep(interval)
            self.drain()

    def drain(self) -> None:
        """Read every connection that has batches waiting: the lanes' in one native call, the
        pyzmq SUB sockets' with one poll over all of them."""
        if self._laned:
            assert NATIVE is not None
            try:
                closed = NATIVE.drain(list(self._laned), self._clock())
            except Exception as exc:  # a bug or no memory: restarted like any dead subscriber
                log.exception("kv-events native lane failed")
                for dead in list(self._laned.values()):
                    dead._die(exc)
                closed = []
            for lane in closed:
                owner = self._laned.get(lane)
                if owner is not None:
                    owner.take_back()
        if not self._polled:
            return
        for sock in [s for s in self._polled if s.closed]:  # closed under us: a dead subscriber
            self._polled.pop(sock)
            self._poller.unregister(sock)
        for sock, _ in self._poller.poll(0):
            subscriber = self._polled.get(sock)
            if subscriber is not None:
                subscriber.drain(ready=True)

    def _forget_socket(self, subscriber: EndpointSubscriber) -> None:
        for lane in [lane for lane, owner in self._laned.items() if owner is subscriber]:
            self._laned.pop(lane)
        for sock, owner in list(self._polled.items()):
            if owner is subscriber:
                self._polled.pop(sock)
                self._poller.unregister(sock)

    async def _run(self) -> None:
        while True:
            self.step()
            await asyncio.sleep(self.settings.tick_s)

    def step(self) -> None:
        """Follow membership, restart dead subscribers, tick the live ones."""
        if self._registry.version != self._seen_version:
            self._seen_version = self._registry.version
            self._sync()
        now = self._clock()
        for name, subscriber in list(self._subscribers.items()):
            if subscriber.alive:
                subscriber.tick()
                continue
            down = self._down_since.setdefault(name, now)
            if now - down >= self.settings.restart_backoff_s:
                self.restarts += 1
                log.info("restarting kv-events subscriber for %s", name)
                self._forget_socket(subscriber)
                subscriber.close()
                self._down_since.pop(name, None)
                self._open(name, subscriber.address, fresh=False)

    def _sync(self) -> None:
        s = self.settings
        wanted: dict[str, StreamAddress] = {
            state.name: address_of(state.endpoint, s.socket_port, s.replay_socket_port)
            for state in self._registry.snapshot()
        }
        for name in [n for n in self._subscribers if n not in wanted]:
            gone = self._subscribers.pop(name)
            self._forget_socket(gone)
            gone.close()
            self._down_since.pop(name, None)
            self.streams.remove(name)
        for name, address in wanted.items():
            current = self._subscribers.get(name)
            if current is not None and current.address == address:
                continue
            if current is not None:  # same name, new address: a new pod
                self._forget_socket(current)
                current.close()
            self._open(name, address, fresh=True)

    def _open(self, name: str, address: StreamAddress, *, fresh: bool) -> None:
        stream = self.streams.get(name)
        if fresh or stream is None:
            stream = self.streams.add(name, replay=address.replay is not None)
        polled = self.settings.drain_interval_s > 0
        subscriber = EndpointSubscriber(
            stream,
            address,
            topic=self.settings.topic_filter,
            context=self._ctx,
            clock=self._clock,
            watch=not polled,
            native=self.settings.native_lane,
        )
        self._subscribers[name] = subscriber
        try:
            subscriber.start()
        except Exception as exc:  # a bad address: retried like a dead subscriber
            subscriber._die(exc)
            return
        sock = subscriber.socket
        if polled and sock is not None:
            self._poller.register(sock, zmq.POLLIN)
            self._polled[sock] = subscriber
        if subscriber.lane is not None:
            self._laned[subscriber.lane] = subscriber
