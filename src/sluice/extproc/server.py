"""The asyncio shells that run one `ExtProcStream` per ext_proc RPC.

`ExtProcServer` serves with `sluice.extproc.h2` on Sluice's gRPC server (`sluice.net`: its own
HTTP/2 frame layer, `transport="h2"`, the default; or python-hyper's `h2`, `transport="hyper"`)
or with the `grpc.aio` shell below (`transport="grpc"`). All
decisions live in `stream.py` and the pipeline; a shell only moves messages, awaits admission,
and maps the end of the RPC (clean, cancelled, or failed) onto `stream.close`. Other gRPC
services can share the port (`also_serve`: gRPC health with `--health-checking`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from sluice.director.contract import Pipeline
from sluice.extproc import tls, wire
from sluice.extproc.h2 import H2ExtProcServer
from sluice.extproc.options import ServerOptions, StreamOptions
from sluice.extproc.stream import Admit, ExtProcStream, ProtocolViolation
from sluice.extproc.wire import Answer, ProcessingRequest
from sluice.net.call import Route
from sluice.requests.errors import SluiceError

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"
RESET_GRACE_S = 0.05


class SharedService(Protocol):
    """A gRPC service served on the ext_proc port beside `Process`, on either transport."""

    def h2_routes(self) -> Mapping[str, Route]:
        """`{":path": handler factory}` for the h2 transport."""
        ...

    def add_to_grpc_server(self, server: grpc.aio.Server) -> None:
        """Register on the grpc.aio transport's server."""


