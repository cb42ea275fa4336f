"""A slow client makes the proxy stop reading upstream: memory stays bounded, the stream waits."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from sluice.director.contract import Outcome
from sluice.proxy import ProxyServer, UpstreamPool

from .conftest import QUICK_STOP, eventually, make_pipeline
from .fake_engine import SMALL_SOCKET_BUFFER

STREAM_BYTES = 64 * 1024 * 1024  # ten times more than any buffer on the way may hold
# What Sluice itself may hold for one stream: the upstream client's queue (paused above 64 KiB,
# plus one socket read), aiohttp's write buffer (drained above 64 KiB) and the transport's
# high-water mark. Generous.
SLUICE_ALLOWANCE = 1024 * 1024


def pool_with_small_receive_buffers() -> UpstreamPool:
    """The proxy's upstream client, but with a fixed (non-autotuned) kernel receive buffer."""
    return UpstreamPool(receive_buffer_bytes=SMALL_SOCKET_BUFFER)


def kernel_allowance() -> int:
    """Bytes the kernel may hold between engine and client: the fixed small buffers (which
    Linux doubles) plus the proxy's autotuned send buffer towards the client."""
    send_buffer_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    return 3 * 2 * SMALL_SOCKET_BUFFER + send_buffer_max


async def until_it_stops_growing(read, interval_s: float = 0.1, still_for: int = 4) -> int:
    last, unchanged = -1, 0
    while unchanged < still_for:
        await asyncio.sleep(interval_s)
        value = read()
        unchanged = unchanged + 1 if value == last else 0
        last = value
    return last


async def test_a_client_that_stops_reading_stalls_the_upstream_stream(start_engines):
    (engine,) = await start_engines(1)
    pipeline = make_pipeline([engine.endpoint])
    proxy = ProxyServer(
        pipeline, upstream_pool_factory=pool_with_small_receive_buffers, options=QUICK_STOP
    )
    await proxy.start("127.0.0.1", 0)
    try:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_SOCKET_BUFFER)
        client.connect(("127.0.0.1", proxy.port))
        client.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=client)
        body = b'{"model": "test-model", "prompt": "x", "stream": true}'
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: sluice\r\n"
            + f"x-test-stream-bytes: {STREAM_BYTES}\r\n".encode()
            + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        received = len(head)
        while received < 1024 * 1024:  # read the first MiB, then stop reading
            received += len(await reader.read(65536))

        upstream_sent = await until_it_stops_growing(lambda: engine.bytes_streamed)

        assert upstream_sent < STREAM_BYTES  # the engine is blocked: nobody reads its bytes
        in_flight = upstream_sent - received
        print(f"in flight while stalled: {in_flight} bytes")
        assert in_flight < kernel_allowance() + SLUICE_ALLOWANCE

        # Reading again lets the stream move on.
        for _ in range(64):
            received += len(await reader.read(65536))
        await eventually(lambda: engine.bytes_streamed > upstream_sent)

        # Hanging up cancels the upstream generation and finishes the request once.
        writer.close()
        await eventually(lambda: engine.streams_cancelled == 1)
        await eventually(lambda: pipeline.only_admission().finishes == [Outcome.CLIENT_GONE])
    finally:
        await proxy.stop()
