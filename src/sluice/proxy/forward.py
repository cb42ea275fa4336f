"""Forward one admitted request to a model server and relay the answer.

The relay keeps three promises:

* **Retry only before the first byte.** If an endpoint refuses the connection or fails before
  its response headers arrive, the request moves to the next fallback (`retarget`). Once the
  model server has answered, nothing is retried: it may have done the work already. (A reused
  keep-alive connection that fails before answering is first retried once on a fresh connection
  to the same endpoint, by `UpstreamPool`.)
* **Every failure is logged** with the endpoint and its cause, whether a fallback then answers
  or the client gets a 502.
* **Backpressure.** Streams are relayed chunk by chunk and each write waits for the client's
  socket to drain, so a slow reader makes Sluice stop reading upstream instead of buffering.
* **Exactly one `finish`.** Every path out of `forward` — completion, upstream failure, client
  gone (including cancellation) — reports exactly one outcome.
* **Eviction only before the first byte.** A request flow control may evict (`allow_eviction`)
  keeps its response head back until the first body chunk — the first token of a stream — so
  an eviction before it can still be answered with a clean 429; the upstream call is dropped,
  which stops the generation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import aiohttp
import orjson
from aiohttp import web

from sluice.datalayer.endpoint import Endpoint
from sluice.director.contract import Outcome
from sluice.requests.errors import ErrorCode, SluiceError
from sluice.requests.model import HEADER_DESTINATION_SCORES, NO_WORK, InferenceRequest, Usage

from .errors import bad_gateway, error_response, sse_error_event
from .headers import downstream_response_headers
from .upstream import UpstreamPool, UpstreamResponse

log = logging.getLogger(__name__)

# Failures that happen before an upstream response exists: refused/reset connections, a server
# that closes without answering, connect timeouts. (`UpstreamError` is an `OSError`.)
_BEFORE_FIRST_BYTE_FAILURES = (OSError, TimeoutError)
_CLIENT_WRITE_FAILURES = (ConnectionError, aiohttp.ClientConnectionError)


class Target(Protocol):
    """The part of `pipeline.Admission` that forwarding needs."""

    @property
    def endpoints(self) -> tuple[Endpoint, ...]: ...

    @property
    def request(self) -> InferenceRequest | None:
        """The request (its `response_headers`: what the scheduling plugins add to the
        response, e.g. the session token); None for an untracked one."""
        ...

    def retarget(self, endpoint: Endpoint) -> None: ...

    def observe_response_chunk(self, chunk: bytes, *, streaming: bool) -> None: ...

    def finish(self, outcome: Outcome, usage: Usage | None = None) -> None: ...

    def allow_eviction(self, hook: Callable[[SluiceError], None] | None) -> bool: ...

    def endpoint_scores(self) -> dict[str, float] | None: ...


@dataclass(frozen=True, slots=True)
class UntrackedTarget:
    """A target for requests the pipeline does not account for (header-only passthrough)."""

    endpoints: tuple[Endpoint, ...]
    request: None = None

    def retarget(self, endpoint: Endpoint) -> None:
        pass

    def endpoint_scores(self) -> dict[str, float] | None:
        return None

    def observe_response_chunk(self, chunk: bytes, *, streaming: bool) -> None:
        pass

    def finish(self, outcome: Outcome, usage: Usage | None = None) -> None:
        pass

    def allow_eviction(self, hook: Callable[[SluiceError], None] | None) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """The HTTP request to send to whichever endpoint takes it.

    `header_lines` are the forwarded headers already rendered (`headers.upstream_header_lines`);
    `Host` and `Content-Length` are added per attempt.
    """

    method: str
    path_and_query: str
    header_lines: bytes
    body: bytes

    def head(self, hostport: str) -> bytes:
        """Request line and headers for one endpoint, ending with the blank line."""
        return b"".join(
            (
                f"{self.method} {self.path_and_query} HTTP/1.1\r\nHost: {hostport}\r\n"
                f"Content-Length: {len(self.body)}\r\n".encode("utf-8", "surrogateescape"),
                self.header_lines,
                b"\r\n",
            )
        )


@dataclass(frozen=True, slots=True)
class RelayOptions:
    # Non-streamed responses up to this size are read whole and sent with one write (the fast
    # path); larger or unsized ones are relayed chunk by chunk like streams.
    buffer_response_bytes: int = 1 << 20
    # No response head this long after sending: the endpoint counts as failed before its
    # first byte (the next fallback is tried; without one the client gets 504).
    first_byte_timeout_s: float = 300.0
    # `--emit-endpoint-scores`: the scores as a JSON response header (ext_proc: metadata).
    emit_endpoint_scores: bool = False


class _NoEndpointAnswered(Exception):
    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out  # the last endpoint tried hung past its first-byte timeout


class _StreamEnded(Exception):
    """The relay stopped early; `response` is what the client already has (if anything)."""

    def __init__(self, response: web.StreamResponse | None = None) -> None:
        super().__init__()
        self.response = response


class _UpstreamBroke(_StreamEnded):
    pass


class _ClientGone(_StreamEnded):
    pass


class _Evicted(Exception):
    def __init__(self, error: SluiceError) -> None:
        super().__init__(error.message)
        self.error = error


Eviction = asyncio.Future[SluiceError]
T = TypeVar("T")


def _eviction_signal(target: Target) -> Eviction | None:
    """A future flow control completes if it evicts the request (None: it never will)."""
    signal: Eviction = asyncio.get_running_loop().create_future()

    def evict(error: SluiceError) -> None:
        if not signal.done():
            signal.set_result(error)

    return signal if target.allow_eviction(evict) else None


async def _unless_evicted(
    step: Awaitable[T], evicted: Eviction | None, discard: Callable[[T], None] | None = None
) -> T:
    """`await step`, unless flow control evicts the request first (then `_Evicted`; the step
    is cancelled). An eviction that lands together with the step's result still wins — flow
    control has already counted the request as evicted — and the result goes to `discard`."""
    if evicted is None:
        return await step
    task = asyncio.ensure_future(step)
    try:
        await asyncio.wait((task, evicted), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if evicted.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if discard is not None and not task.cancelled() and task.exception() is None:
            discard(task.result())
        raise _Evicted(evicted.result())
    return task.result()


async def forward(
    request: web.BaseRequest,
    call: UpstreamCall,
    target: Target,
    pool: UpstreamPool,
    options: RelayOptions,
) -> web.StreamResponse:
    """Send `call` to `target`'s endpoints in order and relay the first answer to the client."""
    outcome = Outcome.UPSTREAM_ERROR
    upstream: UpstreamResponse | None = None
    served = ""
    relayed = False
    evicted = _eviction_signal(target)
    try:
        opening = _open_upstream(call, target, pool, options.first_byte_timeout_s)
        served, opened = await _unless_evicted(opening, evicted, _close_opened)
        upstream = opened
        response = await _relay(request, opened, target, options, evicted)
        relayed = True
        # A 5xx relayed whole is still the engine failing: outlier detection counts it.
        outcome = Outcome.UPSTREAM_ERROR if opened.status >= 500 else Outcome.COMPLETED
        return response
    except _Evicted as exc:
        outcome = Outcome.EVICTED  # flow control already finished it so; `finish` is a no-op
        return error_response(exc.error)
    except _NoEndpointAnswered as exc:
        code = ErrorCode.GATEWAY_TIMEOUT if exc.timed_out else ErrorCode.BAD_GATEWAY
        return error_response(SluiceError(code, f"no endpoint answered: {exc}"))
    except _UpstreamBroke as exc:
        cause = exc.__cause__
        log.warning(
            "model server %s failed mid-response (%s)",
            served,
            f"{type(cause).__name__}: {cause}" if cause else "the body ended early",
        )
        if exc.response is not None:
            return exc.response  # headers already went out; the relay ended the stream
        return error_response(bad_gateway("model server failed before responding"))
    except _ClientGone as exc:
        outcome = Outcome.CLIENT_GONE
        # aiohttp's final write to the dead connection fails quietly; nothing more to send.
        return exc.response if exc.response is not None else web.Response(status=499)
    except asyncio.CancelledError:
        outcome = Outcome.CLIENT_GONE  # aiohttp cancels the handler when the client disconnects
        raise
    finally:
        if upstream is not None:
            if relayed:
                upstream.release()
            else:
                upstream.close()  # drops the connection, which cancels the generation upstream
        if evicted is not None:
            target.allow_eviction(None)
        rejected = upstream is not None and upstream.status >= 400
        target.finish(outcome, NO_WORK if rejected else None)


