"""`sluice up`: the embedded default — four simulated engines and Sluice in front of them.

The engines run in a child process (`sluice sim`), so their event loop does not share a core
with Sluice's; Sluice runs here with the proxy on 8080, ext_proc on 9002, metrics on 9090 and the
manifests of `examples/quickstart/` (shipped inside the package, so it works from any folder).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from sluice import logs
from sluice.cli.serve import run_serve
from sluice.cli.serve_options import ServeOptions, parse_serve_options

QUICKSTART = Path(__file__).resolve().parents[1] / "quickstart"
ENGINE_PORTS = (8001, 8002, 8003, 8004)

BANNER = """
Sluice is up: 4 simulated vLLM engines behind an inference-aware proxy.

  proxy (OpenAI API)  http://127.0.0.1:{proxy}/v1
  ext_proc (gRPC)     127.0.0.1:{grpc}   health 127.0.0.1:{health}
  metrics             http://127.0.0.1:{metrics}/metrics
  dashboard           http://127.0.0.1:{metrics}/   (or: sluice top --metrics-port {metrics})
  resources           {resources}   (edit them: changes apply within a second)

Try it (streamed chat, highest priority):
  curl -N http://127.0.0.1:{proxy}/v1/chat/completions \\
    -H 'content-type: application/json' \\
    -H 'x-llm-d-inference-objective: interactive' \\
    -H 'x-llm-d-inference-fairness-id: alice' \\
    -d '{{"model": "sim-model", "stream": true, "max_tokens": 32,
         "messages": [{{"role": "user", "content": "Hello!"}}]}}'

Priorities: interactive (10) > standard (0) > batch (-1, sheddable).
Watch the queues:
  curl -s http://127.0.0.1:{metrics}/metrics | grep flow_control

Ctrl-C stops everything.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice up",
        description="Start 4 simulated engines and Sluice (proxy, ext_proc, metrics) with the "
        "quickstart manifests.",
    )
    parser.add_argument("--proxy-port", type=int, default=8080)
    parser.add_argument("--grpc-port", type=int, default=9002)
    parser.add_argument("--grpc-health-port", type=int, default=9003)
    parser.add_argument("--metrics-port", type=int, default=9090)
    parser.add_argument(
        "--resources", default=str(QUICKSTART), help="manifest directory (default: the quickstart)"
    )
    parser.add_argument("--profile", default="llama-8b-h100", help="simulated engine profile")
    parser.add_argument("--config-file", default="", help="EndpointPickerConfig YAML")
    parser.add_argument("--log-format", default="console", choices=("console", "json"))
    return parser


def _wait_for_ports(ports: tuple[int, ...], child: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if child.poll() is not None:
            raise RuntimeError(f"the simulated engines exited (code {child.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the simulated engines did not listen on {pending} in time")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", pending[0])) == 0:
                pending.pop(0)
                continue
        time.sleep(0.05)


def up_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_format, 2)
    engines = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluice",
            "sim",
            "--count",
            str(len(ENGINE_PORTS)),
            "--port",
            str(ENGINE_PORTS[0]),
            "--profile",
            args.profile,
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _wait_for_ports(ENGINE_PORTS, engines, timeout=30)
        serve_args = [
            "--pool-name=quickstart",
            "--pool-namespace=default",
            f"--resources={args.resources}",
            f"--proxy-port={args.proxy_port}",
            f"--grpc-port={args.grpc_port}",
            f"--grpc-health-port={args.grpc_health_port}",
            f"--metrics-port={args.metrics_port}",
            "--grpc-host=127.0.0.1",
            "--secure-serving=false",
            f"--log-format={args.log_format}",
        ]
        if args.config_file:
            serve_args.append(f"--config-file={args.config_file}")
        options = parse_serve_options(serve_args)
        return _serve_with_banner(options, args)
    finally:
        engines.terminate()
        try:
            engines.wait(timeout=5)
        except subprocess.TimeoutExpired:
            engines.kill()


def _serve_with_banner(options: ServeOptions, args: argparse.Namespace) -> int:
    banner = BANNER.format(
        proxy=args.proxy_port,
        grpc=args.grpc_port,
        health=args.grpc_health_port,
        metrics=args.metrics_port,
        resources=args.resources,
    )
    return run_serve(options, program="sluice up", on_started=lambda: print(banner, flush=True))
