"""The standalone proxy's HTTP server: routes, body limits, and the pipeline calls.

    proxy = ProxyServer(pipeline, Limits())
    await proxy.start("127.0.0.1", 8080)
    ...
    await proxy.stop()

Routes (`routes.py`: an allow-list, origin-form targets only):
* `POST /v1/completions | /v1/chat/completions | /v1/embeddings | /v1/responses` —
  parse → admit (flow control + scheduling) → forward.
* `GET /v1/models` — the union of every endpoint's models.
* routes added with `ProxyOptions.extra_routes` (`--proxy-allowed-routes`) — passed through:
  admitted like an inference request when the body is JSON naming a `model`, otherwise sent to
  `pipeline.pick_any()`.
* anything else — 404 (405 for an allowed path with another method), never forwarded.

It is built on aiohttp's low-level server (no router, no middlewares): the benchmark measures this
hot path, and four fixed routes don't need a router.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web

from sluice.director.contract import Admission, Limits, Pipeline
from sluice.requests.errors import ErrorCode, SluiceError, shutting_down
from sluice.requests.model import HEADER_REQUEST_ID
from sluice.util.heap import freeze_start_up_heap

from .errors import error_response, payload_too_large, service_unavailable
from .forward import RelayOptions, Target, UntrackedTarget, UpstreamCall, forward
from .headers import SERVER, lowered, upstream_header_lines
from .models import list_models
from .routes import DEFAULT_ROUTES, INFERENCE_PATHS, MODELS_PATH, Route, route_error, split_target
from .upstream import DEFAULT_KEEPALIVE_S, UpstreamPool

log = logging.getLogger(__name__)

SERVER_HEADERS = {"Server": SERVER}
READY_PATH = "/readyz"  # answered by Sluice itself, never forwarded


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """Tuning knobs with safe defaults; none of them change behaviour, only timing."""

    connect_timeout_s: float = 5.0  # per endpoint; past it the next fallback is tried
    models_timeout_s: float = 2.0  # per endpoint, for the /v1/models fan-out
    # Idle engine connections are kept this long: below the engines' own 5 s (vLLM, llama.cpp),
    # so the proxy rarely sends on a connection the engine is closing.
    keepalive_timeout_s: float = DEFAULT_KEEPALIVE_S
    buffer_response_bytes: int = 1 << 20  # see RelayOptions
    shutdown_grace_s: float = 10.0  # `stop()` lets in-flight responses finish this long
    # Slow clients (issue #15 item 9): a request head must be complete this long after the
    # connection opened or the last response ended (aiohttp's keep-alive timer, which also
    # closes idle client connections), and its body must arrive within `body_timeout_s`.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    # A hung engine: no response head this long after the request went out → the next fallback,
    # or 504. Non-streamed responses send their head when generation ends, hence generous.
    first_byte_timeout_s: float = 300.0
    # `gc.freeze()` once started (`util.heap`), for a proxy mounted on its own; `sluice serve`
    # freezes its whole process instead. Process-wide, hence a knob.
    freeze_gc: bool = True
    # `--emit-endpoint-scores`: the scheduler's scores per endpoint as a response header.
    emit_endpoint_scores: bool = False
    # Routes forwarded besides the defaults (`routes.DEFAULT_ROUTES`): passed through, admitted
    # like an inference request when the body is JSON naming a `model`.
    extra_routes: frozenset[Route] = frozenset()


ClientSessionFactory = Callable[[], aiohttp.ClientSession]
UpstreamPoolFactory = Callable[[], UpstreamPool]


def default_upstream_pool(options: ProxyOptions | None = None) -> UpstreamPool:
    """The forwarding client: keep-alive connections pooled per endpoint, no connection limit
    (flow control already bounds concurrency)."""
    options = options or ProxyOptions()
    return UpstreamPool(
        connect_timeout_s=options.connect_timeout_s,
        keepalive_timeout_s=options.keepalive_timeout_s,
    )


def tuned_client_session(options: ProxyOptions | None = None) -> aiohttp.ClientSession:
    """The session for `/v1/models` (forwarding uses `UpstreamPool`): pooled connections, no
    per-request overhead.

    Endpoints are IP addresses, so there is no DNS on the hot path. Bodies pass through as
    bytes (no decompression), and no cookies or default headers are added: a shared cookie
    jar would leak one client's cookies into another's requests.
    """
    options = options or ProxyOptions()
    connector = aiohttp.TCPConnector(
        limit=0,  # flow control already bounds concurrency; don't queue twice
        keepalive_timeout=options.keepalive_timeout_s,
        ttl_dns_cache=None,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=options.connect_timeout_s),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        trust_env=False,
    )


class ProxyServer:
    """An OpenAI-compatible reverse proxy in front of a `Pipeline`."""

    def __init__(
        self,
        pipeline: Pipeline,
        limits: Limits | None = None,
        client_session_factory: ClientSessionFactory | None = None,
        options: ProxyOptions | None = None,
        upstream_pool_factory: UpstreamPoolFactory | None = None,
    ) -> None:
        options = options or ProxyOptions()
        self._pipeline = pipeline
        self._limits = limits or Limits()
        self._options = options
        self._relay_options = RelayOptions(
            buffer_response_bytes=options.buffer_response_bytes,
            emit_endpoint_scores=options.emit_endpoint_scores,
            first_byte_timeout_s=options.first_byte_timeout_s,
        )
        self._session_factory = client_session_factory or (lambda: tuned_client_session(options))
        self._session: aiohttp.ClientSession | None = None
        self._pool_factory = upstream_pool_factory or (lambda: default_upstream_pool(options))
        self._pool: UpstreamPool | None = None
        self._runner: web.ServerRunner | None = None
        self._port: int | None = None
        self.draining = False

    @property
    def port(self) -> int:
        """The bound port (useful after `start(port=0)`)."""
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    async def start(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        self._session = self._session_factory()
        self._pool = self._pool_factory()
        # handler_cancellation: a client that disconnects cancels its handler, which cancels
        # `admit` (leaving the queue) or the upstream request (stopping the generation).
        server = web.Server(
            self.handle,
            handler_cancellation=True,
            access_log=None,
            keepalive_timeout=self._options.header_timeout_s,
            # After a 408/413 aiohttp reads (and drops) the rest of the body before closing, so
            # the client sees the answer rather than a reset; 2 s of that, not its default 10 s,
            # or a slow-body client would hold the connection that long after its 408.
            lingering_time=2.0,
        )
        self._runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=self._options.shutdown_grace_s
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        self._port = self._runner.addresses[0][1]
        if self._options.freeze_gc:
            freeze_start_up_heap()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self._port = None

    def begin_drain(self) -> None:
        """Shutting down: still listening, so a late client gets a clean 503 with Retry-After
        (not a refused or reset connection); every answer from now on closes its connection."""
        self.draining = True

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one HTTP request (also usable to mount the proxy in another aiohttp app)."""
        response = await self._handle(request)
        if self.draining and not response.prepared:
            response.force_close()  # `Connection: close`: the client's next request goes elsewhere
        return response

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            if request.raw_path == READY_PATH and request.method == "GET":
                return self._readiness()
            if self.draining:
                raise shutting_down()  # before reading anything: nothing was done, retry
            path = split_target(request.raw_path)  # origin-form, no dot segments: else 400
            if path in INFERENCE_PATHS and request.method == "POST":
                return await self._inference(request, path)
            if path == MODELS_PATH and request.method == "GET":
                return await self._models()
            if (request.method, path) in self._options.extra_routes:
                return await self._passthrough(request, path)
            raise route_error(request.method, path, DEFAULT_ROUTES | self._options.extra_routes)
        except SluiceError as error:
            response = error_response(error)
            if error.code in (ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.REQUEST_TIMEOUT):
                response.force_close()  # the rest of the body was never read
            return response
        except Exception:  # a bug, not a request problem: still answer in the API's shape
            log.exception("proxy failed on %s %s", request.method, request.path)
            return error_response(SluiceError(ErrorCode.INTERNAL, "internal error"))

    def _readiness(self) -> web.Response:
        """HTTP readiness: 200 once the pool is loaded, 503 from the moment Sluice drains."""
        ready = self._pipeline.ready and not self.draining
        return web.Response(
            status=200 if ready else 503,
            text="ok\n" if ready else ("draining\n" if self.draining else "pool not loaded\n"),
            headers=SERVER_HEADERS,
        )

    async def _inference(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        body = await self._read_body(request)
        headers = lowered(request.headers.items())
        parsed = self._pipeline.parse(headers, body, path=path)
        admission = await self._pipeline.admit(parsed)
        return await self._forward(request, headers, admission)

    async def _models(self) -> web.StreamResponse:
        endpoints = self._pipeline.endpoints()
        if not endpoints:
            raise service_unavailable("the pool has no endpoints")
        listing = await list_models(self._client(), endpoints, self._options.models_timeout_s)
        if listing is None:
            raise SluiceError(ErrorCode.BAD_GATEWAY, "no endpoint answered /v1/models")
        return web.Response(
            body=orjson.dumps(listing), content_type="application/json", headers=SERVER_HEADERS
        )

    async def _passthrough(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        body = await self._read_body(request)
        headers = lowered(request.headers.items())
        if _names_a_model(body):
            parsed = self._pipeline.parse(headers, body, path=path)
            return await self._forward(request, headers, await self._pipeline.admit(parsed))
        request_id = headers.get(HEADER_REQUEST_ID) or uuid.uuid4().hex
        call = UpstreamCall(
            request.method, request.raw_path, upstream_header_lines(headers, request_id), body
        )
        target = UntrackedTarget((self._pipeline.pick_any(),))
        return await forward(request, call, target, self._upstream(), self._relay_options)

    async def _forward(
        self, request: web.BaseRequest, headers: dict[str, str], admission: Admission
    ) -> web.StreamResponse:
        parsed = admission.request
        call = UpstreamCall(
            request.method,
            request.raw_path,
            upstream_header_lines(headers, parsed.request_id),
            parsed.body,
        )
        target: Target = admission
        return await forward(request, call, target, self._upstream(), self._relay_options)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """The whole body, refusing (413) as soon as it is known to exceed the limit."""
        limit = self._limits.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise payload_too_large(limit)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._options.body_timeout_s):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > limit:  # chunked bodies have no Content-Length to check up front
                        raise payload_too_large(limit)
                    chunks.append(chunk)
        except TimeoutError:
            raise SluiceError(
                ErrorCode.REQUEST_TIMEOUT,
                f"request body not received within {self._options.body_timeout_s:g}s",
            ) from None
        return b"".join(chunks)

    def _upstream(self) -> UpstreamPool:
        if self._pool is None:
            raise RuntimeError("the proxy is not started")
        return self._pool

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the proxy is not started")
        return self._session


def _names_a_model(body: bytes) -> bool:
    """Whether a passthrough body is an inference request the pipeline should place."""
    if not body.lstrip().startswith(b"{"):
        return False
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(document, dict) and isinstance(document.get("model"), str)
