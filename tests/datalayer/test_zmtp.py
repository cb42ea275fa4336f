"""Sluice's own ZMTP reading (the native lane's connection, `zmtp.py` and `_lane.c`), against
what libzmq does and against hostile bytes: the handshake is the one libzmq's SUB makes and a
libzmq PUB accepts; the framing takes messages split anywhere across reads, answers heartbeats,
and ends a connection — naming why — on a frame over the limit, a command inside a message, or
unknown flags, instead of buffering without bound."""

from __future__ import annotations

import socket
import time

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.datalayer.kvevents.lane import NATIVE
from sluice.datalayer.kvevents.zmtp import ZmtpError, greeting, read_handshake, ready

needs_lane = pytest.mark.skipif(NATIVE is None, reason="the native lane is not built")


def libzmq_sub_bytes(minor: int) -> bytes:
    """What a libzmq SUB sends a publisher that greeted it as ZMTP 3.`minor` (captured on a
    plain TCP server)."""
    server = socket.create_server(("127.0.0.1", 0))
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"kv@")
    sub.connect(f"tcp://127.0.0.1:{server.getsockname()[1]}")
    peer, _ = server.accept()
    peer.settimeout(0.5)
    peer.sendall(greeting()[:11] + bytes((minor,)) + greeting()[12:])
    ready_body = b"\x05READY\x0bSocket-Type" + (3).to_bytes(4, "big") + b"PUB"
    peer.sendall(bytes((4, len(ready_body))) + ready_body)
    data = b""
    try:
        while len(data) < 200:
            chunk = peer.recv(1000)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    sub.close(linger=0)
    ctx.term()
    peer.close()
    server.close()
    return data


@pytest.mark.parametrize("minor", [0, 1])
def test_the_handshake_is_the_one_libzmqs_own_sub_makes(minor: int) -> None:
    assert greeting() + ready(b"kv@", minor) == libzmq_sub_bytes(minor)


def test_a_libzmq_pub_accepts_it_and_delivers_to_it() -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    peer = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        peer.sendall(greeting())
        data = b""
        while len(data) < 64:
            data += peer.recv(1000)
        peer.sendall(ready(b"", data[11]))
        while (handshake := read_handshake(data)) is None:
            data += peer.recv(1000)
        assert handshake.socket_type == b"PUB" and handshake.minor >= 0
        deadline = time.monotonic() + 5
        got = handshake.rest
        while b"payload" not in got:  # until the subscription has taken hold
            assert time.monotonic() < deadline
            pub.send_multipart((b"", (7).to_bytes(8, "big"), b"payload"))
            peer.settimeout(0.05)
            try:
                got += peer.recv(1000)
            except TimeoutError:
                pass
        # topic (MORE), sequence number (MORE), payload: ZMTP short frames
        assert b"\x01\x00\x01\x08" + (7).to_bytes(8, "big") + b"\x00\x07payload" in got
    finally:
        peer.close()
        pub.close(linger=0)
        ctx.term()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GET / HTTP/1.1\r\n", "not a ZMTP peer"),
        (b"\xff" + bytes(8) + b"\x01", "byte 10"),
        (b"\xff" + bytes(8) + b"\x7f\x02", "version 2"),
        (greeting()[:12] + b"CURVE".ljust(20, b"\x00") + bytes(32), "CURVE mechanism"),
        (greeting() + b"\x04\x0a\x05READY\x00\x00\x00\x00", "a READY property without"),
        (
            greeting() + b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x03SUB",
            "a SUB socket, not a PUB",
        ),
        (greeting() + b"\x00\x02hi", "not a command"),
    ],
)
def test_a_peer_that_is_not_a_null_mechanism_publisher_is_named(data: bytes, why: str) -> None:
    with pytest.raises(ZmtpError, match=why):
        read_handshake(data)


