"""The `frames` engine: Sluice's own HTTP/2 frame layer, for gRPC servers only.

Why not python-hyper's `h2` (the `hyper` engine): it is a general HTTP/2 state machine — an
object per frame, a state-machine transition per event, validation for every feature — and on
the ext_proc hot path (≈ 13 frames per request) that doubled Sluice's CPU per request and took
it under 1,000 requests per CPU-second (docs/extproc.md "Overhead"). This layer does what a
gRPC server needs and nothing more, on plain integers and byte slices:

- Every frame checked as RFC 9113 §4-§6 says (sizes, stream identifiers, flags, padding,
  setting values, flow-control windows, header-block sequencing); a violation is a GOAWAY or
  RST_STREAM with the code the RFC names, the same as `hyper` answers (the conformance, limit
  and fuzz tests run against both).
- Request headers decoded by python-hyper's `hpack` (its table must follow every block) and
  checked as §8.2-§8.3 requires of a request; responses encoded statelessly (static table and
  literals never indexed: no encoder state to keep).
- Stream states: idle → open → half-closed → closed, ids increasing; frames on a closed stream
  are ignored (as §5.1 requires after our RST_STREAM), frames on an idle one are refused.
- Flow control both ways: our windows are returned as bytes arrive (memory is bounded by the
  explicit limits of `sluice.net.connection`), the peer's windows and frame size are obeyed.
"""

from __future__ import annotations

from typing import cast

from hpack import Decoder, HPACKError, OversizedHeaderListError

from sluice.net.call import OK_TRAILERS, Call, Trailers
from sluice.net.connection import (
    COMPRESSION_ERROR,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    STREAM_CLOSED,
    GrpcConnection,
)
from sluice.net.varint import varint

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
MAX_WINDOW = (1 << 31) - 1
MAX_CONTINUATIONS = 64  # as h2: a header block of more frames is a flood
_SETTING_HEADER_TABLE_SIZE, _SETTING_ENABLE_PUSH, _SETTING_MAX_CONCURRENT_STREAMS = 1, 2, 3
_SETTING_INITIAL_WINDOW_SIZE, _SETTING_MAX_FRAME_SIZE, _SETTING_MAX_HEADER_LIST_SIZE = 4, 5, 6
_SETTING_ENABLE_CONNECT_PROTOCOL = 8
_CONNECTION_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})
_REQUIRED_PSEUDO = frozenset({b":method", b":scheme", b":path"})


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
    return bytes((first | limit,)) + varint(value - limit)  # RFC 7541 §5.1


def _literal(name: bytes, value: bytes) -> bytes:
    """HPACK 'literal header field never indexed, new name', no Huffman: stateless."""
    return b"\x10" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


def _block(headers: Trailers) -> bytes:
    return b"".join(_literal(name, value) for name, value in headers)


# ":status: 200" is HPACK static entry 8 (one byte); the rest are plain literals. Built once.
_STATUS_AND_TYPE = b"\x88" + _literal(b"content-type", b"application/grpc")
_OK_TRAILER_BLOCK = _block(OK_TRAILERS)


