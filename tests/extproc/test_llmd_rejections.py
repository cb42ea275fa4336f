"""llm-d-router's rejection contract over ext_proc, with the real director: 429 while the pool
has endpoints but they are contended, 503 while it has none (or none in the subset), each with
`x-llm-d-request-dropped-reason` and upstream's body; the scale-from-zero waiting room
(`noEndpointRequestTTL`); eviction of a negative band before its first token."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from director_harness import DRAINING_FILTER, make_director, pool_state, report
from sluice.config import parse_flow_control
from sluice.flowcontrol import FlowControlConfig
from sluice.room import RoomSettings

from . import envoy_messages as m
from .test_request_path import read, send_request

CHAT = json.dumps({"model": "llama", "messages": [{"role": "user", "content": "hi"}]}).encode()
BATCH = {"x-llm-d-inference-objective": "batch"}  # priority -1
INTERACTIVE = {"x-llm-d-inference-objective": "interactive"}  # priority 10
DROPPED = "x-llm-d-request-dropped-reason"


@pytest.fixture
def flow_config() -> FlowControlConfig:
    return FlowControlConfig()


@pytest.fixture
def room_settings() -> RoomSettings:
    return RoomSettings(metrics_staleness_s=60.0)


@pytest.fixture
def ports() -> tuple[int, ...]:
    return (8000,)


@pytest.fixture
def picker_config() -> str | None:
    return None


@pytest.fixture
def pipeline(flow_config, room_settings, ports, picker_config):
    """The real director (overrides the double): engines are the registry's metrics."""
    return make_director(
        flow_config, room_settings, ports, address="10.0.0.1", config_text=picker_config
    )


def immediate(answer):
    assert answer.HasField("immediate_response"), answer
    response = answer.immediate_response
    return response.status.code, m.set_headers(response.headers), response.body


async def routed(call):
    header_answer, _ = await read(call, 2)
    assert header_answer.request_headers.response.header_mutation.set_headers
    return m.set_headers(header_answer.request_headers.response.header_mutation)


async def silent_for(call, seconds: float) -> asyncio.Task:
    """Assert `call` answers nothing within `seconds`; return the pending read to await later
    (cancelling a read would cancel the whole RPC)."""
    pending = asyncio.ensure_future(call.read())
    done, _ = await asyncio.wait({pending}, timeout=seconds)
    assert not done, "an answer came"
    return pending


async def queued(director, count: int = 1) -> None:
    for _ in range(200):
        if director.flow.queued_requests >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the request did not queue")


@pytest.mark.parametrize("flow_config", [parse_flow_control({"maxRequests": 1})])
async def test_a_full_queue_is_429_rejected_saturated(stub, pipeline):
    waiting = stub.Process()
    await send_request(waiting, CHAT)  # no endpoint has fresh metrics: it queues
    await queued(pipeline)
    call = stub.Process()
    await send_request(call, CHAT)
    status, headers, body = immediate((await read(call))[0])
    assert (status, headers[DROPPED]) == (429, "rejected-saturated")
    assert int(headers["retry-after"]) >= 1
    assert (
        body
        == b"inference error: ResourceExhausted - request rejected pre-queue: queue at capacity"
    )
    waiting.cancel()


@pytest.mark.parametrize("flow_config", [parse_flow_control({"maxRequests": 1})])
async def test_a_displaced_request_is_429_rejected_saturated(stub, pipeline):
    low = stub.Process()
    await send_request(low, CHAT, BATCH)
    await queued(pipeline)
    high = stub.Process()
    await send_request(high, CHAT, INTERACTIVE)
    status, headers, body = immediate((await read(low))[0])
    assert (status, headers[DROPPED]) == (429, "rejected-saturated")
    assert body.startswith(b"inference error: ResourceExhausted - displaced from the queue")
    high.cancel()


@pytest.mark.parametrize("flow_config", [parse_flow_control({"defaultRequestTTL": "200ms"})])
async def test_a_wait_expired_on_a_pool_with_endpoints_is_429_rejected_ttl_expired(stub):
    call = stub.Process()
    await send_request(call, CHAT)
    status, headers, body = immediate((await read(call))[0])
    assert (status, headers[DROPPED]) == (429, "rejected-ttl-expired")
    assert (
        body
        == b"inference error: ResourceExhausted - request timed out in queue: request TTL expired"
    )


