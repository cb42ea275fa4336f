"""What Sluice's ext_proc adds to a request: Envoy → `sluice serve` → zero-latency engine.

The real pipeline: `sluice serve --resources DIR --secure-serving=false` (director, flow
control, scheduler, metrics scraping, the default ext_proc transport) in front of one
`sluice sim --profile zero-latency` engine. Two Envoys run side by side from the shipped
`deploy/envoy/envoy.yaml`: one with the ext_proc filter pointing at Sluice, one with the filter
removed (Envoy straight to the engine). Envoy (--concurrency 1), Sluice and the engine are each
their own process.

1. Latency: sequential requests (one at a time) through each Envoy, interleaved so both see the
   same machine load; added latency = Sluice percentile − direct percentile. The Sluice Envoy
   also logs, per request, how long its ext_proc filter waited on Sluice (Envoy's own per-call
   timers, `%FILTER_STATE(envoy.filters.http.ext_proc:FIELD:…_latency_us)%`): the share of the
   added latency that is Sluice's answer, loopback included, as the gateway sees it. The rest
   is Envoy's own cost of running an ext_proc filter (encoding, its gRPC client, wake-ups),
   which any Endpoint Picker adds.
2. Throughput: N concurrent clients for a fixed time through the Sluice Envoy; reports req/s and
   req/s per CPU-second Sluice actually used (read from /proc), which is the "per core" number
   on a shared machine.

Transport and option comparisons (grpc.aio vs Sluice's HTTP/2 server, uvloop, TLS, body modes)
are in `benchmarks/extproc_variants.py`.

    .venv/bin/python benchmarks/extproc_overhead.py [--mode FULL_DUPLEX_STREAMED|BUFFERED]
        [--stream] [--keep-cpus-awake 2] [--ext-proc-transport h2|hyper|grpc]

`SLUICE_BENCH_PROFILE=/tmp/p.prof` runs `sluice serve` under cProfile (written on exit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.harness.cpu import cpu_seconds
from sluice.bench.harness.envoy import REPO as ROOT
from sluice.bench.harness.envoy import Envoy, GatewayPorts, render_config
from sluice.bench.harness.pool import serve_manifests
from sluice.bench.harness.ports import free_port
from sluice.extproc import BodyMode

BODY: dict[str, object] = {"model": "sim-model", "prompt": "Say hello.", "max_tokens": 4}
PATH = "/v1/completions"
# Envoy's per-request timers of its calls to the processor (microseconds), by direction.
WAIT_FIELDS = {
    "request": ("request_header", "request_body_total", "request_trailer"),
    "response": ("response_header", "response_body_total", "response_trailer"),
}


# --- child processes ---------------------------------------------------------------------------


def spawn_engine(port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "sluice.sim.cli", "--count", "1", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--profile", "zero-latency", "--log-level", "warning"]
    return subprocess.Popen(command, cwd=ROOT)


def spawn_sluice(
    port: int, engine_port: int, workdir: Path, transport: str
) -> subprocess.Popen[bytes]:
    manifests = serve_manifests(workdir, engine_port)
    command = [sys.executable]
    if os.environ.get("SLUICE_BENCH_PROFILE"):  # where does Sluice's CPU go?
        command += ["-m", "cProfile", "-o", os.environ["SLUICE_BENCH_PROFILE"]]
    command += ["-m", "sluice", "serve", "--pool-name=bench", "--pool-namespace=default"]
    command += [f"--resources={manifests}", f"--grpc-port={port}", "--grpc-host=127.0.0.1"]
    command += ["--secure-serving=false", "--log-level=warning"]
    command += [f"--grpc-health-port={free_port()}", f"--metrics-port={free_port()}"]
    command += [f"--ext-proc-transport={transport}"]
    return subprocess.Popen(command, cwd=ROOT)


def spawn_spinner() -> subprocess.Popen[bytes]:
    """A busy loop at the lowest priority: keeps a vCPU out of its idle state, so waking a
    process costs a reschedule rather than a wake-up through the hypervisor (~50 µs and more
    per hop on this VM), which a sequential, one-at-a-time measurement otherwise pays at every
    hop. Any runnable process preempts it."""
    command = ["nice", "-n", "19", sys.executable, "-c", "while True: pass"]
    return subprocess.Popen(command)


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


async def one(http: aiohttp.ClientSession, url: str, bench_id: str = "") -> float:
    start = time.perf_counter()
    headers = {"x-bench-id": bench_id} if bench_id else None
    async with http.post(url, json=BODY, headers=headers) as response:  # stream=True: --stream
        await response.read()
        assert response.status == 200, response.status
    return time.perf_counter() - start


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=1000)[int(q * 1000) - 1]


def log_ext_proc_waits(config: dict[str, Any], path: Path) -> None:
    """Add a JSON access log of the ext_proc filter's per-call timers to an Envoy config."""
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    timers = [f"{call}_latency_us" for calls in WAIT_FIELDS.values() for call in calls]
    fields = {f: f"%FILTER_STATE(envoy.filters.http.ext_proc:FIELD:{f})%" for f in timers}
    log_type = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
    log_format = {"json_format": {"id": "%REQ(X-BENCH-ID)%", **fields}}
    hcm["access_log"] = [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {"@type": log_type, "path": str(path), "log_format": log_format},
        }
    ]


