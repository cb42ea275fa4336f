"""HTTP/2 as RFC 9113 says a server must treat it, on both ext_proc transports (Sluice's `h2`
server and the grpc.aio fallback): each malformed input gets the GOAWAY or RST_STREAM with the
right error code, the server stays healthy for everyone else, `:path` routes the call, and a
gRPC message cut short never ends with OK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from h2.events import StreamReset

from net.h2_peer import (
    ACK,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    END_HEADERS,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    PING,
    PRIORITY,
    PROCESS,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Client,
    Wire,
    frame,
    parse_frames,
    setting,
)
from sluice.bench.harness.pipeline_double import DoublePipeline
from sluice.datalayer.endpoint import Endpoint
from sluice.extproc import ExtProcServer, ServerOptions
from sluice.health import GrpcHealthService, HealthServicer

from . import envoy_messages as m
from .test_request_path import read, send_request

CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
TRANSPORTS = ["h2", "hyper", "grpc"]


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def port(transport: str) -> AsyncIterator[int]:
    pipeline = DoublePipeline([Endpoint("e1", "10.0.0.1", 8000)])
    health = GrpcHealthService(HealthServicer(lambda: True))
    server = ExtProcServer(
        pipeline,
        ServerOptions(grpc_port=0, host="127.0.0.1", secure_serving=False, transport=transport),
        also_serve=[health],
    )
    bound = await server.start()
    yield bound
    await server.stop(None)


async def a_full_exchange_works(port: int) -> None:
    """One ext_proc request from start to end on a fresh connection: the server is healthy."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process()
        await send_request(call, CHAT)
        [headers, body] = await read(call, 2)
        assert headers.request_headers.response.header_mutation.set_headers
        assert body.request_body.response.body_mutation.streamed_response.end_of_stream
        await call.write(m.response_headers(200, "application/json"))
        await read(call)
        await call.write(m.response_body(b'{"usage":{}}', end_of_stream=True))
        await read(call)
        assert await asyncio.wait_for(call.read(), 5) == grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK


def open_stream(stream_id: int = 1) -> bytes:
    """HEADERS for a Process call (the Client's encoder: a valid, stateless-enough block)."""
    client = Client()
    client.out()
    for _ in range(stream_id // 2):
        client.h2.get_next_available_stream_id()
    return _headers_frame(client, stream_id)


def _headers_frame(client: Client, stream_id: int) -> bytes:
    client.h2.send_headers(stream_id, [(k, v) for k, v in _REQUEST])
    data = client.out()
    frames, _ = parse_frames(data)
    [headers] = [f for f in frames if f.kind == HEADERS]
    return frame(HEADERS, END_HEADERS, stream_id, headers.payload)


_REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":authority", "sluice"),
    (":path", PROCESS),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


CLOSES = "closes the connection without a GOAWAY"
IGNORES = "ignores it"


@dataclass(frozen=True)
class Malformed:
    what: str
    frames: bytes
    code: int
    # Stream errors may be escalated to connection errors (RFC 9113 §5.4.1): either is right.
    stream_error: bool = False
    with_stream: bool = False
    # What grpc core (the grpc.aio fallback's HTTP/2) does instead, where it differs.
    grpc_core: str = CLOSES