async def test_a_subset_no_endpoint_matches_is_503_rejected_no_endpoints(stub, pipeline):
    report(pipeline)
    call = stub.Process()
    await call.write(m.request_headers({}, subset=["10.9.9.9:8000"]))
    await call.write(m.request_body(CHAT, end_of_stream=True))
    status, headers, body = immediate((await read(call))[0])
    assert (status, headers[DROPPED]) == (503, "rejected-no-endpoints")
    assert body == (
        b"inference error: ServiceUnavailable - "
        b"failed to find endpoint candidates for serving the request"
    )


@pytest.mark.parametrize("ports", [()])
@pytest.mark.parametrize("flow_config", [FlowControlConfig(no_endpoint_request_ttl_s=0.2)])
async def test_no_endpoints_for_the_whole_wait_is_503_rejected_no_endpoints(stub, pipeline):
    call = stub.Process()
    await send_request(call, CHAT)
    await queued(pipeline)  # the waiting room: not answered at once
    status, headers, body = immediate((await read(call))[0])
    assert (status, headers[DROPPED]) == (503, "rejected-no-endpoints")
    assert body == (
        b"inference error: ServiceUnavailable - "
        b"request timed out in queue and no endpoints are available"
    )


@pytest.mark.parametrize("ports", [()])
async def test_a_request_waits_for_the_first_endpoint_and_goes_there(stub, pipeline):
    call = stub.Process()
    await send_request(call, CHAT)
    await queued(pipeline)
    pipeline.set_state(pool_state((8000,), "10.0.0.1"))  # scaled up from zero
    report(pipeline)
    headers = await routed(call)
    assert headers["x-gateway-destination-endpoint"] == "10.0.0.1:8000"


@pytest.mark.parametrize("flow_config", [parse_flow_control({"mode": "legacy"})])
async def test_legacy_mode_sheds_a_negative_band_on_a_saturated_pool_429_rejected_saturated(
    stub, pipeline
):
    call = stub.Process()  # no endpoint has fresh metrics: the pool is saturated
    await send_request(call, CHAT, BATCH)
    status, headers, body = immediate((await read(call))[0])
    assert (status, headers[DROPPED]) == (429, "rejected-saturated")
    assert body == (
        b"inference error: ResourceExhausted - system saturated, sheddable request dropped"
    )


@pytest.mark.parametrize("picker_config", [DRAINING_FILTER])
async def test_filters_that_leave_no_endpoint_are_429_rejected_saturated(stub, pipeline):
    report(pipeline)
    call = stub.Process()
    await send_request(call, CHAT)
    status, headers, body = immediate((await read(call))[0])
    assert (status, headers[DROPPED]) == (429, "rejected-saturated")
    assert body.startswith(b"inference error: ResourceExhausted - failed to find target endpoint: ")


@pytest.mark.parametrize("ports", [()])
@pytest.mark.parametrize("flow_config", [parse_flow_control({"maxRequests": 1})])
async def test_a_full_waiting_room_of_an_empty_pool_is_503_rejected_no_endpoints(stub, pipeline):
    waiting = stub.Process()
    await send_request(waiting, CHAT)
    await queued(pipeline)
    call = stub.Process()
    await send_request(call, CHAT)
    status, headers, body = immediate((await read(call))[0])
    assert (status, headers[DROPPED]) == (503, "rejected-no-endpoints")
    assert body == (
        b"inference error: ServiceUnavailable - no endpoints available: queue at capacity"
    )
    waiting.cancel()


async def test_while_shutting_down_new_and_waiting_requests_are_503_rejected_shutting_down(
    stub, pipeline
):
    waiting = stub.Process()
    await send_request(waiting, CHAT)  # no fresh metrics: it waits
    await queued(pipeline)
    pipeline.drain()
    late = stub.Process()
    await send_request(late, CHAT)
    assert pipeline.reject_waiting() == 1
    for call in (late, waiting):
        status, headers, body = immediate((await read(call))[0])
        assert (status, headers[DROPPED]) == (503, "rejected-shutting-down")
        assert int(headers["retry-after"]) >= 1
        assert body == b"inference error: ServiceUnavailable - Sluice is shutting down; retry"


