"""Ways of serving ext_proc from Python, measured side by side in one run.

Every arm is Envoy (the shipped `deploy/envoy/envoy.yaml`, --concurrency 1) → an ext_proc
server → the same zero-latency engine (`sluice sim --profile zero-latency`). Each arm has its
own Envoy and its own ext_proc process, so arms never share a connection; rounds are interleaved
(arm A, B, C, A, B, C, …) so every arm sees the same machine load. On a shared machine the
honest "per core" figure is requests per CPU-second the ext_proc process used (from /proc).

Arms (pick with --arms, comma-separated):

- `floor`, `floor-asyncio`, `floor-sync`: the least a Python grpc ext_proc can do (pre-serialized
  answers, no parsing, no pipeline) on grpc.aio + uvloop, grpc.aio + asyncio, and
  `grpc.server(ThreadPoolExecutor)`: what grpc itself costs per request.
- `aio`, `aio-uvloop`, `aio-tls`: Sluice's stream logic on the grpc.aio transport
  (`transport="grpc"`) over the test double pipeline (real request and usage parsing), on
  asyncio / uvloop / uvloop with TLS.
- `h2`, `h2-asyncio`, `h2-tls`: the same on Sluice's own HTTP/2 frame layer (the default).
- `hyper`: the same on python-hyper's `h2` state machine (`transport="hyper"`), uvloop.
- `base`: `aio-uvloop` run from another checkout (`--base-src DIR/src`, e.g. from
  `git archive <commit> src | tar -x -C DIR`) — a before/after in one run.
- `buffered-response`: `h2` with `response_body_mode: BUFFERED` (fewer messages for SSE; see
  docs/extproc.md for the trade-off).
- `serve`: the real pipeline — `sluice serve --resources DIR --secure-serving=false` (director,
  flow control, scheduler, metrics scraping) on uvloop.
- `serve-base`: `serve` run from another checkout (`--base-src`): the real pipeline's before/after
  in one run.
- `serve-hyper`: `serve` with `--ext-proc-transport=hyper` (python-hyper's h2).

    .venv/bin/python benchmarks/extproc_variants.py --arms floor,aio-uvloop,h2,serve
        [--rounds 3] [--seconds 4] [--concurrency 32] [--latency 300] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.harness.cpu import tree_cpu_seconds
from sluice.bench.harness.envoy import REPO as ROOT
from sluice.bench.harness.envoy import Envoy, GatewayPorts, render_config
from sluice.bench.harness.pool import serve_manifests
from sluice.bench.harness.ports import free_port
from sluice.extproc import BodyMode

PATH = "/v1/completions"
BODY = {"model": "sim-model", "prompt": "Say hello.", "max_tokens": 4}


# --- ext_proc children ---------------------------------------------------------------------------


async def serve_floor(port: int, upstream_port: int, sync: bool = False) -> None:
    """A trivial FULL_DUPLEX ext_proc: route everything to one address, echo bodies back."""
    import grpc
    from envoy.config.core.v3 import base_pb2
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
    from google.protobuf import struct_pb2

    destination = f"127.0.0.1:{upstream_port}"
    meta = struct_pb2.Struct()
    meta.get_or_create_struct("envoy.lb")["x-gateway-destination-endpoint"] = destination
    route = pb.ProcessingResponse(
        request_headers=pb.HeadersResponse(
            response=pb.CommonResponse(
                header_mutation=pb.HeaderMutation(
                    set_headers=[
                        base_pb2.HeaderValueOption(
                            header=base_pb2.HeaderValue(
                                key="x-gateway-destination-endpoint", raw_value=destination.encode()
                            )
                        )
                    ]
                ),
                clear_route_cache=True,
            )
        ),
        dynamic_metadata=meta,
    ).SerializeToString()
    continue_headers = pb.ProcessingResponse(response_headers=pb.HeadersResponse())
    continue_headers_bytes = continue_headers.SerializeToString()

    def echo(body: bytes, eos: bool, request: bool) -> bytes:
        inner = pb.BodyResponse(
            response=pb.CommonResponse(
                body_mutation=pb.BodyMutation(
                    streamed_response=pb.StreamedBodyResponse(body=body, end_of_stream=eos)
                )
            )
        )
        if request:
            return pb.ProcessingResponse(request_body=inner).SerializeToString()
        return pb.ProcessingResponse(response_body=inner).SerializeToString()

    async def process(_: object, context: grpc.aio.ServicerContext) -> None:
        body = b""
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("request")
            if kind == "request_body":
                body += message.request_body.body
                if message.request_body.end_of_stream:
                    await context.write(route)
                    await context.write(echo(body, True, True))
            elif kind == "response_headers":
                await context.write(continue_headers_bytes)
                if message.response_headers.end_of_stream:
                    return
            elif kind == "response_body":
                b = message.response_body
                await context.write(echo(b.body, b.end_of_stream, False))
                if b.end_of_stream:
                    return
            elif kind == "response_trailers":
                await context.write(
                    pb.ProcessingResponse(
                        response_trailers=pb.TrailersResponse()
                    ).SerializeToString()
                )
                return

    def process_sync(requests: object, context: object) -> object:
        """The same logic for grpc.server(ThreadPoolExecutor): a generator per stream."""
        body = b""
        for message in requests:  # type: ignore[attr-defined]
            kind = message.WhichOneof("request")
            if kind == "request_body":
                body += message.request_body.body
                if message.request_body.end_of_stream:
                    yield route
                    yield echo(body, True, True)
            elif kind == "response_headers":
                yield continue_headers_bytes
                if message.response_headers.end_of_stream:
                    return
            elif kind == "response_body":
                b = message.response_body
                yield echo(b.body, b.end_of_stream, False)
                if b.end_of_stream:
                    return

    if sync:
        from concurrent.futures import ThreadPoolExecutor

        handler = grpc.stream_stream_rpc_method_handler(
            process_sync,
            request_deserializer=pb.ProcessingRequest.FromString,
            response_serializer=bytes,
        )
        sync_server = grpc.server(ThreadPoolExecutor(64), options=[("grpc.so_reuseport", 0)])
        service = "envoy.service.ext_proc.v3.ExternalProcessor"
        sync_server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"Process": handler}),)
        )
        sync_server.add_insecure_port(f"127.0.0.1:{port}")
        sync_server.start()
        await _until_sigterm()
        sync_server.stop(None)
        return
    handler = grpc.stream_stream_rpc_method_handler(
        process, request_deserializer=pb.ProcessingRequest.FromString, response_serializer=bytes
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    service = "envoy.service.ext_proc.v3.ExternalProcessor"
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {"Process": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await _until_sigterm()
    await server.stop(None)


def double_pipeline(upstream_port: int) -> object:
    from sluice.bench.harness.pipeline_double import DoublePipeline
    from sluice.datalayer.endpoint import Endpoint

    pipeline = DoublePipeline([Endpoint("engine-0", "127.0.0.1", upstream_port)])
    pipeline.finished.put_nowait = lambda _: None  # type: ignore[method-assign]  # unbounded
    return pipeline


async def serve_aio(port: int, upstream_port: int, tls: bool, transport: str) -> None:
    from sluice.extproc import ExtProcServer, ServerOptions

    pipeline = double_pipeline(upstream_port)
    options = ServerOptions(grpc_port=port, host="127.0.0.1", secure_serving=tls)
    if transport != "base":  # an older checkout has no `transport`
        options = ServerOptions(
            grpc_port=port, host="127.0.0.1", secure_serving=tls, transport=transport
        )
    server = ExtProcServer(pipeline, options)  # type: ignore[arg-type]
    await server.start()
    await _until_sigterm()
    await server.stop(None)


async def _until_sigterm() -> None:
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()


def run_child(args: argparse.Namespace) -> None:
    kind, port, upstream = args.child, args.port, args.upstream_port
    if kind in ("floor", "floor-sync"):
        coro = serve_floor(port, upstream, sync=kind == "floor-sync")
    else:
        coro = serve_aio(port, upstream, tls=args.tls, transport=args.transport)
    if args.uvloop:
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


# --- the conductor -------------------------------------------------------------------------------


@dataclass
class Arm:
    name: str
    process: subprocess.Popen[bytes]
    envoy: Envoy
    url: str
    latencies: list[float] = field(default_factory=list)
    done: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    errors: int = 0


def spawn_arm(name: str, engine_port: int, args: argparse.Namespace, workdir: Path) -> tuple:
    port = free_port()
    env = dict(os.environ)
    tls = name.endswith("-tls")
    mode = BodyMode[args.mode]
    response_mode = mode
    if name in ("serve", "serve-base", "serve-hyper"):
        if name == "serve-base":
            env["PYTHONPATH"] = str(Path(args.base_src).resolve())
        command = [str(ROOT / ".venv/bin/sluice"), "serve", "--pool-name=bench"]
        command += [
            "--pool-namespace=default",
            f"--resources={serve_manifests(workdir, engine_port)}",
        ]
        command += [f"--grpc-port={port}", "--secure-serving=false", "--log-level=warning"]
        command += [f"--grpc-health-port={free_port()}", f"--metrics-port={free_port()}"]
        command += ["--grpc-host=127.0.0.1"]
        if name == "serve-hyper":
            command += ["--ext-proc-transport=hyper"]
    else:
        child = "floor" if name == "floor-asyncio" else name
        if child not in ("floor", "floor-sync"):
            child = "serve"
        command = [sys.executable, __file__, "--child", child, "--port", str(port)]
        command += ["--upstream-port", str(engine_port)]
        transport = "grpc" if name.startswith("aio") else "hyper" if name == "hyper" else "h2"
        command += ["--transport", "base" if name == "base" else transport]
        if name not in ("aio", "floor-asyncio", "floor-sync", "h2-asyncio"):
            command.append("--uvloop")
        if tls:
            command.append("--tls")
        if name == "base":
            env["PYTHONPATH"] = str(Path(args.base_src).resolve())
        if name == "buffered-response":
            response_mode = BodyMode.BUFFERED
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    ports = GatewayPorts()
    ports.epp = port
    config = render_config(ports, [engine_port], mode=mode, tls=tls)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    [ext_proc] = [f for f in hcm["typed_config"]["http_filters"] if "ext_proc" in f["name"]]
    ext_proc["typed_config"]["processing_mode"]["response_body_mode"] = response_mode.name
    return process, Envoy(config, ports.admin), f"http://127.0.0.1:{ports.listener}{PATH}"


async def one(http: aiohttp.ClientSession, url: str, body: dict) -> tuple[float, int]:
    start = time.perf_counter()
    async with http.post(url, json=body) as response:
        await response.read()
        return time.perf_counter() - start, response.status


async def wait_serving(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                if (await one(http, url, BODY))[1] == 200:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(url)


async def load(arm: Arm, concurrency: int, seconds: float, body: dict) -> None:
    stop_at = time.monotonic() + seconds
    done = errors = 0

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal done, errors
        while time.monotonic() < stop_at:
            _, status = await one(http, arm.url, body)
            done += 1
            errors += status != 200

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        for _ in range(20):
            await one(http, arm.url, body)
        cpu0, t0 = tree_cpu_seconds(arm.process.pid), time.monotonic()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        cpu1, t1 = tree_cpu_seconds(arm.process.pid), time.monotonic()
    arm.done += done
    arm.errors += errors
    arm.seconds += t1 - t0
    arm.cpu += cpu1 - cpu0


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=1000, method="inclusive")[int(q * 1000) - 1]


async def conduct(args: argparse.Namespace) -> None:
    names = args.arms.split(",")
    body = dict(BODY, stream=True) if args.stream else BODY
    workdir = Path(tempfile.mkdtemp(prefix="sluice-extproc-variants-"))
    engine_port = free_port()
    engine = subprocess.Popen(
        [sys.executable, "-m", "sluice.sim.cli", "--count", "1", "--host", "127.0.0.1",
         "--port", str(engine_port), "--profile", "zero-latency", "--log-level", "warning"],
        cwd=ROOT,
    )  # fmt: skip
    direct_ports = GatewayPorts()
    direct_config = render_config(direct_ports, [engine_port])
    hcm = direct_config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = hcm["typed_config"]["http_filters"]
    hcm["typed_config"]["http_filters"] = [f for f in filters if "ext_proc" not in f["name"]]
    direct_envoy = Envoy(direct_config, direct_ports.admin)
    arms: list[Arm] = []
    try:
        for name in names:
            process, envoy, url = spawn_arm(name, engine_port, args, workdir)
            arms.append(Arm(name, process, envoy, url))
        await direct_envoy.start()
        for arm in arms:
            await arm.envoy.start()
        direct_url = f"http://127.0.0.1:{direct_ports.listener}{PATH}"
        await wait_serving(direct_url)
        for arm in arms:
            await wait_serving(arm.url)
        direct: list[float] = []
        async with aiohttp.ClientSession() as http:
            for _ in range(50):  # warm up every path
                for arm in arms:
                    await one(http, arm.url, body)
            per_round = max(1, args.latency // args.rounds)
            for _ in range(args.rounds):
                for _ in range(per_round):  # interleaved: same load for every arm
                    direct.append((await one(http, direct_url, body))[0])
                    for arm in arms:
                        arm.latencies.append((await one(http, arm.url, body))[0])
        for _ in range(args.rounds):
            for arm in arms:
                await load(arm, args.concurrency, args.seconds, body)
        base50, base99 = percentile(direct, 0.5), percentile(direct, 0.99)
        print(
            f"\nmode {args.mode}{' (SSE)' if args.stream else ''}; {args.rounds} rounds; latency: "
            f"{per_round * args.rounds} sequential requests per arm (direct p50 "
            f"{base50 * 1e3:.2f} ms, p99 {base99 * 1e3:.2f} ms); throughput: concurrency "
            f"{args.concurrency}, {args.seconds:g} s per round; cpus {os.cpu_count()}, "
            f"loadavg {os.getloadavg()[0]:.2f}\n"
        )
        print(
            "| arm | added p50 ms | added p99 ms | req/s | ext_proc CPU util "
            "| req per ext_proc CPU-s | errors |"
        )
        print("|---|---|---|---|---|---|---|")
        results = []
        for arm in arms:
            p50, p99 = percentile(arm.latencies, 0.5), percentile(arm.latencies, 0.99)
            rps = arm.done / arm.seconds
            row = {
                "arm": arm.name,
                "added_p50_ms": round((p50 - base50) * 1e3, 3),
                "added_p99_ms": round((p99 - base99) * 1e3, 3),
                "req_per_s": round(rps, 1),
                "cpu_util": round(arm.cpu / arm.seconds, 2),
                "req_per_cpu_s": round(arm.done / max(arm.cpu, 1e-9), 1),
                "errors": arm.errors,
            }
            results.append(row)
            print("| " + " | ".join(str(v) for v in row.values()) + " |")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        for arm in arms:
            await arm.envoy.stop()
            arm.process.terminate()
        await direct_envoy.stop()
        engine.terminate()
        for process in [arm.process for arm in arms] + [engine]:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", default="floor,aio,aio-uvloop,sync")
    parser.add_argument(
        "--mode", default="FULL_DUPLEX_STREAMED", choices=["FULL_DUPLEX_STREAMED", "BUFFERED"]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="per arm per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=int, default=300, help="sequential samples per arm")
    parser.add_argument("--stream", action="store_true", help="SSE responses (stream: true)")
    parser.add_argument("--base-src", default="/tmp/sluice-base/src")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument(
        "--child",
        choices=["floor", "floor-sync", "serve"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--uvloop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tls", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--transport", default="h2", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
    else:
        asyncio.run(conduct(args))


if __name__ == "__main__":
    exit_on_sigterm()
    cli()
