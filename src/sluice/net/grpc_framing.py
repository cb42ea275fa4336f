"""gRPC's length-prefixed messages and its status trailers (the HTTP/2 protocol of gRPC), with
no I/O: a `Deframer` turns DATA bytes into whole messages under a size limit."""

from __future__ import annotations

from enum import IntEnum
from urllib.parse import quote


class Status(IntEnum):
    """gRPC status codes (the ones this server answers with, and the usual ones)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


class DeframeError(Exception):
    """The peer's bytes cannot be gRPC messages: the call ends with `status`."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def frame_message(message: bytes) -> bytes:
    """One uncompressed gRPC message on the wire: flag 0, a 4-byte length, the bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_message_value(text: str) -> bytes:
    """`grpc-message` as the gRPC spec percent-encodes it (everything outside 0x20-0x7E, '%')."""
    return quote(text, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode("ascii")


class Deframer:
    """Whole messages out of a byte stream; at most `max_message_bytes` each, uncompressed."""

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_message_bytes: int) -> None:
        self._max = max_message_bytes
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of a message not complete yet (what this call holds)."""
        return len(self._buffer)

    def clear(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        if buffer:
            buffer += data
            view: bytes | bytearray = buffer
        else:
            view = data  # the usual case: one whole message per DATA frame, no copy
        messages: list[bytes] = []
        offset, size = 0, len(view)
        while size - offset >= 5:
            flag = view[offset]
            length = int.from_bytes(view[offset + 1 : offset + 5], "big")
            if flag:
                raise DeframeError(
                    Status.UNIMPLEMENTED
                    if flag == 1
                    else Status.INTERNAL,  # flags other than 0/1 are malformed
                    "compressed messages are not supported"
                    if flag == 1
                    else f"invalid message flag {flag}",
                )
            if length > self._max:
                raise DeframeError(
                    Status.RESOURCE_EXHAUSTED,
                    f"message of {length} bytes is larger than the limit of {self._max}",
                )
            end = offset + 5 + length
            if end > size:
                break
            messages.append(bytes(view[offset + 5 : end]))
            offset = end
        if view is buffer:
            del buffer[:offset]
        elif offset < size:
            self._buffer = bytearray(view[offset:])
        return messages

    def truncated(self) -> str | None:
        """At the end of the stream: why the bytes left over are no message, or None."""
        if not self._buffer:
            return None
        have = len(self._buffer)
        if have < 5:
            return f"stream ended inside a message header ({have} of 5 bytes)"
        length = int.from_bytes(self._buffer[1:5], "big")
        return f"stream ended inside a message ({have - 5} of {length} bytes)"
