"""The `hyper` engine: HTTP/2 by python-hyper's `h2` state machine (frames, HPACK, stream
states, flow-control windows and RFC 9113's error rules), under the shared connection rules of
`sluice.net.connection`.

It is the reference the `frames` engine is tested against; it costs about twice the CPU per
ext_proc request (docs/extproc.md "Overhead"), which is why it is not the default.
"""

from __future__ import annotations

from typing import cast

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
from h2.exceptions import DenialOfServiceError, FlowControlError, ProtocolError
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes, Settings
from hpack import HPACKDecodingError, OversizedHeaderListError
from hyperframe.exceptions import InvalidDataError
from hyperframe.frame import ContinuationFrame, Frame

from sluice.net.call import Call, Trailers
from sluice.net.connection import GrpcConnection, log

_CONFIG = H2Configuration(
    client_side=False,
    header_encoding=None,  # names and values stay bytes: no decoding on the hot path
    validate_inbound_headers=True,  # RFC 9113 §8.2-8.3: malformed requests are refused
    normalize_inbound_headers=False,
    validate_outbound_headers=False,  # ours are fixed and lower-case
    normalize_outbound_headers=False,
)
_RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", b"application/grpc"))
_CONTROL_EVENTS = (PingReceived, PingAckReceived, PriorityUpdated, UnknownFrameReceived)


