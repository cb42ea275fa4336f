"""The processes of one wall-clock run: `sluice sim` engines on their own loopback addresses,
and the router in front of them (`sluice serve --proxy-port` with the arm's config, or a peer
router from PyPI), started fresh and stopped."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sluice.bench.arms import Arm, arm_by_name
from sluice.bench.harness.ports import free_port, wait_for_port
from sluice.bench.scenarios import Scenario

PEERS = ("vllm-router", "sglang-router", "smg")
ENGINES = 4
HOST_BASE = "127.0.0.1"
# peer arm -> (binary, extra arguments)
PEER_ARMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "vllm-router:round_robin": ("vllm-router", ("--policy", "round_robin")),
    "vllm-router:cache_aware": ("vllm-router", ("--policy", "cache_aware")),
    "sglang-router:cache_aware": ("sglang-router", ("launch", "--policy", "cache_aware")),
    "smg:cache_aware": ("smg", ("launch", "--policy", "cache_aware")),
    "smg:priority": ("smg", ("launch", "--policy", "cache_aware", "--priority-scheduler-enabled")),
}

# the arm that stands for "straight to the engines": the client rotates over them itself
DIRECT_ROUND_ROBIN = "round-robin"


def installed_peers() -> dict[str, bool]:
    """Which peer routers are installed (next to this Python, or on PATH)."""
    return {name: _binary(name) is not None for name in PEERS}


def _binary(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Engines:
    processes: list[subprocess.Popen[bytes]]
    hosts: list[str]
    port: int

    @property
    def urls(self) -> list[str]:
        return [f"http://{h}:{self.port}" for h in self.hosts]

    def stop(self) -> None:
        for process in self.processes:
            stop(process)


def start_engines(scenario: Scenario, priority: bool) -> Engines:
    """One `sluice sim` process per engine, each on its own loopback address and the same port
    (an InferencePool has one target port)."""
    port = free_port()
    hosts = [f"127.0.0.{10 + i}" for i in range(ENGINES)]
    engines = Engines([], hosts, port)
    for host in hosts:
        command = [sys.executable, "-m", "sluice.sim.cli", "--count", "1", "--host", host]
        command += ["--port", str(port), "--profile", scenario.setup.profile]
        command += ["--log-level", "warning"]
        blocks = scenario.setup.overrides.get("num_gpu_blocks")
        if blocks is not None:
            command += ["--num-gpu-blocks", str(blocks)]
        if priority:
            command += ["--scheduling-policy", "priority"]
        engines.processes.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    try:
        for host, process in zip(hosts, engines.processes, strict=True):
            wait_for_port(host, port, process)
    except Exception:
        engines.stop()
        raise
    return engines


def _manifests(workdir: Path, engines: Engines, objectives: dict[str, int]) -> Path:
    docs = [
        f"""apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: bench, namespace: default}}
spec:
  selector: {{matchLabels: {{app: bench-engine}}}}
  targetPorts: [{{number: {engines.port}}}]
  endpointPickerRef: {{name: sluice, port: {{number: 9002}}}}
"""
    ]
    for i, host in enumerate(engines.hosts):
        docs.append(
            f"""apiVersion: v1
kind: Pod
metadata: {{name: engine-{i}, namespace: default, labels: {{app: bench-engine}}}}
status:
  podIP: {host}
  conditions: [{{type: Ready, status: "True"}}]
"""
        )
    for name, priority in objectives.items():
        docs.append(
            f"""apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {{name: {name}, namespace: default}}
spec: {{priority: {priority}, poolRef: {{name: bench}}}}
"""
        )
    path = workdir / "manifests"
    path.mkdir(exist_ok=True)
    (path / "pool.yaml").write_text("---\n".join(docs))
    return path


def sluice_config_text(arm: Arm) -> str:
    """The arm as one Sluice config file (scheduling, saturationDetector, flowControl)."""
    room = arm.room
    lines = [
        "saturationDetector:",
        f"  queueDepthThreshold: {room.queue_depth}",
        f"  kvCacheUtilThreshold: {room.kv_cache_util}",
    ]
    # Every Sluice cap is written out (0 = off) so the arm's rule, not the config defaults, holds.
    lines += [
        f"  maxInFlightPerEndpoint: {room.max_in_flight_requests or 0}",
        f"  maxInFlightPerEndpointBelowTopPriority: {room.lower_priority_max_in_flight or 0}",
        f"  maxPendingPrefillTokensPerEndpoint: {room.max_pending_prefill_tokens or 0}",
        f"  backgroundHeadroomEndpoints: {room.background_headroom_endpoints}",
        f"  prefillTokensPerSecond: {room.prefill_tokens_per_s:g}",
        f"  prefillOverhead: {room.prefill_overhead_s:g}s",
        f"  maxPrefillHold: {room.max_prefill_hold_s:g}s",
        f"  reserveHoldGaps: {room.reserve_hold_gaps:g}",
        f"  reserveHoldMin: {room.reserve_hold_min_s:g}s",
        f"  reserveHoldMax: {room.reserve_hold_max_s:g}s",
    ]
    lines += ["flowControl:", f"  fairShareWindow: {arm.flow.fair_share_window_s:g}s"]
    if arm.flow.engine_priority:
        lines += ["  enginePriority: true"]
    return arm.config_yaml.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def start_router(
    arm_name: str, engines: Engines, objectives: dict[str, int], workdir: Path
) -> tuple[subprocess.Popen[bytes] | None, list[str]]:
    """The router process and the base URLs clients use (round-robin: no router, the engines
    themselves, taken in turn)."""
    if arm_name == DIRECT_ROUND_ROBIN:
        return None, engines.urls
    port = free_port()
    if arm_name in PEER_ARMS:
        binary, extra = PEER_ARMS[arm_name]
        path = _binary(binary)
        if path is None:
            raise RuntimeError(f"{binary} is not installed")
        command = [path, *extra[:1]] if extra[:1] == ("launch",) else [path]
        rest = extra[1:] if extra[:1] == ("launch",) else extra
        command += ["--host", "127.0.0.1", "--port", str(port), "--worker-urls", *engines.urls]
        command += list(rest)
    else:
        arm = arm_by_name(arm_name)
        config = workdir / f"config-{port}.yaml"
        config.write_text(sluice_config_text(arm))
        manifests = _manifests(workdir, engines, objectives)
        command = [str(Path(sys.executable).parent / "sluice"), "serve", "--pool-name=bench"]
        command += ["--pool-namespace=default", f"--resources={manifests}"]
        command += [f"--proxy-port={port}", f"--config-file={config}"]
        command += ["--disable-extproc", "--secure-serving=false", "--log-level=warning"]
        command += [f"--grpc-health-port={free_port()}", f"--metrics-port={free_port()}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, process, timeout=60)
    return process, [f"http://127.0.0.1:{port}"]
