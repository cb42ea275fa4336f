"""Settings of the ext_proc front end and the command-line flags that fill them (upstream names)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Literal

from sluice.director.contract import Limits
from sluice.net.limits import H2Limits


class BodyMode(Enum):
    """How Envoy sends a body to Sluice (the ext_proc `ProcessingMode.BodySendMode`s we speak)."""

    NONE = 0
    STREAMED = 1
    BUFFERED = 2
    BUFFERED_PARTIAL = 3
    FULL_DUPLEX_STREAMED = 4

    @classmethod
    def from_proto(cls, value: int) -> BodyMode:
        try:
            return cls(value)
        except ValueError:
            return cls.NONE


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """What one ext_proc stream needs to know."""

    max_body_bytes: int = Limits().max_body_bytes
    keep_control_headers: bool = False
    disable_endpoint_subset_filter: bool = False
    # Upstream's --emit-endpoint-scores: the scores in envoy.lb metadata (needs the recorder).
    emit_endpoint_scores: bool = False
    # Used only when Envoy does not announce its modes (`protocol_config`, Envoy >= 1.33).
    default_request_body_mode: BodyMode = BodyMode.FULL_DUPLEX_STREAMED
    default_response_body_mode: BodyMode = BodyMode.FULL_DUPLEX_STREAMED

    @property
    def max_message_bytes(self) -> int:
        """The largest gRPC message to accept: BUFFERED mode sends the whole body as one
        message, so the body limit plus headroom — an oversized body still reaches the stream,
        which answers 413 itself."""
        return self.max_body_bytes + 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Where and how the gRPC servers listen."""

    grpc_port: int = 9002
    grpc_health_port: int = 9003
    metrics_port: int = 9090
    # Every interface, as upstream: in a cluster the gateway reaches the EPP through its Pod
    # IP. `sluice up` binds loopback; see docs/security.md "Transport".
    host: str = "0.0.0.0"
    secure_serving: bool = True
    cert_path: Path | None = None
    # "h2": Sluice's gRPC server on its own HTTP/2 frame layer (sluice.net.frames), on the event
    # loop; "hyper": the same server on python-hyper's h2 state machine (sluice.net.hyper_h2),
    # about twice the CPU per request; "grpc": grpc.aio, whose per-message thread hand-offs cost
    # more still. See docs/extproc.md "Overhead".
    transport: Literal["h2", "hyper", "grpc"] = "h2"
    # HTTP/2 limits (max_message_bytes comes from StreamOptions); the grpc transport applies
    # those grpc core has options for. See `limits_for`.
    h2_limits: H2Limits = field(default_factory=H2Limits)

    def limits_for(self, stream: StreamOptions) -> H2Limits:
        """The limits in force: the message limit follows the body limit, and one maximal body
        always fits a connection's buffer, with room for other streams."""
        message = stream.max_message_bytes
        limits = self.h2_limits
        return dataclasses.replace(
            limits,
            max_message_bytes=message,
            max_connection_buffer_bytes=max(limits.max_connection_buffer_bytes, 2 * message),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Upstream's flags for the ext_proc, health and metrics servers."""
    s, d = ServerOptions(), StreamOptions()
    parser.add_argument("--grpc-port", type=int, default=s.grpc_port)
    parser.add_argument("--grpc-health-port", type=int, default=s.grpc_health_port)
    parser.add_argument("--metrics-port", type=int, default=s.metrics_port)
    parser.add_argument(
        "--secure-serving",
        action=argparse.BooleanOptionalAction,
        default=s.secure_serving,
        help="serve ext_proc over TLS (a self-signed certificate unless --cert-path)",
    )
    parser.add_argument(
        "--cert-path", type=Path, default=None, help="directory holding tls.crt and tls.key"
    )
    parser.add_argument(
        "--disable-endpoint-subset-filter",
        action="store_true",
        default=d.disable_endpoint_subset_filter,
        help="ignore the gateway's envoy.lb.subset_hint metadata",
    )
    parser.add_argument(
        "--keep-control-headers",
        action="store_true",
        default=d.keep_control_headers,
        help="forward the control headers (x-llm-d-*, x-gateway-*, x-sluice-*) to model servers",
    )
    parser.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    parser.add_argument(
        "--ext-proc-transport",
        choices=["h2", "hyper", "grpc"],
        default=s.transport,
        help="h2: Sluice's own HTTP/2 frame layer (fast); hyper: python-hyper's h2; grpc: grpc.aio",
    )


def options_from_args(args: argparse.Namespace) -> tuple[ServerOptions, StreamOptions]:
    server = ServerOptions(
        grpc_port=args.grpc_port,
        grpc_health_port=args.grpc_health_port,
        metrics_port=args.metrics_port,
        secure_serving=args.secure_serving,
        cert_path=args.cert_path,
        transport=args.ext_proc_transport,
    )
    stream = StreamOptions(
        max_body_bytes=args.max_body_bytes,
        keep_control_headers=args.keep_control_headers,
        disable_endpoint_subset_filter=args.disable_endpoint_subset_filter,
    )
    return server, stream
