"""`sluice sim` checked against a real engine: one llama-server and one simulated vLLM engine,
measured by the same client code over HTTP (docs/sim.md, "Checked against the real engine").

1. TTFT against uncached prompt tokens: fresh prompts of several lengths, TTFT of a streamed
   request; a least-squares line per engine (intercept, per-token slope, R²).
2. Prefix reuse: the same prompt twice; the second's TTFT and the cached tokens each reports.
3. A second request with the same new prefix, sent while the first is still prefilling, while
   it decodes, and after it finished: how many prompt tokens the engine computed for it
   (llama.cpp `timings.prompt_n`; the sim's `prompt_tokens - cached_tokens`).
4. Keep-alive: whether the engine closes a connection right after a streamed response, and after
   4 s and 5.5 s idle.
5. Decoding alone: tokens per second of one request (throughput beside the latencies above).
6. Why the build converts the model: prefill rate of the wheel's Q4_1 file against the Q4_0
   conversion (two llama-servers, one after the other, the same fresh prompts).

    .venv/bin/python benchmarks/llamacpp_vs_sim.py
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
import random
import select
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp

from sluice.bench.engines.build import LlamaCppInstall, find_install, install_dir
from sluice.bench.engines.llamacpp import LlamaServerSettings, start_llama_servers
from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.harness.ports import free_port_block, wait_for_port

SIZES = (64, 256, 512, 1024)
_SYLLABLES = ("ka", "lo", "mi", "ren", "tu", "sa", "vor", "el", "dai", "qu", "ob", "nix")


@dataclass
class Reply:
    ttft_s: float
    e2e_s: float
    prompt_tokens: int
    cached_tokens: int

    @property
    def computed(self) -> int:
        return self.prompt_tokens - self.cached_tokens


@dataclass
class Engine:
    name: str
    url: str
    model: str
    chars_per_token: float  # to size prompts; the sim's tokenizer is 4 characters a token


def session() -> aiohttp.ClientSession:
    # A new connection per request: llama-server closes each connection right after a streamed
    # response, and aiohttp does not resend a request that meets such a closed connection.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


def text(tokens: int, chars_per_token: float, rng: random.Random) -> str:
    out: list[str] = []
    length = 0
    while length < tokens * chars_per_token:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))
        out.append(word)
        length += len(word) + 1
    return " ".join(out)


async def send(
    session: aiohttp.ClientSession, engine: Engine, prompt: str, max_tokens: int = 1
) -> Reply:
    body = {
        "model": engine.model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    started = time.monotonic()
    ttft = math.nan
    usage: dict[str, object] = {}
    async with session.post(engine.url + "/v1/completions", json=body) as response:
        assert response.status == 200, await response.text()
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            event = json.loads(line[6:])
            if math.isnan(ttft) and any(c.get("text") for c in event.get("choices", [])):
                ttft = time.monotonic() - started
            usage = event.get("usage") or usage
    details = usage.get("prompt_tokens_details") or {}
    assert isinstance(details, dict)
    return Reply(
        ttft,
        time.monotonic() - started,
        int(usage.get("prompt_tokens", 0)),  # type: ignore[call-overload]
        int(details.get("cached_tokens", 0)),
    )


def fit(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least squares y = a + b x: (a, b, R²)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - a - b * x) ** 2 for x, y in points)
    return a, b, 1 - ss_res / ss_tot if ss_tot else 1.0


async def ttft_line(engine: Engine, rng: random.Random) -> tuple[str, list[tuple[float, float]]]:
    points = []
    async with session() as http:
        for size in SIZES:
            for _ in range(2):
                reply = await send(http, engine, text(size, engine.chars_per_token, rng))
                points.append((float(reply.computed), reply.ttft_s))
    a, b, r2 = fit(points)
    row = (
        f"| {engine.name} | {a * 1000:.1f} ms | {b * 1000:.3f} ms/token ({1 / b:.0f} tokens/s) "
        f"| {r2:.3f} | " + ", ".join(f"{int(x)}: {y * 1000:.0f}" for x, y in points[::2]) + " |"
    )
    return row, points


async def decode_rate(engine: Engine, rng: random.Random) -> str:
    """Tokens per second of one request decoding alone (128 tokens after a short prompt)."""
    async with session() as http:
        reply = await send(http, engine, text(16, engine.chars_per_token, rng), 128)
    return f"| {engine.name} | {127 / (reply.e2e_s - reply.ttft_s):.0f} tokens/s |"


async def reuse(engine: Engine, rng: random.Random) -> str:
    prompt = text(500, engine.chars_per_token, rng)
    async with session() as http:
        cold = await send(http, engine, prompt)
        warm = await send(http, engine, prompt)
    return (
        f"| {engine.name} | {cold.prompt_tokens} | {cold.ttft_s * 1000:.0f} ms "
        f"| {warm.ttft_s * 1000:.0f} ms ({warm.ttft_s / cold.ttft_s:.1%}) "
        f"| {warm.cached_tokens} of {warm.prompt_tokens} |"
    )


async def second_request(engine: Engine, rng: random.Random) -> str:
    """B shares A's new 600-token prefix; sent at four moments of A's life (A: 48 tokens out)."""
    cells = []
    async with session() as http:
        probe = await send(http, engine, text(600, engine.chars_per_token, rng), 48)
        prefill, life = probe.ttft_s, probe.e2e_s
        moments = (
            ("together", 0.0),
            ("mid-prefill", 0.5 * prefill),
            ("A decoding", prefill + 0.4 * (life - prefill)),
            ("A finished", life + 0.2),
        )
        for _, delay in moments:
            prefix = text(600, engine.chars_per_token, rng)
            first = asyncio.create_task(send(http, engine, prefix + " first question", 48))
            await asyncio.sleep(delay)
            if delay > life:
                await first
            second = await send(http, engine, prefix + " second question", 1)
            a = await first
            cells.append(f"{second.computed} of {second.prompt_tokens} (A: {a.computed})")
    return f"| {engine.name} | " + " | ".join(cells) + " |"


async def prefill_rate(
    install: LlamaCppInstall, settings: LlamaServerSettings, model: Path, rng: random.Random
) -> str:
    with start_llama_servers(1, install, replace(settings, model=model)) as servers:
        engine = Engine(model.name, servers[0].url, install.model_name, 4.0)
        engine.chars_per_token = 4000 / len(servers[0].tokenize(text(1000, 4.0, rng)))
        rates = []
        async with session() as http:
            for _ in range(3):
                reply = await send(http, engine, text(500, engine.chars_per_token, rng))
                rates.append(reply.computed / reply.ttft_s)
    return f"| {model.name} | {max(rates):.0f} |"


def keep_alive(engine: Engine) -> str:
    host, port = engine.url.removeprefix("http://").split(":")
    body = json.dumps({"model": engine.model, "prompt": "hi", "max_tokens": 2, "stream": True})

    def closed_after(wait_s: float, streamed: bool) -> bool:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        if streamed:
            connection.request("POST", "/v1/completions", body, {"content-type": "x/json"})
        else:
            connection.request("GET", "/health")
        connection.getresponse().read()
        time.sleep(wait_s)
        sock = connection.sock
        readable, _, _ = select.select([sock], [], [], 0.05)
        gone = bool(readable) and sock.recv(1) == b""
        connection.close()
        return gone

    after_stream = closed_after(0.0, streamed=True)
    after_4 = closed_after(4.0, streamed=False)
    after_6 = closed_after(5.5, streamed=False)
    say = {True: "closed", False: "open"}
    return f"| {engine.name} | {say[after_stream]} | {say[after_4]} | {say[after_6]} |"


def start_sim(port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "sluice.sim.cli", "--count", "1", "--port", str(port)]
    command += ["--host", "127.0.0.1", "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, process)
    return process


async def main_async() -> int:
    install = find_install()
    if install is None:
        print(f"llama-server is not built ({install_dir()}): run `make engines`", file=sys.stderr)
        return 1
    rng = random.Random(0)
    started = time.monotonic()
    first = free_port_block(2)
    sim = start_sim(first + 1)
    settings = LlamaServerSettings(threads=1, slots=2, context_per_slot=2048)
    try:
        with start_llama_servers(1, install, settings, addresses=[("127.0.0.1", first)]) as real:
            llama = real[0]
            calibration = llama.tokenize(text(1000, 4.0, rng))
            engines = [
                Engine(
                    f"llama-server ({install.model.name}, 1 thread)",
                    llama.url,
                    install.model_name,
                    4000 / len(calibration),
                ),
                Engine(
                    "sluice sim (llama-8b-h100)", f"http://127.0.0.1:{first + 1}", "sim-model", 4
                ),
            ]
            lines = [
                f"Measured by benchmarks/llamacpp_vs_sim.py; llama-server ready in "
                f"{llama.ready_s:.2f} s, RSS {llama.rss_mb():.0f} MiB; "
                f"machine: {os.cpu_count()} CPUs shared with other work.",
                "",
                "TTFT against uncached prompt tokens (streamed completions, 1 output token):",
                "",
                "| engine | intercept | slope | R² | uncached tokens: TTFT ms |",
                "|---|---|---|---|---|",
            ]
            for engine in engines:
                row, _ = await ttft_line(engine, rng)
                lines.append(row)
            lines += [
                "",
                "Prefix reuse (the same ~500-token prompt twice):",
                "",
                "| engine | prompt tokens | cold TTFT | warm TTFT | cached tokens reported |",
                "|---|---|---|---|---|",
            ]
            for engine in engines:
                lines.append(await reuse(engine, rng))
            lines += [
                "",
                "Request B shares request A's new ~600-token prefix; prompt tokens computed for "
                "B, by when B is sent:",
                "",
                "| engine | together | mid-prefill | A decoding | A finished |",
                "|---|---|---|---|---|",
            ]
            for engine in engines:
                lines.append(await second_request(engine, rng))
            lines += [
                "",
                "Keep-alive (does the engine close the client's connection?):",
                "",
                "| engine | right after a streamed response | after 4 s idle | after 5.5 s idle |",
                "|---|---|---|---|",
            ]
            lines += [keep_alive(engine) for engine in engines]
            lines += ["", "Decoding alone (one request, 128 tokens):", ""]
            lines += ["| engine | generated |", "|---|---|"]
            for engine in engines:
                lines.append(await decode_rate(engine, rng))
        lines += ["", "Prefill rate by model file (fresh ~500-token prompts, best of 3):", ""]
        lines += ["| model file | prompt tokens/s |", "|---|---|"]
        for model in (install.source_model, install.model):
            lines.append(await prefill_rate(install, settings, model, rng))
    finally:
        sim.terminate()
        sim.wait(10)
    lines.append(f"Wall time {time.monotonic() - started:.0f} s.")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(asyncio.run(main_async()))
