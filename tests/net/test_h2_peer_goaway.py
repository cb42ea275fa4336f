"""A peer's GOAWAY(NO_ERROR) says it opens no more streams. The calls it already opened end
exactly once either way, and nothing breaks the read path, whatever arrives after it:

- the `frames` engine answers them (RFC 9113 §6.8) and keeps reading;
- the `hyper` engine cancels them and closes the connection — h2 4.x refuses every frame once it
  has seen a GOAWAY, so it cannot answer (before, the answer raised out of `data_received`)."""

from __future__ import annotations

import asyncio
import logging

from net.conftest import ECHO, Recorder
from net.h2_peer import ACK, END_HEADERS, GOAWAY, HEADERS, PING, Wire, frame
from net.test_h2_fuzz import LoopErrors
from net.test_h2_limits import _block
from sluice.net.server import GrpcServer

UNKNOWN = "/unknown.Service/Method"


async def test_a_goaway_with_calls_open_ends_each_once_and_never_breaks_the_read_path(
    server: GrpcServer, recorder: Recorder, engine: str
) -> None:
    errors = LoopErrors()
    logging.getLogger().addHandler(errors)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: errors.records.append(context))  # type: ignore[arg-type]
    try:
        wire = await Wire.open(server.port)
        # an echo call left open, an unknown method whose answer goes out after the GOAWAY
        # arrived (the split is the one Hypothesis found), then a PING
        data = frame(HEADERS, END_HEADERS, 1, _block(ECHO))
        data += frame(HEADERS, END_HEADERS, 3, _block(UNKNOWN))
        data += frame(GOAWAY, 0, 0, bytes(8))  # last stream 0, NO_ERROR
        for chunk in (data[:2], data[2:]):  # the unknown call and the GOAWAY in one read
            wire.write(chunk)
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        wire.write(frame(PING, 0, 0, b"after-go"))
        frames = await wire.read_until(
            lambda fs: any(f.kind == PING and f.flags & ACK for f in fs), timeout=5.0
        )
        answered = {f.stream_id for f in frames if f.kind == HEADERS}
        if engine == "frames":
            assert not wire.closed and 3 in answered  # answered, and still reading
            assert recorder.calls[0].ends == []  # the echo call is the peer's to end
        else:
            assert wire.closed
            assert recorder.calls[0].ends == ["cancel"]
        wire.close()
        for _ in range(400):
            await asyncio.sleep(0.005)
            if not server.connections:
                break
        if engine == "frames":
            assert recorder.calls[0].ends == ["cancel"]  # the peer left: cancelled, once
    finally:
        logging.getLogger().removeHandler(errors)
        loop.set_exception_handler(None)
    assert errors.records == []
    assert not server.connections, "the connection outlived its peer"
