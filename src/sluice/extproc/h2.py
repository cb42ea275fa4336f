"""ext_proc's one RPC served straight from HTTP/2 frames on an asyncio Protocol — no grpc.aio.

Why: with grpc.aio every message (≈ 8 per request in FULL_DUPLEX_STREAMED) is a batch operation
completed on grpc's poller thread and handed back to the event loop; that hand-off, not Sluice's
logic, was ~90% of Sluice's CPU, and even an ext_proc that does nothing could not reach 1,000
requests per CPU-second (benchmarks/extproc_variants.py, arm `floor`). Here a message costs a
frame parse, a protobuf parse and the `ExtProcStream` step, all inside `data_received`, and the
answers of one read leave in one `write`.

Scope — exactly what an ext_proc client (Envoy, or any gRPC client) needs, nothing more:

- One method. Every stream on this port is `ExternalProcessor/Process`; request header blocks
  are not decoded (so no HPACK decoder is needed; the dynamic table only matters to a decoder).
  The port serves nothing else (health is its own grpc server, as upstream).
- Flow control both ways: large windows are granted up front and replenished; sends respect
  the peer's windows and `SETTINGS_MAX_FRAME_SIZE` and wait for WINDOW_UPDATE when blocked.
- gRPC framing: uncompressed length-prefixed messages (Envoy never compresses ext_proc); a
  compressed or oversized message ends the RPC with a gRPC error, as grpc does.
- Cancellation: RST_STREAM or a lost connection = the client went away (`CLIENT_GONE`); an
  admission in progress is cancelled, exactly as the grpc.aio shell does.
- Responses: `:status 200`, `content-type: application/grpc`, then messages, then trailers
  `grpc-status` (+ `grpc-message`) — or a trailers-only response when nothing was sent.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
from collections import deque
from pathlib import Path
from typing import cast
from urllib.parse import quote

from google.protobuf.message import DecodeError

from sluice.director.contract import Pipeline
from sluice.extproc import tls
from sluice.extproc.options import ServerOptions, StreamOptions
from sluice.extproc.stream import Admit, ExtProcStream, ProtocolViolation
from sluice.extproc.wire import ProcessingRequest, ProcessingResponse
from sluice.requests.errors import SluiceError

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x4, 0x5
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x3
MAX_WINDOW = (1 << 31) - 1
# Our receive windows are granted huge and topped up after this much was consumed: one
# WINDOW_UPDATE per GiB instead of one per message.
REPLENISH_AFTER = 1 << 30
OUR_MAX_FRAME = 1 << 20  # lets Envoy send a 1 MiB body in one DATA frame instead of 64

GRPC_OK, GRPC_INTERNAL, GRPC_FAILED_PRECONDITION = 0, 13, 9
GRPC_RESOURCE_EXHAUSTED, GRPC_UNIMPLEMENTED, GRPC_INVALID_ARGUMENT = 8, 12, 3
RESET_GRACE_S = 0.05  # as server.RESET_GRACE_S: a reset may trail the end of the request


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """HPACK 'literal header field without indexing, new name', no Huffman: stateless."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


# ":status: 200" is HPACK static entry 8 (one byte); the rest are plain literals. Built once.
_STATUS_AND_TYPE = b"\x88" + _literal(b"content-type", b"application/grpc")


def _trailer_block(status: int, message: str) -> bytes:
    block = _literal(b"grpc-status", str(status).encode())
    if message:  # the gRPC spec's percent-encoding of grpc-message
        encoded = quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")
        block += _literal(b"grpc-message", encoded.encode())
    return block


_OK_TRAILERS = _trailer_block(GRPC_OK, "")


class _Rpc:
    """One ext_proc stream: the state machine plus HTTP/2 bookkeeping."""

    __slots__ = (
        "admitting", "backlog", "buffer", "closed", "consumed", "grace", "headers_sent", "id",
        "logic", "pending", "remote_ended", "send_window", "task", "trailers",
    )  # fmt: skip

    def __init__(self, stream_id: int, logic: ExtProcStream, send_window: int) -> None:
        self.id = stream_id
        self.logic = logic
        self.buffer = bytearray()  # gRPC bytes not yet forming a whole message
        self.consumed = 0  # DATA bytes received since our last WINDOW_UPDATE for the stream
        self.send_window = send_window
        self.pending: deque[bytes] = deque()  # DATA payload waiting for the peer's window
        self.trailers: bytes | None = None  # trailer block waiting behind `pending`
        self.headers_sent = False
        self.remote_ended = False
        self.closed = False
        self.admitting = False
        self.backlog: deque[ProcessingRequest] = deque()  # arrived while admitting
        self.task: asyncio.Task[None] | None = None
        self.grace: asyncio.TimerHandle | None = None


