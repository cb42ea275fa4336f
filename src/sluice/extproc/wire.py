"""Reading and building ext_proc protobuf messages: the only module that knows their shape.

Everything here is a pure function of its arguments, so the stream state machine can speak in
plain Python values (header dicts, byte strings, endpoint lists).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator, Mapping

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2

from sluice.net.varint import varint
from sluice.requests.errors import DroppedReason, ErrorCode, SluiceError
from sluice.requests.headers import HEADER_DROPPED_REASON
from sluice.requests.model import (
    DESTINATION_METADATA_NAMESPACE,
    HEADER_DESTINATION,
    HEADER_DESTINATION_SCORES,
    HEADER_DESTINATION_SERVED,
    SUBSET_HINT_KEY,
    SUBSET_HINT_NAMESPACE,
)

ProcessingRequest = pb.ProcessingRequest
ProcessingResponse = pb.ProcessingResponse
HttpHeaders = pb.HttpHeaders
HttpBody = pb.HttpBody
# What a stream sends: a message, or (for the frequent, fixed answers) its serialized bytes.
Answer = pb.ProcessingResponse | bytes

# Upstream's `BodyByteLimit`: streamed body responses are cut at this size so each gRPC message
# stays well under Envoy's and gRPC's per-message limits.
STREAMED_CHUNK_BYTES = 62_000

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


# --- reading -----------------------------------------------------------------------------------


def header_dict(headers: pb.HttpHeaders) -> dict[str, str]:
    """Header map as a dict with lower-case names; Envoy fills `raw_value` (bytes) or `value`."""
    out: dict[str, str] = {}
    for h in headers.headers.headers:
        raw = h.raw_value
        out[h.key.lower()] = raw.decode("utf-8", "replace") if raw else h.value
    return out


def subset_hint(message: pb.ProcessingRequest) -> frozenset[str] | None:
    """The gateway's candidate restriction, or None when the message carries none.

    A key that is present with an empty list means "no candidates", which is different from
    absent ("all endpoints") — hence `frozenset()` vs `None`.
    """
    if not message.HasField("metadata_context"):
        return None
    namespaces = message.metadata_context.filter_metadata
    if SUBSET_HINT_NAMESPACE not in namespaces:
        return None
    fields = namespaces[SUBSET_HINT_NAMESPACE].fields
    if SUBSET_HINT_KEY not in fields:
        return None
    value = fields[SUBSET_HINT_KEY]
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        return frozenset(v.string_value for v in value.list_value.values if v.string_value)
    if kind == "string_value":  # tolerate a single comma-separated string
        return frozenset(s.strip() for s in value.string_value.split(",") if s.strip())
    return frozenset()


def served_endpoint(message: pb.ProcessingRequest) -> str | None:
    """`envoy.lb / x-gateway-destination-endpoint-served`: where the gateway actually sent it."""
    if not message.HasField("metadata_context"):
        return None
    namespaces = message.metadata_context.filter_metadata
    if DESTINATION_METADATA_NAMESPACE not in namespaces:
        return None
    fields = namespaces[DESTINATION_METADATA_NAMESPACE].fields
    if HEADER_DESTINATION_SERVED not in fields:
        return None
    return fields[HEADER_DESTINATION_SERVED].string_value or None


# --- building ----------------------------------------------------------------------------------


def header_mutation(
    set_headers: Mapping[str, str], remove_headers: Iterable[str] = ()
) -> pb.HeaderMutation:
    """As a message (for the rare ImmediateResponse); routing answers use the bytes below."""
    return pb.HeaderMutation(
        set_headers=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=k, raw_value=v.encode()), append_action=_OVERWRITE
            )
            for k, v in set_headers.items()
        ],
        remove_headers=list(remove_headers),
    )


# The routing answer is on every request's critical path (Envoy holds the request until it
# arrives), so it is encoded by hand like the streamed bodies below: building the nested
# protobuf objects and serializing them cost as much as the rest of the stream's work for the
# request. Same bytes as the protobuf messages named in each docstring (proven in
# tests/extproc/test_transport.py); field numbers from external_processor.proto and base.proto.


def route_request_headers(
    set_headers: Mapping[str, str],
    remove_headers: Iterable[str],
    destination: str,
    scores: Mapping[str, float] | None = None,
) -> bytes:
    """Answer to request headers that routes the request (FULL_DUPLEX / header-only):
    `ProcessingResponse(request_headers=HeadersResponse(response=CommonResponse(
    header_mutation=header_mutation(…), clear_route_cache=True)), dynamic_metadata=Struct(
    {"envoy.lb": {"x-gateway-destination-endpoint": destination}}))`; with `scores`, the
    namespace also holds `x-gateway-destination-endpoint-scores: {ip:port: score}` (upstream's
    `--emit-endpoint-scores`)."""
    common = _ld(2, _header_mutation(set_headers, remove_headers)) + _CLEAR_ROUTE_CACHE
    return _ld(1, _ld(1, common)) + _dynamic_metadata(destination, scores)


def route_request_body(
    set_headers: Mapping[str, str],
    remove_headers: Iterable[str],
    destination: str,
    body: bytes | None,
    scores: Mapping[str, float] | None = None,
) -> bytes:
    """BUFFERED mode: the routing mutation rides on the body answer; `body` None = unchanged.
    As `route_request_headers`, in `request_body=BodyResponse(…)`, plus
    `CommonResponse.body_mutation=BodyMutation(body=body)` when given."""
    common = _ld(2, _header_mutation(set_headers, remove_headers))
    if body is not None:
        common += _ld(3, _ld(1, body))  # body_mutation.body: a oneof, present even when empty
    common += _CLEAR_ROUTE_CACHE
    return _ld(3, _ld(1, common)) + _dynamic_metadata(destination, scores)


def continue_response_headers(set_headers: Mapping[str, str]) -> bytes:
    """Answer to response headers: unchanged (`CONTINUE_RESPONSE_HEADERS`), or with
    `set_headers` added to what the client gets (`ProcessingResponse(response_headers=
    HeadersResponse(response=CommonResponse(header_mutation=header_mutation(set_headers))))`):
    the plugins' response headers, e.g. the session token."""
    if not set_headers:
        return CONTINUE_RESPONSE_HEADERS
    return _ld(2, _ld(1, _ld(2, _header_mutation(set_headers, ()))))


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field (a message, bytes or string); every field used here is < 16."""
    n = len(payload)
    return _LD_TAGS[field] + (_ONE_BYTE[n] if n < 0x80 else varint(n)) + payload


_LD_TAGS = [bytes(((field << 3) | 2,)) for field in range(16)]
_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


_CLEAR_ROUTE_CACHE = b"\x28\x01"  # CommonResponse.clear_route_cache (5) = true
# HeaderValueOption.append_action (3), a varint
_APPEND_ACTION = b"\x18" + bytes((_OVERWRITE,))


def _header_mutation(set_headers: Mapping[str, str], remove_headers: Iterable[str]) -> bytes:
    """`header_mutation(set_headers, remove_headers)` serialized."""
    out = b""
    for key, value in set_headers.items():
        header = _ld(1, key.encode()) + _ld(3, value.encode())  # HeaderValue.key, .raw_value
        out += _ld(1, _ld(1, header) + _APPEND_ACTION)  # set_headers += HeaderValueOption
    for name in remove_headers:
        out += _ld(2, name.encode())  # remove_headers
    return out


_METADATA_NAMESPACE_KEY = _ld(1, DESTINATION_METADATA_NAMESPACE.encode())  # map entry key
_METADATA_DESTINATION_KEY = _ld(1, HEADER_DESTINATION.encode())
_METADATA_SCORES_KEY = _ld(1, HEADER_DESTINATION_SCORES.encode())
_NUMBER = b"\x11"  # Value.number_value (2), a fixed64 double


def _dynamic_metadata(destination: str, scores: Mapping[str, float] | None = None) -> bytes:
    """`ProcessingResponse.dynamic_metadata` (8): `envoy.lb` → {x-gateway-destination-endpoint:
    "ip:port,..."}, the same list as the header (Envoy's ORIGINAL_DST may read either)."""
    value = _ld(3, destination.encode())  # Value.string_value
    inner = _ld(1, _METADATA_DESTINATION_KEY + _ld(2, value))  # Struct.fields entry
    if scores is not None:
        entries = b"".join(
            _ld(1, _ld(1, k.encode()) + _ld(2, _NUMBER + struct.pack("<d", v)))
            for k, v in scores.items()
        )
        inner += _ld(1, _METADATA_SCORES_KEY + _ld(2, _ld(5, entries)))
    namespace = _ld(5, inner)  # Value.struct_value
    return _ld(8, _ld(1, _METADATA_NAMESPACE_KEY + _ld(2, namespace)))


def streamed_request_body(body: bytes, *, end_of_stream: bool) -> Iterator[bytes]:
    """FULL_DUPLEX mode: the body back in chunks of at most 62,000 bytes (at least one chunk)."""
    chunks = [body[i : i + STREAMED_CHUNK_BYTES] for i in range(0, len(body), STREAMED_CHUNK_BYTES)]
    if not chunks:
        chunks = [b""]
    last = len(chunks) - 1
    for i, chunk in enumerate(chunks):
        yield _streamed(chunk, end_of_stream=end_of_stream and i == last, field=_REQUEST_BODY)


def streamed_response_body(chunk: bytes, *, end_of_stream: bool) -> bytes:
    return _streamed(chunk, end_of_stream=end_of_stream, field=_RESPONSE_BODY)


# Streamed body answers are the most frequent message (every response chunk is echoed), so they
# are encoded by hand, already serialized: building the five nested protobuf objects and then
# serializing them cost more than the rest of the per-chunk work. Same bytes as
# `ProcessingResponse(response_body=BodyResponse(response=CommonResponse(body_mutation=
# BodyMutation(streamed_response=StreamedBodyResponse(body=…, end_of_stream=…)))))`
# serialized (tests/extproc/test_transport.py proves it).
_REQUEST_BODY = 3  # ProcessingResponse.request_body
_RESPONSE_BODY = 4  # ProcessingResponse.response_body


def _streamed(chunk: bytes, *, end_of_stream: bool, field: int) -> bytes:
    inner = _ld(1, chunk) if chunk else b""  # StreamedBodyResponse.body
    if end_of_stream:
        inner += b"\x10\x01"  # StreamedBodyResponse.end_of_stream = true
    mutation = _ld(3, inner)  # BodyMutation.streamed_response
    return _ld(field, _ld(1, _ld(3, mutation)))  # BodyResponse.response.body_mutation


def serialize(response: pb.ProcessingResponse | bytes) -> bytes:
    """The gRPC response serializer: pre-serialized answers pass through untouched."""
    return response if type(response) is bytes else response.SerializeToString()  # type: ignore[union-attr]


# Answers that change nothing, serialized once: sending them costs no protobuf work at all.
CONTINUE_REQUEST_HEADERS = pb.ProcessingResponse(
    request_headers=pb.HeadersResponse()
).SerializeToString()
CONTINUE_REQUEST_BODY = pb.ProcessingResponse(request_body=pb.BodyResponse()).SerializeToString()
CONTINUE_REQUEST_TRAILERS = pb.ProcessingResponse(
    request_trailers=pb.TrailersResponse()
).SerializeToString()
CONTINUE_RESPONSE_HEADERS = pb.ProcessingResponse(
    response_headers=pb.HeadersResponse()
).SerializeToString()
CONTINUE_RESPONSE_BODY = pb.ProcessingResponse(response_body=pb.BodyResponse()).SerializeToString()
CONTINUE_RESPONSE_TRAILERS = pb.ProcessingResponse(
    response_trailers=pb.TrailersResponse()
).SerializeToString()


def error_response(error: SluiceError) -> pb.ProcessingResponse:
    """An ImmediateResponse in upstream's format: status + `inference error: <Code> - <msg>`,
    and `x-llm-d-request-dropped-reason` when the request was dropped."""
    headers: dict[str, str] = {"content-type": "text/plain; charset=utf-8"}
    if error.dropped_reason is not None:
        headers[HEADER_DROPPED_REASON] = error.dropped_reason
    if error.code is ErrorCode.RESOURCE_EXHAUSTED or error.retry_after_s is not None:
        # A 429 without a hint makes clients retry immediately; one second is the smallest hint.
        retry_after = error.retry_after_s if error.retry_after_s is not None else 1.0
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    # Upstream answers an eviction with its bare message, every other error in its format.
    evicted = error.dropped_reason == DroppedReason.EVICTED
    body = error.message if evicted else error.wire_text()
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=error.http_status),
            headers=header_mutation(headers),
            body=body.encode(),
            details=error.code.name_on_wire,
        )
    )
