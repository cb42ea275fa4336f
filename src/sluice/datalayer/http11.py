"""A minimal keep-alive HTTP/1.1 GET connection for `/metrics`, on a raw asyncio Protocol.

Why: scraping 100 endpoints every 50 ms is 2,000 requests a second. aiohttp's client spends
~400 µs of CPU per request, which alone would take most of a core. This connection only does
what scraping needs: one request at a time, a prebuilt request, no redirects or cookies. It has
no Future, Task or timer per request: the outcome is delivered by callback from
`data_received` (the caller's ticker enforces deadlines). Responses are read by the one strict
HTTP/1.1 reader (`sluice.net.http1`, shared with the proxy), with a bounded page size.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from sluice.net.http1 import Http1Limits, ResponseError, ResponseHead, ResponseReader

OnResponse = Callable[[int, memoryview], None]  # (status, body); body valid during the call
OnError = Callable[[Exception], None]

# A vLLM page is ~30 KiB, one with many LoRA adapters a few hundred: anything past this is not
# a metrics page, and is refused rather than buffered.
MAX_PAGE_BYTES = 16 * 1024 * 1024
SCRAPE_LIMITS = Http1Limits(
    max_head_bytes=64 * 1024, max_headers=100, max_body_bytes=MAX_PAGE_BYTES, keep_headers=False
)


class HttpError(Exception):
    """A malformed response or a connection that closed mid-response."""


def build_request(host: str, port: int, path: str) -> bytes:
    host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nAccept: text/plain\r\n"
        "Accept-Encoding: identity\r\nUser-Agent: sluice\r\n\r\n"
    ).encode()


_READ_BYTES = 64 * 1024  # one socket read, into a buffer reused for every read


class MetricsConnection(asyncio.BufferedProtocol):
    """One connection to one endpoint's metrics port. `send` starts a request; exactly one of
    `on_response` / `on_error` is called for it, unless `close` abandons it first."""

    def __init__(
        self, on_response: OnResponse, on_error: OnError, limits: Http1Limits = SCRAPE_LIMITS
    ) -> None:
        self._on_response = on_response
        self._on_error = on_error
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False  # a request is outstanding
        self._reader = ResponseReader(self, limits)
        self._status = 0
        self._body: list[bytes] = []
        self._buffer = memoryview(bytearray(_READ_BYTES))  # the kernel reads straight into it

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        if not self.busy:
            self.close()  # unsolicited bytes: the stream is out of step
            return
        try:
            self._reader.feed(self._buffer[:nbytes])
        except ResponseError as exc:
            self._fail(HttpError(str(exc)))
            return
        if not self.busy and not self._reader.reusable and not self.closed:
            self.close()  # bytes past the end of the response: out of step

    def eof_received(self) -> bool:
        return False  # close; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if not self.busy:
            return
        try:
            self._reader.feed_eof()  # a body that runs until close ends here
        except ResponseError as error:
            self._fail(HttpError(f"{error}{f' ({exc})' if exc else ''}"))

    # -- one request --------------------------------------------------------------------------

    def send(self, raw_request: bytes) -> None:
        assert self.transport is not None and not self.busy
        self._body = []
        self.busy = True
        self._reader.expect()
        self.transport.write(raw_request)

    def close(self) -> None:
        """Drop the connection; an outstanding request gets no callback."""
        self.busy = False
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- the reader's sink ----------------------------------------------------------------------

    def on_head(self, head: ResponseHead) -> None:
        self._status = head.status

    def on_body(self, chunk: bytes) -> None:
        self._body.append(chunk)

    def on_complete(self) -> None:
        if not self.busy:
            return
        self.busy = False
        if not self._reader.reusable:
            self.close()
        chunks, self._body = self._body, []
        # A page usually arrives in one piece: a view of it, not a copy (the receiver hashes it
        # and decodes it at most once).
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        with memoryview(body) as view:
            self._on_response(self._status, view)

    def _fail(self, error: Exception) -> None:
        busy = self.busy
        self.close()
        if busy:
            self._on_error(error)
