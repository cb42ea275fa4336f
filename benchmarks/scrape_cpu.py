"""CPU cost of scraping N endpoints every 50 ms (target: 100 endpoints < 25% of one core).

A subprocess serves N tiny aiohttp `/metrics` servers on loopback with a realistic vLLM page;
this process runs the real `MetricsScraper` and measures its own CPU time over a window.

By default every endpoint serves the same page each time (an idle engine: the scraper may skip
parsing unchanged pages); `--vary` makes every response differ (an engine under load).

Run: .venv/bin/python benchmarks/scrape_cpu.py [--endpoints 100] [--seconds 5] [--uvloop]
     [--vary] [--transport lean|aiohttp] [--base-src DIR --rounds 3]

`--base-src DIR` (e.g. `git archive main src | tar -x -C DIR`): a before/after in one run —
rounds alternate between that checkout's scraper and this one, against the same servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sluice.bench.harness.child import child_env, exit_on_sigterm
from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointRegistry
from sluice.datalayer.scraper import MetricsScraper, ScrapeSettings

SERVER_CODE = """
import asyncio, sys
from aiohttp import web
from sluice.bench.harness.vllm_page import vllm_metrics_page

# --vary: every response shows new numbers (an engine under load), so none can skip parsing.
PAGES = [vllm_metrics_page(i % 7, 10 + i, i / 100).encode() for i in range({pages})]
served = [0]

async def metrics(request):
    served[0] += 1
    return web.Response(body=PAGES[served[0] % len(PAGES)], content_type="text/plain")

async def main(n):
    ports = []
    for _ in range(n):
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.append(site._server.sockets[0].getsockname()[1])
    print(" ".join(map(str, ports)), flush=True)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
"""


async def measure(ports: list[int], seconds: float, interval: float, transport: str) -> None:
    registry = EndpointRegistry()
    registry.set_endpoints(Endpoint(f"ep-{p}", "127.0.0.1", p) for p in ports)
    scraper = MetricsScraper(
        registry, settings=ScrapeSettings(interval_s=interval, transport=transport)
    )  # type: ignore[arg-type]
    await scraper.start()
    await asyncio.sleep(1.0)  # warm up: connections open, loops in phase
    stamps = {s.name: s.metrics.updated_at for s in registry.snapshot()}
    scrapes = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    deadline = wall0 + seconds
    while time.perf_counter() < deadline:
        await asyncio.sleep(interval / 2)
        for state in registry.snapshot():
            stamp = state.metrics.updated_at
            if stamp != stamps[state.name]:
                stamps[state.name] = stamp
                scrapes += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await scraper.stop()
    failures = sum(1 for s in registry.snapshot() if s.last_error)
    expected = len(ports) * wall / interval
    print(
        f"transport={transport} endpoints={len(ports)} "
        f"interval={interval * 1000:.0f}ms window={wall:.1f}s"
    )
    print(f"scrapes observed={scrapes} ({scrapes / expected:.0%} of the ideal {expected:.0f})")
    per_scrape = cpu / max(scrapes, 1)
    rate = len(ports) / interval
    print(
        f"scraper CPU = {cpu / wall:.1%} of one core; {per_scrape * 1e6:.0f} us/scrape; "
        f"at the full rate ({rate:.0f}/s): {per_scrape * rate:.1%}"
    )
    if scrapes < 0.9 * expected:
        print("note: the servers fell behind (busy machine); judge by the full-rate figure")
    print(f"endpoints with last scrape failing: {failures}")
    result = {"us_per_scrape": per_scrape * 1e6, "full_rate_core": per_scrape * rate}
    print("RESULT " + json.dumps(result), flush=True)


def compare(args: argparse.Namespace, ports: list[int]) -> None:
    """Alternate rounds: the `--base-src` checkout's scraper, then this one's."""
    here = str(Path(__file__).resolve().parents[1] / "src")
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        for label, src in (("before", args.base_src), ("after", here)):
            command = [sys.executable, __file__, "--ports", ",".join(map(str, ports))]
            command += ["--seconds", str(args.seconds), "--interval-ms", str(args.interval_ms)]
            command += ["--transport", args.transport] + (["--uvloop"] if args.uvloop else [])
            env = dict(os.environ, PYTHONPATH=src)
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
            runs[label].append(json.loads(line[len("RESULT ") :]))
    for label, results in runs.items():
        per = statistics.median(r["us_per_scrape"] for r in results)
        core = statistics.median(r["full_rate_core"] for r in results)
        print(f"{label}: median {per:.0f} us/scrape, {core:.1%} of a core at the full rate")
    ratio = statistics.median(r["us_per_scrape"] for r in runs["after"]) / statistics.median(
        r["us_per_scrape"] for r in runs["before"]
    )
    print(f"after/before CPU per scrape: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--interval-ms", type=float, default=50.0)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--transport", choices=["lean", "aiohttp"], default="lean")
    parser.add_argument("--vary", action="store_true", help="a different page every response")
    parser.add_argument("--base-src", help="another checkout's src/: before/after in one run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ports:  # a measuring child of `compare`
        run = measure([int(p) for p in args.ports.split(",")], args.seconds,
                      args.interval_ms / 1000, args.transport)  # fmt: skip
        if args.uvloop:
            import uvloop

            uvloop.run(run)
        else:
            asyncio.run(run)
        return
    print(f"pages: {'a new one every response' if args.vary else 'the same every time'}")
    code = SERVER_CODE.format(pages=16 if args.vary else 1)
    server = subprocess.Popen(
        [sys.executable, "-c", code, str(args.endpoints)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert server.stdout is not None
        ports = [int(p) for p in server.stdout.readline().split()]
        if args.base_src:
            compare(args, ports)
            return
        run = measure(ports, args.seconds, args.interval_ms / 1000, args.transport)
        if args.uvloop:
            import uvloop

            uvloop.run(run)
        else:
            asyncio.run(run)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    exit_on_sigterm()
    main()