def frame(body: bytes, *, more: bool = False, command: bool = False) -> bytes:
    flags = (1 if more else 0) | (4 if command else 0)
    if len(body) > 255:
        return bytes((flags | 2,)) + len(body).to_bytes(8, "big") + body
    return bytes((flags, len(body))) + body


def message(seq: int, payload: bytes) -> bytes:
    return frame(b"", more=True) + frame(seq.to_bytes(8, "big"), more=True) + frame(payload)


class Connection:
    """A lane on one end of a socket pair; the test writes the publisher's bytes on the other."""

    def __init__(self) -> None:
        assert NATIVE is not None
        self.publisher, ours = socket.socketpair()
        ours.setblocking(False)
        self._ours = ours
        self.lane = NATIVE.Lane()
        self.lane.fd = ours.fileno()

    def drain(self) -> list[tuple[int, bytes]]:
        assert NATIVE is not None
        NATIVE.drain([self.lane], 0.0)
        out = list(self.lane.handed)
        del self.lane.handed[:]
        return out

    def close(self) -> None:
        self.publisher.close()
        self._ours.close()


@needs_lane
@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.binary(max_size=700), min_size=1, max_size=8),
    st.lists(st.integers(1, 64), min_size=1, max_size=30),
)
def test_messages_split_anywhere_across_reads_arrive_whole_and_in_order(
    payloads: list[bytes], cuts: list[int]
) -> None:
    """A closed lane (no index entry) hands every message back: whatever the TCP segments, each
    arrives once, whole, in order; a heartbeat between them is answered."""
    stream = b"".join(message(seq, p) for seq, p in enumerate(payloads))
    ping = frame(b"\x04PING\x00\x64ctx", command=True)
    connection = Connection()
    try:
        got: list[tuple[int, bytes]] = []
        at, pieces = 0, [*cuts]
        connection.publisher.sendall(ping)
        while at < len(stream):
            step = pieces.pop(0) if pieces else len(stream)
            connection.publisher.sendall(stream[at : at + step])
            at += step
            got += connection.drain()
        got += connection.drain()
        assert got == list(enumerate(payloads))
        assert not connection.lane.broken
        connection.publisher.settimeout(1)
        assert connection.publisher.recv(100) == frame(b"\x04PONGctx", command=True)
    finally:
        connection.close()


@needs_lane
@pytest.mark.parametrize(
    ("data", "why"),
    [
        (frame(b"x" * 2000), "larger than the limit"),
        (frame(b"", more=True) + frame(b"\x05READY", command=True), "a command inside a message"),
        (b"\x09\x01x", "unknown flags"),
        (frame(b"\x05ERROR\x03bye", command=True), "ERROR"),
    ],
)
def test_a_protocol_violation_ends_the_connection_and_says_why(data: bytes, why: str) -> None:
    connection = Connection()
    connection.lane.max_frame = 1024
    try:
        connection.publisher.sendall(message(0, b"ok") + data + message(1, b"after"))
        assert connection.drain() == [(0, b"ok")]
        assert connection.lane.broken and why in connection.lane.why
    finally:
        connection.close()


@needs_lane
def test_a_message_that_never_ends_is_not_buffered_without_bound() -> None:
    connection = Connection()
    connection.lane.max_frame = 1024
    try:
        chunk = frame(b"y" * 1000, more=True) * 8
        for _ in range(10):
            connection.publisher.sendall(chunk)
            connection.drain()
            if connection.lane.broken:
                break
        assert connection.lane.broken and "larger than the limit" in connection.lane.why
    finally:
        connection.close()


@needs_lane
def test_the_publisher_closing_ends_the_connection() -> None:
    connection = Connection()
    connection.publisher.sendall(message(3, b"last"))
    connection.publisher.shutdown(socket.SHUT_WR)
    try:
        assert connection.drain() + connection.drain() == [(3, b"last")]  # (EOF: the next read)
        assert connection.lane.broken and "closed" in connection.lane.why
    finally:
        connection.close()
