"""What a gRPC-over-HTTP/2 server connection does whatever parses its frames: routing calls by
`:path`, gRPC deframing, the byte and flood limits, one write per read, and closing so that the
peer always gets the GOAWAY. The two engines (`frames`: Sluice's own frame layer, `hyper_h2`:
python-hyper's h2) subclass it and supply HTTP/2 itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import cast

from sluice.net.call import Call, Route, Trailers
from sluice.net.grpc_framing import DeframeError, Status
from sluice.net.limits import H2Limits, RapidResets, TokenBucket

log = logging.getLogger("sluice.net")

LINGER_S = 2.0  # after our GOAWAY, how long a peer may take to close before it is cut off
GRPC_CONTENT_TYPE = b"application/grpc"

# RFC 9113 §7 error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0x5, 0x6, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB


class GrpcConnection(asyncio.Protocol):
    def __init__(
        self, limits: H2Limits, routes: Mapping[str, Route], connections: set[GrpcConnection]
    ) -> None:
        self.limits = limits
        self._routes = routes
        self._connections = connections
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

    # -- what an engine supplies ------------------------------------------------------------------

    def _start(self) -> None:
        """Queue the server preface (SETTINGS and the connection window)."""
        raise NotImplementedError

    def _receive(self, data: bytes) -> None:
        """Parse the peer's bytes and call the `_on_*` hooks below."""
        raise NotImplementedError

    def _send_headers(self, call: Call) -> None:
        """Queue the response headers (`:status 200`, gRPC's content type)."""
        raise NotImplementedError

    def _send_data(self, call: Call, data: bytes) -> None:
        """Queue `data` as far as the windows allow; what does not fit joins `call.pending`."""
        raise NotImplementedError

    def _send_pending(self, call: Call) -> None:
        """Queue as much of `call.pending` as the windows allow; the rest stays pending."""
        raise NotImplementedError

    def _send_trailers(self, call: Call, trailers: Trailers, with_headers: bool) -> None:
        """Queue the trailers, ending the stream; `with_headers`: a trailers-only response."""
        raise NotImplementedError

    def _refuse(self, call: Call, http_status: bytes) -> None:
        """Queue a bare HTTP response (405, 415) that ends the stream."""
        raise NotImplementedError

    def _reset(self, stream_id: int, code: int) -> None:
        raise NotImplementedError

    def _queue_goaway(self, code: int) -> None:
        raise NotImplementedError

    def _take_output(self) -> bytes:
        raise NotImplementedError

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        self._transport.set_write_buffer_limits(high=self.limits.write_buffer_bytes)
        self._connections.add(self)
        self._start()
        self._write()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return  # (lingering after our GOAWAY: input is dropped)
        self._in_read = True
        try:
            self._receive(data)
        finally:
            self._in_read = False
        if not self._closed:
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
        self._connections.discard(self)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._cancel_all()

    # -- hooks the engines call -------------------------------------------------------------------

    def _on_request(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> Call:
        """A new stream's request headers: route it (or answer it at once)."""
        self._control.earn()
        self._resets.stream_opened()
        path = method = content_type = b""
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b":method":
                method = value
            elif name == b"content-type":
                content_type = value
        call = Call(self, stream_id, path.decode("ascii", "replace"), headers)
        self._calls[stream_id] = call
        if method != b"POST":
            call.ended = True
            self._refuse(call, b"405")
            self._stop_peer_sending(call)
        elif not content_type.startswith(GRPC_CONTENT_TYPE):
            call.ended = True
            self._refuse(call, b"415")
            self._stop_peer_sending(call)
        else:
            route = self._routes.get(call.path)
            if route is None:
                call.end(Status.UNIMPLEMENTED, f"unknown method {call.path}")
            else:
                try:
                    call.handler = route(call)
                except Exception:
                    log.exception("gRPC handler for %s failed to start", call.path)
                    call.end(Status.INTERNAL, "handler failed to start")
        return call

    def _on_data(self, call: Call, data: bytes) -> None:
        """DATA for a live call (flow control already accounted by the engine)."""
        if data:
            self._control.earn()
        if call.ended or call.handler is None:
            return
        deframer = call.deframer
        before = deframer.pending
        try:
            messages = deframer.feed(data)
        except DeframeError as error:
            self._end_call(call, error.status, error.message)
            return
        grown = deframer.pending - before
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

    def _on_remote_end(self, call: Call) -> None:
        call.remote_ended = True
        if call.ended:
            self._forget_if_done(call)
            return
        if call.handler is None:
            return
        truncated = call.deframer.truncated()
        if truncated is not None:
            self._end_call(call, Status.INTERNAL, truncated)
            return
        try:
            call.handler.on_half_close()
        except Exception:
            log.exception("gRPC handler for %s failed", call.path)
            self._end_call(call, Status.INTERNAL, "handler failed")

    def _on_reset(self, stream_id: int, *, by_peer: bool) -> None:
        call = self._calls.pop(stream_id, None)
        if call is None:
            return
        self._release(call)
        if call.ended:
            call.handler = None
            return
        call.ended = True
        rapid = by_peer and not call.delivered and self._resets.premature_reset()
        self._cancel(call)
        call.handler = None  # (the handler refers to its call: no cycle left for the GC)
        if rapid:
            log.warning(
                "HTTP/2 peer reset %d of %d streams before sending a message (rapid reset): "
                "closing the connection",
                self._resets.premature,
                self._resets.opened,
            )
            self.goaway(ENHANCE_YOUR_CALM)

    def _on_goaway(self, code: int) -> None:
        if code != NO_ERROR:
            log.info("HTTP/2 peer closed the connection with error %#x", code)
            self._close()
            return
        self._draining = True  # the peer opens no new streams; ours finish first
        if not self._calls:
            self._close_pending = True

    def _on_control_frame(self) -> None:
        """A frame that costs work and carries no request: within the flood budget?"""
        if not self._control.spend(self._loop.time()):
            log.warning("HTTP/2 control-frame flood from a peer: closing the connection")
            self.goaway(ENHANCE_YOUR_CALM)

    def _protocol_error(self, code: int, reason: str) -> None:
        log.info("HTTP/2 protocol error from a peer (%#x): %s", code, reason)
        self.goaway(code)

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
        self._held -= call.held + call.deframer.pending
        call.held = 0
        call.deframer.clear()

    # -- ending calls ----------------------------------------------------------------------------

    def _end_call(self, call: Call, status: int, message: str) -> None:
        """The transport ends a call its handler did not finish: trailers, then `on_cancel`."""
        if call.ended:
            return
        log.info(
            "gRPC call %s ended by the server: %s (%s)", call.path, Status(status).name, message
        )
        call.end(status, message)
        self._release(call)
        self._cancel(call)

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

    def _emit(self, call: Call) -> None:
        """Queue a call's output: headers, messages as far as windows allow, trailers; then
        `_sent_trailers(call)` once the trailers are out."""
        out = call.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if not call.headers_sent:
                call.headers_sent = True
                self._send_headers(call)
            self._send_data(call, data)
        if call.pending:
            self._send_pending(call)
            if call.pending:
                return  # trailers wait behind the data
        trailers = call.trailers
        if trailers is None:
            return
        call.trailers = None
        self._send_trailers(call, trailers, with_headers=not call.headers_sent)
        call.headers_sent = True
        self._sent_trailers(call)

    def _sent_trailers(self, call: Call) -> None:
        """The engine put a call's trailers out: the call is done."""
        self._release(call)
        self._stop_peer_sending(call)

    def _stop_peer_sending(self, call: Call) -> None:
        """We answered completely before the client finished: ask it to stop (RFC 9113 §8.1)."""
        if not call.remote_ended:
            self._reset(call.id, NO_ERROR)
        self._calls.pop(call.id, None)
        call.handler = None
        if self._draining and not self._calls:
            self._close_pending = True  # once this output is written

    def _forget_if_done(self, call: Call) -> None:
        if call.ended and not call.pending and call.trailers is None:
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

    def _resume_sends(self, stream_id: int) -> None:
        """A window opened: calls with output held back go again at the next flush."""
        if stream_id:
            call = self._calls.get(stream_id)
            if call is not None and call.pending:
                self._dirty.append(call)
            return
        self._dirty.extend(call for call in self._calls.values() if call.pending)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._closed:
            return
        dirty, self._dirty = self._dirty, []
        calls = self._calls
        for call in dirty:
            if calls.get(call.id) is call:
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

    def _write(self) -> None:
        data = self._take_output()
        if data and self._transport is not None:
            self._transport.write(data)

    # -- closing ---------------------------------------------------------------------------------

    def goaway(self, code: int) -> None:
        """End the connection now with `code`; every call still open is cancelled."""
        if self._closed:
            return
        self._queue_goaway(code)
        self._write()
        self._close()

    def drain(self) -> None:
        """Graceful: GOAWAY(NO_ERROR), no new streams; close once the calls in progress end."""
        if self._closed or self._draining:
            return
        self._draining = True
        self._queue_goaway(NO_ERROR)
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
