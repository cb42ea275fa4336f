"""The shell of one endpoint's KV-event stream: a connection to the engine's PUB socket, a
DEALER on its replay ROUTER while a replay runs. It moves bytes into the stream's state machine
(`stream.EndpointStream`) and nothing else.

Where the native lane is built (`lane.py`) and the manager drains on a timer, the connection is
a plain TCP socket: this shell connects it (retrying every 0.1 s, backing off to 2 s, as a ZMQ
SUB socket does), makes the ZMTP handshake (`zmtp.py`) and hands it to the lane, which reads it
on the manager's timer; a connection made is the stream's `on_connected`, one that ends or
breaks the protocol its `on_disconnected`. Otherwise it is a pyzmq SUB socket with a socket
monitor for (re)connections, read as follows.

The sockets are plain non-blocking pyzmq sockets read from the event loop, drained until empty
(ZMQ signals edge-triggered): either as soon as the SUB socket's file descriptor signals, or —
the manager's default under load — on a timer for all subscribers at once, so that a wake-up
reads several batches instead of one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import zmq
from zmq.utils.monitor import recv_monitor_message

from sluice.datalayer.kvevents.lane import NATIVE
from sluice.datalayer.kvevents.stream import EndpointStream
from sluice.datalayer.kvevents.streams import StreamAddress
from sluice.datalayer.kvevents.wire import END_OF_REPLAY
from sluice.datalayer.kvevents.zmtp import (
    ZmtpError,
    greeting,
    greeting_minor,
    read_greeting,
    read_handshake,
    ready,
)

log = logging.getLogger("sluice.kvevents")
# getsockopt of pyzmq's Cython socket, without the Python wrapper's option-enum conversion.
_RAW_GETSOCKOPT = zmq.Socket.__mro__[1].get  # type: ignore[attr-defined]
_EVENTS, _POLLIN, _RCVMORE = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.RCVMORE)
_RECONNECT_IVL_MS = 100
_RECONNECT_IVL_MAX_MS = 2000
_HANDSHAKE_TIMEOUT_S = 5.0


class EndpointSubscriber:
    def __init__(
        self,
        stream: EndpointStream,
        address: StreamAddress,
        *,
        topic: str,
        context: zmq.Context,  # type: ignore[type-arg]
        clock: Callable[[], float],
        watch: bool = True,
        native: bool = True,
    ) -> None:
        self.stream = stream
        self.address = address
        self._topic = topic.encode()
        self._ctx = context
        self._clock = clock
        # Read the SUB socket as soon as it signals (True), or only when `drain()` is called
        # (the manager drains every subscriber on a timer: fewer wake-ups under load).
        self._watch = watch
        # The native lane on a TCP connection (read on the manager's timer): polled only.
        self._native = native and not watch and NATIVE is not None
        self.lane: Any = None
        self._tcp: socket.socket | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._broken = asyncio.Event()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sub: zmq.Socket | None = None  # type: ignore[type-arg]
        self._monitor: zmq.Socket | None = None  # type: ignore[type-arg]
        self._dealer: zmq.Socket | None = None  # type: ignore[type-arg]
        self.error: str | None = None  # why it died, once it has

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        if self._native:
            assert NATIVE is not None
            self.lane = NATIVE.Lane()
            self.stream.attach_lane(self.lane)
            self._connecting = loop.create_task(self._connect_loop(), name="sluice-kv-connect")
            self._connecting.add_done_callback(self._connect_ended)
            return
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_IVL_MS)
        sub.setsockopt(zmq.RECONNECT_IVL_MAX, _RECONNECT_IVL_MAX_MS)
        sub.setsockopt(zmq.SUBSCRIBE, self._topic)
        self._monitor = sub.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        sub.connect(self.address.publisher)
        self._sub = sub
        if self._watch:
            loop.add_reader(sub.FD, self._drain_sub)
        loop.add_reader(self._monitor.FD, self._drain_monitor)
        loop.call_soon(self._drain_monitor)

    # -- the native lane's connection ----------------------------------------------------------

    async def _connect_loop(self) -> None:
        """Connect, hand the connection to the lane, wait for it to end; again, backing off."""
        pause = _RECONNECT_IVL_MS / 1000
        while not self._closed:
            try:
                tcp, rest = await self._open()
            except (OSError, ZmtpError, TimeoutError, ValueError) as exc:
                # (unreachable, not a publisher, a bad address: retried, as a SUB socket does)
                log.debug("kv-events: %s not reachable: %s", self.address.publisher, exc)
                await asyncio.sleep(pause)
                pause = min(2 * pause, _RECONNECT_IVL_MAX_MS / 1000)
                continue
            pause = _RECONNECT_IVL_MS / 1000
            lane = self.lane
            self._tcp = tcp
            self._broken.clear()
            lane.reset()
            lane.feed(rest)
            lane.fd = tcp.fileno()
            try:
                self._connected()
            except Exception as exc:
                self._die(exc)
                return
            await self._broken.wait()
            if self._closed:
                return
            log.info("kv-events: %s disconnected: %s", self.address.publisher, lane.why)
            self._drop_connection()
            try:
                self._disconnected()
            except Exception as exc:
                self._die(exc)
                return
            await asyncio.sleep(pause)

    async def _open(self) -> tuple[socket.socket, bytes]:
        """A TCP connection to the PUB socket, past the ZMTP handshake, and the bytes read past
        it."""
        loop = asyncio.get_running_loop()
        url = urlsplit(self.address.publisher)
        if url.scheme != "tcp" or url.hostname is None or url.port is None:
            raise ZmtpError(f"not a tcp://host:port address: {self.address.publisher}")
        infos = await loop.getaddrinfo(url.hostname, url.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, where = infos[0]
        tcp = socket.socket(family, kind, proto)
        try:
            tcp.setblocking(False)
            tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            async with asyncio.timeout(_HANDSHAKE_TIMEOUT_S):
                await loop.sock_connect(tcp, where)
                await loop.sock_sendall(tcp, greeting())
                data = b""
                while not read_greeting(data):
                    data += await _received(loop, tcp)
                await loop.sock_sendall(tcp, ready(self._topic, greeting_minor(data)))
                while (handshake := read_handshake(data)) is None:
                    data += await _received(loop, tcp)
        except BaseException:
            tcp.close()
            raise
        return tcp, handshake.rest

    def _connect_ended(self, task: asyncio.Task[None]) -> None:
        """The connection loop ends only when closed; anything else is a bug: a dead
        subscriber, restarted by the manager."""
        if not task.cancelled() and task.exception() is not None and not self._closed:
            self._die(task.exception())  # type: ignore[arg-type]

    def on_broken(self) -> None:
        """The manager's drain found the connection ended (or broken): reconnect."""
        self._broken.set()

    def _drop_connection(self) -> None:
        if self.lane is not None:
            self.lane.reset()
        tcp, self._tcp = self._tcp, None
        if tcp is not None:
            tcp.close()

    @property
    def socket(self) -> zmq.Socket | None:  # type: ignore[type-arg]
        """The SUB socket (for a poller that drains many at once)."""
        return self._sub

    def drain(self, ready: bool = False) -> None:
        """Apply every batch waiting on the SUB socket (`ready`: a poll just said one does)."""
        self._drain_sub(ready)

    @property
    def alive(self) -> bool:
        if self._native:
            return self.error is None and not self._closed
        return self.error is None and self._sub is not None and not self._sub.closed

    def take_back(self) -> None:
        """What the lane read and did not apply, through the Python path, in order; then, if
        the connection ended, a reconnect."""
        lane = self.lane
        if lane is None:
            return
        handed = list(lane.handed)
        del lane.handed[:]
        now = self._clock()
        try:
            for seq, payload in handed:
                start = self.stream.on_live(seq, payload, now)
                if start is not None:
                    self._request_replay(start)
        except Exception as exc:
            self._die(exc)
            return
        if lane.broken:
            self.on_broken()

    def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        self._broken.set()
        if self.lane is not None:
            self.stream.attach_lane(None)  # takes in what it did; the connection goes next
            self._drop_connection()
            self.lane = None
        self._close_dealer()
        loop = self._loop
        for sock in (self._monitor, self._sub):
            if sock is None or sock.closed:
                continue
            if loop is not None and (sock is self._monitor or self._watch):
                loop.remove_reader(sock.FD)
            sock.close(linger=0)
        self._sub = self._monitor = None

    def _die(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        log.warning("kv-events subscriber for %s died: %s", self.stream.name, self.error)
        self.stream.on_disconnected(self._clock())
        self.stream.reason = "subscriber down"
        self.close()

    # -- time ----------------------------------------------------------------------------------

    def tick(self) -> None:
        """Let the stream time out replays and probe a silent engine."""
        if not self.alive:
            return
        try:
            start = self.stream.tick(self._clock())
            if self.stream.replay_start is None:
                self._close_dealer()
            if start is not None:
                self._request_replay(start)
        except Exception as exc:
            self._die(exc)

    # -- readers -------------------------------------------------------------------------------

    def _drain_sub(self, ready: bool = False) -> None:
        sub, stream, clock = self._sub, self.stream, self._clock
        if sub is None:
            return
        now = clock()  # one reading per wake-up: the batches drained here arrived together
        # vLLM's messages are exactly three frames: three plain recv() calls, and ZMQ_EVENTS
        # asked after each message (whether another waits) — not before the first when a poll
        # just said one waits (`ready`). Each getsockopt costs more than a recv() here (~1.5 us:
        # it processes the socket's commands), and ending on zmq.Again costs two of them, so
        # RCVMORE is not asked per message either: a message of other frames shows up as a
        # sequence frame that is not 8 bytes, the rest of it is skipped (RCVMORE, only then)
        # and counted malformed; a message lost or misread that way is a gap, replayed.
        recv, noblock, opt = sub.recv, zmq.NOBLOCK, _RAW_GETSOCKOPT
        try:
            while ready or opt(sub, _EVENTS) & _POLLIN:
                ready = False
                try:
                    recv(noblock)  # the topic: the subscription filter already matched it
                except zmq.Again:
                    return
                try:
                    seq, payload = recv(noblock), recv(noblock)
                except zmq.Again:  # a message of fewer than three frames, the last one
                    stream.counters.malformed += 1
                    return
                if len(seq) != 8:
                    while opt(sub, _RCVMORE):
                        recv(noblock)
                    stream.counters.malformed += 1
                    continue
                start = stream.on_live(int.from_bytes(seq, "big"), payload, now)
                if start is not None:
                    self._request_replay(start)
        except Exception as exc:
            self._die(exc)

    def _drain_monitor(self) -> None:
        monitor = self._monitor
        if monitor is None:
            return
        try:
            while _readable(monitor):
                event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
                if event == zmq.EVENT_CONNECTED:
                    self._connected()
                    if self._loop is not None:  # data may already be waiting
                        self._loop.call_soon(self._drain_sub)
                elif event == zmq.EVENT_DISCONNECTED:
                    self._disconnected()
        except Exception as exc:
            self._die(exc)

    def _connected(self) -> None:
        """The connection is up (the SUB monitor's event, or a ZMTP handshake made): a clean
        view, rebuilt from the publisher's retained history."""
        start = self.stream.on_connected(self._clock())
        self._close_dealer()
        if start is not None:
            self._request_replay(start)

    def _disconnected(self) -> None:
        self.stream.on_disconnected(self._clock())
        self._close_dealer()

    def _request_replay(self, start: int) -> None:
        self._close_dealer()
        if self.address.replay is None or self._loop is None:
            return
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(self.address.replay)
        dealer.send_multipart((b"", start.to_bytes(8, "big")), zmq.NOBLOCK)
        self._dealer = dealer
        self._loop.add_reader(dealer.FD, self._drain_dealer)
        self._loop.call_soon(self._drain_dealer)

    def _drain_dealer(self) -> None:
        dealer, stream, clock = self._dealer, self.stream, self._clock
        if dealer is None:
            return
        try:
            while dealer is self._dealer and _readable(dealer):
                frames = dealer.recv_multipart(zmq.NOBLOCK)
                if frames and not frames[0]:
                    frames = frames[1:]  # the ROUTER's empty delimiter
                if len(frames) != 2 or len(frames[0]) != 8:
                    stream.on_replay_failed(clock(), "malformed replay frame")
                    self._close_dealer()
                    return
                seq = int.from_bytes(frames[0], "big", signed=True)
                if seq == END_OF_REPLAY:
                    self._close_dealer()
                    start = stream.on_replay_done(clock())
                    if start is not None:
                        self._request_replay(start)
                    return
                stream.on_replayed(seq, frames[1], clock())
        except Exception as exc:
            self._die(exc)

    def _close_dealer(self) -> None:
        dealer, self._dealer = self._dealer, None
        if dealer is not None and not dealer.closed:
            if self._loop is not None:
                self._loop.remove_reader(dealer.FD)
            dealer.close(linger=0)


async def _received(loop: asyncio.AbstractEventLoop, tcp: socket.socket) -> bytes:
    chunk = await loop.sock_recv(tcp, 65536)
    if not chunk:
        raise ZmtpError("the publisher closed the connection in the handshake")
    return chunk


def _readable(sock: zmq.Socket) -> bool:  # type: ignore[type-arg]
    """Whether a message waits (ZMQ's FD only signals edges: drain until this is false)."""
    return bool(int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)
