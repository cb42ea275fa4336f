"""The shell that puts an engine's KV-cache events on the wire as vLLM's ``ZmqEventPublisher``.

Framing (``vllm/distributed/kv_events.py``): every batch is one PUB multipart message
``(topic, seq, payload)`` — ``topic`` the configured string as UTF-8 (default empty), ``seq`` an
8-byte big-endian counter starting at 0 per publisher (so a restarted engine starts over at 0),
``payload`` the msgpack ``KVEventBatch``. The last ``buffer_steps`` batches are kept for the
optional replay ROUTER: a client (DEALER) sends ``(b"", start_seq)`` and gets
``(b"", seq, payload)`` for every buffered batch with ``seq >= start_seq``, then the end marker
``(b"", -1 as 8 signed bytes, b"")``.

One deviation, for a sim that must stay on its own address: a ``*`` host binds the engine's
``--host`` address rather than every interface (vLLM binds all of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

import zmq
import zmq.asyncio

from sluice.sim.kv_events import Event, KVEventBatch, KVEventsConfig, encode_batch

END_SEQ = (-1).to_bytes(8, "big", signed=True)
log = logging.getLogger("sluice.sim.kv_events")


def _binds(endpoint: str) -> bool:
    """vLLM's heuristic: bind a wildcard, IPv6 wildcard or local transport, connect otherwise."""
    return (
        "*" in endpoint
        or "::" in endpoint
        or endpoint.startswith("ipc://")
        or endpoint.startswith("inproc://")
    )


def _on_host(endpoint: str, host: str) -> str:
    return endpoint.replace("*", host) if "*" in endpoint else endpoint


async def _bind(sock: zmq.asyncio.Socket, address: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            sock.bind(address)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


class ZmqEventPublisher:
    """PUB socket + replay ROUTER for one engine (one data-parallel rank)."""

    def __init__(
        self,
        config: KVEventsConfig,
        *,
        endpoint: str,
        replay_endpoint: str | None,
        host: str = "127.0.0.1",
        data_parallel_rank: int = 0,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.config = config
        self.endpoint = endpoint
        self.replay_endpoint = replay_endpoint
        self._host = host
        self._rank = data_parallel_rank
        self._ctx = context or zmq.asyncio.Context.instance()
        self._topic = config.topic.encode()
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=config.buffer_steps)
        self._next_seq = 0
        self._pub: zmq.asyncio.Socket | None = None
        self._replay: zmq.asyncio.Socket | None = None
        self._replay_task: asyncio.Task[None] | None = None
        self.published = 0
        self.replays_served = 0
        # Fault injection (tests): the next N batches are buffered for replay but never sent
        # live, as if the network had lost them.
        self.drop_next = 0

    async def start(self, bind_timeout_s: float = 5.0) -> None:
        """Open the sockets. A port still held by a just-closed publisher (ZMQ releases it in
        the background; a restarted pod gets the same port) is retried for a while."""
        pub = self._ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, self.config.hwm)
        pub.setsockopt(zmq.LINGER, 0)
        self._pub = pub
        if _binds(self.endpoint):
            await _bind(pub, _on_host(self.endpoint, self._host), bind_timeout_s)
        else:
            pub.connect(self.endpoint)
        if self.replay_endpoint is not None:
            router = self._ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            self._replay = router
            await _bind(router, _on_host(self.replay_endpoint, self._host), bind_timeout_s)
            self._replay_task = asyncio.get_running_loop().create_task(
                self._serve_replays(router), name="sim-kv-replay"
            )

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def publish(self, events: list[Event], ts: float | None = None) -> int:
        """Send one batch now; returns its sequence number. A full PUB queue drops it (as
        vLLM's high-water mark does) but the replay buffer keeps it."""
        batch = KVEventBatch(
            ts=time.time() if ts is None else ts, events=events, data_parallel_rank=self._rank
        )
        payload = encode_batch(batch)
        seq = self._next_seq
        self._next_seq += 1
        self._buffer.append((seq, payload))
        if self.drop_next > 0:
            self.drop_next -= 1
        elif self._pub is not None:
            with contextlib.suppress(zmq.Again):
                self._pub.send_multipart(
                    (self._topic, seq.to_bytes(8, "big"), payload), zmq.NOBLOCK
                )
        self.published += 1
        return seq

    async def _serve_replays(self, router: zmq.asyncio.Socket) -> None:
        while True:
            frames = await router.recv_multipart()
            if len(frames) != 3:
                log.warning("invalid replay request with %d frames", len(frames))
                continue
            client, _, start_bytes = frames
            start = int.from_bytes(start_bytes, "big")
            for seq, payload in list(self._buffer):
                if seq >= start:
                    await router.send_multipart((client, b"", seq.to_bytes(8, "big"), payload))
            await router.send_multipart((client, b"", END_SEQ, b""))
            self.replays_served += 1

    async def close(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
            self._replay_task = None
        for sock in (self._pub, self._replay):
            if sock is not None:
                sock.close(linger=0)
        self._pub = self._replay = None
