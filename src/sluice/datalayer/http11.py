"""A minimal keep-alive HTTP/1.1 GET connection for `/metrics`, on a raw asyncio Protocol.

Why: scraping 100 endpoints every 50 ms is 2,000 requests a second. aiohttp's client spends
~400 µs of CPU per request, which alone would take most of a core. This connection only does
what scraping needs: one request at a time, a prebuilt request, `Content-Length`, chunked or
until-close bodies, no redirects or cookies. It has no Future, Task or timer per request: the
outcome is delivered by callback from `data_received` (the caller's ticker enforces deadlines).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

_UNKNOWN, _CHUNKED, _UNTIL_CLOSE = -1, -2, -3

OnResponse = Callable[[int, memoryview], None]  # (status, body); body valid during the call
OnError = Callable[[Exception], None]


class HttpError(Exception):
    """A malformed response or a connection that closed mid-response."""


def build_request(host: str, port: int, path: str) -> bytes:
    host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nAccept: text/plain\r\n"
        "Accept-Encoding: identity\r\nUser-Agent: sluice\r\n\r\n"
    ).encode()


_MIN_READ = 16 * 1024  # free space offered to each socket read


class MetricsConnection(asyncio.BufferedProtocol):
    """One connection to one endpoint's metrics port. `send` starts a request; exactly one of
    `on_response` / `on_error` is called for it, unless `close` abandons it first."""

    def __init__(self, on_response: OnResponse, on_error: OnError) -> None:
        self._on_response = on_response
        self._on_error = on_error
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False  # a request is outstanding
        self._buffer = bytearray(64 * 1024)  # grows to the largest page seen
        self._used = 0  # bytes of the current response in `_buffer`
        self._status = 0
        self._body_start = -1
        self._length = _UNKNOWN
        self._keep_alive = True

    # -- asyncio.BufferedProtocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self._buffer) - self._used < _MIN_READ:
            # A new, larger buffer rather than resizing: the loop may still hold a view of the
            # old one, and a bytearray with live views cannot be resized.
            grown = bytearray(2 * len(self._buffer))
            grown[: self._used] = memoryview(self._buffer)[: self._used]
            self._buffer = grown
        return memoryview(self._buffer)[self._used :]

    def buffer_updated(self, nbytes: int) -> None:
        self._used += nbytes
        if not self.busy:
            self.close()  # unsolicited bytes: the stream is out of step
            return
        try:
            self._advance()
        except (ValueError, IndexError) as exc:
            self._fail(HttpError(f"malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if not self.busy:
            return
        if self._length == _UNTIL_CLOSE and self._body_start >= 0:
            self._finish(self._body_start, self._used)
        else:
            self._fail(HttpError(f"connection closed: {exc or 'EOF'}"))

    # -- one request --------------------------------------------------------------------------

    def send(self, raw_request: bytes) -> None:
        assert self.transport is not None and not self.busy
        self._used = 0
        self._body_start, self._length = -1, _UNKNOWN
        self.busy = True
        self.transport.write(raw_request)

    def close(self) -> None:
        """Drop the connection; an outstanding request gets no callback."""
        self.busy = False
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _advance(self) -> None:
        buf, used = self._buffer, self._used
        if self._body_start < 0:
            head_end = buf.find(b"\r\n\r\n", 0, used)
            if head_end < 0:
                return
            self._parse_head(bytes(buf[:head_end]))
            self._body_start = head_end + 4
        start = self._body_start
        if self._length >= 0:
            if used - start >= self._length:
                self._finish(start, start + self._length)
        elif self._length == _CHUNKED:
            body = _dechunk(buf, start, used)
            if body is not None:
                self._deliver(memoryview(body))

    def _parse_head(self, head: bytes) -> None:
        # An endpoint sends the same head scrape after scrape (until its `Date` ticks over).
        known = _HEADS.get(head)
        if known is None:
            if len(_HEADS) >= 4096:
                _HEADS.clear()
            known = _HEADS[head] = _parse_head(head)
        self._status, self._length, self._keep_alive = known

    def _finish(self, start: int, end: int) -> None:
        # A view, not a copy: the receiver hashes it and decodes it at most once.
        with memoryview(self._buffer) as view:
            self._deliver(view[start:end])

    def _deliver(self, body: memoryview) -> None:
        self.busy = False
        if not self._keep_alive:
            self.close()
        try:
            self._on_response(self._status, body)
        finally:
            body.release()

    def _fail(self, error: Exception) -> None:
        busy = self.busy
        self.close()
        if busy:
            self._on_error(error)


# head bytes -> (status, body length or a _CHUNKED/_UNTIL_CLOSE marker, keep-alive)
_HEADS: dict[bytes, tuple[int, int, bool]] = {}


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    keep_alive = parts[0] == b"HTTP/1.1"
    length = _UNTIL_CLOSE
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            length = _CHUNKED
        elif name == b"connection":
            keep_alive = value.strip().lower() != b"close"
    if status < 200 or status in (204, 304):
        length = 0  # no body by definition
    return status, length, keep_alive


def _dechunk(buf: bytearray, start: int, end: int) -> bytearray | None:
    """The decoded body of `buf[start:end]` once every chunk and the terminating chunk are in;
    `None` before."""
    out = bytearray()
    pos = start
    while True:
        line_end = buf.find(b"\r\n", pos, end)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
        if size == 0:
            if buf[line_end + 2 : line_end + 4] == b"\r\n" and line_end + 4 <= end:
                return out  # no trailers
            # Trailers: the body ends at the blank line after them.
            return out if buf.find(b"\r\n\r\n", line_end, end) >= 0 else None
        if end < line_end + 2 + size + 2:
            return None
        out += buf[line_end + 2 : line_end + 2 + size]
        pos = line_end + 2 + size + 2
