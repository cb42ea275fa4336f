"""Issue #15 item 9: timeouts on the proxy's listener and on engines.

Reproduction: 2,000 slow-header connections were held 80 s and more, 25-second slow bodies were
accepted, and a hung engine held its in-flight request as long as it hung.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from sluice.datalayer.endpoint import Endpoint
from sluice.director.contract import Outcome

from .conftest import QUICK_STOP, make_pipeline

QUICK = dataclasses.replace(
    QUICK_STOP, header_timeout_s=0.5, body_timeout_s=0.5, first_byte_timeout_s=0.5
)


async def closed_after(reader: asyncio.StreamReader, limit_s: float) -> tuple[bytes, float]:
    """What arrives until the server closes the connection, and when it closed."""
    start = time.monotonic()
    data = await asyncio.wait_for(reader.read(), limit_s)
    return data, time.monotonic() - start


async def test_a_connection_that_trickles_its_head_is_closed(start_engines, start_proxy):
    (engine,) = await start_engines(1)
    proxy = await start_proxy(make_pipeline([engine.endpoint]), options=QUICK)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    start = time.monotonic()
    closed = False
    for byte in b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n":  # never the blank line
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            closed = True
            break
        await asyncio.sleep(0.05)
        if reader.at_eof():
            closed = True
            break
    if not closed:
        await closed_after(reader, 3)
    assert time.monotonic() - start < 0.5 + 1.5
    assert engine.received == []
    writer.close()


async def test_two_thousand_slow_header_connections_are_all_closed_at_the_timeout(
    start_engines, start_proxy
):
    """The reproduction's scale: 2,000 connections that each sent part of a head (they were
    held 80 s and more)."""
    (engine,) = await start_engines(1)
    proxy = await start_proxy(make_pipeline([engine.endpoint]), options=QUICK)
    start = time.monotonic()
    connections = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(2000)]
    opened = time.monotonic() - start
    for _, writer in connections:
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # never the blank line

    async def closed(reader: asyncio.StreamReader) -> bytes:
        try:
            data, _ = await closed_after(reader, opened + 0.5 + 5)
        except ConnectionResetError:  # a reset closes it too (a loaded machine, a full backlog)
            return b""
        return data

    try:
        answers = await asyncio.gather(*(closed(reader) for reader, _ in connections))
    finally:
        for _, writer in connections:
            writer.close()
    assert all(data == b"" for data in answers)  # closed, never answered
    assert time.monotonic() - start < opened + 0.5 + 3, time.monotonic() - start
    assert engine.received == []


async def test_an_idle_connection_that_never_sends_is_closed(start_engines, start_proxy):
    (engine,) = await start_engines(1)
    proxy = await start_proxy(make_pipeline([engine.endpoint]), options=QUICK)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    data, took = await closed_after(reader, 3)
    assert data == b""
    assert 0.4 < took < 2.0
    writer.close()


async def test_a_slow_body_is_408_and_never_forwarded(start_engines, start_proxy):
    (engine,) = await start_engines(1)
    proxy = await start_proxy(make_pipeline([engine.endpoint]), options=QUICK)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"model":'
    )
    await writer.drain()
    start = time.monotonic()
    answer = await asyncio.wait_for(reader.readuntil(b'"RequestTimeout"}}'), 3)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in answer
    assert time.monotonic() - start < 0.5 + 1.5
    rest, _ = await closed_after(reader, 4)  # then closed, after at most 2 s of lingering
    assert rest == b""
    assert engine.received == []
    writer.close()


@pytest.fixture
async def hung_engine() -> AsyncIterator[Endpoint]:
    """Accepts, reads, never answers: a wedged model server."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield Endpoint(name="hung-rank-0", address="127.0.0.1", port=port)
    for writer in held:
        writer.close()
    server.close()


async def test_a_hung_engine_is_failed_over_to_a_fallback(
    start_engines, start_proxy, client, hung_engine
):
    (engine,) = await start_engines(1)
    pipeline = make_pipeline([hung_engine, engine.endpoint], fallbacks=1)
    proxy = await start_proxy(pipeline, options=QUICK)
    start = time.monotonic()
    async with client.post(
        f"http://127.0.0.1:{proxy.port}/v1/completions",
        json={"model": "test-model", "prompt": "hi", "max_tokens": 2},
    ) as response:
        assert response.status == 200
        assert (await response.json())["served_by"] == engine.name
    assert time.monotonic() - start < 0.5 + 1.5


async def test_a_hung_engine_without_a_fallback_is_504_and_released(
    start_proxy, client, hung_engine
):
    pipeline = make_pipeline([hung_engine])
    proxy = await start_proxy(pipeline, options=QUICK)
    async with client.post(
        f"http://127.0.0.1:{proxy.port}/v1/completions",
        json={"model": "test-model", "prompt": "hi", "max_tokens": 2},
    ) as response:
        assert response.status == 504
        assert "no response head within 0.5s" in (await response.json())["error"]["message"]
    assert pipeline.only_admission().finishes == [Outcome.UPSTREAM_ERROR]
