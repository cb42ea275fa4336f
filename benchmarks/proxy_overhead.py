"""What Sluice's standalone proxy adds to a request, against calling the engine directly.

Processes: one zero-latency simulated engine (`sluice.sim`, profile `zero-latency`), the Sluice
proxy (pinned to one core), optionally vllm-router (policy round_robin, pinned to the same core),
and a load generator. All on loopback. Requests are non-streamed completions (4 tokens).

1. Latency: closed loop, concurrency 1. Rounds alternate between the arms so each sees the same
   machine load; added latency = arm percentile − direct percentile.
2. Throughput: closed loop, concurrency 64, fixed duration per arm. Also reports requests per
   CPU-second the proxy process actually used (from /proc): on a shared machine that is the
   honest "per core" figure, since the proxy may not get its core to itself.

The Sluice arm runs `ProxyServer` over a thin pipeline (real request parsing and usage parsing
from `sluice.requests`, round-robin placement, no flow control), which isolates the proxy's own
cost. `--full-pipeline` adds an arm running `sluice serve --proxy-port` (director, flow control,
scheduler, metrics scraping) on the same engine.

    .venv/bin/python benchmarks/proxy_overhead.py [--rounds 6] [--per-round 300]
        [--duration 5] [--concurrency 64] [--full-pipeline] [--no-router]

vllm-router: `pip install vllm-router` into the venv; it is started as
`vllm-router --host 127.0.0.1 --port P --worker-urls http://127.0.0.1:E --policy round_robin`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from sluice.bench.harness.child import exit_on_sigterm, stop_processes
from sluice.bench.harness.cpu import tree_cpu_seconds
from sluice.bench.harness.pool import serve_manifests
from sluice.bench.harness.ports import free_port
from sluice.bench.harness.ports import wait_for_port as _wait_for_port

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps({"model": "sim-model", "prompt": "Say hello.", "max_tokens": 4}).encode()
PATH = "/v1/completions"


# --- the Sluice proxy child ----------------------------------------------------------------------


def bench_pipeline(endpoints: list[tuple[str, int]]) -> object:
    """A thin `Pipeline`: real parsing and usage accounting, round-robin, no queueing."""
    import itertools

    from sluice.datalayer.endpoint import Endpoint
    from sluice.director.contract import Outcome
    from sluice.requests.model import InferenceRequest, Usage
    from sluice.requests.parse import parse_request
    from sluice.requests.usage import UsageParser

    pool = tuple(Endpoint(f"engine-{i}", host, port) for i, (host, port) in enumerate(endpoints))
    turn = itertools.count()

    class Placed:
        __slots__ = ("_parser", "endpoints", "finished", "request")

        def __init__(self, request: InferenceRequest, endpoints: tuple[Endpoint, ...]) -> None:
            self.request = request
            self.endpoints = endpoints
            self.finished = False
            self._parser: UsageParser | None = None

        def retarget(self, endpoint: Endpoint) -> None:
            pass

        def observe_response_chunk(self, chunk: bytes, *, streaming: bool) -> None:
            if self._parser is None:
                self._parser = UsageParser(streaming=streaming)
            self._parser.feed(chunk)

        def finish(self, outcome: Outcome, usage: Usage | None = None) -> None:
            self.finished = True

    class BenchPipeline:
        ready = True

        def parse(
            self,
            headers: Mapping[str, str],
            body: bytes,
            *,
            path: str = PATH,
            subset_hint: frozenset[str] | None = None,
        ) -> InferenceRequest:
            return parse_request(headers, body, path=path, subset_hint=subset_hint)

        async def admit(self, request: InferenceRequest) -> Placed:
            return Placed(request, (pool[next(turn) % len(pool)],))

        def pick_any(self) -> Endpoint:
            return pool[next(turn) % len(pool)]

        def endpoints(self) -> tuple[Endpoint, ...]:
            return pool

    return BenchPipeline()


async def serve_proxy(port: int, upstream_port: int) -> None:
    from sluice.proxy import ProxyServer

    proxy = ProxyServer(bench_pipeline([("127.0.0.1", upstream_port)]))  # type: ignore[arg-type]
    await proxy.start("127.0.0.1", port)
    await asyncio.Event().wait()


# --- the load generator child --------------------------------------------------------------------


async def closed_loop(url: str, concurrency: int, *, count: int = 0, seconds: float = 0) -> dict:
    """`concurrency` clients, each sending the next request when the last answer arrived."""
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def once() -> None:
            nonlocal errors
            started = time.perf_counter()
            async with session.post(url, data=BODY, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - started)

        for _ in range(50):  # warm the connection pool and caches
            await once()
        latencies.clear()
        deadline = time.perf_counter() + seconds
        remaining = count

        async def client() -> None:
            nonlocal remaining
            while (remaining > 0) if count else (time.perf_counter() < deadline):
                remaining -= 1
                await once()

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "elapsed": elapsed, "errors": errors}


# --- the conductor -------------------------------------------------------------------------------


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    _wait_for_port("127.0.0.1", port, process, timeout)


def wait_until_serving(url: str, timeout: float = 60) -> None:
    """Until a real completion goes through (routers check their workers before serving)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                url, data=BODY, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} never answered")


