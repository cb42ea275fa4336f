"""The request path of the Endpoint Picker Protocol, driven over loopback gRPC like Envoy."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from sluice.bench.harness.pipeline_double import DoublePipeline
from sluice.extproc import BodyMode, StreamOptions
from sluice.extproc.wire import STREAMED_CHUNK_BYTES

from . import envoy_messages as m
from .conftest import ENDPOINTS

CHAT = json.dumps(
    {"model": "llama", "messages": [{"role": "user", "content": "hi"}], "seed": 2**60 + 1},
    separators=(",", ":"),
).encode()
CONTROL = {
    "x-gateway-inference-objective": "gold",
    "x-gateway-inference-fairness-id": "tenant-a",
    "x-sluice-request-ttl": "5s",
}


async def read(call, n: int = 1):
    return [await asyncio.wait_for(call.read(), 5) for _ in range(n)]


async def send_request(call, body: bytes, headers=None, *, parts: int = 1, **kw):
    await call.write(m.request_headers(headers or {}, **kw))
    size = -(-len(body) // parts)
    for i in range(parts):
        last = i == parts - 1
        await call.write(m.request_body(body[i * size : (i + 1) * size], end_of_stream=last))


async def test_header_only_request_is_routed_to_any_endpoint(stub):
    call = stub.Process()
    await call.write(
        m.request_headers({":method": "GET", ":path": "/v1/models"}, end_of_stream=True)
    )
    [answer] = await read(call)
    common = answer.request_headers.response
    assert common.clear_route_cache
    headers = m.set_headers(common.header_mutation)
    assert headers["x-gateway-destination-endpoint"] == ENDPOINTS[0].hostport
    assert "content-length" not in headers
    assert m.destination_metadata(answer) == ENDPOINTS[0].hostport


async def test_streamed_request_split_across_chunks_is_answered_once_complete(stub, pipeline):
    call = stub.Process()
    await send_request(call, CHAT, CONTROL, parts=3)
    header_answer, body_answer = await read(call, 2)
    # Nothing was answered before the body ended: the first answer is the header answer.
    common = header_answer.request_headers.response
    assert common.clear_route_cache
    headers = m.set_headers(common.header_mutation)
    chosen = pipeline.admissions[0].endpoints[0].hostport
    assert headers["x-gateway-destination-endpoint"] == chosen
    assert m.destination_metadata(header_answer) == chosen
    assert headers["content-length"] == str(len(CHAT))
    assert headers["x-request-id"] == pipeline.parsed[0].request_id  # generated, then forwarded
    assert sorted(common.header_mutation.remove_headers) == sorted(CONTROL)
    streamed = body_answer.request_body.response.body_mutation.streamed_response
    assert streamed.body == CHAT  # bytes unchanged, big integers included
    assert streamed.end_of_stream
    assert pipeline.parsed[0].fairness_id == "tenant-a"


@pytest.mark.parametrize("stream_options", [StreamOptions(keep_control_headers=True)])
async def test_control_headers_can_be_kept(stub):
    call = stub.Process()
    await send_request(call, CHAT, CONTROL)
    [header_answer, _] = await read(call, 2)
    assert list(header_answer.request_headers.response.header_mutation.remove_headers) == []


async def test_a_client_request_id_is_kept_not_replaced(stub, pipeline):
    call = stub.Process()
    await send_request(call, CHAT, {"x-request-id": "abc"})
    [header_answer, _] = await read(call, 2)
    assert "x-request-id" not in m.set_headers(
        header_answer.request_headers.response.header_mutation
    )
    assert pipeline.parsed[0].request_id == "abc"


async def test_model_rewrite_changes_only_the_model_field(stub):
    call = stub.Process()
    await send_request(call, CHAT, {"x-gateway-model-name-rewrite": "llama-lora-7"})
    header_answer, body_answer = await read(call, 2)
    forwarded = body_answer.request_body.response.body_mutation.streamed_response.body
    assert forwarded == CHAT.replace(b'"model":"llama"', b'"model":"llama-lora-7"')
    headers = m.set_headers(header_answer.request_headers.response.header_mutation)
    assert headers["content-length"] == str(len(forwarded))
    assert (
        "x-gateway-model-name-rewrite"
        in header_answer.request_headers.response.header_mutation.remove_headers
    )


async def test_large_body_comes_back_in_chunks_of_at_most_62000_bytes(stub):
    body = json.dumps({"model": "m", "prompt": "x" * 150_000}).encode()
    call = stub.Process()
    await send_request(call, body, {":path": "/v1/completions"}, parts=5)
    [_, *chunks] = await read(call, 4)
    streamed = [c.request_body.response.body_mutation.streamed_response for c in chunks]
    assert [len(s.body) for s in streamed] == [STREAMED_CHUNK_BYTES] * 2 + [len(body) - 124_000]
    assert [s.end_of_stream for s in streamed] == [False, False, True]
    assert b"".join(s.body for s in streamed) == body


async def test_request_trailers_end_the_body_and_are_answered_last(stub):
    call = stub.Process()
    await call.write(m.request_headers({}))
    await call.write(m.request_body(CHAT))
    await call.write(m.request_trailers())
    header_answer, body_answer, trailer_answer = await read(call, 3)
    assert header_answer.HasField("request_headers")
    assert not body_answer.request_body.response.body_mutation.streamed_response.end_of_stream
    assert trailer_answer.HasField("request_trailers")


async def test_buffered_mode_answers_headers_first_and_routes_on_the_body(stub, pipeline):
    call = stub.Process()
    await call.write(m.request_headers(CONTROL, mode=BodyMode.BUFFERED))
    [header_answer] = await read(call)
    assert not header_answer.request_headers.response.HasField("header_mutation")
    await call.write(m.request_body(CHAT, end_of_stream=True))
    [body_answer] = await read(call)
    common = body_answer.request_body.response
    assert common.clear_route_cache
    headers = m.set_headers(common.header_mutation)
    assert headers["x-gateway-destination-endpoint"] == pipeline.admissions[0].endpoints[0].hostport
    assert headers["content-length"] == str(len(CHAT))
    assert not common.HasField("body_mutation")  # unchanged body: nothing to replace
    assert m.destination_metadata(body_answer) == headers["x-gateway-destination-endpoint"]


async def test_buffered_mode_replaces_the_body_when_the_model_is_rewritten(stub):
    call = stub.Process()
    await call.write(
        m.request_headers({"x-gateway-model-name-rewrite": "big"}, mode=BodyMode.BUFFERED)
    )
    await read(call)
    await call.write(m.request_body(CHAT, end_of_stream=True))
    [body_answer] = await read(call)
    assert body_answer.request_body.response.body_mutation.body == CHAT.replace(
        b'"llama"', b'"big"'
    )


async def test_fallback_endpoints_follow_the_primary(stub, pipeline):
    pipeline.fallbacks = 2
    call = stub.Process()
    await send_request(call, CHAT)
    header_answer, _ = await read(call, 2)
    destination = m.destination_metadata(header_answer)
    assert destination == ",".join(e.hostport for e in pipeline.admissions[0].endpoints)
    assert len(destination.split(",")) == 3


# --- subset hint -------------------------------------------------------------------------------


async def test_subset_hint_restricts_the_candidates(stub):
    call = stub.Process()
    await call.write(m.request_headers({}))
    await call.write(m.request_body(CHAT, end_of_stream=True, subset=["10.0.0.3:8000"]))
    header_answer, _ = await read(call, 2)
    assert m.destination_metadata(header_answer) == "10.0.0.3:8000"


@pytest.mark.parametrize("subset", [[], ["192.168.9.9:8000"]], ids=["empty", "unknown"])
async def test_subset_hint_with_no_match_is_503(stub, subset):
    call = stub.Process()
    await call.write(m.request_headers({}, subset=subset))
    await call.write(m.request_body(CHAT, end_of_stream=True))
    [answer] = await read(call)
    assert answer.immediate_response.status.code == 503
    assert answer.immediate_response.body.startswith(b"inference error: ServiceUnavailable - ")


@pytest.mark.parametrize("stream_options", [StreamOptions(disable_endpoint_subset_filter=True)])
async def test_subset_hint_is_ignored_when_disabled(stub, pipeline):
    call = stub.Process()
    await call.write(m.request_headers({}, subset=[]))
    await call.write(m.request_body(CHAT, end_of_stream=True))
    header_answer, _ = await read(call, 2)
    assert header_answer.HasField("request_headers")
    assert pipeline.parsed[0].subset_hint is None


# --- errors ------------------------------------------------------------------------------------


async def test_invalid_json_is_400_in_upstream_format(stub):
    call = stub.Process()
    await send_request(call, b"{not json")
    [answer] = await read(call)
    assert answer.immediate_response.status.code == 400
    assert answer.immediate_response.body.startswith(b"inference error: BadRequest - ")


async def test_missing_messages_is_400(stub):
    call = stub.Process()
    await send_request(call, b'{"model": "m", "messages": []}')
    [answer] = await read(call)
    assert answer.immediate_response.status.code == 400


async def test_rejection_is_429_with_retry_after(stub, pipeline):
    from sluice.requests.errors import ErrorCode, SluiceError

    pipeline.reject_with = SluiceError(
        ErrorCode.RESOURCE_EXHAUSTED, "queue full", retry_after_s=2.5
    )
    call = stub.Process()
    await send_request(call, CHAT)
    [answer] = await read(call)
    immediate = answer.immediate_response
    assert immediate.status.code == 429
    assert m.set_headers(immediate.headers)["retry-after"] == "3"
    assert immediate.body == b"inference error: ResourceExhausted - queue full"


@pytest.mark.parametrize("pipeline", [DoublePipeline([])])
async def test_no_endpoints_for_header_only_request_is_500(stub):
    call = stub.Process()
    await call.write(m.request_headers({}, end_of_stream=True))
    [answer] = await read(call)
    assert answer.immediate_response.status.code == 500
    assert (
        answer.immediate_response.body
        == b"inference error: Internal - no pods available in datastore"
    )


@pytest.mark.parametrize("stream_options", [StreamOptions(max_body_bytes=1000)])
async def test_oversized_body_is_413_at_once_and_the_rest_is_not_buffered(stub, pipeline):
    call = stub.Process()
    await call.write(m.request_headers({}))
    await call.write(m.request_body(b"x" * 600))
    await call.write(m.request_body(b"x" * 600))  # crosses the limit
    [answer] = await read(call)
    assert answer.immediate_response.status.code == 413
    await call.write(m.request_body(b"x" * 600, end_of_stream=True))  # ignored
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    assert pipeline.parsed == []


@pytest.mark.parametrize("stream_options", [StreamOptions(max_body_bytes=1000)])
async def test_declared_content_length_over_the_limit_is_413_before_any_body(stub):
    call = stub.Process()
    await call.write(m.request_headers({"content-length": "5000"}))
    [answer] = await read(call)
    assert answer.immediate_response.status.code == 413


async def test_an_unexpected_failure_becomes_a_grpc_error_for_the_gateway_failure_mode(
    stub, pipeline
):
    def explode(*args, **kwargs):
        raise RuntimeError("bug")

    pipeline.parse = explode
    call = stub.Process()
    await send_request(call, CHAT)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call.read()
    assert failure.value.code() == grpc.StatusCode.INTERNAL


# --- queueing ----------------------------------------------------------------------------------


async def test_the_stream_stays_open_while_admission_waits(stub, pipeline):
    pipeline.hold = asyncio.Event()
    call = stub.Process()
    await send_request(call, CHAT)
    pending = asyncio.ensure_future(call.read())
    await asyncio.sleep(0.1)
    assert not pending.done() and pipeline.admits_started == 1
    pipeline.hold.set()
    answer = await asyncio.wait_for(pending, 5)
    assert answer.HasField("request_headers")


async def test_disconnect_while_queued_cancels_the_admit(stub, pipeline):
    pipeline.hold = asyncio.Event()
    call = stub.Process()
    await send_request(call, CHAT)
    while pipeline.admits_started == 0:
        await asyncio.sleep(0.01)
    call.cancel()
    for _ in range(200):
        if pipeline.admits_cancelled:
            break
        await asyncio.sleep(0.01)
    assert pipeline.admits_cancelled == 1
    assert pipeline.admissions == []