# fmt: off
MALFORMED = [
    # §6.9, §6.9.1 WINDOW_UPDATE
    Malformed("WINDOW_UPDATE of 0 on the connection", frame(WINDOW_UPDATE, 0, 0, u32(0)),
              PROTOCOL_ERROR),
    Malformed("WINDOW_UPDATE of 0 on a stream", frame(WINDOW_UPDATE, 0, 1, u32(0)),
              PROTOCOL_ERROR, stream_error=True, with_stream=True),
    Malformed("WINDOW_UPDATE overflowing the connection window",
              frame(WINDOW_UPDATE, 0, 0, u32((1 << 31) - 1)), FLOW_CONTROL_ERROR,
              grpc_core=IGNORES),
    Malformed("WINDOW_UPDATE overflowing a stream window",
              frame(WINDOW_UPDATE, 0, 1, u32((1 << 31) - 1)), FLOW_CONTROL_ERROR,
              stream_error=True, with_stream=True, grpc_core=IGNORES),
    Malformed("WINDOW_UPDATE of 3 bytes", frame(WINDOW_UPDATE, 0, 0, b"\0\0\1"), FRAME_SIZE_ERROR),
    # §6.5, §6.5.2 SETTINGS
    Malformed("SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
              frame(SETTINGS, 0, 0, setting(4, 1 << 31)), FLOW_CONTROL_ERROR),
    Malformed("SETTINGS_MAX_FRAME_SIZE of 0", frame(SETTINGS, 0, 0, setting(5, 0)),
              PROTOCOL_ERROR),
    Malformed("SETTINGS_MAX_FRAME_SIZE over 2^24-1", frame(SETTINGS, 0, 0, setting(5, 1 << 24)),
              PROTOCOL_ERROR),
    Malformed("SETTINGS_ENABLE_PUSH of 2", frame(SETTINGS, 0, 0, setting(2, 2)), PROTOCOL_ERROR),
    Malformed("SETTINGS of 5 bytes", frame(SETTINGS, 0, 0, b"\0" * 5), FRAME_SIZE_ERROR),
    Malformed("SETTINGS ACK with a payload", frame(SETTINGS, ACK, 0, setting(5, 16_384)),
              FRAME_SIZE_ERROR),
    Malformed("SETTINGS on a stream", frame(SETTINGS, 0, 1, setting(5, 16_384)), PROTOCOL_ERROR),
    # §6.7 PING
    Malformed("PING of 7 bytes", frame(PING, 0, 0, b"1234567"), FRAME_SIZE_ERROR),
    Malformed("PING on a stream", frame(PING, 0, 1, b"12345678"), PROTOCOL_ERROR,
              grpc_core=IGNORES),
    # §6.1, §5.1 DATA
    Malformed("DATA on stream 0", frame(DATA, 0, 0, b"abc"), PROTOCOL_ERROR, grpc_core=IGNORES),
    Malformed("DATA on an idle stream", frame(DATA, 0, 5, b"abc"), PROTOCOL_ERROR,
              grpc_core=IGNORES),
    # §4.2 frame size
    Malformed("a frame above the advertised SETTINGS_MAX_FRAME_SIZE", b"", FRAME_SIZE_ERROR,
              with_stream=True),
    # §6.2, §6.10 header blocks
    Malformed("a stray CONTINUATION", frame(CONTINUATION, END_HEADERS, 1, b""), PROTOCOL_ERROR),
    Malformed("a DATA frame inside a header block",
              frame(HEADERS, 0, 3, b"\x83") + frame(DATA, 0, 1, b"x"), PROTOCOL_ERROR,
              with_stream=True),
    Malformed("HEADERS on stream 0", frame(HEADERS, END_HEADERS, 0, b"\x83"), PROTOCOL_ERROR,
              grpc_core=IGNORES),
    # §5.1.1 stream identifiers
    Malformed("HEADERS on an even stream", frame(HEADERS, END_HEADERS, 2, b"\x83"),
              PROTOCOL_ERROR, grpc_core=IGNORES),
    # §8.4 server push
    Malformed("a PUSH_PROMISE from the client",
              frame(PUSH_PROMISE, END_HEADERS, 1, u32(2) + b"\x83"), PROTOCOL_ERROR,
              grpc_core=IGNORES),
    # §6.4 RST_STREAM
    Malformed("RST_STREAM on stream 0", frame(RST_STREAM, 0, 0, u32(0)), PROTOCOL_ERROR,
              grpc_core=IGNORES),
    Malformed("RST_STREAM on an idle stream", frame(RST_STREAM, 0, 7, u32(0)), PROTOCOL_ERROR,
              grpc_core=IGNORES),
    # §5.3.1 priority
    Malformed("PRIORITY depending on itself", frame(PRIORITY, 0, 1, u32(1) + b"\x10"),
              PROTOCOL_ERROR, stream_error=True, with_stream=True, grpc_core=IGNORES),
    # §4.3 field blocks
    Malformed("a header block that cannot be decoded", frame(HEADERS, END_HEADERS, 1, b"\xff" * 6),
              COMPRESSION_ERROR),
    # §6.8 GOAWAY
    Malformed("GOAWAY on a stream", frame(GOAWAY, 0, 1, bytes(8)), PROTOCOL_ERROR,
              grpc_core=IGNORES),
]
# fmt: on


