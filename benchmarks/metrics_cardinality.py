"""What clients can do to `/metrics`: 100,000 distinct client-chosen label values, then scrapes
while requests flow.

Processes, all on loopback: one zero-latency simulated engine (`sluice.sim`), `sluice serve`
(the real server: proxy, director, flow control, metrics server, `--metric-names=both`; pinned to
a core of its own when there are two), this script as load generator, and scraper processes.

1. Flood: `--distinct` requests, each with its own `x-gateway-inference-fairness-id` and its own
   `model` (the worst case: both label kinds at once; unknown models are answered 404 by the
   engine, and still labelled in Sluice's metrics). Reports throughput, then one scrape: size,
   time, Sluice's RSS, distinct values exported per label.
2. Latency under scrapes: rounds rotate between "no scraper" and scrape loops (one scrape every
   `--scrape-intervals` seconds, 0 = back to back; the scraper is a process of its own) while
   a closed loop of `--concurrency`
   clients sends ordinary completions. Reports p50/p99 latency and throughput per arm, pooled
   over the rounds, and their ratios to the quiet arm (one run: every arm sees the same
   machine load). A second arm without a scraper shows the run's noise floor.

    nice -n 10 .venv/bin/python benchmarks/metrics_cardinality.py [--distinct 100000]
        [--rounds 8] [--per-round 400] [--concurrency 4] [--scrape-intervals 1,0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

from proxy_overhead import percentile, spawn, wait_until_serving
from sluice.bench.harness.child import exit_on_sigterm, stop_processes
from sluice.bench.harness.cpu import rss_mb
from sluice.bench.harness.pool import serve_manifests
from sluice.bench.harness.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
PATH = "/v1/completions"
ORDINARY = json.dumps({"model": "sim-model", "prompt": "Say hello.", "max_tokens": 4}).encode()
FIVE_MB = 5 * 1024 * 1024


async def flood(url: str, distinct: int, concurrency: int) -> dict[str, float]:
    """`distinct` requests, each with a fairness id and a model name no other request has."""
    connector = aiohttp.TCPConnector(limit=0)
    statuses: dict[int, int] = {}
    next_index = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal next_index
            while next_index < distinct:
                i, next_index = next_index, next_index + 1
                body = json.dumps({"model": f"model-{i:06d}", "prompt": "hi", "max_tokens": 1})
                headers = {
                    "Content-Type": "application/json",
                    "x-gateway-inference-fairness-id": f"tenant-{i:06d}",
                }
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "elapsed_s": elapsed,
        "rps": distinct / elapsed,
        **{f"status_{k}": v for k, v in statuses.items()},
    }


async def scrape_once(session: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    started = time.perf_counter()
    async with session.get(url) as response:
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}")
    return len(body), time.perf_counter() - started


def exported_values(text: str, label: str) -> int:
    return len(set(re.findall(rf'{label}="([^"]*)"', text)))


class Scraper:
    """A scrape loop in a process of its own, so reading multi-MB answers never slows the load
    generator's event loop (that would count as Sluice's latency). Started once, idle until
    `resume()`; `pause()` returns the durations of the scrapes since."""

    def __init__(self, url: str, interval: float) -> None:
        command = [sys.executable, __file__, "--child-scraper", url, str(interval)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=Path(__file__).parent
        )
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "ready"

    def _say(self, word: str) -> list[float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(word.encode() + b"\n")
        self.process.stdin.flush()
        return [float(x) for x in json.loads(self.process.stdout.readline())]

    def resume(self) -> None:
        self._say("go")

    def pause(self) -> list[float]:
        return self._say("stop")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def scraper_child(url: str, interval: float) -> None:
    """Reads `go` / `stop` lines; answers each with the scrape durations since the last. Scrapes
    with a plain socket that discards what it reads, so the scraper itself costs next to no CPU
    (on two cores it shares one with the engine and the load generator)."""
    address, _, path = url.removeprefix("http://").partition("/")
    host, _, port = address.partition(":")
    request = f"GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    active = threading.Event()
    lock = threading.Lock()
    took: list[float] = []

    def scrape_forever() -> None:
        buffer = bytearray(1 << 20)
        while True:
            active.wait()
            started = time.perf_counter()
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(request)
                first = sock.recv_into(buffer)
                if not bytes(buffer[:first]).startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"/metrics answered {bytes(buffer[:40])!r}")
                while sock.recv_into(buffer):
                    pass
            with lock:
                took.append(time.perf_counter() - started)
            if interval:
                time.sleep(interval)

    threading.Thread(target=scrape_forever, daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "go":
            active.set()
        else:
            active.clear()
        with lock:
            done, took[:] = list(took), []
        print(json.dumps(done), flush=True)


async def requests_round(
    url: str, count: int, concurrency: int, scraper: Scraper | None
) -> dict[str, object]:
    """`count` ordinary completions from `concurrency` clients; with a `scraper`, its scrape
    loop runs for the whole round."""
    latencies: list[float] = []
    scrapes: list[float] = []
    headers = {"Content-Type": "application/json", "x-gateway-inference-fairness-id": "probe"}
    if scraper is not None:
        scraper.resume()
        await asyncio.sleep(0.05)  # its first scrape is under way
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        remaining = count

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with session.post(url, data=ORDINARY, headers=headers) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if scraper is not None:
        scrapes = scraper.pause()
    return {"latencies": latencies, "elapsed": elapsed, "scrapes": scrapes}


def main() -> None:
    if sys.argv[1:2] == ["--child-scraper"]:
        scraper_child(sys.argv[2], float(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--distinct", type=int, default=100_000)
    parser.add_argument("--flood-concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--scrape-intervals",
        default="1,0",
        help="comma-separated seconds between scrapes, one arm each (0: back to back)",
    )
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    sluice_core = cores[-1] if len(cores) > 1 else None  # Sluice gets a core of its own
    if sluice_core is not None:  # the engine, the load generator and the scrapers share the rest
        os.sched_setaffinity(0, set(cores[:-1]))
    processes: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="sluice-metrics-bench-"))
    try:
        engine_port = free_port()
        command = [sys.executable, "-m", "sluice.sim.cli", "--count", "1", "--host", "127.0.0.1"]
        command += ["--port", str(engine_port), "--profile", "zero-latency"]
        processes.append(spawn(command, None))
        wait_for_port("127.0.0.1", engine_port, processes[-1], timeout=60)

        proxy_port, metrics_port = free_port(), free_port()
        command = [str(ROOT / ".venv/bin/sluice"), "serve", "--pool-name=bench"]
        command += [
            "--pool-namespace=default",
            f"--resources={serve_manifests(workdir, engine_port)}",
        ]
        command += [f"--proxy-port={proxy_port}", f"--metrics-port={metrics_port}"]
        command += ["--disable-extproc", "--log-level=warning", "--grpc-host=127.0.0.1"]
        command += [f"--grpc-health-port={free_port()}", "--metric-names=both"]
        sluice = spawn(command, sluice_core)
        processes.append(sluice)
        url = f"http://127.0.0.1:{proxy_port}{PATH}"
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_until_serving(url)
        rss_before = rss_mb(sluice.pid)

        print(f"## 1. {args.distinct:,} requests, each with its own fairness id and model\n")
        flooded = asyncio.run(flood(url, args.distinct, args.flood_concurrency))
        statuses = ", ".join(
            f"{k.removeprefix('status_')}: {int(v)}" for k, v in flooded.items() if "status" in k
        )
        print(
            f"- sent in {flooded['elapsed_s']:.1f} s: {flooded['rps']:.0f} requests/s "
            f"(statuses {statuses})"
        )

        async def one_scrape() -> tuple[int, float, str]:
            async with aiohttp.ClientSession() as session:
                size, took = await scrape_once(session, metrics_url)
                async with session.get(metrics_url) as response:
                    return size, took, await response.text()

        size, took, text = asyncio.run(one_scrape())
        verdict = "under" if size < FIVE_MB else "OVER"
        print(f"- /metrics: {size / 1e6:.2f} MB ({verdict} 5 MB), scraped in {took * 1000:.0f} ms")
        print(f"- Sluice RSS: {rss_before:.0f} MiB before, {rss_mb(sluice.pid):.0f} MiB after")
        for label in ("fairness_id", "model_name", "target_model_name"):
            print(f"- distinct `{label}` values exported: {exported_values(text, label):,}")

        intervals = [float(x) for x in args.scrape_intervals.split(",") if x.strip()]
        # Two arms without a scraper: how far apart they land is this run's noise floor.
        arms: dict[str, Scraper | None] = {"quiet": None, "quiet (second arm)": None}
        for interval in intervals:
            name = f"scrape every {interval:g} s" if interval else "scrape back to back"
            arms[name] = Scraper(metrics_url, interval)
        scrapers = [s for s in arms.values() if s is not None]
        print(
            f"\n## 2. {args.concurrency} clients, with and without a scrape loop "
            f"({args.rounds} rounds × {args.per_round} requests per arm, arms rotating)\n"
        )
        pooled: dict[str, dict[str, list[float]]] = {
            arm: {"latencies": [], "elapsed": [], "scrapes": []} for arm in arms
        }
        names = list(arms)
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for arm in names[shift:] + names[:shift]:
                result = asyncio.run(
                    requests_round(url, args.per_round, args.concurrency, arms[arm])
                )
                for key in ("latencies", "scrapes"):
                    pooled[arm][key] += result[key]  # type: ignore[arg-type]
                pooled[arm]["elapsed"].append(result["elapsed"])  # type: ignore[arg-type]
        rows = {}
        for arm, data in pooled.items():
            lat = data["latencies"]
            rows[arm] = {
                "p50": percentile(lat, 0.5) * 1000,
                "p99": percentile(lat, 0.99) * 1000,
                "rps": len(lat) / sum(data["elapsed"]),
                "scrapes": len(data["scrapes"]),
                "scrape_ms": statistics.median(data["scrapes"]) * 1000 if data["scrapes"] else 0,
            }
        quiet = rows["quiet"]
        print(
            "| arm | requests | p50 ms | p99 ms | requests/s | p50, p99, req/s vs quiet "
            "| scrapes | median scrape ms |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for arm, row in rows.items():
            ratios = "/".join(f"{row[k] / quiet[k]:.2f}x" for k in ("p50", "p99", "rps"))
            print(
                f"| {arm} | {len(pooled[arm]['latencies'])} | {row['p50']:.2f} "
                f"| {row['p99']:.2f} | {row['rps']:.0f} | {ratios} | {row['scrapes']} "
                f"| {row['scrape_ms']:.0f} |"
            )
        for scraper in scrapers:
            scraper.close()
    finally:
        stop_processes(*processes, timeout=10)


if __name__ == "__main__":
    exit_on_sigterm()
    main()
