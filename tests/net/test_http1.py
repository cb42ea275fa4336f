"""The one HTTP/1.1 response reader (sluice.net.http1) that the scraper and the proxy share:
RFC 9112's framing rules, 1xx skipped, explicit limits, and when a connection may be reused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.net.http1 import Http1Limits, ResponseError, ResponseHead, ResponseReader


class Collected:
    def __init__(self) -> None:
        self.head: ResponseHead | None = None
        self.body = bytearray()
        self.completed = 0

    def on_head(self, head: ResponseHead) -> None:
        self.head = head

    def on_body(self, chunk: bytes) -> None:
        self.body += chunk

    def on_complete(self) -> None:
        self.completed += 1


def read(
    data: bytes | list[bytes],
    *,
    eof: bool = False,
    head_request: bool = False,
    limits: Http1Limits | None = None,
) -> tuple[Collected, ResponseReader]:
    sink = Collected()
    reader = ResponseReader(sink, limits)
    reader.expect(head_request=head_request)
    for piece in [data] if isinstance(data, bytes) else data:
        reader.feed(piece)
    if eof:
        reader.feed_eof()
    return sink, reader


OK_HEAD = b"HTTP/1.1 200 OK\r\n"


# --- framing -------------------------------------------------------------------------------------


def test_content_length_frames_the_body_and_the_connection_is_reusable():
    sink, reader = read(
        OK_HEAD + b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\r\nabc"
    )
    assert (sink.head.status, sink.head.content_length, sink.head.content_type) == (
        200,
        3,
        "text/plain",
    )
    assert bytes(sink.body) == b"abc" and sink.completed == 1
    assert reader.complete and reader.reusable


def test_chunked_bodies_with_extensions_and_trailers():
    chunked = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
    sink, reader = read(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    assert bytes(sink.body) == b"hello world" and sink.head.content_length is None
    assert reader.reusable


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    ],
    ids=["length first", "chunked first"],
)
def test_chunked_together_with_content_length_is_refused(headers):
    """RFC 9112 §6.1: a message with both may be a smuggling attempt (the old scraper let
    Content-Length win)."""
    with pytest.raises(ResponseError, match=r"Content-Length|Transfer-Encoding"):
        read(OK_HEAD + headers + b"\r\n3\r\nabc\r\n0\r\n\r\n")


@pytest.mark.parametrize(
    "value",
    [b"-2", b"-3", b"+3", b"3, 3", b"3 4", b"0x3", b"", b"99999999999999999999999"],
)
def test_a_content_length_that_is_not_one_decimal_number_is_refused(value):
    """The old scraper read -2 and -3 as its own chunked / until-close markers."""
    with pytest.raises(ResponseError):
        read(OK_HEAD + b"Content-Length: " + value + b"\r\n\r\nabc")


@pytest.mark.parametrize("second", [b"3", b"4"], ids=["equal", "conflicting"])
def test_a_second_content_length_is_refused(second):
    with pytest.raises(ResponseError, match="Content-Length"):
        read(OK_HEAD + b"Content-Length: 3\r\nContent-Length: " + second + b"\r\n\r\nabc")


def test_a_body_without_length_runs_until_close_and_never_reuses_the_connection():
    sink, reader = read([OK_HEAD + b"\r\npart one, ", b"part two"], eof=True)
    assert bytes(sink.body) == b"part one, part two" and sink.completed == 1
    assert not reader.reusable


@pytest.mark.parametrize(
    "cut",
    [
        OK_HEAD + b"Content-Length: 10\r\n\r\nabc",
        OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nab",
        OK_HEAD,
    ],
    ids=["length", "chunked", "head"],
)
def test_a_connection_closed_mid_response_is_an_error(cut):
    with pytest.raises(ResponseError, match="closed"):
        read(cut, eof=True)


@pytest.mark.parametrize("status", [204, 304])
def test_no_content_and_not_modified_have_no_body(status):
    sink, reader = read(b"HTTP/1.1 %d X\r\nContent-Length: 7\r\n\r\n" % status)
    assert sink.completed == 1 and sink.body == b"" and reader.reusable


def test_a_response_to_head_has_no_body_and_is_not_reused():
    sink, reader = read(OK_HEAD + b"Content-Length: 7\r\n\r\n", head_request=True)
    assert sink.completed == 1 and sink.head.content_length is None and not reader.reusable


# --- informational responses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n",
    ],
    ids=["100 Continue", "103 Early Hints"],
)
def test_informational_responses_are_skipped(interim):
    """The old scraper took a 100 Continue as the response."""
    sink, reader = read([interim, OK_HEAD + b"Content-Length: 2\r\n\r\nok"])
    assert sink.head.status == 200 and bytes(sink.body) == b"ok"
    assert sink.head.headers == [("Content-Length", "2")]
    assert reader.reusable


def test_switching_protocols_is_refused():
    with pytest.raises(ResponseError, match="switched protocols"):
        read(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n")


# --- malformed heads -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 1000 High\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        OK_HEAD + b"X: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        OK_HEAD + b"Content-Length : 0\r\n\r\n",
        OK_HEAD + b"X: a\x00b\r\nContent-Length: 0\r\n\r\n",
        OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
    ],
    ids=[
        "not HTTP", "status below 100", "status of four digits", "bare LF", "obs-fold",
        "space before colon", "NUL in a value", "bad chunk size", "chunk size overflow",
    ],
)  # fmt: skip
def test_malformed_responses_are_refused(data):
    with pytest.raises(ResponseError):
        read(data)


# --- limits --------------------------------------------------------------------------------------


def test_a_head_over_the_limit_is_refused_even_before_it_ends():
    limits = Http1Limits(max_head_bytes=1024)
    with pytest.raises(ResponseError, match="head over"):
        read(OK_HEAD + b"X: " + b"v" * 2000, limits=limits)  # no end of the head in sight
    with pytest.raises(ResponseError, match="head over"):
        read(OK_HEAD + b"X: " + b"v" * 2000 + b"\r\nContent-Length: 0\r\n\r\n", limits=limits)


def test_too_many_headers_are_refused():
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(101))
    with pytest.raises(ResponseError, match="more than 100"):
        read(OK_HEAD + lines + b"Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize(
    "response",
    [
        OK_HEAD + b"Content-Length: 11\r\n\r\n",
        OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
        OK_HEAD + b"\r\nhello world",
    ],
    ids=["declared", "chunked", "until close"],
)
def test_a_body_over_the_limit_is_refused(response):
    """The old scraper buffered without bound."""
    with pytest.raises(ResponseError, match="over the limit"):
        read(response, limits=Http1Limits(max_body_bytes=10))


# --- reuse ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na",
        OK_HEAD + b"Connection: close\r\nContent-Length: 1\r\n\r\na",
        OK_HEAD + b"Content-Length: 1\r\n\r\nab",
    ],
    ids=["HTTP/1.0", "Connection: close", "bytes past the end"],
)
def test_a_connection_is_reused_only_when_both_sides_keep_it_and_it_is_in_step(response):
    sink, reader = read(response)
    assert sink.completed == 1 and bytes(sink.body) == b"a"
    assert not reader.reusable


def test_bytes_after_a_complete_response_make_it_unreusable():
    _, reader = read(OK_HEAD + b"Content-Length: 1\r\n\r\na")
    reader.feed(b"HTTP/1.1 200 OK\r\n")  # nobody asked
    assert not reader.reusable


def test_a_reader_serves_one_response_after_another():
    sink = Collected()
    reader = ResponseReader(sink)
    for body in (b"one", b"three"):
        reader.expect()
        reader.feed(OK_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert reader.reusable and bytes(sink.body).endswith(body)
    assert sink.completed == 2


@given(
    body=st.binary(max_size=300),
    chunk_sizes=st.lists(st.integers(1, 50), min_size=1, max_size=8),
    cuts=st.lists(st.integers(1, 40), max_size=30),
)
def test_any_split_of_a_chunked_response_reads_the_same_body(body, chunk_sizes, cuts):
    chunks, position, index = [], 0, 0
    while position < len(body):
        size = chunk_sizes[index % len(chunk_sizes)]
        chunks.append(
            b"%x\r\n" % len(body[position : position + size])
            + body[position : position + size]
            + b"\r\n"
        )
        position, index = position + size, index + 1
    data = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunks) + b"0\r\n\r\n"
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(data[start : start + cut])
        start += cut
    pieces.append(data[start:])
    sink, reader = read(pieces)
    assert bytes(sink.body) == body and sink.completed == 1 and reader.reusable