class FrameConnection(GrpcConnection):
    def _start(self) -> None:
        limits = self.limits
        self._in = bytearray()
        self._out: list[bytes] = []
        self._preface_seen = False
        self._settings_seen = False  # the client's preface ends with its SETTINGS (§3.4)
        self._highest = 0  # the highest stream id the peer opened
        self._decoder = Decoder(max_header_list_size=limits.max_header_list_bytes)
        # Header blocks that left the HPACK table as it was, decoded (see `_decode`).
        self._decoded: dict[bytes, tuple[list[tuple[bytes, bytes]], bool]] = {}
        self._max_block = 2 * limits.max_header_list_bytes  # a compressed block past it: a flood
        self._block_stream = 0  # a header block in progress (CONTINUATION expected), or 0
        self._block_flags = 0
        self._block_parts: list[bytes] = []
        self._block_size = 0
        self._block_bad_priority = False
        self._peer_initial_window = 65_535
        self._peer_max_frame = 16_384
        self._send_window = 65_535  # the peer's window for the connection
        self._window = limits.connection_window_bytes  # ours, for the connection
        self._stream_window = limits.stream_window_bytes
        settings = b"".join(
            key.to_bytes(2, "big") + value.to_bytes(4, "big")
            for key, value in (
                (_SETTING_MAX_CONCURRENT_STREAMS, limits.max_concurrent_streams),
                (_SETTING_INITIAL_WINDOW_SIZE, limits.stream_window_bytes),
                (_SETTING_MAX_FRAME_SIZE, limits.max_frame_bytes),
                (_SETTING_MAX_HEADER_LIST_SIZE, limits.max_header_list_bytes),
            )
        )
        self._out.append(_frame(SETTINGS, 0, 0, settings))
        increment = limits.connection_window_bytes - 65_535
        self._out.append(_frame(WINDOW_UPDATE, 0, 0, increment.to_bytes(4, "big")))

    # -- frames in ------------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        buf = self._in
        buf += data
        if not self._preface_seen:
            if not PREFACE.startswith(bytes(buf[: len(PREFACE)])):
                self._protocol_error(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            if len(buf) < len(PREFACE):
                return
            del buf[: len(PREFACE)]
            self._preface_seen = True
        offset, size = 0, len(buf)
        max_frame = self.limits.max_frame_bytes
        try:
            while size - offset >= 9 and not self._closed:
                length = int.from_bytes(buf[offset : offset + 3], "big")
                if length > max_frame:
                    self._protocol_error(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                    return
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

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block_stream and kind != CONTINUATION:
            self._protocol_error(PROTOCOL_ERROR, "a frame inside a header block")
        elif not self._settings_seen and kind != SETTINGS:
            self._protocol_error(PROTOCOL_ERROR, "the preface must end with SETTINGS")
        elif kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == RST_STREAM:
            self._rst_stream(stream_id, payload)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == PING:
            self._ping(flags, stream_id, payload)
        elif kind == CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif kind == PRIORITY:
            self._priority(stream_id, payload)
        elif kind == GOAWAY:
            if stream_id:
                self._protocol_error(PROTOCOL_ERROR, "GOAWAY on a stream")
            elif len(payload) < 8:
                self._protocol_error(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            else:
                self._on_goaway(int.from_bytes(payload[4:8], "big"))
        elif kind == PUSH_PROMISE:
            self._protocol_error(PROTOCOL_ERROR, "PUSH_PROMISE from a client")  # §8.4
        else:
            self._on_control_frame()  # unknown types are ignored (§5.5), within the budget

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            self._protocol_error(PROTOCOL_ERROR, "DATA on stream 0")
            return
        size = len(payload)  # padding included: all of it counts against the windows
        data = payload
        if flags & PADDED:
            if not size or payload[0] >= size:
                self._protocol_error(PROTOCOL_ERROR, "DATA padding as long as the frame")
                return
            data = payload[1 : size - payload[0]]
        self._window -= size
        if self._window < 0:
            self._protocol_error(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
            return
        full = self.limits.connection_window_bytes
        if self._window < full // 2:  # return what arrived, in bulk
            self._out.append(_frame(WINDOW_UPDATE, 0, 0, (full - self._window).to_bytes(4, "big")))
            self._window = full
        call = self._calls.get(stream_id)
        if call is None:
            if stream_id > self._highest:
                self._protocol_error(PROTOCOL_ERROR, "DATA on an idle stream")  # §5.1
            return  # a closed stream: ignored (§5.1), its bytes already counted
        if call.remote_ended:
            self._stream_error(call, STREAM_CLOSED)  # DATA after END_STREAM
            return
        call.recv_window -= size
        if call.recv_window < 0:
            self._stream_error(call, FLOW_CONTROL_ERROR)
            return
        ended = flags & END_STREAM
        if call.recv_window < self._stream_window // 2 and not ended:
            increment = self._stream_window - call.recv_window
            self._out.append(_frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big")))
            call.recv_window = self._stream_window
        if data:
            self._on_data(call, data)
        elif not ended:
            self._on_control_frame()  # an empty DATA frame that does not even end the stream
        if ended and self._calls.get(stream_id) is call:
            self._on_remote_end(call)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id or not stream_id % 2:
            self._protocol_error(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")  # §5.1.1
            return
        start, end = 0, len(payload)
        if flags & PADDED:
            if not end or payload[0] >= end:
                self._protocol_error(PROTOCOL_ERROR, "HEADERS padding as long as the frame")
                return
            start, end = 1, end - payload[0]
        bad_priority = False
        if flags & PRIORITY_FLAG:
            if end - start < 5:
                self._protocol_error(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
                return
            depends_on = int.from_bytes(payload[start : start + 4], "big") & 0x7FFFFFFF
            bad_priority = depends_on == stream_id  # §5.3.1: a stream error, once decoded
            start += 5
        fragment = payload[start:end]
        if flags & END_HEADERS:
            self._header_block(stream_id, flags, fragment, bad_priority)
            return
        self._block_stream, self._block_flags = stream_id, flags
        self._block_parts, self._block_size = [fragment], len(fragment)
        self._block_bad_priority = bad_priority

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not self._block_stream or stream_id != self._block_stream:
            self._protocol_error(PROTOCOL_ERROR, "CONTINUATION without its HEADERS")  # §6.10
            return
        self._block_parts.append(payload)
        self._block_size += len(payload)
        if len(self._block_parts) > MAX_CONTINUATIONS:
            self._protocol_error(PROTOCOL_ERROR, "a header block of too many CONTINUATIONs")
            return
        if self._block_size > self._max_block:
            self._protocol_error(ENHANCE_YOUR_CALM, "a header block over the header list limit")
            return
        if flags & END_HEADERS:
            block = b"".join(self._block_parts)
            self._block_stream, self._block_parts = 0, []
            self._header_block(stream_id, self._block_flags, block, self._block_bad_priority)

    def _header_block(self, stream_id: int, flags: int, block: bytes, bad_priority: bool) -> None:
        if len(block) > self._max_block:
            self._protocol_error(ENHANCE_YOUR_CALM, "a header block over the header list limit")
            return
        try:  # decoded whatever happens next: the HPACK table must follow every block
            headers, well_formed = self._decode(block)
        except OversizedHeaderListError:
            self._protocol_error(ENHANCE_YOUR_CALM, "a header list over the limit")
            return
        except (HPACKError, IndexError, TypeError, UnicodeDecodeError, ValueError) as exc:
            self._protocol_error(COMPRESSION_ERROR, f"an undecodable header block: {exc}")  # §4.3
            return
        call = self._calls.get(stream_id)
        if call is not None:  # trailers
            if call.remote_ended:
                self._stream_error(call, STREAM_CLOSED)
            elif not flags & END_STREAM or any(name[:1] == b":" for name, _ in headers):
                self._stream_error(call, PROTOCOL_ERROR)  # §8.1: trailers end the stream
            else:
                self._on_remote_end(call)
            return
        if stream_id <= self._highest:
            return  # a stream we closed (a reset crossing its trailers): ignored
        self._highest = stream_id
        if bad_priority:
            self._reset(stream_id, PROTOCOL_ERROR)
            return
        if self._draining or len(self._calls) >= self.limits.max_concurrent_streams:
            self._reset(stream_id, REFUSED_STREAM)  # safe for the client to retry elsewhere
            return
        if not well_formed:
            self._reset(stream_id, PROTOCOL_ERROR)  # §8.1.1: a malformed request
            return
        call = self._on_request(stream_id, list(headers))
        call.recv_window = self._stream_window
        call.send_window = self._peer_initial_window
        if flags & END_STREAM and self._calls.get(stream_id) is call:
            self._on_remote_end(call)

    def _decode(self, block: bytes) -> tuple[list[tuple[bytes, bytes]], bool]:
        """(headers, well formed as a request). Once its HPACK table is warm, a gateway sends
        the same block for every stream — all indexed fields, which leave the table as it is —
        so such a block is decoded once and remembered until the table changes (an insertion
        or eviction moves every index, and the memo is dropped)."""
        known = self._decoded.get(block)
        if known is not None:
            return known
        entries = self._decoder.header_table.dynamic_entries
        before = (len(entries), id(entries[0]) if entries else 0, id(entries[-1]) if entries else 0)
        headers = cast(list[tuple[bytes, bytes]], self._decoder.decode(block, raw=True))
        decoded = (headers, _well_formed_request(headers))
        after = (len(entries), id(entries[0]) if entries else 0, id(entries[-1]) if entries else 0)
        if after != before or len(self._decoded) >= 64:
            self._decoded.clear()
        if after == before:
            self._decoded[block] = decoded
        return decoded

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._protocol_error(FRAME_SIZE_ERROR, "WINDOW_UPDATE not of 4 bytes")
            return
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        self._on_control_frame()
        if self._closed:
            return
        if not stream_id:
            if not increment:
                self._protocol_error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")  # §6.9
                return
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                self._protocol_error(FLOW_CONTROL_ERROR, "the connection window overflowed")
                return
            self._resume_sends(0)
            return
        call = self._calls.get(stream_id)
        if call is None:
            if stream_id > self._highest:
                self._protocol_error(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return
        if not increment:
            self._stream_error(call, PROTOCOL_ERROR)
            return
        call.send_window += increment
        if call.send_window > MAX_WINDOW:
            self._stream_error(call, FLOW_CONTROL_ERROR)  # §6.9.1
            return
        self._resume_sends(stream_id)

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._protocol_error(FRAME_SIZE_ERROR, "RST_STREAM not of 4 bytes")
        elif not stream_id or stream_id > self._highest:
            self._protocol_error(PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
        else:
            self._on_reset(stream_id, by_peer=True)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            self._protocol_error(PROTOCOL_ERROR, "SETTINGS on a stream")
            return
        if flags & ACK:
            if payload:
                self._protocol_error(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")  # §6.5
                return
            if not self._settings_seen:
                self._protocol_error(PROTOCOL_ERROR, "the preface must end with SETTINGS")
                return
            self._on_control_frame()
            return
        if len(payload) % 6:
            self._protocol_error(FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
            return
        for at in range(0, len(payload), 6):
            key = int.from_bytes(payload[at : at + 2], "big")
            value = int.from_bytes(payload[at + 2 : at + 6], "big")
            if key in (_SETTING_ENABLE_PUSH, _SETTING_ENABLE_CONNECT_PROTOCOL) and value > 1:
                self._protocol_error(PROTOCOL_ERROR, f"setting {key} of {value}")
                return
            if key == _SETTING_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    self._protocol_error(FLOW_CONTROL_ERROR, "an initial window over 2^31-1")
                    return
                delta, self._peer_initial_window = value - self._peer_initial_window, value
                for call in self._calls.values():
                    call.send_window += delta
                    if call.send_window > MAX_WINDOW:
                        self._protocol_error(FLOW_CONTROL_ERROR, "a stream window overflowed")
                        return
            elif key == _SETTING_MAX_FRAME_SIZE:
                if not 16_384 <= value <= (1 << 24) - 1:
                    self._protocol_error(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE of {value}")
                    return
                self._peer_max_frame = value
            # HEADER_TABLE_SIZE: our encoder never uses the dynamic table. The others are
            # advice to a server (MAX_CONCURRENT_STREAMS: it opens none; MAX_HEADER_LIST_SIZE).
        self._settings_seen = True
        self._out.append(_frame(SETTINGS, ACK, 0))
        self._on_control_frame()
        self._resume_sends(0)

    def _ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            self._protocol_error(PROTOCOL_ERROR, "PING on a stream")
        elif len(payload) != 8:
            self._protocol_error(FRAME_SIZE_ERROR, "PING not of 8 bytes")  # §6.7
        else:
            if not flags & ACK:
                self._out.append(_frame(PING, ACK, 0, payload))
            self._on_control_frame()

    def _priority(self, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            self._protocol_error(PROTOCOL_ERROR, "PRIORITY on stream 0")
        elif len(payload) != 5:
            self._protocol_error(FRAME_SIZE_ERROR, "PRIORITY not of 5 bytes")
        elif int.from_bytes(payload[:4], "big") & 0x7FFFFFFF == stream_id:
            call = self._calls.get(stream_id)
            if call is None:
                self._protocol_error(PROTOCOL_ERROR, "a stream depending on itself")
            else:
                self._stream_error(call, PROTOCOL_ERROR)  # §5.3.1
        else:
            self._on_control_frame()  # priorities are advice; deprecated by RFC 9113

    def _stream_error(self, call: Call, code: int) -> None:
        self._reset(call.id, code)
        self._on_reset(call.id, by_peer=False)

    # -- frames out -----------------------------------------------------------------------------

    def _send_headers(self, call: Call) -> None:
        self._out.append(_frame(HEADERS, END_HEADERS, call.id, _STATUS_AND_TYPE))

    def _send_data(self, call: Call, data: bytes) -> None:
        if call.pending:
            call.pending += data
            return
        size = len(data)
        fits = size <= self._send_window and size <= call.send_window
        if fits and size <= self._peer_max_frame:  # the usual case: one frame
            self._send_window -= size
            call.send_window -= size
            self._out.append(_frame(DATA, 0, call.id, data))
        else:
            call.pending = data

    def _send_trailers(self, call: Call, trailers: Trailers, with_headers: bool) -> None:
        block = _OK_TRAILER_BLOCK if trailers is OK_TRAILERS else _block(trailers)
        if with_headers:
            block = _STATUS_AND_TYPE + block
        self._out.append(_frame(HEADERS, END_HEADERS | END_STREAM, call.id, block))

    def _send_pending(self, call: Call) -> None:
        """As much as the peer's windows allow, in frames of at most its frame size."""
        data, offset = call.pending, 0
        while offset < len(data):
            room = min(self._send_window, call.send_window, self._peer_max_frame)
            if room <= 0:
                break
            piece = data[offset : offset + room]
            offset += len(piece)
            self._send_window -= len(piece)
            call.send_window -= len(piece)
            self._out.append(_frame(DATA, 0, call.id, piece))
        call.pending = data[offset:]

    def _refuse(self, call: Call, http_status: bytes) -> None:
        block = _literal(b":status", http_status)
        self._out.append(_frame(HEADERS, END_HEADERS | END_STREAM, call.id, block))

    def _reset(self, stream_id: int, code: int) -> None:
        self._out.append(_frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big")))

    def _queue_goaway(self, code: int) -> None:
        payload = self._highest.to_bytes(4, "big") + code.to_bytes(4, "big")
        self._out.append(_frame(GOAWAY, 0, 0, payload))

    def _take_output(self) -> bytes:
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data


def _well_formed_request(headers: list[tuple[bytes, bytes]]) -> bool:
    """RFC 9113 §8.2-§8.3 for a request: lower-case names, no connection-specific fields, `te`
    only "trailers", the pseudo-headers first, each once, and :method, :scheme, :path there."""
    seen: set[bytes] = set()
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular or name not in _REQUEST_PSEUDO or name in seen:
                return False
            seen.add(name)
        else:
            regular = True
            if name != name.lower() or name in _CONNECTION_HEADERS:
                return False
            if name == b"te" and value != b"trailers":
                return False
    return seen >= _REQUIRED_PSEUDO
