"""A lean keep-alive HTTP/1.1 client for forwarding requests to model servers.

Why not aiohttp's `ClientSession`: it spent about half of the proxy's CPU per request (URL and
header objects, cookie and redirect handling, tracing hooks, a payload writer, a response parser
built for every feature HTTP has). A model server is an IP address and a port speaking plain
HTTP/1.1, and the proxy only needs: send prebuilt bytes, read a status line and headers, then the
body, with backpressure.

* One `asyncio.Protocol` per TCP connection, pooled per endpoint (most recently used first, so
  the warmest connections serve and idle ones age out).
* Responses are read by the one strict HTTP/1.1 reader (`sluice.net.http1`, shared with the
  metrics scraper): RFC 9112 framing, 1xx skipped, bounded heads.
* The request goes out as one `write` (one syscall for a small body).
* Body bytes queue in the protocol until the relay takes them; past `_HIGH_WATER` queued bytes
  the socket stops being read (`pause_reading`), so a slow client stalls the model server
  instead of growing Sluice's memory.
* A connection is reused only after its response was read to the end and neither side asked to
  close; anything unusual (extra bytes, an error, cancellation) drops it.
* Idle connections are kept `keepalive_timeout_s` (4 s): below the 5 s after which vLLM's and
  llama.cpp's servers close idle connections, so Sluice rarely sends on a connection the engine
  is closing. When it does — a reused connection that fails before a byte of the response — the
  request is sent once more on a fresh connection.

Every failure is an `UpstreamError`, a `ConnectionError` (so an `OSError`, like a refused
connection), which lets the relay treat "no response yet" failures uniformly.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from typing import cast

from sluice.net.http1 import Http1Limits, ResponseError, ResponseHead, ResponseReader

log = logging.getLogger(__name__)

# Queued body bytes above which the socket is no longer read (until the relay catches up).
_HIGH_WATER = 64 * 1024
# Response heads larger than this, or with more headers, are refused as malformed.
UPSTREAM_LIMITS = Http1Limits(max_head_bytes=64 * 1024, max_headers=100, max_body_bytes=None)
# Below the engines' own idle timeout (vLLM and llama.cpp: 5 s).
DEFAULT_KEEPALIVE_S = 4.0


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
        self.reused = False  # it served a response before the current request
        self.answered = False  # a byte of the current response arrived
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self._expecting = False  # a request is outstanding
        self._reader = ResponseReader(self, pool.limits)
        self._response: UpstreamResponse | None = None
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._paused = False
        self.body_done = False

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self._expecting:  # bytes nobody asked for: the stream is out of step
            self.abort()
            return
        self.answered = True
        try:
            self._reader.feed(data)
        except ResponseError as exc:
            self._fail(UpstreamError(f"malformed response from the model server: {exc}"))
            self.abort()
            return
        if self._queued > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # let the transport close; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._pool.forget(self)
        if self._expecting and not self.body_done:
            try:
                self._reader.feed_eof()  # a body that runs until close ends here
            except ResponseError:
                where = "before responding" if self._response is None else "mid-body"
                cause = f" ({type(exc).__name__}: {exc})" if exc else ""
                self._fail(UpstreamError(f"the model server closed the connection {where}{cause}"))
        self._wake()

    # -- the reader's sink ----------------------------------------------------------------------

    def on_head(self, head: ResponseHead) -> None:
        self._response = UpstreamResponse(
            self, head.status, head.headers, head.content_type, head.content_length
        )

    def on_body(self, chunk: bytes) -> None:
        if chunk:
            self._chunks.append(chunk)
            self._queued += len(chunk)

    def on_complete(self) -> None:
        self.body_done = True

    # -- used by the pool and the response -------------------------------------------------------

    def begin(self, expect_body: bool) -> None:
        """Reset for a new request on this connection."""
        self._reader.expect(head_request=not expect_body)
        self._expecting = True
        self._response = None
        self._error = None
        self.answered = False
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
        if self.body_done and self._reader.reusable and not self.closed and not self._chunks:
            self._expecting = False
            self._response = None
            self.reused = True
            self._pool.put(self)
        else:
            self.abort()

    def abort(self) -> None:
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


class UpstreamPool:
    """Keep-alive connections to model servers, pooled per (host, port).

    `receive_buffer_bytes` fixes the kernel's receive buffer of upstream sockets (tests use a
    small one to observe backpressure); by default the kernel autotunes it.
    """

    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        keepalive_timeout_s: float = DEFAULT_KEEPALIVE_S,
        receive_buffer_bytes: int | None = None,
        limits: Http1Limits = UPSTREAM_LIMITS,
    ) -> None:
        if keepalive_timeout_s < 0:
            raise ValueError("keepalive_timeout_s must be >= 0 (0: never reuse a connection)")
        self.limits = limits
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
        connection = self._idle_connection((host, port))
        if connection is not None:
            try:
                return await self._exchange(connection, head, body, expect_body)
            except OSError as exc:
                if connection.answered:
                    raise
                # The engine closed a kept-alive connection as the request went out (it drops
                # idle ones after a few seconds): nothing was answered, so the request goes
                # once more, on a fresh connection.
                log.info(
                    "model server %s:%d dropped a reused connection before answering (%s): "
                    "retrying on a new connection",
                    host,
                    port,
                    exc,
                )
        connection = await self._connect(host, port)
        return await self._exchange(connection, head, body, expect_body)

    async def _exchange(
        self, connection: _Connection, head: bytes, body: bytes, expect_body: bool
    ) -> UpstreamResponse:
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
        if self._closed or self._keepalive_timeout_s == 0:
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
