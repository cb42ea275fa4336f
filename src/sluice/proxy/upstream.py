"""A lean keep-alive HTTP/1.1 client for forwarding requests to model servers.

Why not aiohttp's `ClientSession`: it spent about half of the proxy's CPU per request (URL and
header objects, cookie and redirect handling, tracing hooks, a payload writer, a response parser
built for every feature HTTP has). A model server is an IP address and a port speaking plain
HTTP/1.1, and the proxy only needs: send prebuilt bytes, read a status line and headers, then the
body — by `Content-Length`, chunked, or until close — with backpressure.

* One `asyncio.Protocol` per TCP connection, pooled per endpoint (most recently used first, so
  the warmest connections serve and idle ones age out).
* The request goes out as one `write` (one syscall for a small body).
* Body bytes queue in the protocol until the relay takes them; past `_HIGH_WATER` queued bytes
  the socket stops being read (`pause_reading`), so a slow client stalls the model server
  instead of growing Sluice's memory.
* A connection is reused only after its response was read to the end and neither side asked to
  close; anything unusual (extra bytes, an error, cancellation) drops it.

Every failure is an `UpstreamError`, a `ConnectionError` (so an `OSError`, like a refused
connection), which lets the relay treat "no response yet" failures uniformly.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from typing import cast

# Queued body bytes above which the socket is no longer read (until the relay catches up).
_HIGH_WATER = 64 * 1024
# A response head (status line + headers) larger than this is refused as malformed.
_MAX_HEAD = 64 * 1024
# Chunked framing: a chunk-size or trailer line longer than this is malformed.
_MAX_LINE = 8 * 1024

# Body framing of the response being read.
_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = 0, 1, 2, 3
# Chunked decoder states.
_SIZE, _DATA, _DATA_END, _TRAILER = 0, 1, 2, 3


class UpstreamError(ConnectionError):
    """The model server refused, closed early, or did not speak HTTP/1.1."""


class UpstreamResponse:
    """Status and headers of a model server's answer; the body is read with `read`/`readany`.

    End it with `release()` (after the body was read to the end: the connection returns to the
    pool) or `close()` (drops the connection, which stops a generation upstream).
    """

    __slots__ = ("_connection", "content_length", "content_type", "headers", "status")

    def __init__(
        self,
        connection: _Connection,
        status: int,
        headers: list[tuple[str, str]],
        content_type: str,
        content_length: int | None,
    ) -> None:
        self._connection = connection
        self.status = status
        self.headers = headers  # as received: names keep their case, repeats kept in order
        self.content_type = content_type  # the media type, lower-case, without parameters
        self.content_length = content_length

    async def readany(self) -> bytes:
        """Whatever body bytes arrived (waiting for some); b"" at the end of the body.

        Raises `UpstreamError` if the connection ends before the body does.
        """
        return await self._connection.take()

    async def read(self) -> bytes:
        """The rest of the body."""
        parts = []
        while chunk := await self._connection.take():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def is_eof(self) -> bool:
        return self._connection.body_done

    def release(self) -> None:
        self._connection.release()

    def close(self) -> None:
        self._connection.abort()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request at a time."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        # the response head
        self._expect_body = True
        self._head = b""
        self._response: UpstreamResponse | None = None
        self._keep_alive = True
        # the body
        self._framing = _NO_BODY
        self._remaining = 0  # Content-Length left, or bytes left of the current chunk
        self._chunk_state = _SIZE
        self._line = b""  # an incomplete chunk-size/trailer line
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._paused = False
        self.body_done = False

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._response is None:
            if self._waiter is None:  # bytes nobody asked for: the stream is out of step
                self.abort()
                return
            try:
                data = self._parse_head(data)
            except ValueError as exc:
                self._fail(UpstreamError(f"malformed response from the model server: {exc}"))
                self.abort()
                return
            if self._response is None:
                return  # the head is not complete yet
            if not data:
                self._wake()
                return
        if self.body_done:
            self._keep_alive = False  # bytes past the end of the body: never reuse
            return
        try:
            self._feed_body(data)
        except ValueError as exc:
            self._fail(UpstreamError(f"malformed chunked body from the model server: {exc}"))
            self.abort()
            return
        if self._queued > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._keep_alive = False
        return False  # let the transport close; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._pool.forget(self)
        if self._response is not None and self._framing == _UNTIL_CLOSE and exc is None:
            self.body_done = True  # a body without a length ends with the connection
        elif not self.body_done:
            where = "before responding" if self._response is None else "mid-body"
            self._fail(UpstreamError(f"the model server closed the connection {where}"))
        self._wake()

    # -- used by the pool and the response -------------------------------------------------------

    def begin(self, expect_body: bool) -> None:
        """Reset for a new request on this connection."""
        self._expect_body = expect_body
        self._head = b""
        self._response = None
        self._error = None
        self._framing = _NO_BODY
        self._chunk_state = _SIZE
        self._line = b""
        self.body_done = False

    async def response(self) -> UpstreamResponse:
        while self._response is None:
            if self._error is not None:
                raise self._error
            await self._wait()
        return self._response

    async def take(self) -> bytes:
        while True:
            chunks = self._chunks
            if chunks:
                # Everything queued in one piece: one write to the client instead of several.
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._queued = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return data
            if self.body_done:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()

    def release(self) -> None:
        if self.body_done and self._keep_alive and not self.closed and not self._chunks:
            self._response = None
            self._pool.put(self)
        else:
            self.abort()

    def abort(self) -> None:
        self._keep_alive = False
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows (and removes us from the pool)
            self.transport = None

    # -- internals --------------------------------------------------------------------------------

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _parse_head(self, data: bytes) -> bytes:
        """Consume the response head from `data`; returns the bytes after it (body bytes)."""
        buffer = self._head + data if self._head else data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    raise ValueError("response head too large")
                self._head = buffer
                return b""
            head, buffer = buffer[:end], buffer[end + 4 :]
            status = self._apply_head(head)
            if not (100 <= status < 200):
                self._head = b""
                return buffer
            # 1xx (100 Continue, 103 Early Hints): informational, the real answer follows.
            self._response = None

    def _apply_head(self, head: bytes) -> int:
        # As aiohttp decodes headers: bytes that are not UTF-8 survive the round trip.
        lines = head.decode("utf-8", "surrogateescape").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(rest[:3])
        headers: list[tuple[str, str]] = []
        content_type = ""
        content_length: int | None = None
        chunked = False
        keep_alive = version != "HTTP/1.0"
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError(f"malformed header line {line[:80]!r}")
            value = value.strip()
            headers.append((name, value))
            lower = name.lower()
            if lower == "content-length":
                if not value.isdigit():
                    raise ValueError(f"bad Content-Length {value!r}")
                content_length = int(value)
            elif lower == "transfer-encoding":
                chunked = value.lower().endswith("chunked")
            elif lower == "content-type":
                content_type = value.partition(";")[0].strip().lower()
            elif lower == "connection":
                tokens = value.lower()
                if "close" in tokens:
                    keep_alive = False
                elif "keep-alive" in tokens:
                    keep_alive = True
        if 100 <= status < 200:
            if status == 101:
                raise ValueError("the model server switched protocols")
            return status
        self._keep_alive = keep_alive
        if not self._expect_body or status in (204, 304):
            self._framing, self.body_done = _NO_BODY, True
        elif chunked:
            self._framing = _CHUNKED
        elif content_length is not None:
            self._framing, self._remaining = _LENGTH, content_length
            self.body_done = content_length == 0
        else:
            self._framing, self._keep_alive = _UNTIL_CLOSE, False
        if chunked:
            content_length = None  # chunked wins over a stray Content-Length (RFC 9112 §6.3)
        self._response = UpstreamResponse(self, status, headers, content_type, content_length)
        return status

    def _feed_body(self, data: bytes) -> None:
        framing = self._framing
        if framing == _LENGTH:
            take = self._remaining
            if len(data) >= take:
                if len(data) > take:
                    self._keep_alive = False  # more than announced: out of step, never reuse
                    data = data[:take]
                self.body_done = True
            self._remaining = take - len(data)
            self._push(data)
        elif framing == _CHUNKED:
            self._feed_chunked(data)
        elif framing == _UNTIL_CLOSE:
            self._push(data)
        else:
            self._keep_alive = False

    def _push(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._queued += len(data)

    def _feed_chunked(self, data: bytes) -> None:
        """Chunked transfer coding (RFC 9112 §7.1): size line, data, CRLF …, 0, trailers, CRLF."""
        position, size = 0, len(data)
        while position < size and not self.body_done:
            state = self._chunk_state
            if state == _DATA:
                end = min(size, position + self._remaining)
                self._push(data[position:end] if position or end < size else data)
                self._remaining -= end - position
                position = end
                if self._remaining == 0:
                    self._chunk_state = _DATA_END
                continue
            line_end = data.find(b"\n", position)
            if line_end < 0:
                self._line += data[position:]
                if len(self._line) > _MAX_LINE:
                    raise ValueError("chunk line too long")
                return
            line = (self._line + data[position:line_end]).rstrip(b"\r")
            self._line = b""
            position = line_end + 1
            if state == _DATA_END:
                if line:
                    raise ValueError("chunk data longer than its size")
                self._chunk_state = _SIZE
            elif state == _SIZE:
                digits = line.partition(b";")[0].strip()
                if not digits or digits.strip(b"0123456789abcdefABCDEF"):
                    raise ValueError(f"bad chunk size {line[:40]!r}")
                self._remaining = int(digits, 16)
                self._chunk_state = _DATA if self._remaining else _TRAILER
            elif not line:  # _TRAILER: the empty line ends the body (trailers are dropped)
                self.body_done = True
        if position < size:
            self._keep_alive = False  # bytes past the end of the body


class UpstreamPool:
    """Keep-alive connections to model servers, pooled per (host, port).

    `receive_buffer_bytes` fixes the kernel's receive buffer of upstream sockets (tests use a
    small one to observe backpressure); by default the kernel autotunes it.
    """

    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        keepalive_timeout_s: float = 60.0,
        receive_buffer_bytes: int | None = None,
    ) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_timeout_s = keepalive_timeout_s
        self._receive_buffer_bytes = receive_buffer_bytes
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._closed = False

    async def request(
        self, host: str, port: int, head: bytes, body: bytes, *, expect_body: bool = True
    ) -> UpstreamResponse:
        """Send `head` (request line and headers, ending with the blank line) and `body`; return
        once the response head arrived. `expect_body=False` for HEAD requests."""
        if self._closed:
            raise UpstreamError("the upstream pool is closed")
        connection = self._idle_connection((host, port)) or await self._connect(host, port)
        connection.begin(expect_body)
        try:
            transport = connection.transport
            if transport is None:
                raise UpstreamError("the model server closed the connection before the request")
            # One write, one syscall, for the usual small body; large bodies are not copied.
            if len(body) <= 16 * 1024:
                transport.write(head + body)
            else:
                transport.write(head)
                transport.write(body)
            return await connection.response()
        except BaseException:  # failure or cancellation: the connection is out of step
            connection.abort()
            raise

    def put(self, connection: _Connection) -> None:
        if self._closed:
            connection.abort()
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.key, []).append(connection)

    def forget(self, connection: _Connection) -> None:
        self._all.discard(connection)
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    async def close(self) -> None:
        self._closed = True
        for connection in list(self._all):
            connection.abort()
        self._idle.clear()

    def _idle_connection(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        # Age out from the bottom (oldest first): no timer per connection.
        expired_before = time.monotonic() - self._keepalive_timeout_s
        while idle and idle[0].idle_since < expired_before:
            idle.pop(0).abort()
        while idle:
            connection = idle.pop()
            if not connection.closed and connection.transport is not None:
                return connection
        return None

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = _Connection(self, (host, port))
        async with asyncio.timeout(self._connect_timeout_s):
            if self._receive_buffer_bytes is None:
                await loop.create_connection(lambda: connection, host, port)
            else:
                sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._receive_buffer_bytes)
                    sock.setblocking(False)
                    await loop.sock_connect(sock, (host, port))
                except BaseException:
                    sock.close()
                    raise
                await loop.create_connection(lambda: connection, sock=sock)
        self._all.add(connection)
        return connection