class HyperConnection(GrpcConnection):
    def _start(self) -> None:
        limits = self.limits
        self._h2 = h2 = H2Connection(config=_CONFIG)
        self._unacked = 0  # connection-level DATA bytes not yet returned to the peer
        self._ack_after = limits.connection_window_bytes // 2
        self._stream_ack_after = limits.stream_window_bytes // 2
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
        h2.incoming_buffer = _BoundedHeaderBlocks(2 * limits.max_header_list_bytes)
        h2.decoder.max_header_list_size = limits.max_header_list_bytes
        h2.initiate_connection()
        h2.increment_flow_control_window(limits.connection_window_bytes - 65_535)

    def _receive(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as error:
            self._h2_refused(error)
            return
        for event in events:
            self._dispatch(event)
            if self._closed:
                return

    def _dispatch(self, event: object) -> None:
        kind = type(event)
        if kind is DataReceived:
            self._data(cast(DataReceived, event))
        elif kind is RequestReceived:
            request = cast(RequestReceived, event)
            self._on_request(request.stream_id, list(request.headers or ()))
        elif kind is StreamEnded:
            call = self._calls.get(cast(StreamEnded, event).stream_id)
            if call is not None:
                self._on_remote_end(call)
        elif kind is StreamReset:
            reset = cast(StreamReset, event)
            self._on_reset(reset.stream_id, by_peer=reset.remote_reset)
        elif kind is WindowUpdated:
            self._on_control_frame()
            self._resume_sends(cast(WindowUpdated, event).stream_id)
        elif kind is RemoteSettingsChanged:
            self._on_control_frame()
            self._resume_sends(0)  # a new initial window or frame size
        elif kind in _CONTROL_EVENTS:
            self._on_control_frame()  # (h2 answers PINGs itself)
        elif kind is ConnectionTerminated:
            self._on_peer_goaway(int(cast(ConnectionTerminated, event).error_code or 0))
        # SettingsAcknowledged, TrailersReceived (StreamEnded follows): nothing to do.

    def _on_peer_goaway(self, code: int) -> None:
        """h2 (4.x) ends the connection on the peer's GOAWAY, whatever its code: it drops what
        it had queued and refuses every frame after (`SEND_HEADERS in state CLOSED`), so the
        calls still open cannot be answered. They are cancelled and the connection closed —
        where the `h2` engine, as RFC 9113 §6.8 allows, finishes them first."""
        if code == 0:
            log.info("HTTP/2 peer sent GOAWAY: closing (h2 cannot answer the calls still open)")
            self._close()
            return
        self._on_goaway(code)

    def _data(self, event: DataReceived) -> None:
        stream_id = event.stream_id
        data = event.data or b""
        # Windows are returned as bytes arrive, not as handlers let go of them: memory is
        # bounded by the explicit limits, and a call that holds its bytes (a queued request)
        # must not stall the others. Returned in bulk: one WINDOW_UPDATE per many frames.
        consumed = event.flow_controlled_length or 0
        if consumed:
            self._unacked += consumed
            if self._unacked >= self._ack_after:
                self._h2.increment_flow_control_window(self._unacked)
                self._unacked = 0
        if not data and not event.stream_ended:
            self._on_control_frame()  # an empty DATA frame that does not even end the stream
            if self._closed:
                return
        call = self._calls.get(stream_id)
        if call is None:
            return
        if consumed:
            call.unacked += consumed
            if call.unacked >= self._stream_ack_after and not call.remote_ended:
                self._h2.increment_flow_control_window(call.unacked, stream_id)
                call.unacked = 0
        self._on_data(call, data)

    def _send_headers(self, call: Call) -> None:
        self._h2.send_headers(call.id, _RESPONSE_HEADERS)

    def _send_data(self, call: Call, data: bytes) -> None:
        call.pending = call.pending + data if call.pending else data

    def _send_trailers(self, call: Call, trailers: Trailers, with_headers: bool) -> None:
        headers = _RESPONSE_HEADERS + trailers if with_headers else trailers
        self._h2.send_headers(call.id, headers, end_stream=True)

    def _send_pending(self, call: Call) -> None:
        h2, data = self._h2, call.pending
        limit = h2.max_outbound_frame_size
        if len(data) <= limit:
            try:
                h2.send_data(call.id, data)
                call.pending = b""
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
        call.pending = data[offset:]

    def _refuse(self, call: Call, http_status: bytes) -> None:
        self._h2.send_headers(call.id, ((b":status", http_status),), end_stream=True)

    def _reset(self, stream_id: int, code: int) -> None:
        self._h2.reset_stream(stream_id, code)

    def _queue_goaway(self, code: int) -> None:
        h2 = self._h2
        h2.close_connection(error_code=code, last_stream_id=h2.highest_inbound_stream_id)

    def _take_output(self) -> bytes:
        return self._h2.data_to_send()

    def _h2_refused(self, error: ProtocolError) -> None:
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


class _BoundedHeaderBlocks(FrameBuffer):
    """h2's frame buffer with the `frames` engine's limit on a header block's compressed size.

    h2 bounds a block only by its count of CONTINUATION frames (64), so on its own it holds up
    to 64 frames of `max_frame_bytes` (64 MiB) per connection for a block that never ends. The
    check sits in `_update_header_buffer`, the one place h2 (4.x) collects a block's frames."""

    def __init__(self, max_block: int) -> None:
        super().__init__(server=True)
        self._max_block = max_block
        self._block_size = 0

    def _update_header_buffer(self, f: Frame | None) -> Frame | None:
        block = self._headers_buffer
        if block and isinstance(f, ContinuationFrame) and f.stream_id == block[0].stream_id:
            self._block_size += len(f.data)
            if self._block_size > self._max_block:
                raise DenialOfServiceError("a header block over the header list limit")
        out = super()._update_header_buffer(f)
        if not self._headers_buffer:
            self._block_size = 0
        elif len(self._headers_buffer) == 1:  # a block has just started
            self._block_size = len(self._headers_buffer[0].data)
        return out


def _rfc_code(error: ProtocolError) -> ErrorCodes | None:
    """The code RFC 9113 requires where h2 reports a plain PROTOCOL_ERROR, else None."""
    cause = error.__cause__
    if isinstance(cause, HPACKDecodingError) and not isinstance(cause, OversizedHeaderListError):
        return ErrorCodes.COMPRESSION_ERROR  # §4.3: a field block that cannot be decoded
    if isinstance(cause, InvalidDataError) and str(cause).startswith("SETTINGS ack frame"):
        return ErrorCodes.FRAME_SIZE_ERROR  # §6.5: a SETTINGS ACK with a payload
    return None
