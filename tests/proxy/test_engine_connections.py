"""Connections to engines, against a real socket engine that closes idle keep-alive connections
as vLLM's and llama.cpp's servers do (after 5 s; here after a fraction of a second): the proxy
keeps idle connections for less than that, a reused connection that fails before answering is
retried once on a fresh one (with or without a fallback), and every failure is logged with the
endpoint and its cause."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sluice.datalayer.endpoint import Endpoint
from sluice.director.contract import Outcome
from sluice.proxy import ProxyOptions, ProxyServer

from .conftest import make_pipeline
from .fake_engine import unused_endpoint
from .test_relay import url

COMPLETION = {"model": "test-model", "prompt": "hello", "max_tokens": 2}
ANSWER = b'{"choices":[{"text":"hi"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}'


class IdleClosingEngine:
    """An HTTP/1.1 keep-alive engine that closes connections idle for `idle_close_s`.

    `in_flight_race=True` is the moment that breaks a client: the engine's idle timer fires
    just as a request is on its way, so the engine closes the connection with the request
    unread. (Deterministic here: a request that arrives on a connection idle for longer than
    `idle_close_s` is dropped that way instead of the timer closing it earlier.)
    """

    def __init__(self, idle_close_s: float, *, in_flight_race: bool = False) -> None:
        self.idle_close_s = idle_close_s
        self.in_flight_race = in_flight_race
        self.connections = 0
        self.requests = 0
        self.answered = 0
        self.dropped = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> Endpoint:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return Endpoint(name="idle-closer-rank-0", address="127.0.0.1", port=port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        loop = asyncio.get_running_loop()
        idle_since = loop.time()
        try:
            while True:
                timeout = None if self.in_flight_race else self.idle_close_s
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
                except (TimeoutError, asyncio.IncompleteReadError):
                    return  # idle too long (or the client left): close, as uvicorn does
                self.requests += 1
                if self.in_flight_race and loop.time() - idle_since > self.idle_close_s:
                    self.dropped += 1
                    return  # closed with the request unread
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(ANSWER) + ANSWER
                )
                await writer.drain()
                self.answered += 1
                idle_since = loop.time()
        finally:
            writer.close()


@pytest.fixture
async def proxy_with() -> AsyncIterator[object]:
    started: list[ProxyServer] = []

    async def start(pipeline: object, keepalive_timeout_s: float) -> ProxyServer:
        options = ProxyOptions(
            shutdown_grace_s=0.5, freeze_gc=False, keepalive_timeout_s=keepalive_timeout_s
        )
        proxy = ProxyServer(pipeline, options=options)  # type: ignore[arg-type]
        await proxy.start("127.0.0.1", 0)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.stop()


async def post(client: aiohttp.ClientSession, proxy: ProxyServer) -> int:
    async with client.post(url(proxy, "/v1/completions"), json=COMPLETION) as response:
        await response.read()
        return response.status


def test_idle_engine_connections_are_kept_below_the_engines_own_timeout():
    """vLLM (uvicorn's timeout_keep_alive) and llama.cpp's server close idle connections
    after 5 s; the proxy used to keep them 60 s."""
    assert ProxyOptions().keepalive_timeout_s < 5.0


async def test_an_idle_connection_is_not_reused_after_the_keepalive(proxy_with, client):
    engine = IdleClosingEngine(idle_close_s=0.6, in_flight_race=True)
    endpoint = await engine.start()
    try:
        proxy = await proxy_with(make_pipeline([endpoint]), keepalive_timeout_s=0.3)
        assert await post(client, proxy) == 200
        assert await post(client, proxy) == 200  # at once: the connection is reused
        await asyncio.sleep(0.8)  # past our keep-alive and the engine's
        assert await post(client, proxy) == 200
    finally:
        await engine.stop()
    assert (engine.connections, engine.requests, engine.dropped) == (2, 3, 0)


async def test_a_reused_connection_dropped_before_answering_is_retried_without_a_fallback(
    proxy_with, client, caplog
):
    """The sporadic 502 "no endpoint answered … UpstreamError" with nothing logged: a
    keep-alive connection the engine closed as the request went out, and no fallback."""
    engine = IdleClosingEngine(idle_close_s=0.2, in_flight_race=True)
    endpoint = await engine.start()
    pipeline = make_pipeline([endpoint])  # no fallback endpoint
    try:
        proxy = await proxy_with(pipeline, keepalive_timeout_s=60.0)  # keeps it past the engine
        assert await post(client, proxy) == 200
        await asyncio.sleep(0.4)
        with caplog.at_level(logging.INFO, logger="sluice.proxy.upstream"):
            assert await post(client, proxy) == 200
    finally:
        await engine.stop()
    assert (engine.requests, engine.dropped, engine.answered, engine.connections) == (3, 1, 2, 2)
    assert [a.finishes for a in pipeline.admissions] == [[Outcome.COMPLETED]] * 2
    [retry] = [r for r in caplog.records if "reused connection" in r.getMessage()]
    assert f"{endpoint.address}:{endpoint.port}" in retry.getMessage()


async def test_a_fresh_connection_that_fails_is_not_retried_on_the_same_endpoint(
    start_engines, proxy_with, client, caplog
):
    (hangs_up,) = await start_engines(1)
    hangs_up.close_before_response = True
    pipeline = make_pipeline([hangs_up.endpoint])
    proxy = await proxy_with(pipeline, keepalive_timeout_s=4.0)
    with caplog.at_level(logging.WARNING, logger="sluice.proxy.forward"):
        assert await post(client, proxy) == 502
    assert len(hangs_up.received) == 1  # one attempt: the connection was new
    [logged] = [r.getMessage() for r in caplog.records]
    assert hangs_up.endpoint.hostport in logged and "closed the connection" in logged


async def test_every_upstream_failure_is_logged_with_the_endpoint_and_cause(
    start_engines, proxy_with, client, caplog
):
    (engine,) = await start_engines(1)
    refused = unused_endpoint()
    pipeline = make_pipeline([refused, engine.endpoint], fallbacks=1)
    proxy = await proxy_with(pipeline, keepalive_timeout_s=4.0)
    with caplog.at_level(logging.WARNING, logger="sluice.proxy.forward"):
        assert await post(client, proxy) == 200  # the fallback answered …
    [logged] = [r.getMessage() for r in caplog.records]  # … and the refusal is still on record
    assert refused.hostport in logged and "ConnectionRefusedError" in logged
    assert "trying the next fallback" in logged


async def test_a_stream_cut_mid_body_is_logged_with_the_endpoint(
    start_engines, proxy_with, client, caplog
):
    (crashes,) = await start_engines(1)
    pipeline = make_pipeline([crashes.endpoint])
    proxy = await proxy_with(pipeline, keepalive_timeout_s=4.0)
    body = COMPLETION | {"stream": True, "max_tokens": 5}
    with caplog.at_level(logging.WARNING, logger="sluice.proxy.forward"):
        async with client.post(
            url(proxy, "/v1/completions"), json=body, headers={"x-test-fail-after-tokens": "2"}
        ) as response:
            await response.read()
    [logged] = [r.getMessage() for r in caplog.records]
    assert crashes.endpoint.hostport in logged and "mid-response" in logged
