"""ext_proc's `Process` call on Sluice's gRPC server (`sluice.net`) — no grpc.aio.

Why not grpc.aio: every message (≈ 8 per request in FULL_DUPLEX_STREAMED) is a batch operation
completed on grpc's poller thread and handed back to the event loop; that hand-off, not
Sluice's logic, was most of Sluice's CPU (benchmarks/extproc_variants.py, arm `floor`). Here a
message costs a frame parse, a protobuf parse and the `ExtProcStream` step, all inside
`data_received`, and the answers of one read leave in one write. HTTP/2 is Sluice's own frame
layer (`transport="h2"`, `sluice.net.frames`) or python-hyper's `h2` (`transport="hyper"`);
both pass the same RFC 9113 conformance, limit and fuzz tests.

The port routes by `:path`: `/envoy.service.ext_proc.v3.ExternalProcessor/Process` here, gRPC
health when the app adds it (`--health-checking`), UNIMPLEMENTED for anything else. HTTP/2
itself, gRPC framing and the limits (streams, buffers, floods, resets) are `sluice.net`'s.

Per call: a reset or a lost connection = the client went away (`CLIENT_GONE`), which cancels an
admission in progress, exactly as the grpc.aio shell does. Bytes a call holds (a request body
being collected, messages waiting behind an admission) count against the connection's buffer
limit.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from google.protobuf.message import DecodeError

from sluice.director.contract import Pipeline
from sluice.extproc import tls
from sluice.extproc.options import ServerOptions, StreamOptions
from sluice.extproc.stream import Admit, ExtProcStream, ProtocolViolation
from sluice.extproc.wire import Answer, ProcessingRequest
from sluice.net.call import Call, Route
from sluice.net.grpc_framing import Status
from sluice.net.server import Engine, GrpcServer
from sluice.requests.errors import SluiceError

log = logging.getLogger(__name__)

PROCESS_PATH = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
RESET_GRACE_S = 0.05  # as server.RESET_GRACE_S: a reset may trail the end of the request


class ExtProcCall:
    """One ext_proc stream: the `ExtProcStream` state machine driven by a gRPC call."""

    __slots__ = (
        "_admitting", "_backlog", "_backlog_bytes", "_call", "_grace", "_logic", "_pipeline",
        "_settle_due", "_task",
    )  # fmt: skip

    def __init__(self, call: Call, pipeline: Pipeline, options: StreamOptions) -> None:
        self._call = call
        self._pipeline = pipeline
        self._logic = ExtProcStream(pipeline, options)
        self._admitting = False
        self._backlog: deque[tuple[ProcessingRequest, int]] = deque()  # arrived while admitting
        self._backlog_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._settle_due = False

    # -- gRPC events ---------------------------------------------------------------------------

    def on_message(self, message: bytes) -> None:
        try:
            request = ProcessingRequest.FromString(message)
        except DecodeError:
            self._fail(Status.INVALID_ARGUMENT, "malformed ProcessingRequest")
            return
        if self._admitting:  # answers must keep their order: wait until the admission is done
            self._backlog.append((request, len(message)))
            self._backlog_bytes += len(message)
            self._hold()
            return
        self._deliver(request)

    def on_half_close(self) -> None:
        """The client half-closed: answer with trailers once everything is answered."""
        if self._admitting or self._grace is not None or self._call.ended:
            return
        if self._logic.response_pending:
            # As the grpc.aio shell: a client reset can trail a clean end by a moment.
            loop = asyncio.get_running_loop()
            self._grace = loop.call_later(RESET_GRACE_S, self._end_after_grace)
            return
        self._end(Status.OK, "")

    def on_cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._close(cancelled=True)

    # -- the stream ----------------------------------------------------------------------------

    def _deliver(self, request: ProcessingRequest) -> None:
        logic = self._logic
        try:
            actions = logic.receive(request)
        except ProtocolViolation as violation:
            log.warning("ext_proc protocol violation: %s", violation)
            self._fail(Status.FAILED_PRECONDITION, str(violation))
            return
        except Exception:
            # As the grpc.aio shell: a gRPC error lets the gateway's failure mode decide.
            log.exception("ext_proc stream failed")
            self._fail(Status.INTERNAL, "endpoint picker internal error")
            return
        for action in actions:
            if isinstance(action, Admit):
                self._admitting = True
                self._task = asyncio.get_running_loop().create_task(self._admit(action))
            else:
                self._send(action.response)
        if not self._hold():
            return
        if logic.unsettled or logic.complete:
            self._settle_after_write()
        if logic.complete:
            self._call.finish()  # the RPC ends with the answer that ends the response

    async def _admit(self, action: Admit) -> None:
        # Waiting here keeps the stream open while flow control queues the request; a reset
        # cancels this task and so the admit (the request leaves its queue at once).
        try:
            admission = await self._pipeline.admit(action.request)
        except SluiceError as error:
            responses = self._logic.admit_failed(error)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ext_proc stream failed")
            self._task = None
            self._fail(Status.INTERNAL, "endpoint picker internal error")
            return
        else:
            responses = self._logic.admitted(admission, on_evicted=self._on_evicted)
        self._task = None
        self._admitting = False
        for response in responses:
            self._send(response)
        while self._backlog and not self._admitting and not self._call.ended:
            request, size = self._backlog.popleft()
            self._backlog_bytes -= size
            self._deliver(request)
        if self._call.ended:
            return
        self._hold()
        if self._call.remote_ended and not self._admitting:
            self.on_half_close()

    def _on_evicted(self, error: SluiceError) -> None:
        """Flow control ended the routed request before its first token: answer the 429 and
        end the RPC (Envoy resets the upstream request on the ImmediateResponse)."""
        if self._call.ended:
            return
        answers = self._logic.evicted(error)
        for answer in answers:
            self._send(answer)
        if answers:
            self._call.finish()
            self._close(cancelled=False)

    def _send(self, response: Answer) -> None:
        # Hot answers arrive pre-serialized (wire.py); the rest are serialized once here.
        self._call.send(response if type(response) is bytes else response.SerializeToString())  # type: ignore[union-attr]

    def _hold(self) -> bool:
        return self._call.hold(self._logic.buffered_body_bytes + self._backlog_bytes)

    def _settle_after_write(self) -> None:
        if not self._settle_due:
            self._settle_due = True
            self._call.after_write(self._settle)

    def _settle(self) -> None:
        """Bookkeeping the answers did not wait for (usage, finishing the admission): Envoy
        already has them while this runs."""
        self._settle_due = False
        try:
            self._logic.settle()
        except Exception:
            # The answer is out and the client has its response: nothing to fail any more.
            log.exception("ext_proc response bookkeeping failed")
        if self._logic.complete:
            self._close(cancelled=False)

    def _end_after_grace(self) -> None:
        self._grace = None
        if not self._call.ended:
            self._end(Status.OK, "")

    def _fail(self, status: Status, message: str) -> None:
        self._end(status, message)

    def _end(self, status: Status, message: str) -> None:
        self._call.finish(status, message)
        self._close(cancelled=False)

    def _close(self, *, cancelled: bool) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self._backlog.clear()
        self._backlog_bytes = 0
        try:
            self._logic.close(cancelled=cancelled)
        except Exception:
            log.exception("ext_proc stream close failed")


class H2ExtProcServer:
    """Same surface as `ExtProcServer` (start/stop/wait_for_termination/port)."""

    def __init__(
        self,
        pipeline: Pipeline,
        server_options: ServerOptions | None = None,
        stream_options: StreamOptions | None = None,
        extra_routes: Mapping[str, Route] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.server_options = options = server_options or ServerOptions()
        self.stream_options = stream = stream_options or StreamOptions()
        limits = options.limits_for(stream)

        def process(call: Call) -> ExtProcCall:
            return ExtProcCall(call, pipeline, stream)

        routes: dict[str, Route] = {PROCESS_PATH: process, **(extra_routes or {})}
        self._routes = routes
        self.limits = limits
        self._server: GrpcServer | None = None
        self._reload: asyncio.Task[None] | None = None
        self.port: int | None = None

    @property
    def connections(self) -> int:
        return len(self._server.connections) if self._server is not None else 0

    async def start(self) -> int:
        opts = self.server_options
        context = self._tls_context() if opts.secure_serving else None
        engine: Engine = "hyper" if opts.transport == "hyper" else "frames"
        self._server = GrpcServer(self._routes, self.limits, engine=engine, ssl_context=context)
        self.port = await self._server.start(opts.host, opts.grpc_port)
        if context is not None and opts.cert_reload and opts.cert_path is not None:
            watch = tls.CertificateWatch(opts.cert_path)
            self._reload = asyncio.create_task(self._reload_certificates(context, watch))
        log.info(
            "ext_proc (%s) listening on %s:%d (tls=%s)",
            opts.transport,
            opts.host,
            self.port,
            bool(context),
        )
        return self.port

    def _tls_context(self) -> ssl.SSLContext:
        cert_path = self.server_options.cert_path
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.set_alpn_protocols(["h2"])
        if cert_path is not None:
            context.load_cert_chain(cert_path / tls.CERT_FILE, cert_path / tls.KEY_FILE)
            return context
        cert, key = tls.self_signed_pair()
        with tempfile.TemporaryDirectory(prefix="sluice-tls-") as tmp:
            (Path(tmp) / tls.CERT_FILE).write_bytes(cert)
            (Path(tmp) / tls.KEY_FILE).write_bytes(key)
            context.load_cert_chain(Path(tmp) / tls.CERT_FILE, Path(tmp) / tls.KEY_FILE)
        return context

    async def _reload_certificates(
        self, context: ssl.SSLContext, watch: tls.CertificateWatch
    ) -> None:
        """Loads a rotated pair into the listening context: connections accepted afterwards
        are served the new certificate, those already open keep theirs."""
        while True:
            await asyncio.sleep(self.server_options.cert_reload_interval_s)
            if watch.changed_pair() is None:
                continue
            try:
                context.load_cert_chain(
                    watch.cert_path / tls.CERT_FILE, watch.cert_path / tls.KEY_FILE
                )
            except (OSError, ssl.SSLError) as exc:  # rotated again meanwhile: the next look
                log.warning("ext_proc certificate not reloaded: %s", exc)
                continue
            log.info("ext_proc certificate reloaded from %s", watch.cert_path)

    async def stop(self, grace: float | None = None) -> None:
        if self._reload is not None:
            self._reload.cancel()
            self._reload = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
