"""The limits of Sluice's HTTP/2 server (`sluice.net`): what a hostile or broken peer can make
it hold or do, with memory measured (tracemalloc: server and client share this process, and the
client side only ever holds one prebuilt chunk)."""

from __future__ import annotations

import asyncio
import functools
import socket
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from net.conftest import ECHO, HOLD
from net.h2_peer import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    GOAWAY,
    HEADERS,
    PING,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    Client,
    Wire,
    frame,
    grpc_message,
    parse_frames,
    setting,
)
from sluice.net.limits import H2Limits, RapidResets, TokenBucket

MiB = 1 << 20


@pytest.fixture
def memory() -> Iterator[None]:
    tracemalloc.start()
    yield
    tracemalloc.stop()


def peak_growth(since: int) -> int:
    return tracemalloc.get_traced_memory()[1] - since


def start_measuring() -> int:
    tracemalloc.reset_peak()
    return tracemalloc.get_traced_memory()[0]


def headers_block(path: str, stream_id: int) -> bytes:
    """A HEADERS frame opening a call to `path` on `stream_id`. The block is one fresh HPACK
    encoder's first: it refers only to entries it inserts itself, so any number of them can be
    sent on one connection."""
    return frame(HEADERS, END_HEADERS, stream_id, _block(path))


@functools.cache
def _block(path: str) -> bytes:
    client = Client()
    client.out()
    client.h2.send_headers(1, _request(path))
    [headers] = [f for f in parse_frames(client.out())[0] if f.kind == HEADERS]
    return headers.payload


def _request(path: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "sluice"),
        (":path", path),
        ("content-type", "application/grpc"),
    ]


PIECE = 256 * 1024  # a flood goes out this much per send


async def flood(
    port: int,
    chunk: bytes,
    total: int,
    *,
    timeout: float = 10.0,
    read: bool = True,
    stall: float = 0.5,
) -> tuple[socket.socket, asyncio.Task[bytes]]:
    """Send `chunk` over and over, `PIECE` bytes a send, until `total` bytes went out, the
    server closed the connection (it sends its GOAWAY, then FIN) or `timeout` passed. What the
    server answers is read by a task.

    `read=False`: a peer that never reads; the flood also ends when the server stops reading
    (one piece not taken by the kernel for `stall` s). A reading peer's flood does not end on
    a stall: a server that is slow to get through a flood (a loaded machine, tracemalloc) is
    not refusing it, and stopping early would leave the limit under test never reached."""
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    answers = loop.create_task(_read_all(sock) if read else asyncio.sleep(0, b""))
    view = memoryview(chunk)
    sent = 0
    deadline = loop.time() + timeout
    try:
        await loop.sock_sendall(sock, Client().out())
        while sent < total and not (read and answers.done()):
            left = deadline - loop.time()
            if left <= 0:
                break
            offset = sent % len(chunk)
            piece = view[offset : offset + min(PIECE, len(chunk) - offset, total - sent)]
            send = loop.create_task(loop.sock_sendall(sock, piece))
            waits: set[asyncio.Task[Any]] = {send, answers} if read else {send}
            await asyncio.wait(
                waits, timeout=left if read else min(stall, left), return_when="FIRST_COMPLETED"
            )
            if not send.done():
                send.cancel()
                break
            send.result()
            sent += len(piece)
    except ConnectionError:
        pass
    return sock, answers


async def _read_all(sock: socket.socket, timeout: float = 15.0) -> bytes:
    loop = asyncio.get_running_loop()
    parts = []
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), deadline - loop.time())
        except (TimeoutError, ConnectionError):
            break
        if not chunk:
            break
        parts.append(chunk)
    return b"".join(parts)


async def goaway_code(flooded: tuple[socket.socket, asyncio.Task[bytes]]) -> int | None:
    """The code of the server's GOAWAY among everything it answered (it closes after it)."""
    sock, answers = flooded
    data = await answers
    sock.close()
    frames, _ = parse_frames(data)
    codes = [f.error_code for f in frames if f.kind == GOAWAY]
    return codes[0] if codes else None


