"""Retry on the next fallback only while nothing has reached the client."""

from __future__ import annotations

import orjson

from sluice.director.contract import Outcome

from .conftest import make_pipeline
from .fake_engine import unused_endpoint
from .test_relay import url

COMPLETION = {"model": "test-model", "prompt": "hello", "max_tokens": 2}


async def test_a_refused_connection_moves_the_request_to_the_next_fallback(
    start_engines, start_proxy, client
):
    (engine,) = await start_engines(1)
    refused = unused_endpoint()
    pipeline = make_pipeline([refused, engine.endpoint], fallbacks=1)
    proxy = await start_proxy(pipeline)

    async with client.post(url(proxy, "/v1/completions"), json=COMPLETION) as response:
        assert response.status == 200
        assert (await response.json())["served_by"] == engine.name

    admission = pipeline.only_admission()
    assert admission.endpoints[0] == refused
    assert admission.retargets == [engine.endpoint]
    assert admission.finishes == [Outcome.COMPLETED]


async def test_a_server_that_hangs_up_before_answering_is_retried_elsewhere(
    start_engines, start_proxy, client
):
    hangs_up, healthy = await start_engines(2)
    hangs_up.close_before_response = True
    pipeline = make_pipeline([hangs_up.endpoint, healthy.endpoint], fallbacks=1)
    proxy = await start_proxy(pipeline)

    async with client.post(url(proxy, "/v1/completions"), json=COMPLETION) as response:
        assert response.status == 200
        assert (await response.json())["served_by"] == healthy.name

    assert len(hangs_up.received) == 1  # it did get the request, and said nothing
    assert pipeline.only_admission().retargets == [healthy.endpoint]


async def test_without_a_fallback_a_hang_up_before_answering_is_a_502(
    start_engines, start_proxy, client
):
    (hangs_up,) = await start_engines(1)
    hangs_up.close_before_response = True
    pipeline = make_pipeline([hangs_up.endpoint])
    proxy = await start_proxy(pipeline)

    async with client.post(url(proxy, "/v1/completions"), json=COMPLETION) as response:
        assert response.status == 502
        assert (await response.json())["error"]["code"] == "BadGateway"
    assert pipeline.only_admission().finishes == [Outcome.UPSTREAM_ERROR]


async def test_a_stream_that_breaks_after_bytes_were_sent_is_not_retried(
    start_engines, start_proxy, client
):
    crashes, spare = await start_engines(2)
    pipeline = make_pipeline([crashes.endpoint, spare.endpoint], fallbacks=1)
    proxy = await start_proxy(pipeline)

    body = COMPLETION | {"stream": True, "max_tokens": 5}
    headers = {"x-test-fail-after-tokens": "2"}
    async with client.post(url(proxy, "/v1/completions"), json=body, headers=headers) as response:
        assert response.status == 200  # the headers were already on their way
        events = [line async for line in response.content if line.startswith(b"data: ")]

    assert len(events) == 3  # two tokens, then one error event, then a clean end
    error = orjson.loads(events[-1][len(b"data: ") :])
    assert error["error"]["code"] == "BadGateway"
    assert spare.received == []
    admission = pipeline.only_admission()
    assert admission.retargets == []
    assert admission.finishes == [Outcome.UPSTREAM_ERROR]
