"""The response path: chunks pass through unchanged, usage is observed, and every admitted
request is finished exactly once — on completion, upstream failure, or disconnect."""

from __future__ import annotations

import asyncio
import json

import grpc

from sluice.extproc import BodyMode
from sluice.pipeline import Outcome
from sluice.requests.model import Usage

from . import envoy_messages as m
from .test_request_path import CHAT, read, send_request

SSE = (
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":2,'
    b'"prompt_tokens_details":{"cached_tokens":8}}}\n\n'
    b"data: [DONE]\n\n"
)


async def routed_call(stub, mode=BodyMode.FULL_DUPLEX_STREAMED):
    call = stub.Process()
    await send_request(call, CHAT, mode=mode)
    await read(call, 2 if mode is BodyMode.FULL_DUPLEX_STREAMED else 1)
    if mode is BodyMode.BUFFERED:  # the body answer follows the headers answer
        await read(call)
    return call


async def finished(pipeline):
    return await asyncio.wait_for(pipeline.finished.get(), 5)


async def test_streamed_sse_passes_through_unchanged_and_reports_usage(stub, pipeline):
    call = await routed_call(stub)
    await call.write(m.response_headers(200, "text/event-stream"))
    [headers_answer] = await read(call)
    assert not headers_answer.response_headers.response.HasField(
        "header_mutation"
    )  # no debug headers
    pieces = [SSE[:70], SSE[70:130], SSE[130:]]  # usage line split across chunks
    echoed = []
    for i, piece in enumerate(pieces):
        await call.write(m.response_body(piece, end_of_stream=i == len(pieces) - 1))
        [answer] = await read(call)
        echoed.append(answer.response_body.response.body_mutation.streamed_response)
    assert b"".join(e.body for e in echoed) == SSE
    assert [e.end_of_stream for e in echoed] == [False, False, True]
    admission = await finished(pipeline)
    [finish] = admission.finishes
    assert finish.outcome is Outcome.COMPLETED
    assert finish.usage == Usage(prompt_tokens=11, completion_tokens=2, cached_tokens=8)


async def test_buffered_json_response_continues_and_reports_usage(stub, pipeline):
    call = await routed_call(stub, BodyMode.BUFFERED)
    await call.write(m.response_headers(200, "application/json"))
    await read(call)
    body = json.dumps(
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7,
                                  "prompt_tokens_details": {"cached_tokens": 3}}}
    ).encode()  # fmt: skip
    await call.write(m.response_body(body, end_of_stream=True))
    [answer] = await read(call)
    assert answer.HasField("response_body")
    assert not answer.response_body.response.HasField("body_mutation")  # bytes untouched
    [finish] = (await finished(pipeline)).finishes
    assert finish.usage == Usage(prompt_tokens=5, completion_tokens=7, cached_tokens=3)


async def test_a_5xx_from_the_model_server_is_an_upstream_error(stub, pipeline):
    call = await routed_call(stub)
    await call.write(m.response_headers(503, "text/plain"))
    await read(call)
    await call.write(m.response_body(b"overloaded", end_of_stream=True))
    await read(call)
    assert (await finished(pipeline)).finishes[0].outcome is Outcome.UPSTREAM_ERROR


async def test_response_trailers_are_answered_and_end_the_response(stub, pipeline):
    call = await routed_call(stub)
    await call.write(m.response_headers(200, "text/event-stream"))
    await call.write(m.response_body(SSE))
    await call.write(m.response_trailers())
    answers = await read(call, 3)
    assert answers[2].HasField("response_trailers")
    assert (await finished(pipeline)).finishes[0].outcome is Outcome.COMPLETED


async def test_finish_happens_exactly_once_even_when_the_stream_then_closes(stub, pipeline):
    call = await routed_call(stub)
    await call.write(m.response_headers(200, "application/json", end_of_stream=True))
    await read(call)
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    await asyncio.sleep(0.05)
    assert len(pipeline.admissions[0].finishes) == 1


async def test_a_reset_mid_response_finishes_once_as_client_gone(stub, pipeline):
    call = await routed_call(stub)
    await call.write(m.response_headers(200, "text/event-stream"))
    await call.write(m.response_body(SSE[:40]))
    await read(call, 2)
    call.cancel()
    admission = await finished(pipeline)
    assert [f.outcome for f in admission.finishes] == [Outcome.CLIENT_GONE]


async def test_a_response_cut_short_is_an_upstream_error(stub, pipeline):
    call = await routed_call(stub)
    await call.write(m.response_headers(200, "text/event-stream"))
    await read(call)
    await call.done_writing()  # Envoy ends the stream before the response ended
    assert await call.read() == grpc.aio.EOF
    assert [f.outcome for f in (await finished(pipeline)).finishes] == [Outcome.UPSTREAM_ERROR]


async def test_served_fallback_reported_by_the_gateway_retargets_the_admission(stub, pipeline):
    pipeline.fallbacks = 1
    call = await routed_call(stub)
    fallback = pipeline.admissions[0].endpoints[1]
    message = m.response_headers(200)
    message.metadata_context.filter_metadata["envoy.lb"].update(
        {"x-gateway-destination-endpoint-served": fallback.hostport}
    )
    await call.write(message)
    await read(call)
    assert pipeline.admissions[0].retargeted == [fallback]
