"""Hypothesis throws frame sequences at Sluice's HTTP/2 server — well-formed calls, broken
messages, resets, window and settings changes, junk frames, split at random points — and checks
what must hold whatever arrives: the server never crashes, never hangs (each connection either
answers a PING or is closed), every call ends exactly once, and memory stays bounded."""

from __future__ import annotations

import asyncio
import logging
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from net.conftest import ECHO, HOLD
from net.h2_peer import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PRIORITY,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Wire,
    frame,
    grpc_message,
)
from net.test_h2_limits import _block

MiB = 1 << 20
stream_ids = st.sampled_from([0, 1, 3, 5, 7, 2, 9, 11, 0x7FFFFFFF])
flags = st.integers(0, 255)
u32 = st.integers(0, (1 << 32) - 1)


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _headers(path: str) -> st.SearchStrategy[bytes]:
    def build(stream_id: int, end: bool) -> bytes:
        return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), stream_id, _block(path))

    return st.builds(build, stream_ids, st.booleans())


messages = st.one_of(
    st.binary(max_size=64).map(grpc_message),  # whole messages
    st.binary(max_size=12),  # partial or nonsense framing
    u32.map(lambda n: b"\x00" + _u32(n)),  # a message header whose body never comes
    st.binary(max_size=8).map(lambda b: b"\x01" + _u32(len(b)) + b),  # compressed
)


def _data(stream_id: int, message: bytes, end: bool) -> bytes:
    return frame(DATA, END_STREAM if end else 0, stream_id, message)


def _settings(pairs: list[tuple[int, int]], ack: bool) -> bytes:
    body = b"".join(struct.pack(">HI", key, value) for key, value in pairs)
    return frame(SETTINGS, ACK if ack else 0, 0, body)


def _any(kind: int, flag_byte: int, stream_id: int, payload: bytes) -> bytes:
    return frame(kind, flag_byte, stream_id, payload)


def _rst(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _u32(code))


def _window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _u32(increment))


def _ping(payload: bytes, ack: bool) -> bytes:
    return frame(PING, ACK if ack else 0, 0, payload)


def _priority(stream_id: int, depends_on: int) -> bytes:
    return frame(PRIORITY, 0, stream_id, _u32(depends_on) + b"\x10")


def _goaway(code: int) -> bytes:
    return frame(GOAWAY, 0, 0, bytes(4) + _u32(code))


codes = st.integers(0, 14)
frames = st.one_of(
    _headers(ECHO),
    _headers(HOLD),
    _headers("/unknown.Service/Method"),
    st.builds(_data, stream_ids, messages, st.booleans()),
    st.builds(_rst, stream_ids, codes),
    st.builds(_window_update, stream_ids, st.integers(0, (1 << 31) - 1)),
    st.builds(_settings, st.lists(st.tuples(st.integers(0, 9), u32), max_size=3), st.booleans()),
    st.builds(_ping, st.binary(min_size=7, max_size=9), st.booleans()),
    st.builds(_priority, stream_ids, st.integers(0, 9)),
    st.builds(_any, st.just(CONTINUATION), flags, stream_ids, st.binary(max_size=8)),
    st.builds(_goaway, codes),
    st.builds(_any, st.integers(10, 255), flags, stream_ids, st.binary(max_size=16)),  # unknown
    st.builds(_any, st.integers(0, 9), flags, stream_ids, st.binary(max_size=24)),  # any known
)