EVICTION = [FlowControlConfig(enable_eviction=True)]
ONE_AT_A_TIME = [RoomSettings(metrics_staleness_s=60.0, max_in_flight_requests=1)]


def needs_an_evicting_transport(request: pytest.FixtureRequest) -> None:
    if request.node.callspec.params.get("stub") == "grpc":
        pytest.skip("eviction is offered on the h2 and hyper transports (docs/flowcontrol.md)")


@pytest.mark.parametrize("room_settings", ONE_AT_A_TIME)
@pytest.mark.parametrize("flow_config", EVICTION)
async def test_a_routed_batch_request_is_evicted_429_for_a_waiting_higher_band(
    stub, pipeline, request
):
    report(pipeline)
    low = stub.Process()
    await send_request(low, CHAT, BATCH)
    await routed(low)  # on the engine, no first token yet
    high = stub.Process()
    await send_request(high, CHAT, INTERACTIVE)
    if request.node.callspec.params.get("stub") == "grpc":
        # The grpc.aio shell cannot answer between Envoy's messages: it never offers eviction.
        await queued(pipeline)
        pending = await silent_for(low, 0.2)
        assert pipeline.flow.queued_requests == 1 and pipeline.in_flight == 1
        pending.cancel()
        high.cancel()
        return
    status, headers, body = immediate((await read(low))[0])
    assert (status, headers[DROPPED]) == (429, "evicted")
    assert body == b"request evicted by flow control"  # upstream's eviction body
    await routed(high)  # the room it freed
    assert pipeline.in_flight == 1


@pytest.mark.parametrize("room_settings", ONE_AT_A_TIME)
@pytest.mark.parametrize("flow_config", EVICTION)
async def test_response_headers_wait_for_the_first_token_so_an_eviction_stays_clean(
    stub, pipeline, request
):
    needs_an_evicting_transport(request)
    report(pipeline)
    low = stub.Process()
    await send_request(low, CHAT, BATCH)
    await routed(low)
    await low.write(m.response_headers(content_type="text/event-stream"))
    pending = await silent_for(low, 0.2)  # held: nothing went to the client yet
    high = stub.Process()
    await send_request(high, CHAT, INTERACTIVE)
    status, headers, _ = immediate(await asyncio.wait_for(pending, 5))
    assert (status, headers[DROPPED]) == (429, "evicted")
    await routed(high)


@pytest.mark.parametrize("room_settings", ONE_AT_A_TIME)
@pytest.mark.parametrize("flow_config", EVICTION)
async def test_after_its_first_token_a_request_is_never_evicted(stub, pipeline, request):
    needs_an_evicting_transport(request)
    report(pipeline)
    low = stub.Process()
    await send_request(low, CHAT, BATCH)
    await routed(low)
    await low.write(m.response_headers(content_type="text/event-stream"))
    await low.write(m.response_body(b'data: {"choices":[]}\n\n'))
    header_answer, body_answer = await read(low, 2)  # released with the first token
    assert header_answer.HasField("response_headers") and body_answer.HasField("response_body")
    high = stub.Process()
    await send_request(high, CHAT, INTERACTIVE)
    await queued(pipeline)
    await asyncio.sleep(0.05)
    assert pipeline.flow.queued_requests == 1  # it waits: the batch request keeps its engine
    await low.write(m.response_body(b"data: [DONE]\n\n", end_of_stream=True))
    await read(low)
    await routed(high)  # the batch request's completion made the room


@pytest.mark.parametrize("room_settings", ONE_AT_A_TIME)
@pytest.mark.parametrize(
    "flow_config", [replace(EVICTION[0], enable_eviction=False), EVICTION[0]], ids=["off", "on"]
)
async def test_a_non_negative_band_is_never_evicted_and_eviction_is_off_by_default(stub, pipeline):
    report(pipeline)
    standard = stub.Process()
    await send_request(standard, CHAT)  # priority 0: not sheddable
    await routed(standard)
    high = stub.Process()
    await send_request(high, CHAT, INTERACTIVE)
    await queued(pipeline)
    pending = await silent_for(standard, 0.2)
    assert pipeline.flow.queued_requests == 1
    pending.cancel()
    high.cancel()
    standard.cancel()
