"""Eviction through a real Envoy: once Sluice has routed a request, an ImmediateResponse on its
ext_proc stream still reaches the client as a clean 429 — Envoy resets the upstream request —
as long as nothing of the response went downstream. Sluice keeps it so: in FULL_DUPLEX_STREAMED
it holds its answer to the response headers until the first token; a response that has not
started (a non-streamed answer still being computed) is evictable in either mode.

Client → Envoy (the shipped example config) → Sluice (the real director, one request in flight
per endpoint, eviction on) → one model server whose first token takes seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from director_harness import make_director, report
from sluice.bench.harness.envoy import Envoy, GatewayPorts, envoy_binary, render_config
from sluice.bench.harness.model_server import FakeModelServer
from sluice.extproc import BodyMode, ExtProcServer, ServerOptions
from sluice.flowcontrol import FlowControlConfig
from sluice.room import RoomSettings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(envoy_binary() is None, reason="envoy binary not installed"),
]

CHAT = {"model": "llama", "messages": [{"role": "user", "content": "hello"}]}
BATCH = {"x-llm-d-inference-objective": "batch", "x-test-first-token-delay-ms": "5000"}
INTERACTIVE = {"x-llm-d-inference-objective": "interactive"}


async def post(url: str, body: dict, headers: dict) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as r:
        return r.status, r.headers.copy(), await r.read()


@pytest_asyncio.fixture
async def gateway(request) -> AsyncIterator[tuple[str, FakeModelServer, Any]]:
    mode = request.param
    server = FakeModelServer("engine-0")
    await server.start()
    director = make_director(
        FlowControlConfig(enable_eviction=True),
        RoomSettings(metrics_staleness_s=60.0, max_in_flight_requests=1),
        ports=(server.port,),
    )
    report(director)
    ports = GatewayPorts()
    sluice = ExtProcServer(director, ServerOptions(grpc_port=ports.epp, host="127.0.0.1"))
    await sluice.start()
    envoy = Envoy(render_config(ports, [server.port], mode=mode), ports.admin)
    await envoy.start()
    yield f"http://127.0.0.1:{ports.listener}/v1/chat/completions", server, director
    await envoy.stop()
    await sluice.stop(None)
    await server.stop()


async def evict_the_batch_request(url: str, server: FakeModelServer, batch_body: dict) -> None:
    low = asyncio.ensure_future(post(url, batch_body, BATCH))
    for _ in range(300):  # until the model server is prefilling it
        if server.seen:
            break
        await asyncio.sleep(0.01)
    assert server.seen, "the batch request never reached the model server"
    status, _, payload = await asyncio.wait_for(post(url, CHAT, INTERACTIVE), 4)
    assert status == 200 and json.loads(payload)["served_by"] == "engine-0"
    status, headers, payload = await asyncio.wait_for(low, 4)  # long before its 5 s prefill
    assert status == 429
    assert headers["x-llm-d-request-dropped-reason"] == "evicted"
    assert payload == b"request evicted by flow control"
    for _ in range(200):
        if server.dropped:
            break
        await asyncio.sleep(0.01)
    assert server.dropped == 1  # Envoy reset the upstream request: the generation stopped


@pytest.mark.parametrize("gateway", [BodyMode.FULL_DUPLEX_STREAMED], indirect=True)
async def test_a_stream_whose_head_arrived_is_evicted_before_its_first_token(gateway):
    url, server, _ = gateway
    await evict_the_batch_request(url, server, {**CHAT, "stream": True})


@pytest.mark.parametrize(
    "gateway", [BodyMode.FULL_DUPLEX_STREAMED, BodyMode.BUFFERED], indirect=True
)
async def test_a_routed_request_whose_answer_has_not_started_is_evicted(gateway):
    url, server, _ = gateway
    await evict_the_batch_request(url, server, CHAT)


@pytest.mark.parametrize("gateway", [BodyMode.FULL_DUPLEX_STREAMED], indirect=True)
async def test_an_evictable_stream_nobody_needs_to_evict_streams_whole(gateway):
    """The held response-headers answer goes out with the first token; Envoy streams on."""
    url, server, director = gateway
    headers = {**BATCH, "x-test-first-token-delay-ms": "300"}
    status, response_headers, payload = await asyncio.wait_for(
        post(url, {**CHAT, "stream": True}, headers), 5
    )
    assert status == 200 and response_headers["x-served-by"] == "engine-0"
    assert payload.endswith(b"data: [DONE]\n\n")
    for _ in range(200):  # the completion is booked just after the last answer went out
        if director.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert server.dropped == 0 and director.in_flight == 0
