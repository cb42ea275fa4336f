"""How many short streamed requests per second one simulated engine serves.

Starts `sluice.sim.cli` with the zero-latency profile in a subprocess (one process, one event
loop: one core at most), then drives it from this process (or several, --client-procs) with
aiohttp clients that each keep one streamed completion in flight. Prints requests/s, tokens/s
and how much CPU the engine process used; nothing is compared against a hard-coded number.

    .venv/bin/python benchmarks/sim_throughput.py --seconds 10 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import subprocess
import sys
import time
import urllib.request

import aiohttp

from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.harness.cpu import cpu_seconds
from sluice.bench.harness.ports import free_port


def wait_healthy(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def drive(
    url: str, seconds: float, concurrency: int, max_tokens: int
) -> tuple[int, int, list[float]]:
    request = {
        "model": "sim-model",
        "prompt": "Say something short.",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    body = json.dumps(request).encode()  # encoded once: the client should cost as little as it can
    headers = {"Content-Type": "application/json"}
    done = tokens = 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, tokens
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            async with session.post(url + "/v1/completions", data=body, headers=headers) as r:
                # The whole SSE stream; each frame carries one token unless the client lagged.
                payload = await r.read()
                assert payload.endswith(b"data: [DONE]\n\n"), payload[-200:]
                tokens += payload.count(b'"text"')
            latencies.append(time.perf_counter() - started)
            done += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done, tokens, latencies


def client_process(
    url: str, seconds: float, concurrency: int, max_tokens: int, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    out.put(asyncio.run(drive(url, seconds, concurrency, max_tokens)))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--concurrency", type=int, default=64, help="requests in flight per client process"
    )
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens per (short) response")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluice.sim.cli",
            "--profile",
            "zero-latency",
            "--port",
            str(port),
            "--log-level",
            "WARNING",
        ]
    )
    try:
        wait_healthy(url)
        asyncio.run(drive(url, args.warmup, args.concurrency, args.max_tokens))
        results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        clients = [
            multiprocessing.Process(
                target=client_process,
                args=(url, args.seconds, args.concurrency, args.max_tokens, results),
            )
            for _ in range(args.client_procs)
        ]
        cpu_before, wall_before = cpu_seconds(server.pid), time.perf_counter()
        for c in clients:
            c.start()
        outcomes = [results.get() for _ in clients]
        wall = time.perf_counter() - wall_before
        server_cpu = cpu_seconds(server.pid) - cpu_before
        for c in clients:
            c.join()
    finally:
        server.terminate()
        server.wait(10)

    requests = sum(o[0] for o in outcomes)
    tokens = sum(o[1] for o in outcomes)
    latencies = sorted(x for o in outcomes for x in o[2])
    p50 = latencies[len(latencies) // 2] if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else float("nan")
    streams = f"{args.client_procs} client process(es) x {args.concurrency} streams"
    print(f"engine: zero-latency profile, {streams}")
    print(f"requests/s:        {requests / wall:8.1f}   ({requests} requests in {wall:.1f} s)")
    print(f"tokens/s:          {tokens / wall:8.1f}   ({args.max_tokens} tokens per request)")
    print(f"latency p50 / p99: {p50 * 1000:.1f} / {p99 * 1000:.1f} ms")
    print(f"engine CPU:        {server_cpu / wall:8.2f} cores busy (one event loop: at most 1.0)")
    print(f"requests/s per engine CPU-second: {requests / server_cpu:8.1f}" if server_cpu else "")
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
