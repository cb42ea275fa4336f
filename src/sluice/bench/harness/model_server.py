"""A zero-latency OpenAI-like model server (aiohttp) that records what reached it."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}


class FakeModelServer:
    """Answers /v1/completions and /v1/chat/completions at once, streamed (SSE) or not, naming
    itself in `x-served-by` and recording the headers of every request that reached it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self.dropped = 0  # requests whose connection went away before they were answered
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int = 0) -> int:
        app = web.Application()
        app.router.add_post("/v1/completions", self._handle)
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append({k.lower(): v for k, v in request.headers.items()})
        self.bodies.append(body)
        parsed = json.loads(body)
        # As vLLM: a stream's head goes out at once, its first token after the prefill; a
        # non-streamed answer comes whole after it.
        prefill = float(request.headers.get("x-test-first-token-delay-ms", "0")) / 1000
        if not parsed.get("stream"):
            await self._prefill(prefill)
            answer = {"choices": [{"text": "hey"}], "usage": USAGE, "served_by": self.name}
            return web.json_response(answer, headers={"x-served-by": self.name})
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "x-served-by": self.name}
        )
        await response.prepare(request)
        await self._prefill(prefill)
        for word in ("he", "y"):
            await response.write(f'data: {{"choices":[{{"text":"{word}"}}]}}\n\n'.encode())
        await response.write(f"data: {json.dumps({'choices': [], 'usage': USAGE})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _prefill(self, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.dropped += 1  # the gateway reset the request
            raise
