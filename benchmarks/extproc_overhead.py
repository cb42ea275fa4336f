"""What Sluice's ext_proc adds to a request: Envoy → Sluice → zero-latency model server.

Two Envoys run side by side from the shipped `deploy/envoy/envoy.yaml`: one with the ext_proc
filter pointing at Sluice, one with the filter removed (Envoy straight to the model server).
Each of Envoy (--concurrency 1), Sluice and the model server is its own process.

1. Latency: sequential requests (one at a time) through each Envoy, interleaved so both see the
   same machine load; added latency = Sluice percentile − direct percentile.
2. Throughput: N concurrent clients for a fixed time through the Sluice Envoy; reports req/s and
   req/s per CPU-second Sluice actually used (read from /proc), which is the "per core" number
   on a shared machine.

The pipeline is the test double from tests/extproc (real request and usage parsing from
`sluice.requests`, least-in-flight pick) until `sluice.pipeline` ships a concrete pipeline.

    .venv/bin/python benchmarks/extproc_overhead.py [--mode FULL_DUPLEX_STREAMED|BUFFERED]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.extproc.envoy_harness import (  # noqa: E402
    Envoy,
    GatewayPorts,
    free_port,
    render_config,
)

from sluice.extproc import BodyMode  # noqa: E402

BODY = {"model": "llama", "messages": [{"role": "user", "content": "Say hello in one word."}]}


# --- child processes ---------------------------------------------------------------------------


async def serve_upstream(port: int) -> None:
    from tests.extproc.envoy_harness import FakeModelServer

    server = FakeModelServer("engine-0")
    await server.start(port)
    await asyncio.Event().wait()


async def serve_sluice(port: int, upstream_port: int) -> None:
    from tests.extproc.pipeline_double import DoublePipeline

    from sluice.datalayer.endpoint import Endpoint
    from sluice.extproc import ExtProcServer, ServerOptions

    pipeline = DoublePipeline([Endpoint("engine-0", "127.0.0.1", upstream_port)])

    async def drain_finished() -> None:  # the double queues finished admissions for tests
        while True:
            await pipeline.finished.get()

    drainer = asyncio.ensure_future(drain_finished())
    server = ExtProcServer(pipeline, ServerOptions(grpc_port=port, host="127.0.0.1"))
    await server.start()
    stopping = asyncio.Event()  # SIGTERM ends cleanly, so a profile (if any) gets written
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await server.stop(None)
    drainer.cancel()


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, *args], cwd=ROOT)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- measurement -------------------------------------------------------------------------------


async def wait_http(http: aiohttp.ClientSession, url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            async with http.post(url, json=BODY) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def one(http: aiohttp.ClientSession, url: str) -> float:
    start = time.perf_counter()
    async with http.post(url, json=BODY) as response:
        await response.read()
        assert response.status == 200, response.status
    return time.perf_counter() - start


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=1000)[int(q * 1000) - 1]


async def latency(http: aiohttp.ClientSession, via: str, direct: str, n: int) -> dict[str, float]:
    via_s: list[float] = []
    direct_s: list[float] = []
    for _ in range(n):
        via_s.append(await one(http, via))
        direct_s.append(await one(http, direct))
    out = {}
    for q in (0.5, 0.99):
        name = f"p{int(q * 100)}"
        out[f"{name}_direct_ms"] = percentile(direct_s, q) * 1e3
        out[f"{name}_via_sluice_ms"] = percentile(via_s, q) * 1e3
        out[f"{name}_added_ms"] = out[f"{name}_via_sluice_ms"] - out[f"{name}_direct_ms"]
    return out


async def throughput(
    url: str, concurrency: int, seconds: float, sluice_pid: int
) -> dict[str, float]:
    done = 0
    stop_at = time.monotonic() + seconds

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            await one(http, url)
            done += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        cpu0, t0 = cpu_seconds(sluice_pid), time.monotonic()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        cpu1, t1 = cpu_seconds(sluice_pid), time.monotonic()
    return {
        "requests_per_s": done / (t1 - t0),
        "sluice_cpu_util": (cpu1 - cpu0) / (t1 - t0),
        "requests_per_sluice_cpu_s": done / max(cpu1 - cpu0, 1e-9),
    }


async def main(args: argparse.Namespace) -> None:
    mode = BodyMode[args.mode]
    upstream_port, sluice_ports, direct_ports = free_port(), GatewayPorts(), GatewayPorts()
    children = [
        spawn("--serve-upstream", str(upstream_port)),
        spawn("--serve-sluice", str(sluice_ports.epp), str(upstream_port)),
    ]
    via_config = render_config(sluice_ports, [upstream_port], mode=mode)
    direct_config = render_config(direct_ports, [upstream_port], mode=mode)
    hcm = direct_config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = hcm["typed_config"]["http_filters"]
    hcm["typed_config"]["http_filters"] = [f for f in filters if "ext_proc" not in f["name"]]
    envoys = [Envoy(via_config, sluice_ports.admin), Envoy(direct_config, direct_ports.admin)]
    try:
        for envoy in envoys:
            await envoy.start()
        via = f"http://127.0.0.1:{sluice_ports.listener}/v1/chat/completions"
        direct = f"http://127.0.0.1:{direct_ports.listener}/v1/chat/completions"
        async with aiohttp.ClientSession() as http:
            await wait_http(http, via)
            await wait_http(http, direct)
            for _ in range(200):  # warm up both paths
                await one(http, via)
                await one(http, direct)
            lat = await latency(http, via, direct, args.requests)
        thr = await throughput(via, args.concurrency, args.seconds, children[1].pid)
        report = {
            "mode": mode.name,
            "pipeline": "tests/extproc DoublePipeline (real parse + usage, least-in-flight)",
            "cpus": os.cpu_count(),
            "loadavg_1m": os.getloadavg()[0],
            **{k: round(v, 3) for k, v in lat.items()},
            "concurrency": args.concurrency,
            **{k: round(v, 1) for k, v in thr.items()},
        }
        print(json.dumps(report, indent=2))
    finally:
        for envoy in envoys:
            await envoy.stop()
        for child in children:
            child.terminate()
            child.wait(5)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode", default="FULL_DUPLEX_STREAMED", choices=["FULL_DUPLEX_STREAMED", "BUFFERED"]
    )
    parser.add_argument("--requests", type=int, default=2000, help="sequential latency samples")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-sluice", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        asyncio.run(serve_upstream(args.serve_upstream))
    elif args.serve_sluice:
        if os.environ.get("SLUICE_BENCH_PROFILE"):  # where does Sluice's CPU go?
            import cProfile

            cProfile.runctx(
                "asyncio.run(serve_sluice(*args.serve_sluice))", globals(), locals(),
                os.environ["SLUICE_BENCH_PROFILE"],
            )  # fmt: skip
        else:
            asyncio.run(serve_sluice(*args.serve_sluice))
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    cli()
