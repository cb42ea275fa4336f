"""End to end over simulated vLLM engines (`sluice.sim`): many concurrent streams, and an engine
killed mid-run.

The pipeline is `conftest.make_pipeline` (the round-robin double today). With the double, "new
requests route elsewhere" after a kill happens through the proxy's retry on a refused connection
(one fallback per request); with the real pipeline, staleness also drops the dead engine.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter

import aiohttp
import orjson
import pytest

from sluice.datalayer.endpoint import Endpoint
from sluice.director.contract import Outcome
from sluice.sim.pool import EngineSpec, start_pool
from sluice.sim.profiles import get_profile

from .conftest import eventually, make_pipeline
from .fake_engine import unused_endpoint
from .test_relay import url

pytestmark = pytest.mark.slow

MODEL = "sim-model"
OBJECTIVES = (None, "critical", "standard", "sheddable")


def streamed_completion(max_tokens: int) -> dict:
    return {
        "model": MODEL,
        "prompt": "Tell me about sluice gates.",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def read_stream(response: aiohttp.ClientResponse) -> list[dict | str]:
    """The SSE events of one response: JSON documents, or the string "[DONE]"."""
    events: list[dict | str] = []
    async for line in response.content:
        if line.startswith(b"data: "):
            data = line[len(b"data: ") :].strip()
            events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return events


async def test_200_concurrent_streams_of_mixed_priority_each_get_one_complete_response(
    start_proxy, client
):
    profile = get_profile("llama-8b-h100")
    pool = await start_pool([EngineSpec(profile.engine, profile.cost) for _ in range(4)])
    try:
        endpoints = [
            Endpoint(name=f"sim-{i}-rank-0", address=e.host, port=e.port)
            for i, e in enumerate(pool.engines)
        ]
        pipeline = make_pipeline(endpoints)
        proxy = await start_proxy(pipeline)

        async def one(index: int) -> list[dict | str]:
            objective = OBJECTIVES[index % len(OBJECTIVES)]
            headers = {"x-gateway-inference-objective": objective} if objective else {}
            headers["x-gateway-inference-fairness-id"] = f"tenant-{index % 3}"
            async with client.post(
                url(proxy, "/v1/completions"), json=streamed_completion(16), headers=headers
            ) as response:
                assert response.status == 200
                return await read_stream(response)

        responses = await asyncio.gather(*(one(i) for i in range(200)))

        for events in responses:
            assert events.count("[DONE]") == 1 and events[-1] == "[DONE]"
            documents = [event for event in events if isinstance(event, dict)]
            assert not any("error" in document for document in documents)
            assert documents[-1]["usage"]["completion_tokens"] == 16
        assert len(pipeline.admissions) == 200
        assert all(a.finishes == [Outcome.COMPLETED] for a in pipeline.admissions)
    finally:
        await pool.close()


async def start_engine_process(port: int) -> subprocess.Popen[bytes]:
    """One simulated engine in its own process, so it can really be killed."""
    command = [sys.executable, "-m", "sluice.sim.cli", "--count", "1", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--profile", "llama-8b-h100", "--model", MODEL]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_healthy(session: aiohttp.ClientSession, endpoint: Endpoint) -> None:
    for _ in range(300):
        try:
            async with session.get(f"http://{endpoint.hostport}/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"engine {endpoint.hostport} did not start")


async def test_killing_an_engine_mid_run_ends_its_streams_cleanly_and_new_requests_go_elsewhere(
    start_proxy, client
):
    doomed, survivor = unused_endpoint("doomed"), unused_endpoint("survivor")
    processes = [await start_engine_process(e.port) for e in (doomed, survivor)]
    try:
        await asyncio.gather(*(wait_healthy(client, e) for e in (doomed, survivor)))
        pipeline = make_pipeline([doomed, survivor], fallbacks=1)
        proxy = await start_proxy(pipeline)

        async def stream(max_tokens: int) -> tuple[str, list[dict | str]]:
            async with client.post(
                url(proxy, "/v1/completions"), json=streamed_completion(max_tokens)
            ) as response:
                if response.status != 200:
                    return f"http {response.status}", []
                return "ok", await read_stream(response)

        in_flight = [asyncio.create_task(stream(200)) for _ in range(8)]  # 4 land on each engine
        await eventually(lambda: len(pipeline.admissions) == 8)
        await asyncio.sleep(0.3)  # tokens are flowing
        processes[0].send_signal(signal.SIGKILL)
        results = await asyncio.gather(*in_flight)

        served_by = Counter(a.endpoints[0].name for a in pipeline.admissions[:8])
        assert served_by == {doomed.name: 4, survivor.name: 4}
        outcomes = Counter(a.finishes[0] for a in pipeline.admissions[:8] if len(a.finishes) == 1)
        assert outcomes == {Outcome.UPSTREAM_ERROR: 4, Outcome.COMPLETED: 4}
        for status, events in results:
            assert status in ("ok", "http 502")
            if events and events[-1] != "[DONE]":  # a stream from the killed engine
                assert isinstance(events[-1], dict)
                assert events[-1]["error"]["code"] == "BadGateway"
        assert sum(1 for _, events in results if events and events[-1] == "[DONE]") == 4

        # New requests: the dead engine refuses connections; each goes to the survivor.
        fresh = await asyncio.gather(*(stream(8) for _ in range(4)))
        assert all(status == "ok" and events[-1] == "[DONE]" for status, events in fresh)
        assert all(a.finishes == [Outcome.COMPLETED] for a in pipeline.admissions[8:])
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)
