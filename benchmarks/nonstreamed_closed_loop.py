"""Non-streamed requests in a closed loop, the first thing a new user tries (issue #13): straight
to the engines round-robin, through Sluice's proxy, through real Envoy with Sluice as its
ext_proc, and through Envoy with response processing off (Sluice never sees a response byte).

Four `sluice sim` engines (`make run`'s pool: profile llama-8b-h100) serve every arm in turn; each
arm runs a closed loop of `--clients` clients sending unique ~500-word prompts (no two requests
share a prefix) with `max_tokens` 64, not streamed, for `--requests` requests; arms are
interleaved over `--rounds` rounds so they see the same machine. Targets, per round, against
round-robin in the same round: throughput >= 0.95x and e2e p50 <= 1.1x.

    .venv/bin/python benchmarks/nonstreamed_closed_loop.py [--rounds 2] [--requests 128]
        [--stream-share 0.0] [--json out.json]

Before issue #13 the proxy ran this at 5.6 req/s against round-robin's 18.0 (e2e p50 5.61 s vs
1.84 s): the room waited for each request's first response byte, which is its last.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from sluice.bench.harness.child import exit_on_sigterm, stop_processes
from sluice.bench.harness.envoy import REPO as ROOT
from sluice.bench.harness.envoy import Envoy, GatewayPorts, render_config, response_processing_off
from sluice.bench.harness.pool import serve_manifests
from sluice.bench.harness.ports import free_port, free_port_block

ENGINES = 4
WORDS = 500
MAX_TOKENS = 64
TARGET_THROUGHPUT, TARGET_E2E = 0.95, 1.1


def spawn(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)


async def wait_ready(http: aiohttp.ClientSession, url: str, timeout_s: float = 60) -> None:
    body = {"model": "sim-model", "prompt": "ready?", "max_tokens": 1}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            async with http.post(url + "/v1/completions", json=body) as response:
                if response.status == 200:
                    await response.read()
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(url)


def prompt(rng: random.Random) -> str:
    return " ".join(f"w{rng.randrange(1_000_000)}" for _ in range(WORDS))


async def closed_loop(
    http: aiohttp.ClientSession,
    urls: list[str],
    *,
    clients: int,
    requests: int,
    stream_share: float,
    rng: random.Random,
) -> dict[str, Any]:
    """`clients` clients, each sending its next request when its last one ended; `urls` are
    taken in turn (one: through a router; several: round-robin straight to the engines)."""
    turn = itertools.cycle(urls)
    remaining = requests
    latencies: list[float] = []
    errors = 0
    statuses: dict[str, int] = {}

    async def client() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            stream = rng.random() < stream_share
            body = {
                "model": "sim-model",
                "prompt": prompt(rng),
                "max_tokens": MAX_TOKENS,
                "ignore_eos": True,
                "stream": stream,
            }
            started = time.perf_counter()
            try:
                async with http.post(next(turn) + "/v1/completions", json=body) as response:
                    text = await response.read()
                    if response.status != 200:
                        errors += 1
                        key = f"{response.status} {text[:80]!r}"
                        statuses[key] = statuses.get(key, 0) + 1
                        continue
            except aiohttp.ClientError as exc:
                errors += 1
                key = type(exc).__name__
                statuses[key] = statuses.get(key, 0) + 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {
        "req_per_s": len(latencies) / wall,
        "e2e_p50_s": statistics.median(latencies) if latencies else float("inf"),
        "e2e_p99_s": (
            statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else float("inf")
        ),
        "errors": errors,
        "error_kinds": statuses,  # type: ignore[dict-item]
    }


async def completed_per_engine(http: aiohttp.ClientSession, ports: list[int]) -> list[float]:
    """Each engine's own count of finished requests (vLLM's e2e latency histogram)."""
    counts = []
    for port in ports:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
        line = next(
            (
                x
                for x in text.splitlines()
                if x.startswith("vllm:e2e_request_latency_seconds_count")
            ),
            " 0",
        )
        counts.append(float(line.rsplit(" ", 1)[1]))
    return counts


async def detached_ended(http: aiohttp.ClientSession, port: int) -> dict[str, float]:
    """Sluice's count of detached requests it stopped counting in flight, by cause."""
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sluice_detached_ended_total{"):
            cause = line.split('cause="', 1)[1].split('"', 1)[0]
            out[cause] = float(line.rsplit(" ", 1)[1])
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--stream-share", type=float, default=0.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    first = free_port_block(ENGINES)
    engine_ports = [first + i for i in range(ENGINES)]
    processes = [
        spawn(
            [
                *(sys.executable, "-m", "sluice", "sim", "--count", str(ENGINES)),
                *("--port", str(first), "--host", "127.0.0.1", "--profile", "llama-8b-h100"),
                *("--log-level", "warning"),
            ]
        )
    ]
    work = Path(tempfile.mkdtemp(prefix="sluice-nonstreamed-"))
    manifests = serve_manifests(work, engine_ports)
    proxy_port, epp_port, metrics_port = free_port(), free_port(), free_port()
    processes.append(
        spawn(
            [
                *(sys.executable, "-m", "sluice", "serve", "--pool-name=bench"),
                *("--pool-namespace=default", f"--resources={manifests}"),
                *(f"--grpc-port={epp_port}", "--grpc-host=127.0.0.1", "--secure-serving=false"),
                *(f"--grpc-health-port={free_port()}", f"--metrics-port={metrics_port}"),
                *(f"--proxy-port={proxy_port}", "--log-level=warning"),
            ]
        )
    )
    envoys: dict[str, tuple[Envoy, int]] = {}
    try:
        for name, shape in (("envoy", None), ("envoy-no-response", response_processing_off)):
            ports = GatewayPorts(epp=epp_port)
            config = render_config(ports, engine_ports, tls=False)
            if shape is not None:
                config = shape(config)
            envoy = Envoy(config, ports.admin)
            await envoy.start()
            envoys[name] = (envoy, ports.listener)
        arms: dict[str, list[str]] = {
            "round-robin": [f"http://127.0.0.1:{p}" for p in engine_ports],
            "sluice-proxy": [f"http://127.0.0.1:{proxy_port}"],
            "envoy+sluice": [f"http://127.0.0.1:{envoys['envoy'][1]}"],
            "envoy+sluice, no response": [f"http://127.0.0.1:{envoys['envoy-no-response'][1]}"],
        }
        timeout = aiohttp.ClientTimeout(total=300)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            for urls in arms.values():
                await wait_ready(http, urls[0])
            rng = random.Random(13)
            rounds: list[dict[str, dict[str, Any]]] = []
            for r in range(args.rounds):
                results = {}
                for name, urls in arms.items():
                    before = await completed_per_engine(http, engine_ports)
                    ended_before = await detached_ended(http, metrics_port)
                    results[name] = await closed_loop(
                        http,
                        urls,
                        clients=args.clients,
                        requests=args.requests,
                        stream_share=args.stream_share,
                        rng=rng,
                    )
                    after = await completed_per_engine(http, engine_ports)
                    results[name]["per_engine"] = [
                        a - b for a, b in zip(after, before, strict=True)
                    ]
                    ended_after = await detached_ended(http, metrics_port)
                    results[name]["detached_ended"] = {
                        k: v - ended_before.get(k, 0.0) for k, v in ended_after.items()
                    }
                    print(f"round {r + 1} {name:28} {results[name]}", flush=True)
                rounds.append(results)
    finally:
        for envoy, _ in envoys.values():
            await envoy.stop()
        stop_processes(*processes, timeout=10)

    print(f"\n{args.clients} clients, {args.requests} requests per arm and round, "
          f"{WORDS}-word unique prompts, max_tokens {MAX_TOKENS}, "
          f"streamed share {args.stream_share:g}\n")  # fmt: skip
    print("| arm | req/s | vs round-robin | e2e p50 s | vs round-robin | e2e p99 s | errors |")
    print("|---|---|---|---|---|---|---|")
    verdict = True
    for name in arms:
        tput = [r[name]["req_per_s"] / r["round-robin"]["req_per_s"] for r in rounds]
        e2e = [r[name]["e2e_p50_s"] / r["round-robin"]["e2e_p50_s"] for r in rounds]
        if name != "round-robin":
            verdict &= min(tput) >= TARGET_THROUGHPUT and max(e2e) <= TARGET_E2E

        def cells(key: str, digits: int = 2) -> str:
            return ", ".join(f"{r[name][key]:.{digits}f}" for r in rounds)  # noqa: B023

        print(
            f"| {name} | {cells('req_per_s', 1)} | {', '.join(f'{x:.2f}x' for x in tput)} "
            f"| {cells('e2e_p50_s')} | {', '.join(f'{x:.2f}x' for x in e2e)} "
            f"| {cells('e2e_p99_s')} | {sum(int(r[name]['errors']) for r in rounds)} |"
        )
    print(
        f"\ntargets (every round: throughput >= {TARGET_THROUGHPUT}x, e2e p50 <= "
        f"{TARGET_E2E}x round-robin's): {'MET' if verdict else 'MISSED'}"
    )
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "met": verdict}, indent=2))


if __name__ == "__main__":
    exit_on_sigterm()
    asyncio.run(main())
