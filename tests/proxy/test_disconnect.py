"""A client that goes away releases everything: its queue slot, or its upstream generation."""

from __future__ import annotations

import asyncio

from sluice.director.contract import Outcome

from .conftest import eventually, make_pipeline
from .test_relay import url


async def test_hanging_up_mid_stream_cancels_upstream_and_finishes_once(
    start_engines, start_proxy, client
):
    (engine,) = await start_engines(1)
    pipeline = make_pipeline([engine.endpoint])
    proxy = await start_proxy(pipeline)

    body = {"model": "test-model", "prompt": "x", "stream": True, "max_tokens": 1000}
    headers = {"x-test-token-delay-ms": "5"}
    response = await client.post(url(proxy, "/v1/completions"), json=body, headers=headers)
    await response.content.readline()  # the first token arrived
    response.close()  # drop the connection

    await eventually(lambda: engine.streams_cancelled == 1)
    await eventually(lambda: pipeline.only_admission().finishes == [Outcome.CLIENT_GONE])
    await asyncio.sleep(0.1)  # nothing else trickles in later
    assert pipeline.only_admission().finishes == [Outcome.CLIENT_GONE]


async def test_hanging_up_while_queued_leaves_the_queue(start_engines, start_proxy, client):
    (engine,) = await start_engines(1)
    pipeline = make_pipeline([engine.endpoint])
    pipeline.inner.gate = asyncio.Event()  # admit() waits: the request is queued
    proxy = await start_proxy(pipeline)

    request = asyncio.create_task(
        client.post(url(proxy, "/v1/completions"), json={"model": "m", "prompt": "x"})
    )
    await eventually(lambda: pipeline.parses == 1)
    request.cancel()  # the client gives up while waiting

    await eventually(lambda: pipeline.admits_cancelled == 1)
    pipeline.inner.gate.set()
    await asyncio.sleep(0.05)
    assert pipeline.admissions == []  # never admitted, so nothing to finish
    assert engine.received == []
