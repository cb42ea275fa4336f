"""Sluice's proxy in front of two real llama.cpp engines (`--engine llamacpp`): chat and
completions, streamed and not, the usage and cached tokens llama.cpp reports read right, a long
system prompt that sticks to the engine that holds it, an engine killed and restarted, an idle
connection llama.cpp closes after 5 s, and the default (vLLM) profile that finds none of its
metrics on llama.cpp's page — and says so instead of treating the engines as idle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from e2e.llamacpp_client import (
    Answer,
    ask,
    chat,
    completion,
    sluice_sum,
    streamed,
    unique_words,
)
from e2e.support import write_pool
from sluice.app import App
from sluice.bench.engines.llamacpp import LlamaServers
from sluice.bench.harness.ports import free_port
from sluice.cli.serve_options import parse_serve_options
from sluice.room.rules import has_room

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def sluice_proxy(
    servers: LlamaServers, tmp: Path, *, engine: str | None = "llamacpp", config: str = ""
) -> AsyncIterator[tuple[App, str]]:
    write_pool(tmp, servers.ports)
    flags = [
        "--pool-name=pool",
        f"--resources={tmp / 'pool.yaml'}",
        f"--proxy-port={free_port()}",
        "--disable-extproc",
        f"--grpc-health-port={free_port()}",
        f"--metrics-port={free_port()}",
        "--grpc-host=127.0.0.1",
        "--secure-serving=false",
    ]
    if engine is not None:
        flags.append(f"--engine={engine}")
    if config:
        (tmp / "config.yaml").write_text(config)
        flags.append(f"--config-file={tmp / 'config.yaml'}")
    app = App(parse_serve_options(flags))
    await app.start()
    try:
        await _until(lambda: all(s.scraped for s in app.registry.snapshot()) or engine is None)
        yield app, f"http://127.0.0.1:{app.options.proxy_port}"
    finally:
        await app.stop()


async def _until(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def dispatched(app: App) -> dict[int, int]:
    return {s.endpoint.port: s.dispatched_total for s in app.registry.snapshot()}


async def test_chat_and_completions_streamed_and_not_with_usage_read_right(
    llama_servers: LlamaServers, tmp_path: Path
) -> None:
    async with sluice_proxy(llama_servers, tmp_path) as (app, url), aiohttp.ClientSession() as s:
        answers = [
            await ask(s, url, chat("Say hi.")),
            await ask(s, url, streamed(chat("Say hi."))),
            await ask(s, url, completion("Once upon a time")),
            await ask(s, url, streamed(completion("Once upon a time"))),
        ]
        await _until(lambda: app.director.in_flight == 0)
    for answer in answers:
        assert answer.status == 200, answer.raw
        assert answer.text, answer.raw
        assert answer.usage["completion_tokens"] == 4, answer.raw
    # Sluice read the same prompt and output tokens the engines reported, for all four.
    registry = app.metrics_registry
    assert sluice_sum(registry, "inference_objective_input_tokens_count") == 4
    assert sluice_sum(registry, "inference_objective_input_tokens_sum") == sum(
        a.usage["prompt_tokens"] for a in answers
    )
    assert sluice_sum(registry, "inference_objective_output_tokens_sum") == 16
    assert sum(dispatched(app).values()) == 4


async def test_a_long_system_prompt_sticks_to_one_engine_and_its_second_ttft_drops(
    llama_servers: LlamaServers, tmp_path: Path
) -> None:
    # ~500 tokens of system prompt no engine has seen; two different questions after it.
    system = unique_words(330, seed=uuid.uuid4().hex)
    async with sluice_proxy(llama_servers, tmp_path) as (app, url), aiohttp.ClientSession() as s:
        first = await ask(s, url, streamed(chat("What is this?", system=system)))
        after_first = dispatched(app)
        second = await ask(s, url, streamed(chat("And now?", system=system)))
        await _until(lambda: app.director.in_flight == 0)
        cached = sluice_sum(app.metrics_registry, "inference_objective_prompt_cached_tokens_sum")
    assert first.status == second.status == 200
    [engine] = [port for port, n in after_first.items() if n == 1]
    assert dispatched(app)[engine] == 2, "the second request went where its prefix is cached"
    prompt = first.usage["prompt_tokens"]
    assert prompt > 400
    # At most the chat template's opening tokens were cached before; then the whole system part.
    assert first.usage["prompt_tokens_details"]["cached_tokens"] < 0.05 * prompt
    reused = second.usage["prompt_tokens_details"]["cached_tokens"]
    assert reused > 0.9 * prompt
    before = first.usage["prompt_tokens_details"]["cached_tokens"]
    assert cached == before + reused, "Sluice read llama.cpp's cached tokens from the usage"
    assert second.ttft_s < 0.5 * first.ttft_s, (first.ttft_s, second.ttft_s)


async def test_requests_sharing_a_new_prefix_at_once_compute_it_once(
    llama_servers: LlamaServers, tmp_path: Path
) -> None:
    """Three requests with one new ~500-token system prompt, sent together: llama.cpp would
    compute it once per slot they land on. Sluice (for llama.cpp, `computingPrefixes:
    completion` by default) sends them to one engine one after another, each reusing it."""
    system = unique_words(330, seed=uuid.uuid4().hex)
    async with sluice_proxy(llama_servers, tmp_path) as (app, url), aiohttp.ClientSession() as s:

        async def one(i: int) -> Answer:
            await asyncio.sleep(0.05 * i)
            return await ask(s, url, streamed(chat(f"Question {i}?", system=system)))

        answers = await asyncio.gather(*(one(i) for i in range(3)))
        await _until(lambda: app.director.in_flight == 0)
    assert all(a.status == 200 for a in answers), [a.raw for a in answers]
    prompt = answers[0].usage["prompt_tokens"]
    cached = sorted(a.usage["prompt_tokens_details"]["cached_tokens"] for a in answers)
    assert cached[0] < 0.05 * prompt, "one request computed the system prompt"
    assert all(c > 0.9 * prompt for c in cached[1:]), ("the others reused it", cached, prompt)
    assert sorted(dispatched(app).values()) == [0, 3], "all three went where it is computed"


async def test_an_engine_killed_gets_no_traffic_and_gets_it_back_once_restarted(
    llama_servers: LlamaServers, tmp_path: Path
) -> None:
    victim = llama_servers[0]
    async with sluice_proxy(llama_servers, tmp_path) as (app, url), aiohttp.ClientSession() as s:
        try:
            victim.kill()
            state = next(st for st in app.registry.snapshot() if st.endpoint.port == victim.port)
            await _until(lambda: not has_room(state, time.monotonic(), app.director.room.settings))
            before = dispatched(app)
            answers = await asyncio.gather(*(ask(s, url, chat(f"n {i}")) for i in range(4)))
            assert [a.status for a in answers] == [200] * 4, [a.raw for a in answers]
            assert dispatched(app)[victim.port] == before[victim.port], "none to the dead one"
        finally:
            victim.restart()
        await _until(lambda: has_room(state, time.monotonic(), app.director.room.settings))
        before = dispatched(app)
        # Four at once over 2 × 2 slots: the in-flight scorer spreads them over both engines.
        answers = await asyncio.gather(*(ask(s, url, chat(f"m {i}")) for i in range(4)))
        assert [a.status for a in answers] == [200] * 4, [a.raw for a in answers]
        assert dispatched(app)[victim.port] > before[victim.port], "traffic came back"


async def test_a_connection_llamacpp_closed_while_idle_is_not_an_error(
    llama_servers: LlamaServers, tmp_path: Path
) -> None:
    # llama-server closes keep-alive connections idle for 5 s; the proxy pools them for 60 s.
    async with sluice_proxy(llama_servers, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        first = await asyncio.gather(*(ask(s, url, completion(f"a {i}")) for i in range(4)))
        await asyncio.sleep(5.5)
        again = await asyncio.gather(*(ask(s, url, completion(f"b {i}")) for i in range(4)))
    assert [a.status for a in first + again] == [200] * 8, [a.raw for a in first + again]


async def test_the_vllm_profile_on_llamacpp_pages_gives_no_room_and_says_why(
    llama_servers: LlamaServers, tmp_path: Path
) -> None:
    warnings: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = warnings.append  # type: ignore[method-assign]
    logging.getLogger("sluice").addHandler(handler)
    config = "flowControl: {defaultRequestTTL: 300ms}\n"
    try:
        async with (
            sluice_proxy(llama_servers, tmp_path, engine=None, config=config) as (app, url),
            aiohttp.ClientSession() as s,
        ):
            states = app.registry.snapshot()
            await _until(lambda: all(st.missing_metrics for st in states))
            await asyncio.sleep(0.3)  # a few more scrapes: still said only once per endpoint
            answer = await ask(s, url, completion("hello"))
            gauge = sluice_sum(app.metrics_registry, "sluice_endpoint_metrics_missing")
    finally:
        logging.getLogger("sluice").removeHandler(handler)
    assert not any(st.scraped for st in states), "never an idle-looking engine"
    assert answer.status in (429, 503), answer.raw
    assert sum(dispatched(app).values()) == 0
    assert gauge == 2 * 3, "waiting, running and KV usage, on both endpoints"
    said = [r for r in warnings if "queue metrics" in r.getMessage()]
    assert len(said) == 2, [r.getMessage() for r in warnings]
    fields = said[0].fields  # type: ignore[attr-defined]
    assert "llamacpp:requests_deferred" in fields["found"]
    assert "vllm:num_requests_waiting" in fields["missing"]


async def test_each_engine_gets_at_most_its_slots_and_the_rest_wait_in_sluice(
    llama_servers: LlamaServers, tmp_path: Path
) -> None:
    """llama.cpp runs `--parallel` requests and queues the rest in arrival order, out of
    priority's reach. Sluice reads each engine's `total_slots` from `/props` and releases a
    request only while some engine has a free slot: eight requests sent at once over 2 x 2
    slots wait in Sluice, not in llama.cpp. (Placement may still put one on a full engine that
    scores better — its prefix, a slot about to free — so an engine can briefly hold one more
    than its slots; the pool as a whole stays near its four.)"""
    async with sluice_proxy(llama_servers, tmp_path) as (app, url), aiohttp.ClientSession() as s:
        states = app.registry.snapshot()
        await _until(lambda: all(st.slots is not None for st in states))
        assert [st.slots for st in states] == [2, 2]
        total_peak, queued_peak = 0, 0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal total_peak, queued_peak
            while not done.is_set():
                total_peak = max(total_peak, sum(st.in_flight_requests for st in states))
                queued_peak = max(queued_peak, app.director.core.flow.queued_requests)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        body = {"max_tokens": 48, "ignore_eos": True}
        answers = await asyncio.gather(
            *(ask(s, url, streamed(completion(f"Count {i}:", **body))) for i in range(8))
        )
        done.set()
        await watcher
    assert [a.status for a in answers] == [200] * 8, [a.raw for a in answers]
    assert sum(dispatched(app).values()) == 8
    assert queued_peak >= 3, "the requests beyond the slots waited in Sluice"
    assert 4 <= total_peak <= 5, total_peak  # every slot used; never all eight at the engines