def _close_opened(opened: tuple[str, UpstreamResponse]) -> None:
    opened[1].close()


async def _open_upstream(
    call: UpstreamCall, target: Target, pool: UpstreamPool, first_byte_timeout_s: float
) -> tuple[str, UpstreamResponse]:
    """(the endpoint that answered, its response)."""
    failures: list[str] = []
    timed_out = False
    expect_body = call.method != "HEAD"
    for index, endpoint in enumerate(target.endpoints):
        if index:
            target.retarget(endpoint)
        try:
            async with asyncio.timeout(first_byte_timeout_s):
                response = await pool.request(
                    endpoint.address,
                    endpoint.port,
                    call.head(endpoint.hostport),
                    call.body,
                    expect_body=expect_body,
                )
            return endpoint.hostport, response
        except _BEFORE_FIRST_BYTE_FAILURES as exc:
            timed_out = isinstance(exc, TimeoutError)
            cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if timed_out:
                cause = f"no response head within {first_byte_timeout_s:g}s"
            failures.append(f"{endpoint.hostport}: {cause}")
            log.warning(
                "model server %s failed before responding (%s); %s",
                endpoint.hostport,
                cause,
                "trying the next fallback"
                if index + 1 < len(target.endpoints)
                else "no fallback left",
            )
    raise _NoEndpointAnswered(", ".join(failures) or "no endpoints", timed_out=timed_out)


