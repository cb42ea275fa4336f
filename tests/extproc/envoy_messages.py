"""What Envoy sends, built by hand: the vocabulary of the hermetic tests."""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from sluice.extproc.options import BodyMode


def request_headers(
    headers: Mapping[str, str],
    *,
    end_of_stream: bool = False,
    mode: BodyMode = BodyMode.FULL_DUPLEX_STREAMED,
    response_mode: BodyMode | None = None,
    subset: list[str] | None = None,
) -> pb.ProcessingRequest:
    """`response_mode`: how the response body is sent (default: as the request's)."""
    all_headers = {":method": "POST", ":path": "/v1/chat/completions", **headers}
    message = pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(
            headers=_header_map(all_headers), end_of_stream=end_of_stream
        ),
        protocol_config=pb.ProtocolConfiguration(
            request_body_mode=mode.value,
            response_body_mode=(mode if response_mode is None else response_mode).value,
        ),
    )
    if subset is not None:
        _add_subset_hint(message, subset)
    return message


def request_body(
    chunk: bytes, *, end_of_stream: bool = False, subset: list[str] | None = None
) -> pb.ProcessingRequest:
    message = pb.ProcessingRequest(
        request_body=pb.HttpBody(body=chunk, end_of_stream=end_of_stream)
    )
    if subset is not None:
        _add_subset_hint(message, subset)
    return message


def request_trailers() -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_trailers=pb.HttpTrailers())


def response_headers(
    status: int = 200, content_type: str = "application/json", *, end_of_stream: bool = False
) -> pb.ProcessingRequest:
    headers = {":status": str(status), "content-type": content_type}
    return pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(headers=_header_map(headers), end_of_stream=end_of_stream)
    )


def response_body(chunk: bytes, *, end_of_stream: bool = False) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=chunk, end_of_stream=end_of_stream))


def response_trailers() -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_trailers=pb.HttpTrailers())


def _header_map(headers: Mapping[str, str]) -> base_pb2.HeaderMap:
    # Envoy sends raw_value (bytes) and leaves value empty.
    return base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
    )


def _add_subset_hint(message: pb.ProcessingRequest, endpoints: list[str]) -> None:
    hint = struct_pb2.Struct()
    hint.get_or_create_list("x-gateway-destination-endpoint-subset").extend(endpoints)
    message.metadata_context.filter_metadata["envoy.lb.subset_hint"].CopyFrom(hint)


# --- reading Sluice's answers --------------------------------------------------------------------


def set_headers(mutation: pb.HeaderMutation) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}


def destination_metadata(response: pb.ProcessingResponse) -> str:
    return (
        response.dynamic_metadata.fields["envoy.lb"]
        .struct_value.fields["x-gateway-destination-endpoint"]
        .string_value
    )
