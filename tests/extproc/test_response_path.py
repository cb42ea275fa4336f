"""The response path: chunks pass through unchanged, usage is observed, and every admitted
request is finished exactly once — on completion, upstream failure, or disconnect."""

from __future__ import annotations

import asyncio
import json

import grpc

from net.h2_peer import (
    DATA,
    END_STREAM,
    HEADERS,
    NO_ERROR,
    PROCESS,
    RST_STREAM,
    Client,
    parse_frames,
)
from sluice.director.contract import Outcome
from sluice.extproc import Admit, BodyMode, ExtProcStream, Send, wire
from sluice.extproc.h2 import H2ExtProcServer
from sluice.net.server import GrpcServer
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


async def test_a_gateway_that_shows_no_response_detaches_the_request_when_the_stream_ends(
    stub, pipeline
):
    # Envoy with response processing off (response headers SKIP, body NONE) ends the stream
    # once the request is routed: not a completion, nor an upstream error — Sluice will learn
    # nothing more of it, and the engine's own metrics take over its accounting.
    call = stub.Process()
    await send_request(call, CHAT, response_mode=BodyMode.NONE)
    await read(call, 2)
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    admission = await finished(pipeline)
    assert (admission.detached, admission.finishes) == (1, [])


async def test_a_gateway_that_shows_no_response_and_resets_the_stream_detaches_the_request(
    stub, pipeline
):
    # Real Envoy with response processing off resets the stream once the request is routed:
    # that is not the client leaving (it was taken as one: the request left Sluice's
    # accounting the moment it was routed, prefill and all, and the engine's first-token
    # counter was shifted as if it never got a token).
    call = stub.Process()
    await send_request(call, CHAT, response_mode=BodyMode.NONE)
    await read(call, 2)
    call.cancel()
    admission = await finished(pipeline)
    assert (admission.detached, admission.finishes) == (1, [])


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


# --- answer first, account after ------------------------------------------------------------


async def test_the_stream_answers_the_end_of_the_response_before_finishing(pipeline):
    stream = ExtProcStream(pipeline)
    stream.receive(m.request_headers({}))
    [admit] = stream.receive(m.request_body(CHAT, end_of_stream=True))
    assert isinstance(admit, Admit)
    stream.admitted(await pipeline.admit(admit.request))
    stream.receive(m.response_headers(200, "application/json"))
    body = b'{"usage":{"prompt_tokens":5,"completion_tokens":7}}'
    [echo] = stream.receive(m.response_body(body, end_of_stream=True))
    assert isinstance(echo, Send)
    admission = pipeline.admissions[0]
    assert admission.finishes == [] and admission.chunks == []  # nothing Envoy waits on
    assert stream.unsettled and not stream.response_pending
    stream.settle()
    assert admission.chunks == [body]
    assert [(f.outcome, f.usage) for f in admission.finishes] == [
        (Outcome.COMPLETED, Usage(prompt_tokens=5, completion_tokens=7))
    ]
    stream.close(cancelled=True)  # Envoy resets the finished stream: still exactly once
    assert len(admission.finishes) == 1 and not stream.unsettled


async def test_closing_settles_what_was_not_settled(pipeline):
    stream = ExtProcStream(pipeline)
    stream.receive(m.request_headers({}))
    [admit] = stream.receive(m.request_body(CHAT, end_of_stream=True))
    assert isinstance(admit, Admit)
    stream.admitted(await pipeline.admit(admit.request))
    stream.receive(m.response_headers(503, "text/plain"))
    stream.receive(m.response_body(b"overloaded", end_of_stream=True))
    stream.close(cancelled=False)
    admission = pipeline.admissions[0]
    assert admission.chunks == [b"overloaded"]
    assert [f.outcome for f in admission.finishes] == [Outcome.UPSTREAM_ERROR]


class RecordingTransport:
    """Enough of an asyncio transport for a connection of `sluice.net`: keeps what was
    written, one entry per write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    @property
    def written(self) -> bytes:
        return b"".join(self.writes)

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def set_write_buffer_limits(self, high: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass


async def test_h2_writes_the_answer_before_the_admission_is_finished(pipeline):
    server = H2ExtProcServer(pipeline)
    connection = GrpcServer(server._routes, server.limits).connection()
    transport = RecordingTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    client = Client()
    stream = client.open(PROCESS)
    client.send(stream, m.request_headers({}).SerializeToString())
    client.send(stream, m.request_body(CHAT, end_of_stream=True).SerializeToString())
    connection.data_received(client.out())
    await asyncio.sleep(0)  # the admission task
    await asyncio.sleep(0)  # its answers' write
    admission = pipeline.admissions[0]
    echo = wire.streamed_response_body(b'{"usage":{}}', end_of_stream=True)
    written_at_finish: list[bool] = []
    finish = admission.finish

    def finish_and_check(outcome, usage=None):
        written_at_finish.append(echo in transport.written)
        finish(outcome, usage)

    admission.finish = finish_and_check  # type: ignore[method-assign]
    before = len(transport.writes)
    response = m.response_headers(200), m.response_body(b'{"usage":{}}', end_of_stream=True)
    client.send(stream, *(x.SerializeToString() for x in response))
    connection.data_received(client.out())
    assert written_at_finish == [True]
    # The RPC ended in that same write: OK trailers (END_STREAM), then RST_STREAM(NO_ERROR)
    # because Envoy had not half-closed; Envoy need not reset the stream itself.
    [last] = transport.writes[before:]
    frames, _ = parse_frames(last)
    assert echo in b"".join(f.payload for f in frames if f.kind == DATA)
    assert [(f.kind, f.flags & END_STREAM) for f in frames[-2:]] == [
        (HEADERS, END_STREAM),
        (RST_STREAM, 0),
    ]
    assert frames[-1].error_code == NO_ERROR
    assert connection.idle
    connection.connection_lost(None)


async def test_the_rpc_ends_with_the_answer_that_ends_the_response(stub, pipeline):
    call = await routed_call(stub)
    await call.write(m.response_headers(200, "application/json"))
    await call.write(m.response_body(b'{"usage":{}}', end_of_stream=True))
    await read(call, 2)
    # No half-close from the client: the server ends the RPC itself, with OK.
    assert await asyncio.wait_for(call.read(), 5) == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    assert [f.outcome for f in (await finished(pipeline)).finishes] == [Outcome.COMPLETED]


async def test_an_engine_refusal_without_usage_is_reported_as_no_work(stub, pipeline):
    """Issue #15 item 5: the refused request's estimate must be refunded, not kept."""
    call = await routed_call(stub)
    await call.write(m.response_headers(400, "application/json"))
    await read(call)
    await call.write(m.response_body(b'{"error": {"message": "max_tokens"}}', end_of_stream=True))
    await read(call)
    [finish] = (await finished(pipeline)).finishes
    assert finish.usage == Usage(prompt_tokens=0, completion_tokens=0)
