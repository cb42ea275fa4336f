"""One ext_proc stream (= one HTTP request) as a state machine with no I/O, in the style of h11.

Feed it each `ProcessingRequest` Envoy sends; it answers with actions: `Send` a
`ProcessingResponse`, or `Admit` a parsed request (the one asynchronous step — the shell awaits
`pipeline.admit` and hands the result back with `admitted` / `admit_failed`). When the gRPC
stream ends, the shell calls `close`, which finishes the admission if the response never did.

Request path::

    headers ──(end_of_stream)──────────────▶ pick_any ─▶ route headers
       │ (BUFFERED: CONTINUE now)
    body chunks… ─(end_of_stream | trailers)─▶ parse ─▶ Admit ─▶ route headers + body back
       └─(over the limit)─▶ 413 and ignore the rest

Response path: headers (CONTINUE), body chunks (echoed in FULL_DUPLEX, CONTINUE when BUFFERED,
usage observed on the way), trailers (answered); the end of the response finishes the
admission exactly once.

Eviction (`enableEviction`): a routed request of a negative band may be ended by flow control
until its first token. The shell passes `admitted` a hook; flow control calls it and the shell
hands the error to `evicted`, which answers an ImmediateResponse 429 (Envoy then resets the
upstream request). That is clean only while nothing of the response went to the client, so in
FULL_DUPLEX_STREAMED response mode an evictable request's response-headers answer is held until
the first body chunk (the first token) arrives; in the other modes the window closes when the
response headers are answered.

Answer first, account after: Envoy holds the response until it has Sluice's answer, but nothing
in that answer depends on usage parsing or on finishing the admission (flow control, in-flight
release, metrics). So `receive` only notes that work, and the shell calls `settle` once the
answers are written; `close` settles too, so the work is never lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, auto
from typing import Protocol

from sluice.datalayer.endpoint import Endpoint
from sluice.director.contract import Admission, Outcome
from sluice.extproc import wire
from sluice.extproc.options import BodyMode, StreamOptions
from sluice.extproc.wire import Answer, HttpBody, HttpHeaders, ProcessingRequest
from sluice.requests.errors import ErrorCode, SluiceError
from sluice.requests.model import (
    CONTROL_HEADERS,
    HEADER_DESTINATION,
    HEADER_REQUEST_ID,
    NO_WORK,
    InferenceRequest,
)
from sluice.requests.parse import DEFAULT_PATH


class Classifier(Protocol):
    """The synchronous part of `sluice.director.contract.Pipeline` that a stream calls directly."""

    def parse(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        path: str = ...,
        subset_hint: frozenset[str] | None = None,
    ) -> InferenceRequest: ...

    def pick_any(self) -> Endpoint: ...


@dataclass(frozen=True, slots=True)
class Send:
    response: Answer


@dataclass(frozen=True, slots=True)
class Admit:
    request: InferenceRequest


Action = Send | Admit


class ProtocolViolation(Exception):
    """Envoy sent something the protocol does not allow here; the stream ends with a gRPC error."""


class Phase(Enum):
    REQUEST_HEADERS = auto()
    REQUEST_BODY = auto()
    ADMITTING = auto()
    RESPONSE = auto()  # routed; now watching the response go by
    DONE = auto()  # answered with an ImmediateResponse, or the response ended


class ExtProcStream:
    def __init__(self, classifier: Classifier, options: StreamOptions | None = None) -> None:
        self._classifier = classifier
        self._options = options or StreamOptions()
        self.phase = Phase.REQUEST_HEADERS
        self._request_mode = self._options.default_request_body_mode
        self._response_mode = self._options.default_response_body_mode
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._subset_hint: frozenset[str] | None = None
        self._request_trailers_seen = False
        self._admission: Admission | None = None
        self._finished = False
        self._status: int | None = None  # the response's status, once its headers came
        self._streaming_response = False
        # Response bookkeeping noted by `receive`, done by `settle` (after the answers are out).
        self._unobserved: list[bytes] = []
        self._outcome_due: Outcome | None = None
        self._response_ended = False
        self._evictable = False  # flow control may still end it (see the module docstring)
        self._held_response_headers = False

    @property
    def admission(self) -> Admission | None:
        return self._admission

    @property
    def response_pending(self) -> bool:
        """An admitted request whose response has not ended yet."""
        return self._admission is not None and not self._finished

    @property
    def complete(self) -> bool:
        """The response ended, so Envoy will send nothing more that needs an answer: the shell
        may end the RPC together with the last answer (the protocol lets the server close the
        stream) instead of waiting for Envoy to reset it — one message and one wake-up fewer
        per request on both sides."""
        return self._response_ended

    @property
    def buffered_body_bytes(self) -> int:
        """Request body bytes collected and not yet handed on (what this stream holds)."""
        return len(self._body)

    @property
    def unsettled(self) -> bool:
        """`settle` has work to do."""
        return bool(self._unobserved) or self._outcome_due is not None

    # --- events in ----------------------------------------------------------------------------

    def receive(self, message: ProcessingRequest) -> list[Action]:
        if message.HasField("protocol_config"):
            self._request_mode = BodyMode.from_proto(message.protocol_config.request_body_mode)
            self._response_mode = BodyMode.from_proto(message.protocol_config.response_body_mode)
        # Upstream reads the hint from the last message only; a hint is sticky here instead.
        hint = wire.subset_hint(message)
        if hint is not None:
            self._subset_hint = hint
        kind = message.WhichOneof("request")
        if self.phase is Phase.DONE:
            return self._after_done(kind)
        if kind == "request_headers":
            return self._on_request_headers(message.request_headers)
        if kind == "request_body":
            return self._on_request_body(message.request_body)
        if kind == "request_trailers":
            return self._on_request_trailers()
        if kind == "response_headers":
            return self._on_response_headers(message)
        if kind == "response_body":
            return self._on_response_body(message.response_body)
        if kind == "response_trailers":
            self._expect(Phase.RESPONSE, kind)
            self._stop_eviction()
            self._finish_response()
            held = self._held_response_headers
            self._held_response_headers = False
            tail: list[Action] = [Send(wire.CONTINUE_RESPONSE_TRAILERS)]
            return [Send(self._response_headers_answer()), *tail] if held else tail
        raise ProtocolViolation(f"unexpected message {kind!r}")

    def admitted(
        self,
        admission: Admission,
        *,
        on_evicted: Callable[[SluiceError], None] | None = None,
    ) -> list[Answer]:
        """Flow control released the request and the scheduler placed it: route it.
        `on_evicted`: the shell's way back to `evicted` should flow control end the request."""
        self._expect(Phase.ADMITTING, "admission")
        self._admission = admission
        self.phase = Phase.RESPONSE
        if on_evicted is not None:
            self._evictable = admission.allow_eviction(on_evicted)
        request = admission.request
        destination = ",".join(e.hostport for e in admission.endpoints)
        set_headers = self._routing_headers(destination, request)
        remove_headers = self._headers_to_remove()
        scores = admission.endpoint_scores() if self._options.emit_endpoint_scores else None
        out: list[Answer]
        if self._request_mode is BodyMode.FULL_DUPLEX_STREAMED:
            out = [wire.route_request_headers(set_headers, remove_headers, destination, scores)]
            out.extend(
                wire.streamed_request_body(
                    request.body, end_of_stream=not self._request_trailers_seen
                )
            )
        else:
            changed = request.body if request.body != self._body else None
            out = [
                wire.route_request_body(set_headers, remove_headers, destination, changed, scores)
            ]
        if self._request_trailers_seen:
            out.append(wire.CONTINUE_REQUEST_TRAILERS)
        self._body = bytearray()
        return out

    def evicted(self, error: SluiceError) -> list[Answer]:
        """Flow control ended the routed request before its first token (the admission is
        already finished): answer the client with `error` instead of the response."""
        if not self._evictable or self.phase is not Phase.RESPONSE:
            return []
        self._evictable = False
        self._finished = True
        self._response_ended = True  # nothing more will need an answer: the RPC may end
        return [self._fail(error)]

    def _stop_eviction(self) -> None:
        if self._evictable and self._admission is not None:
            self._evictable = False
            self._admission.allow_eviction(None)

    def admit_failed(self, error: SluiceError) -> list[Answer]:
        self._expect(Phase.ADMITTING, "admission failure")
        return [self._fail(error)]

    def settle(self) -> None:
        """Feed the response chunks seen so far to the admission (usage), then finish it if the
        response ended. Call after writing the answers `receive` returned."""
        admission = self._admission
        if admission is None:
            return
        if self._unobserved:
            chunks, self._unobserved = self._unobserved, []
            for chunk in chunks:
                admission.observe_response_chunk(chunk, streaming=self._streaming_response)
        outcome, self._outcome_due = self._outcome_due, None
        if outcome is not None:
            admission.finish(outcome, NO_WORK if (self._status or 200) >= 400 else None)

    def close(self, *, cancelled: bool) -> None:
        """The gRPC stream ended. If the response did not finish, the request ended badly:
        a cancelled stream means the client (or Envoy) went away; a clean end means the
        response was cut short upstream — unless the gateway shows Sluice no response at all
        (response body mode NONE, and no response headers came): then Envoy ends the stream
        as soon as the request is routed — real Envoy by resetting it, which looks like a
        cancel — and the request is detached, its end unknown to Sluice (room.md, section
        3a: the engine's own count or the room's estimate ends it). Before, that reset was
        taken as the client leaving: the request left Sluice's accounting the moment it was
        routed, prefill and all."""
        self.settle()
        if self._admission is not None and not self._finished:
            self._finished = True
            if self._response_mode is BodyMode.NONE and self._status is None:
                self._admission.detach()
            elif cancelled:
                self._admission.finish(Outcome.CLIENT_GONE)
            else:
                self._admission.finish(Outcome.UPSTREAM_ERROR)
        self.phase = Phase.DONE
        self._body = bytearray()  # a closed stream holds nothing

    # --- request path -------------------------------------------------------------------------

    def _on_request_headers(self, headers: HttpHeaders) -> list[Action]:
        self._expect(Phase.REQUEST_HEADERS, "request_headers")
        self._headers = wire.header_dict(headers)
        if headers.end_of_stream or self._request_mode is BodyMode.NONE:
            return [Send(self._route_without_body())]
        if self._request_mode is BodyMode.STREAMED:
            raise ProtocolViolation("request_body_mode STREAMED is not supported")
        declared = self._headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._options.max_body_bytes:
            return [Send(self._fail(self._too_large()))]
        self.phase = Phase.REQUEST_BODY
        if self._request_mode is BodyMode.FULL_DUPLEX_STREAMED:
            return []  # the header answer must wait until the body is complete
        return [Send(wire.CONTINUE_REQUEST_HEADERS)]  # BUFFERED: Envoy waits for it

    def _on_request_body(self, body: HttpBody) -> list[Action]:
        self._expect(Phase.REQUEST_BODY, "request_body")
        if len(self._body) + len(body.body) > self._options.max_body_bytes:
            self._body = bytearray()
            return [Send(self._fail(self._too_large()))]
        self._body += body.body
        # BUFFERED sends the whole body in one message (end_of_stream is false only when
        # trailers follow, and Envoy waits for our answer before sending them).
        if body.end_of_stream or self._request_mode is not BodyMode.FULL_DUPLEX_STREAMED:
            return self._body_complete()
        return []

    def _on_request_trailers(self) -> list[Action]:
        if self.phase is Phase.REQUEST_BODY:  # FULL_DUPLEX: trailers end the body
            self._request_trailers_seen = True
            return self._body_complete()
        if self.phase is Phase.RESPONSE:  # BUFFERED: body already answered
            return [Send(wire.CONTINUE_REQUEST_TRAILERS)]
        raise ProtocolViolation(f"request_trailers in phase {self.phase.name}")

    def _body_complete(self) -> list[Action]:
        try:
            request = self._classifier.parse(
                self._headers,
                bytes(self._body),
                path=self._path(),
                subset_hint=self._effective_subset_hint(),
            )
        except SluiceError as error:
            return [Send(self._fail(error))]
        request.response_seen = self._response_mode is not BodyMode.NONE
        self.phase = Phase.ADMITTING
        return [Admit(request)]

    def _route_without_body(self) -> Answer:
        try:
            endpoint = self._classifier.pick_any()
        except SluiceError as error:
            return self._fail(error)
        self.phase = Phase.RESPONSE
        destination = endpoint.hostport
        set_headers = {HEADER_DESTINATION: destination}
        return wire.route_request_headers(set_headers, self._headers_to_remove(), destination)

    def _routing_headers(self, destination: str, request: InferenceRequest) -> dict[str, str]:
        out = {HEADER_DESTINATION: destination}
        if request.body:
            out["content-length"] = str(len(request.body))
        if HEADER_REQUEST_ID not in self._headers and request.request_id:
            out[HEADER_REQUEST_ID] = request.request_id  # generated: the model server sees it too
        return out

    def _headers_to_remove(self) -> list[str]:
        if self._options.keep_control_headers:
            return []
        return [h for h in CONTROL_HEADERS if h in self._headers]

    def _effective_subset_hint(self) -> frozenset[str] | None:
        return None if self._options.disable_endpoint_subset_filter else self._subset_hint

    def _path(self) -> str:
        path = self._headers.get(":path", "")
        return path.split("?", 1)[0] or DEFAULT_PATH

    def _too_large(self) -> SluiceError:
        limit = self._options.max_body_bytes
        return SluiceError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"request body exceeds the limit of {limit} bytes"
        )

    def _fail(self, error: SluiceError) -> Answer:
        self.phase = Phase.DONE
        return wire.error_response(error)

    # --- response path ------------------------------------------------------------------------

    def _on_response_headers(self, message: ProcessingRequest) -> list[Action]:
        self._expect(Phase.RESPONSE, "response_headers")
        headers = wire.header_dict(message.response_headers)
        status = headers.get(":status", "200")  # Envoy's name; upstream checked `status`
        self._status = int(status) if status.isdigit() else 200
        self._streaming_response = "text/event-stream" in headers.get("content-type", "")
        self._note_served_endpoint(message)
        end_of_stream = message.response_headers.end_of_stream
        if (
            self._evictable
            and not end_of_stream
            and self._response_mode is BodyMode.FULL_DUPLEX_STREAMED
        ):
            self._held_response_headers = True  # answered with the first body chunk
            return []
        self._stop_eviction()
        if end_of_stream:
            self._finish_response()
        return [Send(self._response_headers_answer())]

    def _on_response_body(self, body: HttpBody) -> list[Action]:
        self._expect(Phase.RESPONSE, "response_body")
        out: list[Action] = []
        if self._held_response_headers:
            self._held_response_headers = False
            out.append(Send(self._response_headers_answer()))
        self._stop_eviction()  # the first token is on its way to the client
        if self._admission is not None and body.body:
            self._unobserved.append(body.body)
        if body.end_of_stream:
            self._finish_response()
        if self._response_mode is BodyMode.FULL_DUPLEX_STREAMED:
            echo = wire.streamed_response_body(body.body, end_of_stream=body.end_of_stream)
            out.append(Send(echo))
        else:
            out.append(Send(wire.CONTINUE_RESPONSE_BODY))
        return out

    def _response_headers_answer(self) -> bytes:
        """The answer to the response headers: what the scheduling plugins add to them for the
        endpoint that served (`InferenceRequest.response_headers`), e.g. the session token."""
        admission = self._admission
        if admission is None:
            return wire.CONTINUE_RESPONSE_HEADERS
        return wire.continue_response_headers(admission.request.response_headers)

    def _note_served_endpoint(self, message: ProcessingRequest) -> None:
        served = wire.served_endpoint(message)
        if self._admission is None or served is None:
            return
        endpoints = self._admission.endpoints
        if served == endpoints[0].hostport:
            return
        for endpoint in endpoints[1:]:
            if endpoint.hostport == served:
                self._admission.retarget(endpoint)
                return

    def _finish_response(self) -> None:
        """The response ended: decided now, reported to the admission by `settle`."""
        self._response_ended = True
        if self._admission is not None and not self._finished:
            self._finished = True
            ok = (self._status or 200) < 500
            self._outcome_due = Outcome.COMPLETED if ok else Outcome.UPSTREAM_ERROR

    # --- helpers ------------------------------------------------------------------------------

    def _after_done(self, kind: str | None) -> list[Action]:
        """After an ImmediateResponse Envoy may still flush what it had in flight: ignore
        request data (413 must not buffer the rest), but keep answering anything that Envoy
        waits on so it never stalls."""
        if kind == "response_headers":
            return [Send(wire.CONTINUE_RESPONSE_HEADERS)]
        if kind == "response_trailers":
            return [Send(wire.CONTINUE_RESPONSE_TRAILERS)]
        return []

    def _expect(self, phase: Phase, what: str) -> None:
        if self.phase is not phase:
            raise ProtocolViolation(f"{what} in phase {self.phase.name}")