class _Connection(asyncio.Protocol):
    def __init__(self, server: H2ExtProcServer) -> None:
        self._server = server
        self._pipeline = server.pipeline
        self._stream_options = server.stream_options
        self._max_message = server.max_message_bytes
        self._transport: asyncio.Transport | None = None
        self._in = bytearray()
        self._out: list[bytes] = []
        self._preface_seen = False
        self._rpcs: dict[int, _Rpc] = {}
        self._last_stream_id = 0
        self._continuation_of = 0  # stream id whose header block continues, 0 = none
        self._peer_initial_window = 65_535
        self._peer_max_frame = 16_384
        self._send_window = 65_535  # connection-level, peer's
        self._consumed = 0  # connection-level DATA received since our last WINDOW_UPDATE
        self._closing = False
        self._unsettled: list[_Rpc] = []  # bookkeeping due once the answers are written

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        self._server.connections.add(self)
        settings = (
            SETTINGS_INITIAL_WINDOW_SIZE.to_bytes(2, "big") + MAX_WINDOW.to_bytes(4, "big")
            + SETTINGS_MAX_FRAME_SIZE.to_bytes(2, "big") + OUR_MAX_FRAME.to_bytes(4, "big")
        )  # fmt: skip
        self._out.append(_frame(SETTINGS, 0, 0, settings))
        self._out.append(_frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - 65_535).to_bytes(4, "big")))
        self._flush()

    def data_received(self, data: bytes) -> None:
        buf = self._in
        buf += data
        if not self._preface_seen:
            if len(buf) < len(PREFACE):
                return
            if not buf.startswith(PREFACE):
                self._goaway(PROTOCOL_ERROR)
                return
            del buf[: len(PREFACE)]
            self._preface_seen = True
        offset, size = 0, len(buf)
        try:
            while size - offset >= 9 and not self._closing:
                length = int.from_bytes(buf[offset : offset + 3], "big")
                end = offset + 9 + length
                if end > size:
                    break
                kind, flags = buf[offset + 3], buf[offset + 4]
                stream_id = int.from_bytes(buf[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
                payload = bytes(buf[offset + 9 : end])
                offset = end
                self._on_frame(kind, flags, stream_id, payload)
        finally:
            del buf[:offset]
            self._flush_then_settle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        for rpc in list(self._rpcs.values()):
            self._client_gone(rpc)
        self._transport = None

    # --- frames in ------------------------------------------------------------------------------

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuation_of and kind != CONTINUATION:
            self._goaway(PROTOCOL_ERROR)
        elif kind == DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._on_headers(flags, stream_id)
        elif kind == CONTINUATION:
            if flags & END_HEADERS:
                self._continuation_of = 0
        elif kind == RST_STREAM:
            rpc = self._rpcs.get(stream_id)
            if rpc is not None:
                self._client_gone(rpc)
        elif kind == SETTINGS:
            if not flags & ACK:
                self._on_settings(payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, int.from_bytes(payload[:4], "big") & 0x7FFFFFFF)
        elif kind == PING:
            if not flags & ACK:
                self._out.append(_frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            pass  # the peer opens no new streams; ours finish, then it closes the connection
        # PRIORITY and unknown frame types are ignored, as RFC 9113 requires.

    def _on_headers(self, flags: int, stream_id: int) -> None:
        if not flags & END_HEADERS:
            self._continuation_of = stream_id
        rpc = self._rpcs.get(stream_id)
        if rpc is None:
            if stream_id <= self._last_stream_id or stream_id % 2 == 0:
                return  # a closed stream's trailers, or nonsense: nothing to do
            self._last_stream_id = stream_id
            logic = ExtProcStream(self._pipeline, self._stream_options)
            rpc = _Rpc(stream_id, logic, self._peer_initial_window)
            self._rpcs[stream_id] = rpc
        if flags & END_STREAM:  # a new stream without messages, or request trailers
            self._remote_end(rpc)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        # Padding and all count against the connection window, even on closed streams.
        self._consumed += len(payload)
        if self._consumed >= REPLENISH_AFTER:
            self._out.append(_frame(WINDOW_UPDATE, 0, 0, self._consumed.to_bytes(4, "big")))
            self._consumed = 0
        if flags & PADDED and payload:
            payload = payload[1 : len(payload) - payload[0]]
        rpc = self._rpcs.get(stream_id)
        if rpc is None or rpc.closed:
            return
        rpc.consumed += len(payload)
        if rpc.consumed >= REPLENISH_AFTER:
            self._out.append(_frame(WINDOW_UPDATE, 0, rpc.id, rpc.consumed.to_bytes(4, "big")))
            rpc.consumed = 0
        buf = rpc.buffer
        if buf:
            buf += payload
            data: bytes | bytearray = buf
        else:
            data = payload  # the usual case: one whole message per DATA frame, no copy
        offset, size = 0, len(data)
        while size - offset >= 5:
            length = int.from_bytes(data[offset + 1 : offset + 5], "big")
            if data[offset] & 1:
                self._fail_rpc(rpc, GRPC_UNIMPLEMENTED, "compressed messages are not supported")
                return
            if length > self._max_message:
                self._fail_rpc(rpc, GRPC_RESOURCE_EXHAUSTED, "message larger than max")
                return
            if size - offset - 5 < length:
                break
            start = offset + 5
            offset = start + length
            try:
                message = ProcessingRequest.FromString(bytes(data[start:offset]))
            except DecodeError:
                self._fail_rpc(rpc, GRPC_INVALID_ARGUMENT, "malformed ProcessingRequest")
                return
            self._deliver(rpc, message)
            if rpc.closed:
                return
        if data is buf:
            del buf[:offset]
        else:
            rpc.buffer = bytearray(data[offset:])
        if flags & END_STREAM:
            self._remote_end(rpc)

    def _on_settings(self, payload: bytes) -> None:
        for i in range(0, len(payload) - 5, 6):
            key = int.from_bytes(payload[i : i + 2], "big")
            value = int.from_bytes(payload[i + 2 : i + 6], "big")
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for rpc in self._rpcs.values():
                    rpc.send_window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                self._peer_max_frame = value
        self._out.append(_frame(SETTINGS, ACK, 0))
        self._drain_all()

    def _on_window_update(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            self._send_window += increment
            self._drain_all()
            return
        rpc = self._rpcs.get(stream_id)
        if rpc is not None:
            rpc.send_window += increment
            self._drain(rpc)

    # --- the RPC --------------------------------------------------------------------------------

    def _deliver(self, rpc: _Rpc, message: ProcessingRequest) -> None:
        if rpc.admitting:  # answers must keep their order: wait until the admission is done
            rpc.backlog.append(message)
            return
        try:
            actions = rpc.logic.receive(message)
        except ProtocolViolation as violation:
            log.warning("ext_proc protocol violation: %s", violation)
            self._fail_rpc(rpc, GRPC_FAILED_PRECONDITION, str(violation))
            return
        except Exception:
            # As the grpc.aio shell: a gRPC error lets the gateway's failure mode decide.
            log.exception("ext_proc stream failed")
            self._fail_rpc(rpc, GRPC_INTERNAL, "endpoint picker internal error")
            return
        for action in actions:
            if isinstance(action, Admit):
                rpc.admitting = True
                rpc.task = asyncio.get_running_loop().create_task(self._admit(rpc, action))
            else:
                self._send_message(rpc, action.response)
        if rpc.logic.unsettled or rpc.logic.complete:
            self._unsettled.append(rpc)

    async def _admit(self, rpc: _Rpc, action: Admit) -> None:
        # Waiting here keeps the stream open while flow control queues the request; a reset
        # cancels this task and so the admit (the request leaves its queue at once).
        try:
            admission = await self._pipeline.admit(action.request)
        except SluiceError as error:
            responses = rpc.logic.admit_failed(error)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ext_proc stream failed")
            self._fail_rpc(rpc, GRPC_INTERNAL, "endpoint picker internal error")
            self._flush()
            return
        else:
            responses = rpc.logic.admitted(admission)
        rpc.task = None
        rpc.admitting = False
        for response in responses:
            self._send_message(rpc, response)
        while rpc.backlog and not rpc.admitting and not rpc.closed:
            self._deliver(rpc, rpc.backlog.popleft())
        if rpc.remote_ended and not rpc.admitting and not rpc.closed:
            self._remote_end(rpc)
        self._flush_then_settle()

    def _flush_then_settle(self) -> None:
        """Write the answers, then do the stream bookkeeping they did not wait for (usage,
        finishing the admission): Envoy already has them while this runs. An RPC whose
        response ended is ended in the same write."""
        rpcs = list(dict.fromkeys(self._unsettled))  # an RPC may have had several messages
        self._unsettled = []
        ended = [rpc for rpc in rpcs if rpc.logic.complete and not rpc.closed]
        for rpc in ended:
            self._send_trailers(rpc, GRPC_OK, "")
        self._flush()
        for rpc in rpcs:
            try:
                rpc.logic.settle()
            except Exception:
                # The answer is out and the client has its response: nothing to fail any more.
                log.exception("ext_proc response bookkeeping failed")
        for rpc in ended:
            self._close_rpc(rpc, cancelled=False, keep_for_send=bool(rpc.pending))

    def _remote_end(self, rpc: _Rpc) -> None:
        """The client half-closed: answer with trailers once everything is answered."""
        rpc.remote_ended = True
        if rpc.admitting or rpc.closed or rpc.grace is not None or rpc.logic.complete:
            return  # (complete: ended with its last answer, by _flush_then_settle)
        if rpc.logic.response_pending:
            # As the grpc.aio shell: a client reset can trail a clean end by a moment.
            loop = asyncio.get_running_loop()
            rpc.grace = loop.call_later(RESET_GRACE_S, self._end_after_grace, rpc)
            return
        self._finish_rpc(rpc, GRPC_OK, "", cancelled=False)

    def _end_after_grace(self, rpc: _Rpc) -> None:
        rpc.grace = None
        if not rpc.closed:
            self._finish_rpc(rpc, GRPC_OK, "", cancelled=False)
            self._flush()

    def _client_gone(self, rpc: _Rpc) -> None:
        if rpc.task is not None:
            rpc.task.cancel()
        self._close_rpc(rpc, cancelled=True)

    def _fail_rpc(self, rpc: _Rpc, status: int, message: str) -> None:
        self._finish_rpc(rpc, status, message, cancelled=False)

    def _finish_rpc(self, rpc: _Rpc, status: int, message: str, *, cancelled: bool) -> None:
        if rpc.closed:
            return
        self._send_trailers(rpc, status, message)
        self._close_rpc(rpc, cancelled=cancelled, keep_for_send=bool(rpc.pending))

    def _send_trailers(self, rpc: _Rpc, status: int, message: str) -> None:
        block = (
            _OK_TRAILERS if status == GRPC_OK and not message else _trailer_block(status, message)
        )
        if not rpc.headers_sent:  # trailers-only response
            block = _STATUS_AND_TYPE + block
            rpc.headers_sent = True
        if rpc.pending:
            rpc.trailers = block  # after the data the peer's window still holds back
        else:
            self._out.append(_frame(HEADERS, END_HEADERS | END_STREAM, rpc.id, block))
        if not rpc.remote_ended and not rpc.pending:
            # We answered before the client finished sending: ask it to stop (RFC 9113 8.1).
            self._out.append(_frame(RST_STREAM, 0, rpc.id, NO_ERROR.to_bytes(4, "big")))

    def _close_rpc(self, rpc: _Rpc, *, cancelled: bool, keep_for_send: bool = False) -> None:
        if not rpc.closed:
            rpc.closed = True
            if rpc.grace is not None:
                rpc.grace.cancel()
                rpc.grace = None
            try:
                rpc.logic.close(cancelled=cancelled)
            except Exception:
                log.exception("ext_proc stream close failed")
        if not keep_for_send:
            self._rpcs.pop(rpc.id, None)

    # --- frames out -----------------------------------------------------------------------------

    def _send_message(self, rpc: _Rpc, response: ProcessingResponse | bytes) -> None:
        # Hot answers arrive pre-serialized (wire.py); the rest are serialized once here.
        payload = response if type(response) is bytes else response.SerializeToString()  # type: ignore[union-attr]
        if not rpc.headers_sent:
            rpc.headers_sent = True
            self._out.append(_frame(HEADERS, END_HEADERS, rpc.id, _STATUS_AND_TYPE))
        data = b"\x00" + len(payload).to_bytes(4, "big") + payload
        n = len(data)
        if (
            not rpc.pending
            and n <= self._send_window
            and n <= rpc.send_window
            and n <= self._peer_max_frame
        ):  # the usual case: one frame, nothing to wait for
            self._send_window -= n
            rpc.send_window -= n
            self._out.append(_frame(DATA, 0, rpc.id, data))
            return
        rpc.pending.append(data)
        self._drain(rpc)

    def _drain(self, rpc: _Rpc) -> None:
        """Send what the peer's windows allow, in frames of at most its max frame size."""
        while rpc.pending:
            room = min(self._send_window, rpc.send_window, self._peer_max_frame)
            if room <= 0:
                return
            data = rpc.pending[0]
            if len(data) <= room:
                rpc.pending.popleft()
            else:
                rpc.pending[0] = data[room:]
                data = data[:room]
            self._send_window -= len(data)
            rpc.send_window -= len(data)
            self._out.append(_frame(DATA, 0, rpc.id, data))
        if rpc.trailers is not None:
            self._out.append(_frame(HEADERS, END_HEADERS | END_STREAM, rpc.id, rpc.trailers))
            rpc.trailers = None
            if not rpc.remote_ended:
                self._out.append(_frame(RST_STREAM, 0, rpc.id, NO_ERROR.to_bytes(4, "big")))
            self._rpcs.pop(rpc.id, None)

    def _drain_all(self) -> None:
        for rpc in list(self._rpcs.values()):
            if rpc.pending:
                self._drain(rpc)

    def _flush(self) -> None:
        if self._out and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _goaway(self, error: int) -> None:
        self._closing = True
        payload = self._last_stream_id.to_bytes(4, "big") + error.to_bytes(4, "big")
        self._out.append(_frame(GOAWAY, 0, 0, payload))
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def shutdown(self) -> None:
        """Stop now: tell the peer, end every stream as if the client had gone."""
        if self._transport is not None:
            self._goaway(NO_ERROR)

    @property
    def idle(self) -> bool:
        return not self._rpcs


class H2ExtProcServer:
    """Same surface as `ExtProcServer` (start/stop/wait_for_termination/port)."""

    def __init__(
        self,
        pipeline: Pipeline,
        server_options: ServerOptions | None = None,
        stream_options: StreamOptions | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.server_options = server_options or ServerOptions()
        self.stream_options = stream_options or StreamOptions()
        self.max_message_bytes = self.stream_options.max_message_bytes
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self) -> int:
        opts = self.server_options
        context = self._tls_context() if opts.secure_serving else None
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Connection(self), opts.host, opts.grpc_port, ssl=context, reuse_address=True
        )
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])
        log.info("ext_proc (h2) listening on %s:%d (tls=%s)", opts.host, self.port, bool(context))
        return self.port

    def _tls_context(self) -> ssl.SSLContext:
        cert_path = self.server_options.cert_path
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.set_alpn_protocols(["h2"])
        if cert_path is not None:
            context.load_cert_chain(cert_path / tls.CERT_FILE, cert_path / tls.KEY_FILE)
            return context
        cert, key = tls.self_signed_pair()
        with tempfile.TemporaryDirectory(prefix="sluice-tls-") as tmp:
            (Path(tmp) / tls.CERT_FILE).write_bytes(cert)
            (Path(tmp) / tls.KEY_FILE).write_bytes(key)
            context.load_cert_chain(Path(tmp) / tls.CERT_FILE, Path(tmp) / tls.KEY_FILE)
        return context

    async def stop(self, grace: float | None = None) -> None:
        if self._server is None:
            return
        self._server.close()
        if grace:
            deadline = asyncio.get_running_loop().time() + grace
            while any(not c.idle for c in self.connections):
                if asyncio.get_running_loop().time() >= deadline:
                    break
                await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.shutdown()
        await self._server.wait_closed()
        self._server = None

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
