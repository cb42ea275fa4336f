"""A gRPC server on python-hyper's `h2` state machine, with explicit limits.

`h2` owns HTTP/2 itself — frame parsing, HPACK, stream states, flow-control windows and every
RFC 9113 error rule (a malformed frame is a GOAWAY or RST_STREAM with the right code). This
module adds what a server needs around it:

- gRPC: calls routed by `:path` to a handler factory (`routes`); an unknown path ends with
  UNIMPLEMENTED, a request that is not gRPC with HTTP 405/415. Messages are deframed under a
  size limit; a stream that ends inside a message ends the call with INTERNAL, never OK.
- Limits (`H2Limits`): concurrent streams, header list size, frame size, bytes held per
  connection, control-frame floods, rapid resets, and output for a peer that does not read.
- One write per read: handlers run inside `data_received`; whatever they send leaves together,
  then `after_write` callbacks run (work the answers did not have to wait for).

A handler answers through its `Call` (`send`, `finish`) and hears `on_message`, `on_half_close`
and `on_cancel`. Every call ends exactly once: by its handler's `finish`, or by `on_cancel` (the
peer reset it, the connection ended, or a limit or malformed message ended it).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Protocol, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingAckReceived,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    UnknownFrameReceived,
    WindowUpdated,
)
from h2.exceptions import FlowControlError, ProtocolError
from h2.settings import SettingCodes, Settings
from hpack import HPACKDecodingError, OversizedHeaderListError
from hyperframe.exceptions import InvalidDataError

from sluice.net.grpc_framing import (
    DeframeError,
    Deframer,
    Status,
    frame_message,
    grpc_message_value,
)
from sluice.net.limits import H2Limits, RapidResets, TokenBucket

log = logging.getLogger(__name__)

LINGER_S = 2.0  # after our GOAWAY, how long a peer may take to close before it is cut off


class Handler(Protocol):
    """One call's logic. Runs on the event loop, inside the read that delivered the event."""

    def on_message(self, message: bytes) -> None: ...

    def on_half_close(self) -> None:
        """The client sent its last message."""

    def on_cancel(self) -> None:
        """The call ended without `finish`: reset, connection gone, or ended by a limit."""


Route = Callable[["Call"], Handler]

_CONFIG = H2Configuration(
    client_side=False,
    header_encoding=None,  # names and values stay bytes: no decoding on the hot path
    validate_inbound_headers=True,  # RFC 9113 §8.2-8.3: malformed requests are refused
    normalize_inbound_headers=False,
    validate_outbound_headers=False,  # ours are fixed and lower-case
    normalize_outbound_headers=False,
)
_RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", b"application/grpc"))
_OK_TRAILERS = ((b"grpc-status", b"0"),)
_GRPC_CONTENT_TYPE = b"application/grpc"