# --- streams -------------------------------------------------------------------------------------


async def test_streams_beyond_the_advertised_limit_are_refused(server, recorder, engine, memory):
    """The old frame layer let one connection open 50,000 streams. RFC 9113 §5.1.2: a stream
    past SETTINGS_MAX_CONCURRENT_STREAMS is a stream error (REFUSED_STREAM: safe to retry), which
    python-hyper's h2 escalates to a connection error (PROTOCOL_ERROR)."""
    limits = H2Limits()
    most = limits.max_concurrent_streams
    before = start_measuring()
    wire = await Wire.open(server.port)
    wire.write(b"".join(headers_block(ECHO, 2 * i + 1) for i in range(most)))
    await wire.read_until(lambda _: len(recorder.calls) == most)
    wire.write(b"".join(headers_block(ECHO, 2 * i + 1) for i in range(most, most + 500)))
    if engine == "hyper":
        assert (await wire.goaway()).error_code == PROTOCOL_ERROR
        assert await wire.closed_by_server()
        assert all(call.ends == ["cancel"] for call in recorder.calls)  # each ended exactly once
    else:

        def refused(frames: list) -> list:  # type: ignore[type-arg]
            return [f for f in frames if f.kind == RST_STREAM and f.error_code == REFUSED_STREAM]

        frames = await wire.read_until(lambda fs: len(refused(fs)) == 500)
        assert {f.stream_id for f in refused(frames)} == {
            2 * i + 1 for i in range(most, most + 500)
        }
        assert all(call.ends == [] for call in recorder.calls)  # the first 1,000 go on
    assert len(recorder.calls) == most  # no handler ever ran for a stream past the limit
    assert peak_growth(before) < 40 * MiB
    wire.close()


async def test_rapid_resets_get_goaway(server, recorder, memory):
    """CVE-2023-44487: open and reset streams as fast as possible (20,000 here, as the report
    that found the old layer answering none of them)."""
    before = start_measuring()
    cancel = (8).to_bytes(4, "big")
    pairs = b"".join(
        headers_block(ECHO, 2 * i + 1) + frame(RST_STREAM, 0, 2 * i + 1, cancel)
        for i in range(20_000)
    )
    flooded = await flood(server.port, pairs, len(pairs))
    assert await goaway_code(flooded) == ENHANCE_YOUR_CALM
    limits = H2Limits()
    assert len(recorder.calls) < 2 * limits.rapid_reset_min_streams + 10
    assert all(call.ends == ["cancel"] for call in recorder.calls)
    assert peak_growth(before) < 60 * MiB


async def test_a_stream_reset_after_it_delivered_messages_is_no_attack(server, recorder):
    """Clients that give up on queued requests reset streams all the time: that is ordinary
    cancellation, never a reason to close the gateway's connection."""
    client = Client()
    wire = await Wire.open(server.port, preface=False)
    await wire.handshake(client)
    for _ in range(300):
        stream = client.open(HOLD, b"request")
        client.h2.reset_stream(stream, 8)
    wire.write(client.out())
    await wire.events(client, lambda es: len(recorder.calls) == 300, timeout=10)
    stream = client.open(ECHO, b"still served", end=True)
    wire.write(client.out())
    events = await wire.events(
        client, lambda es: any(type(e).__name__ == "StreamEnded" for e in es)
    )
    assert not any(type(e).__name__ == "ConnectionTerminated" for e in events)
    assert [c.ends for c in recorder.calls[:300]] == [["cancel"]] * 300
    assert recorder.calls[-1].ends == ["finish"] and stream
    wire.close()


# --- buffers -------------------------------------------------------------------------------------