class ConnectionBudget:
    """Bytes held by the calls of each connection, under one limit (grpc.aio names a
    connection by its peer address): request bodies being collected."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def change(self, peer: str, delta: int) -> bool:
        """Apply `delta`; False when it took the connection over the limit."""
        total = self._held.get(peer, 0) + delta
        if total:
            self._held[peer] = total
        else:
            self._held.pop(peer, None)
        return delta <= 0 or total <= self.limit


class _OverBudget(Exception):
    pass


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(
        self,
        pipeline: Pipeline,
        options: StreamOptions | None = None,
        budget: ConnectionBudget | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._options = options or StreamOptions()
        self._budget = budget or ConnectionBudget(
            ServerOptions().limits_for(self._options).max_connection_buffer_bytes
        )

    async def Process(  # gRPC method name
        self,
        request_iterator: AsyncIterator[ProcessingRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[Answer]:
        stream = ExtProcStream(self._pipeline, self._options)
        cancelled = False
        peer, held = context.peer(), 0
        try:
            async for message in request_iterator:
                actions = stream.receive(message)
                now_held = stream.buffered_body_bytes
                within = self._budget.change(peer, now_held - held)
                held = now_held
                if not within:
                    raise _OverBudget
                for action in actions:
                    if isinstance(action, Admit):
                        # Waiting here keeps the stream open while flow control queues the
                        # request; if Envoy resets the stream, this await is cancelled and so
                        # is the admit (the request leaves its queue at once).
                        try:
                            admission = await self._pipeline.admit(action.request)
                        except SluiceError as error:
                            responses = stream.admit_failed(error)
                        else:
                            responses = stream.admitted(admission)
                        for response in responses:
                            yield response
                    else:
                        yield action.response
                # Resumed once grpc took the answers: now the bookkeeping they did not wait for.
                stream.settle()
                if stream.complete:
                    return  # the response ended: end the RPC now rather than wait for a reset
            if stream.response_pending:
                # A client reset can reach us as a plain end of the request iterator with the
                # cancellation a moment behind: give it that moment before calling the cut-short
                # response an upstream error.
                await asyncio.sleep(RESET_GRACE_S)
        except (asyncio.CancelledError, GeneratorExit):
            # Reset by Envoy (client gone) — whether we were awaiting or parked at a yield.
            cancelled = True
            raise
        except ProtocolViolation as violation:
            log.warning("ext_proc protocol violation: %s", violation)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(violation))
        except _OverBudget:
            limit = self._budget.limit
            log.info("ext_proc connection %s holds over %d bytes: call ended", peer, limit)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"connection buffer limit reached ({limit} bytes held for its calls)",
            )
        except Exception:
            # Anything unexpected ends the RPC with a gRPC error so Envoy's failure mode
            # (failure_mode_allow: FailOpen / FailClose) decides what the client sees.
            log.exception("ext_proc stream failed")
            await context.abort(grpc.StatusCode.INTERNAL, "endpoint picker internal error")
        finally:
            self._budget.change(peer, -held)
            stream.close(cancelled=cancelled or context.cancelled())


class ExtProcServer:
    """The Endpoint Picker Protocol on `--grpc-port` (TLS unless `secure_serving=False`).

    >>> server = ExtProcServer(pipeline, ServerOptions(grpc_port=9002))
    >>> port = await server.start()      # the bound port (useful with grpc_port=0)
    >>> await server.stop(grace=5)
    """

    def __init__(
        self,
        pipeline: Pipeline,
        server_options: ServerOptions | None = None,
        stream_options: StreamOptions | None = None,
        also_serve: Sequence[SharedService] = (),
    ) -> None:
        options = server_options or ServerOptions()
        self._impl: H2ExtProcServer | GrpcExtProcServer
        if options.transport in ("h2", "hyper"):
            routes = {path: route for s in also_serve for path, route in s.h2_routes().items()}
            self._impl = H2ExtProcServer(pipeline, options, stream_options, routes)
        else:
            self._impl = GrpcExtProcServer(pipeline, options, stream_options, also_serve)

    @property
    def port(self) -> int | None:
        return self._impl.port

    async def start(self) -> int:
        return await self._impl.start()

    async def stop(self, grace: float | None = None) -> None:
        await self._impl.stop(grace)

    async def wait_for_termination(self) -> None:
        await self._impl.wait_for_termination()


class GrpcExtProcServer:
    """The same service on grpc.aio (`transport="grpc"`)."""

    def __init__(
        self,
        pipeline: Pipeline,
        server_options: ServerOptions | None = None,
        stream_options: StreamOptions | None = None,
        also_serve: Sequence[SharedService] = (),
    ) -> None:
        self._pipeline = pipeline
        self._server_options = server_options or ServerOptions()
        self._stream_options = stream_options or StreamOptions()
        self._also_serve = tuple(also_serve)
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None

    async def start(self) -> int:
        opts = self._server_options
        limits = opts.limits_for(self._stream_options)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                ("grpc.max_concurrent_streams", limits.max_concurrent_streams),
                ("grpc.max_metadata_size", limits.max_header_list_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        budget = ConnectionBudget(limits.max_connection_buffer_bytes)
        servicer = ExternalProcessor(self._pipeline, self._stream_options, budget)
        # Registered by hand (not add_ExternalProcessorServicer_to_server) for the serializer:
        # the frequent answers are already bytes (wire.py) and must not be serialized again.
        handlers = {
            "Process": grpc.stream_stream_rpc_method_handler(
                servicer.Process,
                request_deserializer=ProcessingRequest.FromString,
                response_serializer=wire.serialize,
            )
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )
        server.add_registered_method_handlers(SERVICE_NAME, handlers)
        for service in self._also_serve:
            service.add_to_grpc_server(server)
        address = f"{opts.host}:{opts.grpc_port}"
        if opts.secure_serving:
            credentials = (
                tls.reloading_server_credentials(opts.cert_path)
                if opts.cert_reload and opts.cert_path is not None
                else tls.server_credentials(opts.cert_path)
            )
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
        await server.start()
        self._server, self.port = server, port
        log.info("ext_proc listening on %s:%d (tls=%s)", opts.host, port, opts.secure_serving)
        return port

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()