async def _relay(
    request: web.BaseRequest,
    upstream: UpstreamResponse,
    target: Target,
    options: RelayOptions,
    evicted: Eviction | None = None,
) -> web.StreamResponse:
    headers = downstream_response_headers(upstream.headers)
    if target.request is not None:
        headers.update(target.request.response_headers)  # as of the endpoint that answered
    if options.emit_endpoint_scores:
        scores = target.endpoint_scores()
        if scores is not None:
            headers[HEADER_DESTINATION_SCORES] = orjson.dumps(scores).decode()
    streaming = upstream.content_type == "text/event-stream"
    size = upstream.content_length
    if not streaming and size is not None and size <= options.buffer_response_bytes:
        try:
            body = await _unless_evicted(upstream.read(), evicted)
        except _BEFORE_FIRST_BYTE_FAILURES as exc:
            raise _UpstreamBroke() from exc
        target.observe_response_chunk(body, streaming=False)
        return web.Response(status=upstream.status, body=body, headers=headers)
    first: bytes | None = None
    if evicted is not None:  # the head waits for the first chunk: until then, evictable
        try:
            first = await _unless_evicted(upstream.readany(), evicted)
        except _BEFORE_FIRST_BYTE_FAILURES as exc:
            raise _UpstreamBroke() from exc
        target.allow_eviction(None)  # from here bytes go to the client: no longer evictable
    return await _relay_stream(request, upstream, target, headers, streaming=streaming, first=first)


async def _relay_stream(
    request: web.BaseRequest,
    upstream: UpstreamResponse,
    target: Target,
    headers: Mapping[str, str],
    *,
    streaming: bool,
    first: bytes | None = None,
) -> web.StreamResponse:
    """Relay chunk by chunk; `first`: a chunk already read while the head was held."""
    response = web.StreamResponse(status=upstream.status, headers=headers)
    try:
        await response.prepare(request)
    except _CLIENT_WRITE_FAILURES as exc:
        raise _ClientGone(response) from exc
    tail = b"\n\n"  # the last bytes written, to close a half-sent SSE event on failure
    while True:
        if first is not None:
            chunk, first = first, None
        else:
            try:
                chunk = await upstream.readany()
            except _BEFORE_FIRST_BYTE_FAILURES as exc:
                await _end_broken_stream(request, response, tail, streaming=streaming)
                raise _UpstreamBroke(response) from exc
        if not chunk:
            break
        target.observe_response_chunk(chunk, streaming=streaming)
        try:
            await response.write(chunk)  # waits while the client's socket is full
        except _CLIENT_WRITE_FAILURES as exc:
            raise _ClientGone(response) from exc
        tail = chunk[-2:]
    if not upstream.is_eof():  # the upstream closed mid-body without an error
        await _end_broken_stream(request, response, tail, streaming=streaming)
        raise _UpstreamBroke(response)
    return response


async def _end_broken_stream(
    request: web.BaseRequest, response: web.StreamResponse, tail: bytes, *, streaming: bool
) -> None:
    """Tell the client the stream broke: an SSE error event, or a cut connection otherwise."""
    if streaming:
        separator = b"" if tail.endswith(b"\n\n") else b"\n" if tail.endswith(b"\n") else b"\n\n"
        error: SluiceError = bad_gateway("model server failed mid-stream")
        try:
            await response.write(separator + sse_error_event(error))
        except _CLIENT_WRITE_FAILURES:
            pass
    elif request.transport is not None:
        request.transport.abort()  # a clean end would pass a truncated body off as complete