def ext_proc_waits(path: Path, ids: set[str], mode: BodyMode) -> list[float]:
    """Seconds Envoy waited on Sluice, per request whose x-bench-id is in `ids`.

    BUFFERED: a direction's calls are sequential (headers answered, then the buffered body
    sent): their sum. FULL_DUPLEX_STREAMED: they are in flight together (Sluice answers the
    request headers once the body is in, and the body follows the headers at once), so their
    timers overlap: the last call, i.e. the longest timer, is what the request waits for."""
    combine = sum if mode is BodyMode.BUFFERED else max
    waits = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("id") not in ids:
            continue
        per_direction = (
            combine(int(entry.get(f"{call}_latency_us") or 0) for call in calls)
            for calls in WAIT_FIELDS.values()
        )
        waits.append(sum(per_direction) / 1e6)
    return waits


async def latency(
    http: aiohttp.ClientSession, via: str, direct: str, n: int
) -> tuple[list[float], list[float]]:
    via_s: list[float] = []
    direct_s: list[float] = []
    for i in range(n):
        via_s.append(await one(http, via, f"m{i}"))
        direct_s.append(await one(http, direct))
    return via_s, direct_s


def latency_report(
    via_s: list[float], direct_s: list[float], waits: list[float]
) -> dict[str, float]:
    out: dict[str, float] = {}
    for q in (0.5, 0.99):
        name = f"p{int(q * 100)}"
        out[f"{name}_direct_ms"] = percentile(direct_s, q) * 1e3
        out[f"{name}_via_sluice_ms"] = percentile(via_s, q) * 1e3
        out[f"{name}_added_ms"] = out[f"{name}_via_sluice_ms"] - out[f"{name}_direct_ms"]
        out[f"{name}_envoy_waited_on_sluice_ms"] = percentile(waits, q) * 1e3
    out["requests_with_ext_proc_timers"] = len(waits)
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
    if args.stream:
        BODY["stream"] = True
    engine_port, sluice_ports, direct_ports = free_port(), GatewayPorts(), GatewayPorts()
    workdir = Path(tempfile.mkdtemp(prefix="sluice-extproc-bench-"))
    engine = spawn_engine(engine_port)
    sluice = spawn_sluice(sluice_ports.epp, engine_port, workdir, args.ext_proc_transport)
    via_config = render_config(sluice_ports, [engine_port], mode=mode, tls=False)
    wait_log = workdir / "ext_proc_waits.jsonl"
    log_ext_proc_waits(via_config, wait_log)
    direct_config = render_config(direct_ports, [engine_port], mode=mode, tls=False)
    hcm = direct_config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = hcm["typed_config"]["http_filters"]
    hcm["typed_config"]["http_filters"] = [f for f in filters if "ext_proc" not in f["name"]]
    envoys = [Envoy(via_config, sluice_ports.admin), Envoy(direct_config, direct_ports.admin)]
    try:
        for envoy in envoys:
            await envoy.start()
        via = f"http://127.0.0.1:{sluice_ports.listener}{PATH}"
        direct = f"http://127.0.0.1:{direct_ports.listener}{PATH}"
        async with aiohttp.ClientSession() as http:
            await wait_http(http, via, 60)
            await wait_http(http, direct)
            for _ in range(200):  # warm up both paths
                await one(http, via)
                await one(http, direct)
            spinners = [spawn_spinner() for _ in range(args.keep_cpus_awake)]
            try:
                via_s, direct_s = await latency(http, via, direct, args.requests)
            finally:
                for spinner in spinners:
                    spinner.kill()
                    spinner.wait()
        thr = await throughput(via, args.concurrency, args.seconds, sluice.pid)
        for envoy in envoys:
            await envoy.stop()  # flushes the access log
        waits = ext_proc_waits(wait_log, {f"m{i}" for i in range(args.requests)}, mode)
        lat = latency_report(via_s, direct_s, waits)
        report = {
            "mode": mode.name + (" (SSE)" if args.stream else ""),
            "pipeline": "sluice serve (director, flow control, scheduler) on uvloop, plaintext",
            "ext_proc_transport": args.ext_proc_transport,
            "cpus": os.cpu_count(),
            "loadavg_1m": os.getloadavg()[0],
            "cpus_kept_awake_by_spinners": args.keep_cpus_awake,
            **{k: round(v, 3) for k, v in lat.items()},
            "concurrency": args.concurrency,
            **{k: round(v, 1) for k, v in thr.items()},
        }
        print(json.dumps(report, indent=2))
    finally:
        for envoy in envoys:
            await envoy.stop()
        for child in (sluice, engine):
            child.terminate()
            child.wait(10)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode", default="FULL_DUPLEX_STREAMED", choices=["FULL_DUPLEX_STREAMED", "BUFFERED"]
    )
    parser.add_argument("--stream", action="store_true", help="SSE responses (stream: true)")
    parser.add_argument("--requests", type=int, default=2000, help="sequential latency samples")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--keep-cpus-awake",
        type=int,
        default=0,
        metavar="N",
        help="run N lowest-priority busy loops during the latency phase (see spawn_spinner)",
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--ext-proc-transport",
        default="h2",
        choices=["h2", "hyper", "grpc"],
        help="h2: Sluice's frame layer (default); hyper: python-hyper's h2; grpc: grpc.aio",
    )
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    exit_on_sigterm()
    cli()