@dataclass
class Arm:
    name: str
    url: str
    process: subprocess.Popen[bytes] | None  # None: the engine itself (direct)


def spawn(
    command: list[str], core: int | None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env
    )
    if core is not None:
        os.sched_setaffinity(process.pid, {core})
    return process


def run_loadgen(url: str, concurrency: int, count: int = 0, seconds: float = 0) -> dict:
    command = [sys.executable, __file__, "--child", "loadgen", "--url", url]
    command += ["--concurrency", str(concurrency), "--count", str(count), "--seconds", str(seconds)]
    output = subprocess.run(
        command,
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return json.loads(output.stdout)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def full_pipeline_arm(engine_port: int, core: int | None, workdir: Path) -> Arm:
    manifests = serve_manifests(workdir, engine_port)
    port = free_port()
    command = [str(ROOT / ".venv/bin/sluice"), "serve", "--pool-name=bench"]
    command += ["--pool-namespace=default", f"--resources={manifests}", f"--proxy-port={port}"]
    command += ["--disable-extproc", "--secure-serving=false", "--log-level=warning"]
    command += [f"--grpc-health-port={free_port()}", f"--metrics-port={free_port()}"]
    process = spawn(command, core)
    wait_for_port(port, process)
    return Arm("sluice serve (full pipeline)", f"http://127.0.0.1:{port}{PATH}", process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=300)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--full-pipeline", action="store_true")
    parser.add_argument("--no-router", action="store_true")
    parser.add_argument(
        "--no-pin", action="store_true", help="let the OS place every process (busy machines)"
    )
    parser.add_argument(
        "--base-src",
        help="also run the proxy from another checkout's src/ (before/after in one run)",
    )
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    pin = len(cores) > 1 and not args.no_pin
    proxy_core = cores[-1] if pin else None  # the proxies get a core of their own
    other_cores = set(cores[:-1]) if pin else set(cores)
    os.sched_setaffinity(0, other_cores)  # the load generator and engine inherit this

    processes: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="sluice-proxy-bench-"))
    try:
        engine_port = free_port()
        command = [sys.executable, "-m", "sluice.sim.cli", "--count", "1", "--host", "127.0.0.1"]
        command += ["--port", str(engine_port), "--profile", "zero-latency"]
        engine = spawn(command, None)
        processes.append(engine)
        wait_for_port(engine_port, engine)
        arms = [Arm("direct to engine", f"http://127.0.0.1:{engine_port}{PATH}", None)]

        sluice_port = free_port()
        command = [sys.executable, __file__, "--child", "proxy", "--port", str(sluice_port)]
        command += ["--upstream-port", str(engine_port)]
        sluice = spawn(command, proxy_core)
        processes.append(sluice)
        wait_for_port(sluice_port, sluice)
        arms.append(Arm("sluice proxy", f"http://127.0.0.1:{sluice_port}{PATH}", sluice))
        if args.base_src:
            base_port = free_port()
            command = [sys.executable, __file__, "--child", "proxy", "--port", str(base_port)]
            command += ["--upstream-port", str(engine_port)]
            env = dict(os.environ, PYTHONPATH=str(Path(args.base_src).resolve()))
            base = spawn(command, proxy_core, env)
            processes.append(base)
            wait_for_port(base_port, base)
            arms.append(Arm("sluice proxy (base)", f"http://127.0.0.1:{base_port}{PATH}", base))

        if args.full_pipeline:
            arm = full_pipeline_arm(engine_port, proxy_core, workdir)
            processes.append(arm.process)  # type: ignore[arg-type]
            arms.append(arm)

        router = shutil.which("vllm-router", path=str(ROOT / ".venv/bin"))
        if router and not args.no_router:
            router_port = free_port()
            command = [router, "--host", "127.0.0.1", "--port", str(router_port)]
            command += ["--worker-urls", f"http://127.0.0.1:{engine_port}"]
            command += ["--policy", "round_robin", "--log-level", "warning"]
            process = spawn(command, proxy_core)
            processes.append(process)
            wait_for_port(router_port, process)
            arms.append(Arm("vllm-router", f"http://127.0.0.1:{router_port}{PATH}", process))

        for arm in arms:
            wait_until_serving(arm.url)
        if proxy_core is not None:  # routers may spawn threads after start: pin them all
            for arm in arms:
                if arm.process is not None:
                    for task in Path(f"/proc/{arm.process.pid}/task").iterdir():
                        os.sched_setaffinity(int(task.name), {proxy_core})

        latencies: dict[str, list[float]] = {arm.name: [] for arm in arms}
        for _ in range(args.rounds):
            for arm in arms:
                result = run_loadgen(arm.url, 1, count=args.per_round)
                latencies[arm.name] += result["latencies"]

        throughput: dict[str, tuple[float, float | None, int]] = {}
        for arm in arms:
            before = tree_cpu_seconds(arm.process.pid) if arm.process else None
            result = run_loadgen(arm.url, args.concurrency, seconds=args.duration)
            rps = len(result["latencies"]) / result["elapsed"]
            per_cpu = None
            if arm.process is not None and before is not None:
                used = tree_cpu_seconds(arm.process.pid) - before
                per_cpu = len(result["latencies"]) / used if used > 0 else None
            throughput[arm.name] = (rps, per_cpu, result["errors"])

        direct = latencies[arms[0].name]
        base50, base99 = percentile(direct, 0.5), percentile(direct, 0.99)
        placement = "not pinned" if proxy_core is None else f"proxies pinned to core {proxy_core}"
        print(f"\n{placement}; engine + load generator on cores {sorted(other_cores)}")
        print(f"latency: {args.rounds} rounds x {args.per_round} requests per arm, concurrency 1")
        print(f"throughput: concurrency {args.concurrency}, {args.duration:g} s per arm\n")
        print(
            "| arm | p50 ms | p99 ms | added p50 ms | added p99 ms "
            f"| req/s @{args.concurrency} | req/s per proxy CPU-second | errors |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for arm in arms:
            values = latencies[arm.name]
            p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
            rps, per_cpu, errors = throughput[arm.name]
            added = (
                ("—", "—")
                if arm.process is None
                else (f"{(p50 - base50) * 1e3:.3f}", f"{(p99 - base99) * 1e3:.3f}")
            )
            per_cpu_text = "—" if per_cpu is None else f"{per_cpu:,.0f}"
            print(
                f"| {arm.name} | {p50 * 1e3:.3f} | {p99 * 1e3:.3f} | {added[0]} | {added[1]} "
                f"| {rps:,.0f} | {per_cpu_text} | {errors} |"
            )
    finally:
        stop_processes(*processes, timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)


def child() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=["proxy", "loadgen"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--upstream-port", type=int)
    parser.add_argument("--url")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=0)
    args = parser.parse_args()
    import uvloop

    if args.child == "proxy":
        uvloop.run(serve_proxy(args.port, args.upstream_port))
    else:
        result = uvloop.run(
            closed_loop(args.url, args.concurrency, count=args.count, seconds=args.seconds)
        )
        print(json.dumps(result))


if __name__ == "__main__":
    exit_on_sigterm()
    if "--child" in sys.argv:
        child()
    else:
        main()
