"""llm-d-router's request headers and rejection contract in proxy mode, with the real director
in front of fake engines: each header form (the new name winning), none of them reaching the
model server; 429 while the pool has endpoints but they are contended, 503 while it has none,
each with `x-llm-d-request-dropped-reason` and an OpenAI-shaped body; the scale-from-zero
waiting room; eviction of a negative band before its first token."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from director_harness import DRAINING_FILTER, make_director, pool_state, report
from sluice.config import parse_flow_control
from sluice.flowcontrol import FlowControlConfig
from sluice.requests.headers import CONTROL_HEADERS
from sluice.room import RoomSettings

from .conftest import eventually
from .recording import RecordingPipeline
from .test_errors import assert_openai_error
from .test_relay import url

BODY = {"model": "test-model", "prompt": "hello", "max_tokens": 3}
DROPPED = "x-llm-d-request-dropped-reason"


async def post(client, proxy, headers=None, body=None):
    """(status, headers, JSON body or raw text) of one completion request."""
    payload = orjson.dumps(body or BODY)
    async with client.post(url(proxy, "/v1/completions"), data=payload, headers=headers) as r:
        text = await r.read()
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:
            document = text
        return r.status, r.headers, document


@pytest.mark.parametrize(
    ("headers", "objective", "fairness_id", "model"),
    [
        ({"x-llm-d-inference-objective": "interactive"}, "interactive", "default-flow", None),
        ({"x-gateway-inference-objective": "interactive"}, "interactive", "default-flow", None),
        ({"x-llm-d-inference-fairness-id": "t1"}, None, "t1", None),
        ({"x-gateway-inference-fairness-id": "t1"}, None, "t1", None),
        ({"x-llm-d-model-name-rewrite": "lora"}, None, "default-flow", "lora"),
        ({"x-gateway-model-name-rewrite": "lora"}, None, "default-flow", "lora"),
        ({"x-llm-d-slo-ttft-ms": "250", "x-llm-d-slo-tpot-ms": "12.5"}, None, "default-flow", None),
        ({"x-slo-ttft-ms": "250", "x-slo-tpot-ms": "12.5"}, None, "default-flow", None),
        (
            {  # only the gateway or the picker may set these
                "x-gateway-destination-endpoint-served": "10.0.0.9:8000",
                "x-gateway-destination-endpoint-subset": "10.0.0.9:8000",
                "x-llm-d-request-dropped-reason": "evicted",
                "x-llm-d-video-fps": "30",
            },
            None,
            "default-flow",
            None,
        ),
        (
            {
                "x-gateway-inference-objective": "batch",
                "x-llm-d-inference-objective": "interactive",
                "x-gateway-inference-fairness-id": "old",
                "x-llm-d-inference-fairness-id": "new",
                "x-gateway-model-name-rewrite": "old",
                "x-llm-d-model-name-rewrite": "new",
                "x-slo-ttft-ms": "900",
                "x-llm-d-slo-ttft-ms": "100",
                "x-llm-d-slo-tpot-ms": "20",
            },
            "interactive",
            "new",
            "new",
        ),
    ],
)
async def test_each_header_form_classifies_and_none_reaches_the_engine(
    start_engines, start_proxy, client, headers, objective, fairness_id, model
):
    (engine,) = await start_engines(1)
    director = make_director(ports=(engine.port,))
    report(director)
    pipeline = RecordingPipeline(director)
    proxy = await start_proxy(pipeline)
    status, _, _ = await post(client, proxy, headers)
    assert status == 200
    parsed = pipeline.only_admission().request
    assert (parsed.objective, parsed.fairness_id) == (objective, fairness_id)
    assert parsed.priority == {"interactive": 10, None: 0}[objective]
    [received] = engine.received
    assert orjson.loads(received.body)["model"] == (model or "test-model")
    assert not CONTROL_HEADERS & {name.lower() for name in received.headers}
    assert set(headers) <= CONTROL_HEADERS  # so none of the headers sent reached the engine
    if {"x-llm-d-slo-ttft-ms", "x-slo-ttft-ms"} <= set(headers):  # both names: the new wins
        assert (parsed.slo_ttft_s, parsed.slo_tpot_s) == (0.1, 0.02)
    elif {"x-llm-d-slo-ttft-ms", "x-slo-ttft-ms"} & set(headers):
        assert (parsed.slo_ttft_s, parsed.slo_tpot_s) == (0.25, 0.0125)
    else:
        assert (parsed.slo_ttft_s, parsed.slo_tpot_s) == (None, None)


async def test_a_malformed_slo_header_is_a_400_naming_it(start_engines, start_proxy, client):
    (engine,) = await start_engines(1)
    proxy = await start_proxy(make_director(ports=(engine.port,)))
    status, _, document = await post(client, proxy, {"x-llm-d-slo-tpot-ms": "soon"})
    assert status == 400
    assert_openai_error(document, "BadRequest")
    assert "x-llm-d-slo-tpot-ms" in document["error"]["message"]
    assert engine.received == []


# -- rejections ------------------------------------------------------------------------------


async def test_a_full_queue_is_429_rejected_saturated(start_proxy, client):
    director = make_director(parse_flow_control({"maxRequests": 1}))  # never reported: no room
    proxy = await start_proxy(director)
    waiting = asyncio.create_task(post(client, proxy))
    await eventually(lambda: director.flow.queued_requests == 1)
    status, headers, document = await post(client, proxy)
    assert (status, headers[DROPPED]) == (429, "rejected-saturated")
    assert int(headers["Retry-After"]) >= 1
    assert_openai_error(document, "ResourceExhausted")
    assert document["error"]["message"] == "request rejected pre-queue: queue at capacity"
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_a_displaced_request_is_429_rejected_saturated(start_proxy, client):
    director = make_director(parse_flow_control({"maxRequests": 1}))
    proxy = await start_proxy(director)
    low = asyncio.create_task(post(client, proxy, {"x-llm-d-inference-objective": "batch"}))
    await eventually(lambda: director.flow.queued_requests == 1)
    high = asyncio.create_task(post(client, proxy, {"x-llm-d-inference-objective": "interactive"}))
    status, headers, document = await asyncio.wait_for(low, 5)
    assert (status, headers[DROPPED]) == (429, "rejected-saturated")
    assert_openai_error(document, "ResourceExhausted")
    message = "displaced from the queue by a higher-priority request"
    assert document["error"]["message"] == message
    high.cancel()
    await asyncio.gather(high, return_exceptions=True)


async def test_a_wait_expired_on_a_pool_with_endpoints_is_429_rejected_ttl_expired(
    start_proxy, client
):
    proxy = await start_proxy(make_director(parse_flow_control({"defaultRequestTTL": "200ms"})))
    status, headers, document = await post(client, proxy)
    assert (status, headers[DROPPED]) == (429, "rejected-ttl-expired")
    assert_openai_error(document, "ResourceExhausted")
    assert document["error"]["message"] == "request timed out in queue: request TTL expired"


async def test_no_endpoints_for_the_whole_wait_is_503_rejected_no_endpoints(start_proxy, client):
    director = make_director(FlowControlConfig(no_endpoint_request_ttl_s=0.2), ports=())
    proxy = await start_proxy(director)
    status, headers, document = await post(client, proxy)
    assert (status, headers[DROPPED]) == (503, "rejected-no-endpoints")
    assert_openai_error(document, "ServiceUnavailable")
    assert "no endpoints are available" in document["error"]["message"]


async def test_a_request_waits_for_the_first_endpoint_and_is_served(
    start_engines, start_proxy, client
):
    director = make_director(ports=())
    proxy = await start_proxy(director)
    waiting = asyncio.create_task(post(client, proxy))
    await eventually(lambda: director.flow.queued_requests == 1)
    (engine,) = await start_engines(1)  # the pool scales up from zero
    director.set_state(pool_state((engine.port,)))
    report(director)
    status, _, document = await asyncio.wait_for(waiting, 5)
    assert status == 200 and document["served_by"] == engine.name


async def test_legacy_mode_sheds_a_negative_band_on_a_saturated_pool_429_rejected_saturated(
    start_proxy, client
):
    proxy = await start_proxy(make_director(parse_flow_control({"mode": "legacy"})))
    status, headers, document = await post(client, proxy, {"x-llm-d-inference-objective": "batch"})
    assert (status, headers[DROPPED]) == (429, "rejected-saturated")
    assert_openai_error(document, "ResourceExhausted")
    assert document["error"]["message"] == "system saturated, sheddable request dropped"


async def test_filters_that_leave_no_endpoint_are_429_rejected_saturated(
    start_engines, start_proxy, client
):
    (engine,) = await start_engines(1)
    director = make_director(ports=(engine.port,), config_text=DRAINING_FILTER)
    report(director)
    proxy = await start_proxy(director)
    status, headers, document = await post(client, proxy)
    assert (status, headers[DROPPED]) == (429, "rejected-saturated")
    assert_openai_error(document, "ResourceExhausted")
    assert document["error"]["message"].startswith("failed to find target endpoint: ")
    assert engine.received == []


async def test_a_full_waiting_room_of_an_empty_pool_is_503_rejected_no_endpoints(
    start_proxy, client
):
    director = make_director(parse_flow_control({"maxRequests": 1}), ports=())
    proxy = await start_proxy(director)
    waiting = asyncio.create_task(post(client, proxy))
    await eventually(lambda: director.flow.queued_requests == 1)
    status, headers, document = await post(client, proxy)
    assert (status, headers[DROPPED]) == (503, "rejected-no-endpoints")
    assert_openai_error(document, "ServiceUnavailable")
    assert document["error"]["message"] == "no endpoints available: queue at capacity"
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_while_shutting_down_new_and_waiting_requests_are_503_rejected_shutting_down(
    start_proxy, client
):
    director = make_director()  # never reported: requests wait
    proxy = await start_proxy(director)
    waiting = asyncio.create_task(post(client, proxy))
    await eventually(lambda: director.flow.queued_requests == 1)
    director.drain()
    late = await post(client, proxy)
    assert director.reject_waiting() == 1
    proxy.begin_drain()  # the proxy's own refusal, before it reads the request
    refused = await post(client, proxy)
    for status, headers, document in (late, await asyncio.wait_for(waiting, 5), refused):
        assert (status, headers[DROPPED]) == (503, "rejected-shutting-down")
        assert int(headers["Retry-After"]) >= 1
        assert_openai_error(document, "ServiceUnavailable")
        assert document["error"]["message"] == "Sluice is shutting down; retry"


# -- eviction --------------------------------------------------------------------------------

EVICTION = FlowControlConfig(enable_eviction=True)
ONE_AT_A_TIME = RoomSettings(metrics_staleness_s=60.0, max_in_flight_requests=1)
PREFILLING = {"x-test-first-token-delay-ms": "3000"}  # the engine's head comes at once


async def test_a_batch_request_without_a_first_token_is_evicted_429(
    start_engines, start_proxy, client
):
    (engine,) = await start_engines(1)
    director = make_director(EVICTION, ONE_AT_A_TIME, ports=(engine.port,))
    report(director)
    proxy = await start_proxy(director)
    body = {**BODY, "stream": True}
    low = asyncio.create_task(
        post(client, proxy, {"x-llm-d-inference-objective": "batch", **PREFILLING}, body)
    )
    await eventually(lambda: engine.streams_started == 1)  # its head came; no token yet
    status, _, document = await post(client, proxy, {"x-llm-d-inference-objective": "interactive"})
    assert status == 200 and document["served_by"] == engine.name  # in the room it freed
    status, headers, document = await asyncio.wait_for(low, 5)
    assert (status, headers[DROPPED]) == (429, "evicted")
    assert_openai_error(document, "ResourceExhausted")
    assert document["error"]["message"] == "request evicted by flow control"
    await eventually(lambda: engine.streams_cancelled == 1)  # the generation was stopped


async def test_a_standard_request_is_never_evicted(start_engines, start_proxy, client):
    (engine,) = await start_engines(1)
    director = make_director(EVICTION, ONE_AT_A_TIME, ports=(engine.port,))
    report(director)
    proxy = await start_proxy(director)
    slow = {"x-test-first-token-delay-ms": "300"}
    standard = asyncio.create_task(post(client, proxy, slow, {**BODY, "stream": True}))
    await eventually(lambda: engine.streams_started == 1)
    high = asyncio.create_task(post(client, proxy, {"x-llm-d-inference-objective": "interactive"}))
    status, _, _ = await asyncio.wait_for(standard, 5)
    assert status == 200  # band 0 is not sheddable: it finished, then the high one went
    status, _, _ = await asyncio.wait_for(high, 5)
    assert status == 200
    assert engine.streams_cancelled == 0
