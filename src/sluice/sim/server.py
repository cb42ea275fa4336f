"""The HTTP front of one engine (aiohttp): vLLM's OpenAI routes, /health, /metrics and the fault
admin endpoint."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import orjson
from aiohttp import web

from sluice.sim.faults import FaultMode, Faults
from sluice.sim.openai import (
    DONE,
    Kind,
    OpenAIError,
    Options,
    ParsedRequest,
    ResponseWriter,
    ServedModels,
    parse_request,
    usage,
)
from sluice.sim.runner import EngineRunner, TokenStream

JSON = "application/json"
DROP_AFTER_CHUNKS = 2  # drop_midstream cuts the connection after this many token frames


@dataclass
class EngineFront:
    runner: EngineRunner
    models: ServedModels
    options: Options
    faults: Faults

    def __post_init__(self) -> None:
        self._ids = itertools.count()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/admin/faults", self.get_faults)
        app.router.add_post("/admin/faults", self.set_faults)
        app.router.add_post("/reset_prefix_cache", self.reset_prefix_cache)
        return app

    async def reset_prefix_cache(self, request: web.Request) -> web.Response:
        """vLLM's dev endpoint: 200 once the cache is empty (an AllBlocksCleared event), 400
        while blocks are in use."""
        if self.runner.reset_prefix_cache():
            return web.Response()
        return web.Response(status=400, text="blocks are in use; retry when idle\n")

    # ---- plain routes -------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.Response()

    async def list_models(self, request: web.Request) -> web.Response:
        return web.Response(body=self.models.listing(self.options.max_model_len), content_type=JSON)

    async def metrics(self, request: web.Request) -> web.Response:
        if self.faults.hits(FaultMode.NO_METRICS):
            return web.Response(status=503, text="metrics disabled by fault injection\n")
        return web.Response(
            text=self.runner.metrics_text(), content_type="text/plain", charset="utf-8"
        )

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.faults.as_dict()), content_type=JSON)

    async def set_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.update(orjson.loads(await request.read()))
        except (ValueError, orjson.JSONDecodeError) as exc:
            return web.Response(
                status=400, body=orjson.dumps({"error": str(exc)}), content_type=JSON
            )
        return web.Response(body=orjson.dumps(self.faults.as_dict()), content_type=JSON)

    # ---- inference ----------------------------------------------------------------------------

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._infer("completion", request)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._infer("chat", request)

    async def _infer(self, kind: Kind, request: web.Request) -> web.StreamResponse:
        if self.faults.hits(FaultMode.ERROR500):
            return _error(
                OpenAIError(500, "injected fault: internal server error", "InternalServerError")
            )
        if self.faults.hits(FaultMode.HANG):
            await self.faults.wait_cleared()
            return _error(
                OpenAIError(503, "injected fault: hung request released", "ServiceUnavailableError")
            )
        drop = self.faults.hits(FaultMode.DROP_MIDSTREAM)
        try:
            body = orjson.loads(await request.read())
            parsed = parse_request(
                kind,
                body,
                request_id=f"{next(self._ids)}",
                models=self.models,
                options=self.options,
            )
            stream = self.runner.submit(parsed.request)
        except orjson.JSONDecodeError:
            return _error(OpenAIError(400, "the request body is not valid JSON"))
        except OpenAIError as exc:
            return _error(exc)
        except ValueError as exc:
            return _error(OpenAIError(400, str(exc)))
        try:
            if parsed.stream:
                return await self._stream(request, parsed, stream, drop)
            return await self._whole(request, parsed, stream, drop)
        except ConnectionResetError:  # the client went away mid-stream: free its KV, quietly
            return web.Response(status=499)
        finally:
            if not stream.finished:
                self.runner.abort(parsed.request.request_id)

    async def _whole(
        self, request: web.Request, parsed: ParsedRequest, stream: TokenStream, drop: bool
    ) -> web.StreamResponse:
        while not stream.finished:
            await stream.wait()
            stream.delivered = stream.seq.num_output
        if drop:
            _cut(request)
            return web.Response(status=500)  # never sent: the transport is gone
        seq = stream.seq
        writer = ResponseWriter(parsed)
        usage_ = usage(seq.request.prompt_tokens, seq.num_output, seq.cached_tokens or 0)
        body = writer.full(seq.num_output, seq.finish_reason or "length", usage_)
        return web.Response(body=body, content_type=JSON)

    async def _stream(
        self, request: web.Request, parsed: ParsedRequest, stream: TokenStream, drop: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        writer = ResponseWriter(parsed)
        frames = 0
        while True:
            await stream.wait()
            seq = stream.seq
            count = stream.pending
            if count > 0:
                start, stream.delivered = stream.delivered, seq.num_output
                finish = seq.finish_reason if seq.finished else None
                await response.write(writer.chunk(start, count, finish))
                frames += 1
                if drop and frames >= DROP_AFTER_CHUNKS:
                    _cut(request)
                    return response
            if seq.finished:
                break
        if writer.include_usage:
            await response.write(
                writer.usage_chunk(
                    usage(seq.request.prompt_tokens, seq.num_output, seq.cached_tokens or 0)
                )
            )
        await response.write(DONE)
        await response.write_eof()
        return response


def _error(error: OpenAIError) -> web.Response:
    return web.Response(status=error.status, body=error.body(), content_type=JSON)


def _cut(request: web.Request) -> None:
    """Drop the TCP connection without finishing the response."""
    if request.transport is not None:
        request.transport.abort()  # type: ignore[attr-defined]