async def test_bytes_held_per_connection_are_capped(server, recorder, memory):
    """30 streams x 15 MiB on one connection (the old layer buffered all of it: 163 -> 630 MB)."""
    limits = H2Limits()
    body = grpc_message(b"b" * (15 * MiB))
    before = start_measuring()
    client = Client()
    wire = await Wire.open(server.port, preface=False)
    await wire.handshake(client)
    frame_size = 256 * 1024
    for i in range(30):
        stream_id = 2 * i + 1
        wire.write(headers_block(HOLD, stream_id))
        view = memoryview(body)
        for offset in range(0, len(body), frame_size):
            wire.write(frame(DATA, 0, stream_id, bytes(view[offset : offset + frame_size])))
            await wire.writer.drain()
    await wire.read_until(lambda fs: sum(f.kind == RST_STREAM for f in fs) >= 25, timeout=30)
    growth = peak_growth(before)
    assert growth < limits.max_connection_buffer_bytes + 40 * MiB, growth // MiB
    assert sum(call.ends == ["cancel"] for call in recorder.calls) >= 25  # cut at the cap
    wire.close()


async def test_a_message_over_the_limit_ends_the_call_before_it_is_buffered(server, recorder):
    limits = H2Limits()
    client = Client()
    wire = await Wire.open(server.port, preface=False)
    await wire.handshake(client)
    stream = client.open(ECHO)
    header = b"\x00" + (limits.max_message_bytes + 1).to_bytes(4, "big")
    client.h2.send_data(stream, header + b"x" * 100)
    wire.write(client.out())
    events = await wire.events(
        client, lambda es: any(type(e).__name__ == "StreamEnded" for e in es)
    )
    statuses = [
        v for e in events for k, v in getattr(e, "headers", None) or () if k == "grpc-status"
    ]
    assert statuses == ["8"]  # RESOURCE_EXHAUSTED
    assert recorder.calls[0].ends == ["cancel"]
    wire.close()


async def test_a_header_list_over_the_limit_is_refused(server):
    limits = H2Limits()
    client = Client()
    wire = await Wire.open(server.port, preface=False)
    await wire.handshake(client)
    request = [*_request(ECHO), ("x-big", "v" * (limits.max_header_list_bytes + 1))]
    client.h2.send_headers(client.h2.get_next_available_stream_id(), request)
    wire.write(client.out())
    assert (await wire.goaway()).error_code == ENHANCE_YOUR_CALM
    wire.close()


@pytest.mark.parametrize(
    ("payload", "frames", "code"),
    [(1 * MiB, 100, ENHANCE_YOUR_CALM), (16, 10_000, PROTOCOL_ERROR)],
    ids=["large frames", "many frames"],
)
async def test_a_continuation_flood_is_refused_with_memory_bounded(
    server, memory, payload, frames, code
):
    """CVE-2024-27316-style: a header block that never ends. Refused once its compressed size
    passes twice the header list limit (ENHANCE_YOUR_CALM), or at the 65th CONTINUATION
    (PROTOCOL_ERROR), whichever comes first: on both engines the server holds at most a frame
    or two of it, never the 64 frames python-hyper's h2 would buffer on its own (64 MiB here)."""
    limits = H2Limits()
    assert payload <= limits.max_frame_bytes
    flood_bytes = frame(HEADERS, 0, 1, b"") + b"".join(
        frame(CONTINUATION, 0, 1, b"\x00" * payload) for _ in range(frames)
    )
    before = start_measuring()
    flooded = await flood(server.port, flood_bytes, len(flood_bytes))
    assert await goaway_code(flooded) == code
    growth = peak_growth(before)
    assert growth < 4 * limits.max_frame_bytes + 4 * MiB, growth // MiB


