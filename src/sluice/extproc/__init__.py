"""The Endpoint Picker Protocol: an Envoy ext_proc gRPC server over the pipeline.

`stream` is the per-request state machine (no I/O), `wire` builds/reads the protobufs,
`server` is the thin grpc.aio shell, `tls` its certificates. May import `sluice.director.contract`.
"""

from sluice.extproc.options import BodyMode, ServerOptions, StreamOptions
from sluice.extproc.server import ExternalProcessor, ExtProcServer
from sluice.extproc.stream import Admit, ExtProcStream, Send

__all__ = [
    "Admit",
    "BodyMode",
    "ExtProcServer",
    "ExtProcStream",
    "ExternalProcessor",
    "Send",
    "ServerOptions",
    "StreamOptions",
]
