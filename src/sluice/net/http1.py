"""One strict HTTP/1.1 response reader, sans I/O, on `httptools` (Node's llhttp parser).

Used by everything Sluice reads from a model server: the metrics scraper and the proxy's
upstream client. llhttp applies RFC 9112's framing rules — a response with both
Transfer-Encoding and Content-Length is refused, as is a Content-Length that is not one plain
decimal number (`-2`, `+3`, `3, 4`, a second Content-Length), an invalid chunk size, obs-fold,
bare LF, a malformed status line. This module adds what a client needs around it:

- 1xx informational responses (100 Continue, 103 Early Hints) are skipped; 101 is refused.
- Explicit limits (`Http1Limits`): head size, header count, body size.
- Framing the parser cannot see: a body that runs until the connection closes ends at EOF, and
  EOF anywhere else mid-response is an error. A response to HEAD has no body.
- `reusable`: a connection may carry another request only if this response ended cleanly,
  both sides keep it alive, and no byte arrived past its end.

Events go to a `ResponseSink`: `on_head`, then `on_body` chunks, then `on_complete`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httptools


@dataclass(frozen=True, slots=True)
class Http1Limits:
    max_head_bytes: int = 64 * 1024  # status line and headers
    max_headers: int = 100
    max_body_bytes: int | None = None  # None: unbounded (a relay with backpressure)
    keep_headers: bool = True  # False: `ResponseHead.headers` stays empty (a scraper needs none)


class ResponseError(Exception):
    """The bytes are not an acceptable HTTP/1.1 response (malformed, over a limit, or cut)."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    headers: list[tuple[str, str]]  # as received: names keep their case, repeats in order
    content_type: str  # the media type, lower-case, without parameters
    content_length: int | None  # None when the body is chunked or runs until close
    keep_alive: bool


class ResponseSink(Protocol):
    def on_head(self, head: ResponseHead) -> None: ...

    def on_body(self, chunk: bytes) -> None: ...

    def on_complete(self) -> None: ...


_NO_BODY_STATUS = frozenset({204, 304})


class ResponseReader:
    """Reads one response at a time from a connection's bytes; `expect` before each."""

    __slots__ = (
        "_body_bytes", "_complete", "_error", "_fed_before_head", "_head", "_head_bytes",
        "_head_request", "_headers", "_informational", "_limits", "_parser", "_past_end", "_sink",
        "_until_close",
    )  # fmt: skip

    def __init__(self, sink: ResponseSink, limits: Http1Limits | None = None) -> None:
        self._sink = sink
        self._limits = limits or Http1Limits()
        self._parser = httptools.HttpResponseParser(self)
        self._head_request = False
        self._reset()
        self._complete = True  # nothing expected yet
        self._past_end = False

    def _reset(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._fed_before_head = 0  # bytes fed while no head was complete: a head never ending
        self._head: ResponseHead | None = None
        self._informational = False
        self._until_close = False
        self._body_bytes = 0
        self._error: ResponseError | None = None

    # -- the caller's side -------------------------------------------------------------------------

    def expect(self, *, head_request: bool = False) -> None:
        """A request was sent: read its response next (`head_request`: it has no body)."""
        self._head_request = head_request
        self._reset()
        self._complete = False

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def reusable(self) -> bool:
        """The response ended cleanly, keep-alive on both sides, nothing arrived past it."""
        head = self._head
        return (
            self._complete
            and head is not None
            and head.keep_alive
            and not self._until_close
            and not self._past_end
            and not self._head_request
        )

    def feed(self, data: bytes | memoryview) -> None:
        """Bytes from the connection (not kept: a reused read buffer is fine). Raises
        `ResponseError`."""
        if self._complete:
            if data:
                self._past_end = True  # bytes nobody asked for: the connection is out of step
            return
        if self._head is None:
            self._fed_before_head += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise ResponseError("the server switched protocols (101 / upgrade)") from None
        except httptools.HttpParserError as exc:
            if self._error is not None:
                raise self._error from None
            if self._complete:  # garbage after a complete response: never reuse
                self._past_end = True
                return
            raise ResponseError(f"malformed response: {exc}") from None
        if self._error is not None:
            raise self._error
        if self._head is None and self._fed_before_head > self._limits.max_head_bytes:
            raise ResponseError(f"response head over {self._limits.max_head_bytes} bytes")

    def feed_eof(self) -> None:
        """The connection closed. Ends a body that runs until close; else, mid-response, an
        error."""
        if self._complete:
            return
        if self._head is not None and self._until_close:
            self._complete = True
            self._sink.on_complete()
            return
        where = "before the response head" if self._head is None else "in the middle of the body"
        raise ResponseError(f"the server closed the connection {where}")

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only kept and counted here (the hot path): the limits are checked once the head is
        # complete, and a head that never completes is cut by `feed` at `max_head_bytes`.
        self._headers.append((name, value))
        self._head_bytes += len(name) + len(value)

    def on_headers_complete(self) -> None:
        if self._complete:  # a next response nobody asked for
            self._past_end = True
            return
        limits = self._limits
        if len(self._headers) > limits.max_headers:
            self._fail(f"more than {limits.max_headers} response headers")
        if self._head_bytes > limits.max_head_bytes:
            self._fail(f"response head over {limits.max_head_bytes} bytes")
        parser = self._parser
        status = parser.get_status_code()
        if status < 100:
            self._fail(f"invalid status code {status}")
        if status < 200:
            self._informational = True  # 100 Continue, 103 Early Hints: the answer follows
            self._headers = []
            return
        content_type, length, chunked = b"", None, False
        for name, value in self._headers:
            size = len(name)  # (compared first: most names are none of the three)
            if size == 12 and name.lower() == b"content-type":
                content_type = value.partition(b";")[0].strip().lower()
            elif size == 14 and name.lower() == b"content-length":
                length = int(value)  # llhttp accepted exactly one plain decimal number
            elif size == 17 and name.lower() == b"transfer-encoding":
                chunked = value.rpartition(b",")[2].strip().lower() == b"chunked"
        no_body = self._head_request or status in _NO_BODY_STATUS
        self._until_close = not (no_body or chunked or length is not None)
        limit = self._limits.max_body_bytes
        if limit is not None and length is not None and length > limit and not no_body:
            self._fail(f"response body of {length} bytes is over the limit of {limit}")
        # As aiohttp decodes headers: bytes that are not UTF-8 survive the round trip.
        headers = (
            [
                (n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                for n, v in self._headers
            ]
            if self._limits.keep_headers
            else []
        )
        head = ResponseHead(
            status=status,
            headers=headers,
            content_type=content_type.decode("latin-1"),
            content_length=None if chunked or no_body else length,
            keep_alive=bool(parser.should_keep_alive()),
        )
        self._head = head
        self._sink.on_head(head)
        if self._head_request:
            # llhttp would wait for a body a HEAD response never has: the response ends here,
            # and the connection is not reused (the parser is out of step with it).
            self._complete = True
            self._sink.on_complete()

    def on_body(self, body: bytes) -> None:
        if self._complete:
            return
        self._body_bytes += len(body)
        limit = self._limits.max_body_bytes
        if limit is not None and self._body_bytes > limit:
            self._fail(f"response body over the limit of {limit} bytes")
        self._sink.on_body(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._reset()
            return
        if self._complete:
            return
        self._complete = True
        self._sink.on_complete()

    def _fail(self, message: str) -> None:
        self._error = ResponseError(message)
        raise self._error