@pytest.mark.parametrize("case", MALFORMED, ids=[c.what for c in MALFORMED])
async def test_malformed_input_gets_the_rfc_error_and_others_are_unaffected(port, transport, case):
    # Someone else's call is in progress on another connection the whole time.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        other = pb_grpc.ExternalProcessorStub(channel).Process()
        await send_request(other, CHAT)
        await read(other, 2)

        wire = await Wire.open(port)
        await wire.read_until(lambda fs: any(f.kind == SETTINGS for f in fs))
        malformed = case.frames
        if not malformed:  # OVERSIZED: one byte above what the server advertised
            malformed = frame(DATA, 0, 1, b"x" * (wire.server_max_frame_size() + 1))
        wire.write((open_stream() if case.with_stream else b"") + malformed)
        if transport == "grpc" and case.grpc_core:
            # The fallback's HTTP/2 is grpc core's, which deviates here (docs/security.md).
            closed = await wire.closed_by_server(timeout=1.0)
            assert closed == (case.grpc_core == CLOSES), case.grpc_core
        elif case.stream_error:
            frames = await wire.read_until(
                lambda fs: any(f.kind in (GOAWAY, RST_STREAM) and f.stream_id < 2 for f in fs)
            )
            [error] = [f for f in frames if f.kind in (GOAWAY, RST_STREAM)][:1]
            assert error.error_code == case.code, f"got {error.error_code:#x}"
        else:
            error = await wire.goaway()
            assert error.error_code == case.code, f"got {error.error_code:#x}"
            assert await wire.closed_by_server(), "the connection must close after GOAWAY"
        wire.close()

        await other.write(m.response_headers(200, "application/json"))
        await other.write(m.response_body(b'{"usage":{}}', end_of_stream=True))
        await read(other, 2)
    await a_full_exchange_works(port)


async def test_a_bad_preface_is_refused(port):
    wire = await Wire.open(port, preface=False)
    wire.write(b"GET / HTTP/1.1\r\nHost: sluice\r\n\r\n")
    assert await wire.closed_by_server()
    wire.close()
    await a_full_exchange_works(port)


async def test_ping_is_answered_with_the_same_payload(port):
    wire = await Wire.open(port)
    wire.write(frame(PING, 0, 0, b"12345678"))
    frames = await wire.read_until(lambda fs: any(f.kind == PING for f in fs))
    assert [(f.flags, f.payload) for f in frames if f.kind == PING] == [(ACK, b"12345678")]
    assert any(f.kind == SETTINGS and f.flags == ACK for f in frames)  # our SETTINGS ACK
    wire.close()


async def test_a_peer_max_frame_size_is_respected_and_sends_never_stall(port):
    """A peer that allows only the minimum frame size still gets every byte of a large answer
    (the old frame layer stalled every send after SETTINGS_MAX_FRAME_SIZE 0)."""
    client = Client()
    client.h2.update_settings({5: 16_384})
    wire = await Wire.open(port, preface=False)
    await wire.handshake(client)
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "p" * 200_000}]})
    big = big.encode()
    stream = client.open(PROCESS)
    client.send(stream, m.request_headers({}).SerializeToString())
    client.send(stream, m.request_body(big, end_of_stream=True).SerializeToString())
    wire.write(client.out())
    frames = await wire.read_until(
        lambda fs: sum(len(f.payload) for f in fs if f.kind == DATA) >= len(big)
    )
    assert max(len(f.payload) for f in frames if f.kind == DATA) <= 16_384
    wire.close()


# --- routing by :path ----------------------------------------------------------------------------


async def test_grpc_health_shares_the_ext_proc_port(port):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        check = await stub.Check(health_pb2.HealthCheckRequest(service="readiness"))
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        first = await asyncio.wait_for(watch.read(), 5)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
    await a_full_exchange_works(port)


async def test_an_unknown_method_is_unimplemented(port):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        unknown = channel.unary_unary("/pkg.Nope/Method")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await unknown(b"")
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    await a_full_exchange_works(port)


# --- gRPC messages -------------------------------------------------------------------------------


def grpc_statuses(events: list[object]) -> list[str]:
    return [
        value
        for event in events
        for name, value in getattr(event, "headers", None) or ()
        if name == "grpc-status"
    ]


@pytest.mark.parametrize(
    "tail",
    [b"\x00\x00\x00", b"\x00\x00\x00\x00\x10" + b"x" * 8],
    ids=["inside the message header", "inside the message body"],
)
async def test_a_stream_that_ends_inside_a_message_is_an_error_not_ok(port, transport, tail):
    if transport == "grpc":
        pytest.xfail("grpc core drops a partial message at the end of the stream and ends OK")
    client = Client()
    wire = await Wire.open(port, preface=False)
    stream = client.open(PROCESS)
    client.h2.send_data(stream, tail, end_stream=True)
    wire.write(client.out())
    events = await wire.events(
        client, lambda es: grpc_statuses(es) or any(isinstance(e, StreamReset) for e in es)
    )
    statuses = grpc_statuses(events)
    assert statuses and statuses[0] != "0", f"a truncated message must not end with OK: {events}"
    wire.close()
