"""What the transports add beyond the stream logic: the hand-encoded answers are the bytes
protobuf would produce, flow control holds for bodies far over the HTTP/2 windows, protocol
errors surface as gRPC statuses, and Sluice's HTTP/2 server answers connection-level frames."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from sluice.extproc import wire

from . import envoy_messages as m
from .test_request_path import read, send_request


def protobuf_streamed(chunk: bytes, end_of_stream: bool, request: bool) -> bytes:
    body = pb.BodyResponse(
        response=pb.CommonResponse(
            body_mutation=pb.BodyMutation(
                streamed_response=pb.StreamedBodyResponse(body=chunk, end_of_stream=end_of_stream)
            )
        )
    )
    if request:
        return pb.ProcessingResponse(request_body=body).SerializeToString()
    return pb.ProcessingResponse(response_body=body).SerializeToString()


@pytest.mark.parametrize("size", [0, 1, 120, 127, 128, 300, 16_383, 16_384, 62_000, 3_000_000])
@pytest.mark.parametrize("end_of_stream", [False, True])
def test_hand_encoded_streamed_bodies_are_the_protobuf_bytes(size, end_of_stream):
    chunk = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert wire.streamed_response_body(chunk, end_of_stream=end_of_stream) == protobuf_streamed(
        chunk, end_of_stream, request=False
    )
    [request] = wire.streamed_request_body(chunk[:62_000], end_of_stream=end_of_stream)
    assert request == protobuf_streamed(chunk[:62_000], end_of_stream, request=True)


def protobuf_route(
    set_headers: dict[str, str],
    remove: list[str],
    destination: str,
    body: bytes | None,
    *,
    on_body: bool,
) -> bytes:
    common = pb.CommonResponse(
        header_mutation=wire.header_mutation(set_headers, remove), clear_route_cache=True
    )
    if body is not None:
        common.body_mutation.body = body
    meta = struct_pb2.Struct()
    meta.get_or_create_struct("envoy.lb")["x-gateway-destination-endpoint"] = destination
    if on_body:
        message = pb.ProcessingResponse(request_body=pb.BodyResponse(response=common))
    else:
        message = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common))
    message.dynamic_metadata.CopyFrom(meta)
    return message.SerializeToString()


ROUTES = [
    ({"x-gateway-destination-endpoint": "10.0.0.1:8000"}, []),
    (
        {
            "x-gateway-destination-endpoint": ",".join(f"10.0.{i}.{i}:8000" for i in range(40)),
            "content-length": "123456",
            "x-request-id": "4f1c2a8e-1111-2222-3333-444455556666",
        },
        ["x-gateway-inference-objective", "x-gateway-inference-fairness-id"],
    ),
    ({"x-long": "v" * 20_000}, ["x-" + "r" * 200]),
]


@pytest.mark.parametrize(("set_headers", "remove"), ROUTES)
@pytest.mark.parametrize("body", [None, b"", b'{"model":"m"}', b"b" * 70_000])
def test_hand_encoded_routing_answers_are_the_protobuf_bytes(set_headers, remove, body):
    destination = set_headers.get("x-gateway-destination-endpoint", "10.0.0.9:8000")
    assert wire.route_request_body(set_headers, remove, destination, body) == protobuf_route(
        set_headers, remove, destination, body, on_body=True
    )
    if body is None:
        assert wire.route_request_headers(set_headers, remove, destination) == protobuf_route(
            set_headers, remove, destination, None, on_body=False
        )


async def test_a_body_far_over_the_flow_control_windows_echoes_intact(stub):
    text = "y" * (3 << 20)  # 3 MiB: 48x gRPC's initial 64 KiB window, 51 streamed chunks
    body = json.dumps({"model": "llama", "messages": [{"role": "user", "content": text}]}).encode()
    call = stub.Process()
    await send_request(call, body, parts=7)
    [_, *chunks] = await read(call, 1 + -(-len(body) // wire.STREAMED_CHUNK_BYTES))
    echoed = b"".join(c.request_body.response.body_mutation.streamed_response.body for c in chunks)
    assert echoed == body
    await call.write(m.response_headers(200, "application/json"))
    await read(call)
    big = b'{"usage":{"prompt_tokens":1,"completion_tokens":1},"pad":"' + b"z" * (2 << 20) + b'"}'
    await call.write(m.response_body(big, end_of_stream=True))
    [answer] = await read(call)
    assert answer.response_body.response.body_mutation.streamed_response.body == big


async def test_a_protocol_violation_ends_the_rpc_with_failed_precondition(stub):
    call = stub.Process()
    await call.write(m.response_headers(200, "application/json"))  # before any request
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await asyncio.wait_for(call.read(), 5)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_many_concurrent_streams_on_one_connection(stub, pipeline):
    async def one() -> None:
        call = stub.Process()
        await send_request(
            call,
            json.dumps({"model": "m", "messages": [{"role": "user", "content": "p"}]}).encode(),
        )
        await read(call, 2)
        await call.write(m.response_headers(200, "application/json"))
        await read(call)
        await call.write(m.response_body(b'{"usage":{}}', end_of_stream=True))
        await read(call)
        await call.done_writing()

    await asyncio.gather(*(one() for _ in range(50)))
    assert len(pipeline.admissions) == 50
    assert all(len(a.finishes) == 1 for a in pipeline.admissions)


def test_endpoint_scores_ride_in_the_envoy_lb_metadata_beside_the_destination():
    """`--emit-endpoint-scores`: upstream's `x-gateway-destination-endpoint-scores` struct."""
    scores = {"10.0.0.1:8000": 0.91, "10.0.0.2:8000": 0.25}
    for encoded in (
        wire.route_request_headers({}, [], "10.0.0.1:8000", scores),
        wire.route_request_body({}, [], "10.0.0.1:8000", None, scores),
    ):
        message = pb.ProcessingResponse.FromString(encoded)
        lb = message.dynamic_metadata.fields["envoy.lb"].struct_value
        assert lb.fields["x-gateway-destination-endpoint"].string_value == "10.0.0.1:8000"
        got = lb.fields["x-gateway-destination-endpoint-scores"].struct_value
        assert {k: v.number_value for k, v in got.fields.items()} == scores
    # without scores the answer is byte for byte what it was
    assert wire.route_request_headers({}, [], "10.0.0.1:8000") == protobuf_route(
        {}, [], "10.0.0.1:8000", None, on_body=False
    )


@pytest.mark.parametrize("set_headers", [{}, {"x-session-token": "ZGVmYXVsdC9wLXJhbmstMA=="}])
def test_the_hand_encoded_response_headers_answer_is_the_protobuf_bytes(set_headers):
    """The plugins' response headers (the session token) ride on the response-headers answer."""
    expected = pb.ProcessingResponse(
        response_headers=pb.HeadersResponse(
            response=pb.CommonResponse(header_mutation=wire.header_mutation(set_headers))
        )
        if set_headers
        else pb.HeadersResponse()
    ).SerializeToString()
    assert wire.continue_response_headers(set_headers) == expected