async def test_a_header_block_split_over_continuations_is_served(server, recorder):
    """The block-size rule counts one block at a time: three requests whose blocks each come in
    four frames, together more than the limit, each under it, are all served."""
    limits = H2Limits()
    pad = bytes(range(33, 127)) * 120  # ~11 KiB, little to gain from Huffman coding
    client = Client()
    client.out()
    client.h2.send_headers(1, [*_request(ECHO), ("x-pad", pad.decode())])
    [headers] = [f for f in parse_frames(client.out())[0] if f.kind == HEADERS]
    block = headers.payload
    assert len(block) <= 2 * limits.max_header_list_bytes < 3 * len(block)
    wire = await Wire.open(server.port)
    quarter = len(block) // 4 + 1
    parts = [block[i : i + quarter] for i in range(0, len(block), quarter)]
    for stream_id in (1, 3, 5):
        wire.write(
            frame(HEADERS, 0, stream_id, parts[0])
            + b"".join(frame(CONTINUATION, 0, stream_id, part) for part in parts[1:-1])
            + frame(CONTINUATION, END_HEADERS, stream_id, parts[-1])
            + frame(DATA, END_STREAM, stream_id, grpc_message(b"hello"))
        )
    await wire.read_until(
        lambda _: len(recorder.calls) == 3 and all(c.ends == ["finish"] for c in recorder.calls)
    )
    assert not any(f.kind == GOAWAY for f in wire.frames)
    assert all((b"x-pad", pad) in call.headers for call in recorder.calls)
    assert [call.messages for call in recorder.calls] == [1, 1, 1]
    wire.close()


# --- control-frame floods ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "control",
    [
        frame(PING, 0, 0, b"12345678"),
        frame(SETTINGS, 0, 0, setting(4, 65_535)),
        frame(SETTINGS, 0, 0, b""),
    ],
    ids=["PING", "SETTINGS", "empty SETTINGS"],
)
async def test_a_control_frame_flood_gets_goaway(server, control, memory):
    chunk = control * 20_000
    before = start_measuring()
    flooded = await flood(server.port, chunk, len(chunk))
    assert await goaway_code(flooded) == ENHANCE_YOUR_CALM
    assert peak_growth(before) < 20 * MiB


async def test_an_empty_data_frame_flood_gets_goaway(server):
    chunk = headers_block(HOLD, 1) + frame(DATA, 0, 1, b"") * 20_000
    flooded = await flood(server.port, chunk, len(chunk))
    assert await goaway_code(flooded) == ENHANCE_YOUR_CALM


@pytest.mark.slow
@pytest.mark.parametrize("limits", [H2Limits(control_frame_burst=10**9)], ids=["no flood rule"])
async def test_an_unread_ping_flood_cannot_grow_memory(server, limits, memory):
    """Even without the flood rule: a peer that sends PINGs and never reads what we answer
    stops being read once our output for it passes `write_buffer_bytes` (the old layer grew
    by 131 MB)."""
    pings = frame(PING, 0, 0, b"12345678") * 60_000  # 1 MiB of PINGs per send
    before = start_measuring()
    flooded = await flood(server.port, pings, 200 * len(pings), timeout=10, read=False)
    growth = peak_growth(before)  # (up to 200 MiB sent, or until the server stops reading)
    flooded[0].close()
    assert growth < limits.write_buffer_bytes + 16 * MiB, growth // MiB


# --- the counters behind the rules ---------------------------------------------------------------


def test_a_token_bucket_spends_its_burst_then_refills_at_its_rate():
    bucket = TokenBucket(burst=3, rate=2.0, now=0.0)
    assert [bucket.spend(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.spend(0.5)  # 0.5 s at 2/s: one token back
    assert not bucket.spend(0.5)
    bucket.earn()
    assert bucket.spend(0.5)  # a frame that carried work paid for one


def test_rapid_resets_need_both_a_count_and_a_majority():
    resets = RapidResets(min_streams=100, ratio=0.5)
    for _ in range(300):
        resets.stream_opened()
    assert not any(resets.premature_reset() for _ in range(149))  # under half of 300
    assert resets.premature_reset() is False  # 150 of 300 is not more than half
    assert resets.premature_reset() is True


def test_limits_refuse_values_http2_cannot_carry():
    with pytest.raises(ValueError, match="max_frame_bytes"):
        H2Limits(max_frame_bytes=1024)
    with pytest.raises(ValueError, match="stream_window_bytes"):
        H2Limits(stream_window_bytes=1 << 31)
    with pytest.raises(ValueError, match="max_concurrent_streams"):
        H2Limits(max_concurrent_streams=0)
