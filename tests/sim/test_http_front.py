"""The HTTP front over real loopback sockets: OpenAI shapes, streaming, usage, LoRA, /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sluice.sim.metrics import METRIC_NAMES
from sluice.sim.pool import EngineSpec, SimPool, start_pool
from sluice.sim.profiles import PROFILES

ZERO = PROFILES["zero-latency"]


@pytest.fixture
async def sim() -> AsyncIterator[tuple[SimPool, aiohttp.ClientSession]]:
    cost = replace(ZERO.cost, lora_load_s=0.3, decode_seq_s=0.001)
    spec = EngineSpec(
        ZERO.engine, cost, model="tiny", loras={"sql": "/adapters/sql", "chat": "/adapters/chat"}
    )
    pool = await start_pool([spec])
    async with aiohttp.ClientSession(pool.urls[0]) as session:
        yield pool, session
    await pool.close()


async def sse_events(response: aiohttp.ClientResponse) -> list[bytes]:
    body = await response.read()
    return [frame.removeprefix(b"data: ") for frame in body.split(b"\n\n") if frame]


async def test_completion_returns_text_and_usage(
    sim: tuple[SimPool, aiohttp.ClientSession],
) -> None:
    _, http = sim
    async with http.post(
        "/v1/completions", json={"model": "tiny", "prompt": "x" * 40, "max_tokens": 5}
    ) as r:
        body = await r.json()
    assert r.status == 200 and body["object"] == "text_completion"
    assert body["choices"][0]["text"] == " the sim lab one big"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


async def test_chat_stream_ends_with_usage_and_done(
    sim: tuple[SimPool, aiohttp.ClientSession],
) -> None:
    _, http = sim
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with http.post("/v1/chat/completions", json=body) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        frames = await sse_events(r)
    assert frames[-1] == b"[DONE]"
    chunks = [orjson.loads(f) for f in frames[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == " the sim lab one"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


async def test_a_stream_without_include_usage_has_no_usage(
    sim: tuple[SimPool, aiohttp.ClientSession],
) -> None:
    _, http = sim
    async with http.post(
        "/v1/completions", json={"prompt": "hi", "max_tokens": 3, "stream": True}
    ) as r:
        frames = await sse_events(r)
    assert frames[-1] == b"[DONE]"
    assert all("usage" not in orjson.loads(f) for f in frames[:-1])


async def test_repeated_prompts_report_cached_tokens(
    sim: tuple[SimPool, aiohttp.ClientSession],
) -> None:
    _, http = sim
    body = {"prompt": "y" * 4 * 100, "max_tokens": 1}
    for _ in range(2):
        async with http.post("/v1/completions", json=body) as r:
            usage = (await r.json())["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 96  # 6 full blocks of 16


async def test_unknown_model_is_an_openai_404(sim: tuple[SimPool, aiohttp.ClientSession]) -> None:
    _, http = sim
    async with http.post("/v1/completions", json={"model": "gpt-9", "prompt": "hi"}) as r:
        body = await r.json()
    assert r.status == 404 and body["error"]["type"] == "NotFoundError"


async def test_models_lists_the_base_model_and_adapters(
    sim: tuple[SimPool, aiohttp.ClientSession],
) -> None:
    _, http = sim
    async with http.get("/v1/models") as r:
        data = (await r.json())["data"]
    assert [(m["id"], m["parent"]) for m in data] == [
        ("tiny", None),
        ("sql", "tiny"),
        ("chat", "tiny"),
    ]
    async with http.get("/health") as r:
        assert r.status == 200


async def test_an_adapter_is_loaded_on_first_use(
    sim: tuple[SimPool, aiohttp.ClientSession],
) -> None:
    _, http = sim
    body = {"model": "sql", "prompt": "select", "max_tokens": 1}
    durations = []
    for _ in range(2):
        started = time.perf_counter()
        async with http.post("/v1/completions", json=body) as r:
            assert r.status == 200
        durations.append(time.perf_counter() - started)
    assert durations[0] >= 0.3 > durations[1]


async def test_metrics_names_are_exactly_vllms(sim: tuple[SimPool, aiohttp.ClientSession]) -> None:
    _, http = sim
    async with http.post("/v1/completions", json={"model": "sql", "prompt": "x", "max_tokens": 3}):
        pass
    async with http.get("/metrics") as r:
        families = list(text_string_to_metric_families(await r.text()))
    suffixes = ("_bucket", "_count", "_sum", "_created")
    names = set()
    for family in families:
        for sample in family.samples:
            assert sample.labels["model_name"] == "tiny"
            name = sample.name
            if family.type == "histogram":
                name = next(name.removesuffix(s) for s in suffixes if name.endswith(s))
            names.add(name)
    assert names == set(METRIC_NAMES)
    by_name = {s.name: s for f in families for s in f.samples}
    lora = by_name["vllm:lora_requests_info"]
    assert lora.labels["max_lora"] == "1" and abs(lora.value - time.time()) < 60  # a Unix timestamp
    assert by_name["vllm:cache_config_info"].labels["block_size"] == "16"
    assert by_name["vllm:generation_tokens_total"].value == 3


async def test_priority_in_the_body_is_accepted(sim: tuple[SimPool, aiohttp.ClientSession]) -> None:
    _, http = sim
    async with http.post(
        "/v1/completions", json={"prompt": "x", "max_tokens": 1, "priority": -5}
    ) as r:
        assert r.status == 200
    async with http.post("/v1/completions", json={"prompt": "x", "priority": "high"}) as r:
        assert r.status == 400


async def test_a_client_that_hangs_up_mid_stream_frees_its_slot() -> None:
    slow = replace(ZERO.cost, step_overhead_s=0.01)  # 1000 tokens would take 10 s
    pool = await start_pool([EngineSpec(ZERO.engine, slow)])
    engine = pool.engines[0].engine
    try:
        async with aiohttp.ClientSession(pool.urls[0]) as http:
            body = {"prompt": "x", "max_tokens": 1000, "ignore_eos": True, "stream": True}
            async with http.post("/v1/completions", json=body) as r:
                await r.content.readline()
                assert engine.metrics().num_requests_running == 1
        for _ in range(100):
            if engine.metrics().num_requests_running == 0:
                break
            await asyncio.sleep(0.02)
        assert engine.metrics().num_requests_running == 0
        assert engine.metrics().kv_cache_usage_perc == 0.0
    finally:
        await pool.close()


async def test_a_prompt_longer_than_the_context_is_a_400(
    sim: tuple[SimPool, aiohttp.ClientSession],
) -> None:
    _, http = sim
    too_long = "x" * 4 * ZERO.engine.max_model_len
    async with http.post("/v1/completions", json={"prompt": too_long}) as r:
        body = await r.json()
    assert r.status == 400 and "maximum context length" in body["error"]["message"]