# A conversation: mostly well-formed call traffic on the calls it opened, now and then a frame
# from anywhere in `frames` above. (Pure junk alone ends most connections at its first frame.)
paths = st.sampled_from([ECHO, HOLD, "/unknown.Service/Method"])
steps = st.one_of(
    st.tuples(st.just("open"), paths, st.booleans()),
    st.tuples(st.just("open"), paths, st.booleans()),
    st.tuples(st.just("message"), st.integers(0, 7), messages, st.booleans()),
    st.tuples(st.just("message"), st.integers(0, 7), messages, st.booleans()),
    st.tuples(st.just("message"), st.integers(0, 7), messages, st.booleans()),
    st.tuples(st.just("reset"), st.integers(0, 7), codes),
    st.tuples(st.just("window"), st.integers(-1, 7), st.integers(1, 1 << 20)),
    st.tuples(st.just("settings"), st.integers(0, (1 << 31) - 1), st.integers(16_384, 1 << 20)),
    st.tuples(st.just("ping"), st.binary(min_size=8, max_size=8)),
    st.tuples(st.just("frame"), frames),
)


def conversation(chosen: list[tuple]) -> bytes:  # type: ignore[type-arg]
    """The bytes of `chosen` steps; calls are numbered in the order they were opened."""
    opened: list[int] = []
    out = []
    for step in chosen:
        kind = step[0]
        if kind == "open":
            stream_id = 2 * len(opened) + 1
            opened.append(stream_id)
            end = END_STREAM if step[2] else 0
            out.append(frame(HEADERS, END_HEADERS | end, stream_id, _block(step[1])))
        elif kind == "frame":
            out.append(step[1])
        elif kind == "ping":
            out.append(_ping(step[1], False))
        elif kind == "settings":
            out.append(_settings([(4, step[1]), (5, step[2])], False))
        elif kind == "window" and step[1] < 0:
            out.append(_window_update(0, step[2]))
        elif opened:
            stream_id = opened[step[1] % len(opened)]
            if kind == "message":
                out.append(_data(stream_id, step[2], step[3]))
            elif kind == "reset":
                out.append(_rst(stream_id, step[2]))
            else:
                out.append(_window_update(stream_id, step[2]))
    return b"".join(out)


def pinged(frames_seen: list) -> bool:  # type: ignore[type-arg]
    return any(f.kind == PING and f.flags & ACK and f.payload == b"fuzzdone" for f in frames_seen)


class LoopErrors(logging.Handler):
    """Errors that reached asyncio's handler or our loggers: a crash by another name."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.slow
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    chosen=st.lists(steps, max_size=40).flatmap(
        lambda rest: st.tuples(st.just("open"), paths, st.just(False)).map(lambda o: [o, *rest])
    ),
    cuts=st.lists(st.integers(1, 64), max_size=6),
)
async def test_no_frame_sequence_crashes_hangs_leaks_or_ends_a_call_twice(
    server, recorder, chosen, cuts
):
    errors = LoopErrors()
    logging.getLogger().addHandler(errors)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: errors.records.append(context))  # type: ignore[arg-type]
    first_call = len(recorder.calls)
    tracemalloc.start()
    try:
        wire = await Wire.open(server.port)
        data = conversation(chosen)
        position = 0
        for cut in cuts:  # the same bytes, split into arbitrary reads
            wire.write(data[position : position + cut])
            await asyncio.sleep(0)
            position += cut
        wire.write(data[position:] + frame(PING, 0, 0, b"fuzzdone"))

        # Never hangs: the server answers our PING, or has closed the connection.
        await wire.read_until(
            lambda fs: any(
                f.kind == PING and f.flags & ACK and f.payload == b"fuzzdone" for f in fs
            ),
            timeout=5.0,
        )
        wire.close()
        for _ in range(400):  # let the server see the close (a busy machine may take a while)
            await asyncio.sleep(0.005)
            if not server.connections:
                break
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        logging.getLogger().removeHandler(errors)
        loop.set_exception_handler(None)

    assert not server.connections, "the connection outlived its peer"
    assert errors.records == []
    calls = recorder.calls[first_call:]
    event(f"calls opened: {min(len(calls), 3)}{'+' if len(calls) >= 3 else ''}")
    assert all(len(call.ends) == 1 for call in calls), [call.ends for call in calls]
    assert peak < 16 * MiB, peak
