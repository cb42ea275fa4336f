"""A test peer for HTTP/2 servers: h2's client side for well-formed traffic, raw frames for the
malformed kind, and a reader that parses whatever the server sends back (hyperframe)."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from h2.config import H2Configuration
from h2.connection import H2Connection
from hyperframe.frame import Frame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"

# RFC 9113 §7 error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM = 0x4, 0x5, 0x6, 0x7
CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x8, 0x9, 0xB


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One raw frame, exactly as given (nothing checked: for malformed input)."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def setting(key: int, value: int) -> bytes:
    return struct.pack(">HI", key, value)


def grpc_message(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def request_headers(path: str = PROCESS) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "sluice"),
        (":path", path),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


class Client:
    """h2's client side, sans I/O: `send_*` queue bytes, `out()` takes them."""

    def __init__(self) -> None:
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.h2.update_settings({4: (1 << 31) - 1})  # never block on our receive window
        self.h2.increment_flow_control_window((1 << 31) - 1 - 65_535)

    def open(self, path: str = PROCESS, *messages: bytes, end: bool = False) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, request_headers(path), end_stream=end and not messages)
        if messages:
            self.send(stream_id, *messages, end=end)
        return stream_id

    def send(self, stream_id: int, *messages: bytes, end: bool = False) -> None:
        self.h2.send_data(stream_id, b"".join(grpc_message(m) for m in messages), end_stream=end)

    def out(self) -> bytes:
        return self.h2.data_to_send()


@dataclass
class Received:
    kind: int
    flags: int
    stream_id: int
    payload: bytes

    @property
    def error_code(self) -> int:
        """GOAWAY's or RST_STREAM's error code."""
        at = 4 if self.kind == GOAWAY else 0
        return int.from_bytes(self.payload[at : at + 4], "big")


def parse_frames(data: bytes) -> tuple[list[Received], bytes]:
    """Whole frames in `data`, and the bytes left over."""
    frames = []
    while len(data) >= 9:
        header, length = Frame.parse_frame_header(memoryview(data[:9]))
        if len(data) < 9 + length:
            break
        frames.append(Received(data[3], data[4], header.stream_id, data[9 : 9 + length]))
        data = data[9 + length :]
    return frames, data


class Wire:
    """A real loopback connection to a server, speaking raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames: list[Received] = []
        self.chunks: list[bytes] = []  # everything received, as read
        self._rest = b""
        self.closed = False

    @classmethod
    async def open(cls, port: int, *, preface: bool = True) -> Wire:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        wire = cls(reader, writer)
        if preface:
            wire.write(PREFACE + frame(SETTINGS, 0, 0))
        return wire

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_until(self, predicate, timeout: float = 5.0) -> list[Received]:  # type: ignore[no-untyped-def]
        """Read frames until `predicate(frames)` holds or the server closes; all frames read."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.frames) and not self.closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met; got {[f.kind for f in self.frames]}")
            try:
                chunk = await asyncio.wait_for(self.reader.read(1 << 16), remaining)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self.chunks.append(chunk)
            frames, self._rest = parse_frames(self._rest + chunk)
            self.frames.extend(frames)
        return self.frames

    async def events(self, client: Client, predicate, timeout: float = 5.0) -> list[object]:  # type: ignore[no-untyped-def]
        """What h2's client side makes of the server's bytes, until `predicate(events)`."""
        events: list[object] = []
        fed = 0

        def check(_: list[Received]) -> bool:
            nonlocal fed
            while fed < len(self.chunks):
                events.extend(client.h2.receive_data(self.chunks[fed]))
                fed += 1
            self.writer.write(client.out())  # ACKs and window updates
            return bool(predicate(events))

        await self.read_until(check, timeout)
        check(self.frames)
        return events

    async def goaway(self, timeout: float = 5.0) -> Received:
        """The server's GOAWAY (and it must close the connection after it)."""
        await self.read_until(lambda fs: any(f.kind == GOAWAY for f in fs), timeout)
        [goaway] = [f for f in self.frames if f.kind == GOAWAY]
        return goaway

    async def closed_by_server(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection within `timeout`."""
        try:
            await self.read_until(lambda _: self.closed, timeout)
        except TimeoutError:
            return False
        return self.closed

    async def handshake(self, client: Client) -> None:
        """Send the client's preface; wait for the server's SETTINGS and window (so sends are
        not held back by the default 64 KiB windows)."""
        self.write(client.out())
        await self.events(client, lambda es: any(type(e).__name__ == "WindowUpdated" for e in es))

    def server_max_frame_size(self) -> int:
        """SETTINGS_MAX_FRAME_SIZE from the server's first SETTINGS (16,384 if absent)."""
        for f in self.frames:
            if f.kind == SETTINGS and not f.flags & ACK:
                for i in range(0, len(f.payload), 6):
                    if int.from_bytes(f.payload[i : i + 2], "big") == 5:
                        return int.from_bytes(f.payload[i + 2 : i + 6], "big")
                return 16_384
        raise AssertionError("no SETTINGS from the server yet")

    def close(self) -> None:
        self.writer.close()
