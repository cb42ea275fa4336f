"""The lean upstream client's HTTP/1.1 framing, against hand-written responses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sluice.proxy.upstream import UpstreamError, UpstreamPool

HEAD = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n"


async def serve(
    pieces: list[bytes], *, close: bool = False
) -> tuple[asyncio.Server, int, list[int]]:
    """A server that answers every request with `pieces`, written one by one."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while await reader.readuntil(b"\r\n\r\n"):
            await reader.readexactly(2)
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.001)  # separate packets: framing must span reads
            if close:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    upstream = UpstreamPool()
    yield upstream
    await upstream.close()


async def test_chunked_body_split_across_reads_and_connection_reuse(pool):
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
    server, port, connections = await serve([head, *(body[i : i + 3] for i in range(0, 60, 3))])
    async with server:
        for _ in range(2):
            response = await pool.request("127.0.0.1", port, HEAD, b"{}")
            assert response.status == 200
            assert response.content_length is None
            assert await response.read() == b"hello world"
            assert response.is_eof()
            response.release()
    assert len(connections) == 1  # the second request reused the connection


async def test_content_length_and_informational_responses(pool):
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc"
    server, port, _ = await serve([answer])
    async with server:
        response = await pool.request("127.0.0.1", port, HEAD, b"{}")
        assert (response.status, response.content_length) == (201, 3)
        assert await response.read() == b"abc"
        response.release()


async def test_a_body_until_close(pool):
    server, port, _ = await serve([b"HTTP/1.0 200 OK\r\n\r\npart one, ", b"part two"], close=True)
    async with server:
        response = await pool.request("127.0.0.1", port, HEAD, b"{}")
        assert await response.read() == b"part one, part two"
        response.release()


async def test_head_and_no_content_have_no_body(pool):
    server, port, _ = await serve([b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"])
    async with server:
        response = await pool.request("127.0.0.1", port, HEAD, b"{}")
        assert response.status == 204
        assert await response.read() == b""
        response.release()
        head_request = await pool.request("127.0.0.1", port, HEAD, b"{}", expect_body=False)
        assert await head_request.read() == b""
        head_request.release()


async def test_a_body_cut_short_is_an_error(pool):
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    server, port, _ = await serve([answer], close=True)
    async with server:
        response = await pool.request("127.0.0.1", port, HEAD, b"{}")
        with pytest.raises(UpstreamError):
            await response.read()
        response.close()


async def test_garbage_instead_of_a_status_line_is_an_error(pool):
    server, port, _ = await serve([b"SSH-2.0-OpenSSH\r\n\r\n"])
    async with server:
        with pytest.raises(UpstreamError):
            await pool.request("127.0.0.1", port, HEAD, b"{}")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * (70 * 1024) + b"\r\n\r\n",
    ],
    ids=["chunked and Content-Length", "two lengths", "negative length", "head over 64 KiB"],
)
async def test_responses_rfc_9112_refuses_are_errors_not_relayed(pool, answer):
    """The same strict reader as the scraper's (sluice.net.http1): a smuggling shape never
    reaches a client, and the connection is never reused."""
    server, port, connections = await serve([answer])
    async with server:
        with pytest.raises(UpstreamError, match="malformed"):
            await pool.request("127.0.0.1", port, HEAD, b"{}")
        with pytest.raises(UpstreamError):
            await pool.request("127.0.0.1", port, HEAD, b"{}")
    assert len(connections) == 2  # the first connection was dropped


async def test_a_request_on_a_connection_the_server_closes_as_it_goes_out_is_sent_again(pool):
    # llama.cpp's server closes the connection right after every streamed (chunked) response,
    # without `Connection: close`: the next request goes out on it before its FIN is read. Here
    # the server closes 1 ms after answering, unread request and all.
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\n\r\n"
    server, port, connections = await serve([head + b"2\r\nok\r\n0\r\n\r\n"], close=True)
    async with server:
        for _ in range(3):
            response = await pool.request("127.0.0.1", port, HEAD, b"{}")
            assert await response.read() == b"ok"
            response.release()  # back to the pool, and reused at once
    assert len(connections) == 3
