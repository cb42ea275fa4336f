"""One gRPC call as a handler sees it: the `Call` handle it answers through, the `Handler`
interface it implements, and `Route` (a handler factory per `:path`). Shared by both HTTP/2
engines (`frames`, `hyper_h2`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sluice.net.grpc_framing import Deframer, Status, frame_message, grpc_message_value
from sluice.net.limits import H2Limits


class Handler(Protocol):
    """One call's logic. Runs on the event loop, inside the read that delivered the event."""

    def on_message(self, message: bytes) -> None: ...

    def on_half_close(self) -> None:
        """The client sent its last message."""

    def on_cancel(self) -> None:
        """The call ended without `finish`: reset, connection gone, or ended by a limit."""


Route = Callable[["Call"], Handler]
Trailers = tuple[tuple[bytes, bytes], ...]

OK_TRAILERS: Trailers = ((b"grpc-status", b"0"),)


def trailers_for(status: int, message: str) -> Trailers:
    if status == Status.OK and not message:
        return OK_TRAILERS
    trailers: Trailers = ((b"grpc-status", str(int(status)).encode()),)
    if message:
        trailers += ((b"grpc-message", grpc_message_value(message)),)
    return trailers


class CallHost(Protocol):
    """What a call needs from its connection."""

    limits: H2Limits

    def mark_dirty(self, call: Call) -> None: ...

    def change_held(self, call: Call, delta: int, *, partial: bool = False) -> bool: ...

    def after_write(self, callback: Callable[[], None]) -> None: ...


class Call:
    """The server side of one RPC (one HTTP/2 stream)."""

    __slots__ = (
        "_host", "deframer", "delivered", "ended", "handler", "headers", "headers_sent", "held",
        "id", "out", "path", "pending", "recv_window", "remote_ended", "send_window", "trailers",
        "unacked",
    )  # fmt: skip

    def __init__(
        self, host: CallHost, stream_id: int, path: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self._host = host
        self.id = stream_id
        self.path = path
        self.headers = headers  # as received (bytes), pseudo-headers included
        self.handler: Handler | None = None
        self.deframer = Deframer(host.limits.max_message_bytes)
        self.out: list[bytes] = []  # framed messages not yet handed to HTTP/2
        self.pending = b""  # bytes the peer's window or frame size held back
        self.trailers: Trailers | None = None  # to send once `pending` is out
        self.headers_sent = False
        self.remote_ended = False
        self.delivered = False  # a whole message reached the handler
        self.held = 0  # bytes the handler reports holding (`hold`)
        self.unacked = 0  # DATA bytes received and not yet returned to the peer's window
        self.send_window = 0  # the peer's window for this stream (engine `frames`)
        self.recv_window = 0  # our window for this stream (engine `frames`)
        self.ended = False

    def send(self, message: bytes) -> None:
        """Queue one message (serialized protobuf); it leaves with this read's write."""
        if self.ended:
            return
        self.out.append(frame_message(message))
        self._host.mark_dirty(self)

    def finish(self, status: int = Status.OK, message: str = "") -> None:
        """End the call with trailers (after the queued messages). Only the first call counts."""
        if self.ended:
            return
        self.end(status, message)

    def hold(self, nbytes: int) -> bool:
        """Report how many bytes the handler now keeps for this call (e.g. a body being
        collected). False — and the call is ended with RESOURCE_EXHAUSTED, `on_cancel` — when
        that takes the connection past its buffer limit."""
        if self.ended:
            return False
        return self._host.change_held(self, nbytes - self.held)

    def after_write(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the output queued so far has been written."""
        self._host.after_write(callback)

    def end(self, status: int, message: str) -> None:
        """(The connection's side of `finish`.)"""
        self.ended = True
        self.trailers = trailers_for(status, message)
        self._host.mark_dirty(self)