class Call:
    """The server side of one RPC (one HTTP/2 stream)."""

    __slots__ = (
        "_connection", "_deframer", "_out", "_pending", "_trailers", "delivered", "ended",
        "handler", "headers", "headers_sent", "held", "id", "path", "remote_ended", "unacked",
    )  # fmt: skip

    def __init__(
        self,
        connection: _Connection,
        stream_id: int,
        path: str,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._connection = connection
        self.id = stream_id
        self.path = path
        self.headers = headers  # as received (bytes), pseudo-headers included
        self.handler: Handler | None = None
        self._deframer = Deframer(connection.limits.max_message_bytes)
        self._out: list[bytes] = []  # framed messages not yet handed to h2
        self._pending = b""  # bytes h2 could not take yet (peer's window or frame size)
        self._trailers: tuple[tuple[bytes, bytes], ...] | None = None
        self.headers_sent = False
        self.remote_ended = False
        self.delivered = False  # a whole message reached the handler
        self.held = 0  # bytes the handler reports holding (`hold`)
        self.unacked = 0  # DATA bytes received and not yet returned to the peer's window
        self.ended = False

    def send(self, message: bytes) -> None:
        """Queue one message (serialized protobuf); it leaves with this read's write."""
        if self.ended:
            return
        self._out.append(frame_message(message))
        self._connection.mark_dirty(self)

    def finish(self, status: int = Status.OK, message: str = "") -> None:
        """End the call with trailers (after the queued messages). Only the first call counts."""
        if self.ended:
            return
        self._end(status, message)

    def hold(self, nbytes: int) -> bool:
        """Report how many bytes the handler now keeps for this call (e.g. a body being
        collected). False — and the call is ended with RESOURCE_EXHAUSTED, `on_cancel` — when
        that takes the connection past its buffer limit."""
        if self.ended:
            return False
        return self._connection.change_held(self, nbytes - self.held)

    def after_write(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the output queued so far has been written."""
        self._connection.after_write(callback)

    # -- used by the connection --------------------------------------------------------------

    def _end(self, status: int, message: str) -> None:
        self.ended = True
        if status == Status.OK and not message:
            trailers: tuple[tuple[bytes, bytes], ...] = _OK_TRAILERS
        else:
            trailers = ((b"grpc-status", str(int(status)).encode()),)
            if message:
                trailers += ((b"grpc-message", grpc_message_value(message)),)
        self._trailers = trailers
        self._connection.mark_dirty(self)


class _Connection(asyncio.Protocol):
    def __init__(self, server: GrpcServer) -> None:
        self._server = server
        self.limits = limits = server.limits
        self._routes = server.routes
        self._h2 = H2Connection(config=_CONFIG)
        self._transport: asyncio.Transport | None = None
        self._calls: dict[int, Call] = {}
        self._dirty: list[Call] = []
        self._after: list[Callable[[], None]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._in_read = False
        self._held = 0  # bytes held for all calls: partial messages + handlers' `hold`
        self._closed = False
        self._draining = False  # GOAWAY sent or received: no new streams, finish the rest
        self._close_pending = False  # close once the output being written is out
        self._linger: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._control = TokenBucket(
            limits.control_frame_burst, limits.control_frames_per_s, self._loop.time()
        )
        self._resets = RapidResets(limits.rapid_reset_min_streams, limits.rapid_reset_ratio)
        self._unacked = 0  # connection-level DATA bytes not yet returned (see `_on_data`)
        self._ack_after = limits.connection_window_bytes // 2
        self._stream_ack_after = limits.stream_window_bytes // 2

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        self._transport.set_write_buffer_limits(high=self.limits.write_buffer_bytes)
        self._server.connections.add(self)
        limits, h2 = self.limits, self._h2
        # Our SETTINGS are in force from the first frame (h2 would keep its defaults until the
        # peer's ACK, refusing an early burst of streams a conformant peer may send).
        h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_bytes,
                SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window_bytes,
                SettingCodes.MAX_FRAME_SIZE: limits.max_frame_bytes,
            },
        )
        h2.max_inbound_frame_size = limits.max_frame_bytes
        h2.decoder.max_header_list_size = limits.max_header_list_bytes
        h2.initiate_connection()
        h2.increment_flow_control_window(limits.connection_window_bytes - 65_535)
        self._write()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._in_read = True
        try:
            try:
                events = self._h2.receive_data(data)
            except ProtocolError as error:
                self._protocol_error(error)
                return
            for event in events:
                self._dispatch(event)
                if self._closed:
                    return
        finally:
            self._in_read = False
        self._flush()

    def pause_writing(self) -> None:
        # The peer does not read what we send: stop reading what it sends (bounded memory).
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # the peer is done: close (connection_lost follows)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._transport = None
        self._server.connections.discard(self)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._cancel_all()

    # -- events ----------------------------------------------------------------------------------

    def _dispatch(self, event: object) -> None:
        kind = type(event)
        if kind is DataReceived:
            self._on_data(cast(DataReceived, event))
        elif kind is RequestReceived:
            self._on_request(cast(RequestReceived, event))
        elif kind is StreamEnded:
            self._on_stream_ended(cast(StreamEnded, event).stream_id)
        elif kind is StreamReset:
            self._on_reset(cast(StreamReset, event))
        elif kind is WindowUpdated:
            self._control_frame()
            self._resume_sends(cast(WindowUpdated, event).stream_id)
        elif kind is RemoteSettingsChanged:
            self._control_frame()
            self._resume_sends(0)  # a new initial window or frame size
        elif kind in (PingReceived, PingAckReceived, PriorityUpdated, UnknownFrameReceived):
            self._control_frame()  # (h2 answers PINGs itself)
        elif kind is ConnectionTerminated:
            self._on_goaway(cast(ConnectionTerminated, event))
        # SettingsAcknowledged, TrailersReceived (StreamEnded follows): nothing to do.

    def _on_request(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
        self._control.earn()
        self._resets.stream_opened()
        path = method = content_type = b""
        for name, value in event.headers or ():
            if name == b":path":
                path = value
            elif name == b":method":
                method = value
            elif name == b"content-type":
                content_type = value
        call = Call(self, stream_id, path.decode("ascii", "replace"), list(event.headers or ()))
        self._calls[stream_id] = call
        if method != b"POST":
            self._refuse(call, b"405")
            return
        if not content_type.startswith(_GRPC_CONTENT_TYPE):
            self._refuse(call, b"415")
            return
        route = self._routes.get(call.path)
        if route is None:
            call._end(Status.UNIMPLEMENTED, f"unknown method {call.path}")
            return
        try:
            call.handler = route(call)
        except Exception:
            log.exception("gRPC handler for %s failed to start", call.path)
            call._end(Status.INTERNAL, "handler failed to start")

    def _on_data(self, event: DataReceived) -> None:
        stream_id = event.stream_id
        data = event.data or b""
        # Windows are returned as bytes arrive, not as handlers let go of them: memory is
        # bounded by the explicit limits, and a call that holds its bytes (a queued request)
        # must not stall the others. Returned in bulk (half a window at a time): one
        # WINDOW_UPDATE per many frames.
        consumed = event.flow_controlled_length
        if consumed:
            self._unacked += consumed
            if self._unacked >= self._ack_after:
                self._h2.increment_flow_control_window(self._unacked)
                self._unacked = 0
        if data:
            self._control.earn()
        elif not event.stream_ended:
            self._control_frame()  # an empty DATA frame that does not even end the stream
            if self._closed:
                return
        call = self._calls.get(stream_id)
        if call is None or call.ended or call.handler is None:
            return
        if consumed:
            call.unacked += consumed
            if call.unacked >= self._stream_ack_after and not call.remote_ended:
                self._h2.increment_flow_control_window(call.unacked, stream_id)
                call.unacked = 0
        before = call._deframer.pending
        try:
            messages = call._deframer.feed(data)
        except DeframeError as error:
            self._end_call(call, error.status, error.message)
            return
        grown = call._deframer.pending - before
        if grown and not self.change_held(call, grown, partial=True):
            return
        handler = call.handler
        for message in messages:
            call.delivered = True
            try:
                handler.on_message(message)
            except Exception:
                log.exception("gRPC handler for %s failed", call.path)
                self._end_call(call, Status.INTERNAL, "handler failed")
            if call.ended:
                return

    def _on_stream_ended(self, stream_id: int) -> None:
        call = self._calls.get(stream_id)
        if call is None:
            return
        call.remote_ended = True
        if call.ended:
            self._forget_if_done(call)
            return
        if call.handler is None:
            return
        truncated = call._deframer.truncated()
        if truncated is not None:
            self._end_call(call, Status.INTERNAL, truncated)
            return
        try:
            call.handler.on_half_close()
        except Exception:
            log.exception("gRPC handler for %s failed", call.path)
            self._end_call(call, Status.INTERNAL, "handler failed")

    def _on_reset(self, event: StreamReset) -> None:
        call = self._calls.pop(event.stream_id, None)
        if call is None:
            return
        self._release(call)
        if call.ended:
            return
        call.ended = True
        rapid = event.remote_reset and not call.delivered and self._resets.premature_reset()
        self._cancel(call)
        call.handler = None  # (the handler refers to its call: no cycle left for the GC)
        if rapid:
            log.warning(
                "HTTP/2 peer reset %d of %d streams before sending a message (rapid reset): "
                "closing the connection",
                self._resets.premature,
                self._resets.opened,
            )
            self.goaway(ErrorCodes.ENHANCE_YOUR_CALM)

    def _on_goaway(self, event: ConnectionTerminated) -> None:
        if event.error_code != ErrorCodes.NO_ERROR:
            log.info("HTTP/2 peer closed the connection with %r", event.error_code)
            self._close()
            return
        self._draining = True  # the peer opens no new streams; ours finish first
        if not self._calls:
            self._close_pending = True

    def _control_frame(self) -> None:
        if not self._control.spend(self._loop.time()):
            log.warning("HTTP/2 control-frame flood from a peer: closing the connection")
            self.goaway(ErrorCodes.ENHANCE_YOUR_CALM)

    # -- limits ----------------------------------------------------------------------------------

    def change_held(self, call: Call, delta: int, *, partial: bool = False) -> bool:
        if not partial:
            call.held += delta
        self._held += delta
        if delta > 0 and self._held > self.limits.max_connection_buffer_bytes:
            self._end_call(
                call,
                Status.RESOURCE_EXHAUSTED,
                "connection buffer limit reached "
                f"({self.limits.max_connection_buffer_bytes} bytes held for its calls)",
            )
            return False
        return True

    def _release(self, call: Call) -> None:
        self._held -= call.held + call._deframer.pending
        call.held = 0
        call._deframer.clear()

    # -- ending calls ----------------------------------------------------------------------------

    def _end_call(self, call: Call, status: int, message: str) -> None:
        """The transport ends a call its handler did not finish: trailers, then `on_cancel`."""
        if call.ended:
            return
        log.info(
            "gRPC call %s ended by the server: %s (%s)", call.path, Status(status).name, message
        )
        call._end(status, message)
        self._release(call)
        self._cancel(call)

    def _refuse(self, call: Call, http_status: bytes) -> None:
        call.ended = True
        self._h2.send_headers(call.id, ((b":status", http_status),), end_stream=True)
        self._stop_peer_sending(call)

    def _cancel(self, call: Call) -> None:
        handler = call.handler
        if handler is None:
            return
        try:
            handler.on_cancel()
        except Exception:
            log.exception("gRPC handler for %s failed to cancel", call.path)

    def _cancel_all(self) -> None:
        calls = list(self._calls.values())
        self._calls.clear()
        for call in calls:
            if not call.ended:
                call.ended = True
                self._cancel(call)
            call.handler = None
        self._held = 0

    def _stop_peer_sending(self, call: Call) -> None:
        """We answered completely before the client finished: ask it to stop (RFC 9113 §8.1)."""
        if not call.remote_ended:
            self._h2.reset_stream(call.id, ErrorCodes.NO_ERROR)
        self._calls.pop(call.id, None)
        call.handler = None
        if self._draining and not self._calls:
            self._close_pending = True  # once this output is written

    def _forget_if_done(self, call: Call) -> None:
        if call.ended and not call._pending and call._trailers is None:
            self._calls.pop(call.id, None)
            call.handler = None

    # -- output ----------------------------------------------------------------------------------

    def mark_dirty(self, call: Call) -> None:
        self._dirty.append(call)
        if not self._in_read and self._flush_handle is None and not self._closed:
            self._flush_handle = self._loop.call_soon(self._flush)

    def after_write(self, callback: Callable[[], None]) -> None:
        self._after.append(callback)
        if not self._in_read and self._flush_handle is None and not self._closed:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._closed:
            return
        dirty, self._dirty = self._dirty, []
        for call in dirty:
            if call.id in self._calls:
                self._emit(call)
        self._write()
        if self._after:
            callbacks, self._after = self._after, []
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    log.exception("gRPC after-write callback failed")
            if self._dirty and self._flush_handle is None:  # they sent more: next turn
                self._flush_handle = self._loop.call_soon(self._flush)
        if self._close_pending:
            self._close()

    def _emit(self, call: Call) -> None:
        """Hand a call's queued output to h2: headers, messages (as far as the peer's windows
        allow), then trailers."""
        h2 = self._h2
        out = call._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if not call.headers_sent:
                call.headers_sent = True
                h2.send_headers(call.id, _RESPONSE_HEADERS)
            call._pending = call._pending + data if call._pending else data
        if call._pending:
            self._send_pending(call)
            if call._pending:
                return  # trailers wait behind the data
        trailers = call._trailers
        if trailers is None:
            return
        call._trailers = None
        if call.headers_sent:
            h2.send_headers(call.id, trailers, end_stream=True)
        else:  # trailers-only response
            call.headers_sent = True
            h2.send_headers(call.id, _RESPONSE_HEADERS + trailers, end_stream=True)
        self._release(call)
        self._stop_peer_sending(call)

    def _send_pending(self, call: Call) -> None:
        h2, data = self._h2, call._pending
        limit = h2.max_outbound_frame_size
        if len(data) <= limit:
            try:
                h2.send_data(call.id, data)
                call._pending = b""
                return
            except FlowControlError:
                pass
        # Larger than one frame or than the peer's window: as much as fits, the rest waits
        # for WINDOW_UPDATE.
        room = min(h2.local_flow_control_window(call.id), len(data))
        offset = 0
        while offset < room:
            size = min(limit, room - offset)
            h2.send_data(call.id, data[offset : offset + size])
            offset += size
        call._pending = data[offset:]

    def _resume_sends(self, stream_id: int) -> None:
        if stream_id:
            call = self._calls.get(stream_id)
            if call is not None and call._pending:
                self._dirty.append(call)
            return
        self._dirty.extend(call for call in self._calls.values() if call._pending)

    def _write(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    # -- closing ---------------------------------------------------------------------------------

    def _protocol_error(self, error: ProtocolError) -> None:
        """h2 refused the peer's bytes and queued a GOAWAY with the error's code."""
        data = self._h2.data_to_send()
        code = _rfc_code(error)
        if code is not None and data[-17:-14] == b"\x00\x00\x08" and data[-14:-13] == b"\x07":
            # The GOAWAY is the last frame; its last 4 bytes are the error code.
            data = data[:-4] + int(code).to_bytes(4, "big")
        log.info("HTTP/2 protocol error from a peer: %s", error)
        if self._transport is not None:
            self._transport.write(data)
        self._close()

    def goaway(self, code: ErrorCodes) -> None:
        """End the connection now with `code`; every call still open is cancelled."""
        if self._closed:
            return
        self._h2.close_connection(error_code=code)
        self._write()
        self._close()

    def drain(self) -> None:
        """Graceful: GOAWAY(NO_ERROR), no new streams; close once the calls in progress end."""
        if self._closed or self._draining:
            return
        self._draining = True
        self._h2.close_connection(
            error_code=ErrorCodes.NO_ERROR, last_stream_id=self._h2.highest_inbound_stream_id
        )
        self._write()
        if not self._calls:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        transport = self._transport
        if transport is not None:
            if transport.get_write_buffer_size() > self.limits.write_buffer_bytes:
                transport.abort()  # a peer that does not read would keep it open forever
            elif transport.can_write_eof():
                # A lingering close: the GOAWAY, then FIN, while input is read and dropped.
                # Closing with unread input makes the kernel send RST at once, and the peer
                # would lose the GOAWAY that says why.
                try:
                    transport.write_eof()
                except OSError:  # the peer is gone already
                    transport.abort()
                else:
                    transport.resume_reading()
                    self._linger = self._loop.call_later(LINGER_S, transport.abort)
            else:
                transport.close()  # TLS: close_notify after the GOAWAY
        self._cancel_all()

    @property
    def idle(self) -> bool:
        return not self._calls


def _rfc_code(error: ProtocolError) -> ErrorCodes | None:
    """The code RFC 9113 requires where h2 reports a plain PROTOCOL_ERROR, else None."""
    cause = error.__cause__
    if isinstance(cause, HPACKDecodingError) and not isinstance(cause, OversizedHeaderListError):
        return ErrorCodes.COMPRESSION_ERROR  # §4.3: a field block that cannot be decoded
    if isinstance(cause, InvalidDataError) and str(cause).startswith("SETTINGS ack frame"):
        return ErrorCodes.FRAME_SIZE_ERROR  # §6.5: a SETTINGS ACK with a payload
    return None


class GrpcServer:
    """Listens and serves `routes` (`{"/pkg.Service/Method": factory}`) over HTTP/2.

    >>> server = GrpcServer({"/pkg.S/M": MyHandler}, H2Limits())
    >>> port = await server.start("127.0.0.1", 0)
    >>> await server.stop(grace=5)
    """

    def __init__(
        self,
        routes: Mapping[str, Route],
        limits: H2Limits | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.routes = dict(routes)
        self.limits = limits or H2Limits()
        self.ssl_context = ssl_context
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Connection(self), host, port, ssl=self.ssl_context, reuse_address=True
        )
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening; give calls in progress `grace` seconds, then close everything."""
        if self._server is None:
            return
        self._server.close()
        loop = asyncio.get_running_loop()
        if grace:
            for connection in list(self.connections):
                connection.drain()
            deadline = loop.time() + grace
            while any(not c.idle for c in self.connections) and loop.time() < deadline:
                await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.goaway(ErrorCodes.NO_ERROR)
        await self._server.wait_closed()
        self._server = None

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
