"""A minimal OpenAI-like model server for the proxy tests, with knobs for misbehaving.

It speaks just enough of vLLM's API — completions, chat, embeddings, models, streaming with a
final usage chunk — and records what it received, so tests can check what crossed the proxy.
Per-request knobs ride on `x-test-*` headers (which the proxy forwards like any other header).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from sluice.datalayer.endpoint import Endpoint

PROMPT_TOKENS = 5  # every request "costs" this many prompt tokens
MAX_MODEL_LEN = 8192  # more max_tokens than this is refused with a 400, as vLLM does
SMALL_SOCKET_BUFFER = 64 * 1024


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class FakeEngine:
    name: str
    models: tuple[str, ...] = ("test-model",)
    # Close each connection after reading the request, before any response byte.
    close_before_response: bool = False
    # Answer every generation request 500 at once (a broken engine that looks idle).
    fail_with_500: bool = False
    received: list[Received] = field(default_factory=list)
    streams_started: int = 0
    streams_cancelled: int = 0  # the proxy dropped the connection mid-stream
    bytes_streamed: int = 0  # payload bytes the bulk stream got past `write()`
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(name=f"{self.name}-rank-0", address="127.0.0.1", port=self.port)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/v1/chat/completions", self._generate)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening and drop every open connection, like a killed process."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _record(self, request: web.Request) -> bytes:
        body = await request.read()
        headers = _lowered(request.headers)
        self.received.append(Received(request.method, request.path, headers, body))
        if self.close_before_response:
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPInternalServerError  # never sent: the connection is already closed
        return body

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        payload = orjson.loads(await self._record(request))
        if self.fail_with_500:
            return web.json_response({"error": {"message": "engine broken"}}, status=500)
        tokens = int(payload.get("max_tokens") or 4)
        if tokens + PROMPT_TOKENS > MAX_MODEL_LEN:  # as vLLM: refused at once, no usage
            return web.json_response(
                {"error": {"message": f"max_tokens {tokens} exceeds the context"}}, status=400
            )
        if not payload.get("stream"):
            text = " ".join(f"tok{i}" for i in range(tokens))
            return web.json_response(
                {
                    "id": "cmpl-1",
                    "object": "text_completion",
                    "model": payload["model"],
                    "served_by": self.name,
                    "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
                    "usage": _usage(tokens),
                },
                dumps=lambda obj: orjson.dumps(obj).decode(),
            )
        if "x-test-stream-bytes" in request.headers:
            return await self._bulk_stream(request, int(request.headers["x-test-stream-bytes"]))
        return await self._token_stream(request, payload, tokens)

    async def _token_stream(
        self, request: web.Request, payload: dict[str, Any], tokens: int
    ) -> web.StreamResponse:
        delay = float(request.headers.get("x-test-token-delay-ms", "0")) / 1000
        # As vLLM: the response head goes out at once, the first token after the prefill.
        prefill = float(request.headers.get("x-test-first-token-delay-ms", "0")) / 1000
        fail_after = int(request.headers.get("x-test-fail-after-tokens", "-1"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.streams_started += 1
        try:
            if prefill:
                await asyncio.sleep(prefill)
            for i in range(tokens):
                if i == fail_after and request.transport is not None:
                    request.transport.abort()  # crash mid-stream
                    return response
                chunk = {
                    "id": "cmpl-1",
                    "model": payload["model"],
                    "served_by": self.name,
                    "choices": [{"index": 0, "text": f"tok{i} ", "finish_reason": None}],
                }
                await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                if delay:
                    await asyncio.sleep(delay)
            final = {"id": "cmpl-1", "choices": [], "usage": _usage(tokens)}
            await response.write(b"data: " + orjson.dumps(final) + b"\n\ndata: [DONE]\n\n")
        except (asyncio.CancelledError, ConnectionError):
            self.streams_cancelled += 1
            raise
        return response

    async def _bulk_stream(self, request: web.Request, total: int) -> web.StreamResponse:
        """As many SSE bytes as fast as the reader takes them (for backpressure tests)."""
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:  # a small, fixed send buffer: what the kernel may hold is known
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_SOCKET_BUFFER)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.streams_started += 1
        event = b"data: " + b"x" * (16 * 1024 - 8) + b"\n\n"
        try:
            while self.bytes_streamed < total:
                await response.write(event)
                self.bytes_streamed += len(event)
            await response.write(b"data: [DONE]\n\n")
        except (asyncio.CancelledError, ConnectionError):
            self.streams_cancelled += 1
            raise
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        await self._record(request)
        body = {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS},
            "served_by": self.name,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _models(self, request: web.Request) -> web.Response:
        data = [
            {"id": m, "object": "model", "owned_by": self.name, "max_model_len": MAX_MODEL_LEN}
            for m in self.models
        ]
        return web.Response(
            body=orjson.dumps({"object": "list", "data": data}), content_type="application/json"
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        """vLLM's load gauges, always idle (not recorded: a scraper polls them every 50 ms). An
        engine without such a page gets no traffic from a real Sluice, so the fake has one."""
        page = (
            "vllm:num_requests_waiting 0\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc 0\n"
        )
        return web.Response(text=page)

    async def _echo(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        echo = {
            "served_by": self.name,
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "body": body.decode(),
        }
        return web.Response(body=orjson.dumps(echo), content_type="application/json")


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _usage(completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": PROMPT_TOKENS + completion_tokens,
    }


def unused_endpoint(name: str = "refused") -> Endpoint:
    """An endpoint on a loopback port nobody listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return Endpoint(name=f"{name}-rank-0", address="127.0.0.1", port=port)
