"""`sluice serve` with `precise-prefix-cache-scorer` over simulated engines publishing vLLM KV
events: a prompt an engine cached through traffic that never went through Sluice is routed to
that engine — which only the engines' own events can tell — and /metrics shows every endpoint's
stream as precise."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from e2e.support import write_pool
from sluice.app import App
from sluice.bench.harness.ports import free_port, free_port_block
from sluice.cli.serve_options import parse_serve_options
from sluice.sim.kv_events import KVEventsConfig
from sluice.sim.pool import EngineSpec, start_pool
from sluice.sim.profiles import get_profile, with_engine

pytestmark = pytest.mark.slow

SEED = "5"
PROMPT = "Summarize the incident report below in three bullet points. " * 30


def config(pub: int, replay: int) -> str:
    return f"""
plugins:
- type: precise-prefix-cache-scorer
  parameters:
    tokenProcessorConfig: {{blockSizeTokens: 16, hashSeed: "{SEED}"}}
    kvEventsConfig:
      podDiscoveryConfig: {{socketPort: {pub}, replaySocketPort: {replay}}}
    indexerConfig: {{tokenizersPoolConfig: {{modelName: sim-model}}}}
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: precise-prefix-cache-scorer
"""


async def test_a_prefix_cached_behind_sluices_back_is_found_through_kv_events(
    tmp_path: Path,
) -> None:
    profile = get_profile("llama-8b-h100")
    engine_config = with_engine(profile, hash_seed=SEED)
    # Below the ephemeral range: between this pick and the third engine's bind, an outgoing
    # connection took one of these (make test, 2026-12-08: "error while attempting to bind").
    http, pub, replay = (free_port_block(3, below_ephemeral=True) for _ in range(3))
    kv = KVEventsConfig(
        enable_kv_cache_events=True,
        endpoint=f"tcp://*:{pub}",
        replay_endpoint=f"tcp://*:{replay}",
    )
    specs = [
        EngineSpec(engine_config, profile.cost, port=http + i, kv_events=kv, rank=i)
        for i in range(3)
    ]
    pool = await start_pool(specs)
    write_pool(tmp_path, [http, http + 1, http + 2])
    proxy, metrics = free_port(), free_port()
    app = App(
        parse_serve_options(
            [
                "--pool-name=pool",
                f"--resources={tmp_path}",
                f"--proxy-port={proxy}",
                "--disable-extproc",
                f"--grpc-health-port={free_port()}",
                f"--metrics-port={metrics}",
                "--grpc-host=127.0.0.1",
                "--secure-serving=false",
                f"--config-text={config(pub, replay)}",
            ]
        )
    )
    await app.start()
    try:
        (subscribers,) = app.kv_event_subscribers
        names = [f"engines-rank-{i}" for i in range(3)]
        deadline = time.monotonic() + 10
        while any(subscribers.streams.mode(n)[0] != "precise" for n in names):
            assert time.monotonic() < deadline, [subscribers.streams.mode(n) for n in names]
            await asyncio.sleep(0.05)
        body = {"model": "sim-model", "prompt": PROMPT, "max_tokens": 4}
        async with aiohttp.ClientSession() as session:
            # Engine 2 caches the prompt; Sluice never sees this request.
            async with session.post(f"http://127.0.0.1:{http + 2}/v1/completions", json=body):
                pass
            await asyncio.sleep(0.3)  # its BlockStored event reaches Sluice
            async with session.post(f"http://127.0.0.1:{proxy}/v1/completions", json=body) as r:
                assert r.status == 200
                usage = (await r.json())["usage"]
            async with session.get(f"http://127.0.0.1:{metrics}/metrics") as r:
                exposition = await r.text()
        assert usage["prompt_tokens_details"]["cached_tokens"] > 0.9 * usage["prompt_tokens"]
        state = app.registry.get("engines-rank-2")
        assert state is not None and state.dispatched_total == 1
        for name in names:
            line = f'sluice_kv_events_endpoint_mode{{endpoint="{name}",mode="precise"}} 1.0'
            assert line in exposition
        assert "sluice_kv_events_fallback_endpoints 0.0" in exposition
    finally:
        await app.stop()
        await pool.close()
