"""The processes of one wall-clock run: `sluice sim` engines on their own loopback addresses,
and the router in front of them (`sluice serve --proxy-port` with the arm's config, or a peer
router from PyPI), started fresh and stopped."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sluice.bench.arms import PRECISE_HASH_SEED, Arm, arm_by_name
from sluice.bench.engines.build import find_install
from sluice.bench.engines.llamacpp import LlamaServers, LlamaServerSettings, start_llama_servers
from sluice.bench.harness.child import stop_processes
from sluice.bench.harness.pool import serve_manifests
from sluice.bench.harness.ports import free_port, free_port_block, wait_for_port
from sluice.bench.scenarios import INTERACTIVE_SHARE, Scenario
from sluice.sim.profiles import get_profile

PEERS = ("vllm-router", "sglang-router", "smg")
ENGINES = 4
HOST_BASE = "127.0.0.1"
# peer arm -> (peer, extra arguments)
PEER_ARMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "vllm-router:round_robin": ("vllm-router", ("--policy", "round_robin")),
    "vllm-router:cache_aware": ("vllm-router", ("--policy", "cache_aware")),
    "sglang-router:cache_aware": ("sglang-router", ("--policy", "cache_aware")),
    "smg:cache_aware": ("smg", ("--policy", "cache_aware")),
    # smg's priority-aware admission: classes from `x-smg-priority` (a tenant's class is capped
    # at the default max class, `default` unless raised), the class YAML written by
    # `smg_scheduler_yaml`, each worker's slots set by `set_smg_worker_slots`
    "smg:priority": (
        "smg",
        (
            "--policy",
            "cache_aware",
            "--priority-scheduler-enabled",
            "--priority-scheduler-default-max-class",
            "interactive",
        ),
    ),
}
SMG_PRIORITY = "smg:priority"

# the arm that stands for "straight to the engines": the client rotates over them itself
DIRECT_ROUND_ROBIN = "round-robin"


def installed_peers() -> dict[str, bool]:
    """Which peer routers are installed (next to this Python, or on PATH)."""
    return {name: _peer_command(name) is not None for name in PEERS}


def _peer_command(peer: str) -> list[str] | None:
    """How to start `peer` (None: not installed). smg runs as its module: sglang-router 0.3.2
    installs a `smg` script of its own (sglang-router's CLI, without smg's priority scheduler),
    and whichever of the two packages was installed last owns that name."""
    if peer == "smg":
        return [sys.executable, "-m", "smg", "launch"] if importlib.util.find_spec("smg") else None
    path = _binary(peer)
    if path is None:
        return None
    return [path, "launch"] if peer == "sglang-router" else [path]


def _binary(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def stop(process: subprocess.Popen[bytes]) -> None:
    stop_processes(process, timeout=5)


@dataclass(frozen=True)
class EngineCounters:
    """The engine's own counters, by the names its `/metrics` page gives them, and the metric
    profile Sluice reads it with (`sluice serve --engine`)."""

    profile: str
    generated: str  # output tokens generated
    running: str  # requests running now
    cached: str  # prompt tokens found in the prefix cache
    looked_up: tuple[str, ...]  # prompt tokens looked up in it: the sum of these counters


VLLM_COUNTERS = EngineCounters(
    "vllm",
    "vllm:generation_tokens_total",
    "vllm:num_requests_running",
    "vllm:prefix_cache_hits_total",
    ("vllm:prefix_cache_queries_total",),
)
# llama.cpp counts prompt tokens it computed and those it reused apart
LLAMACPP_COUNTERS = EngineCounters(
    "llamacpp",
    "llamacpp:tokens_predicted_total",
    "llamacpp:requests_processing",
    "llamacpp:prompt_tokens_cached_total",
    ("llamacpp:prompt_tokens_total", "llamacpp:prompt_tokens_cached_total"),
)


@dataclass
class Engines:
    processes: list[subprocess.Popen[bytes]]
    hosts: list[str]
    port: int
    # The KV-event layout: every engine on 127.0.0.1 with a port of its own (one pod, a target
    # port per engine: upstream's data-parallel ranks), publishing its KV events on
    # kv_ports[0] + rank with its replay ROUTER on kv_ports[1] + rank. vLLM binds its PUB socket
    # on every interface, so engines on one port but their own addresses could not all publish.
    ports: list[int] = field(default_factory=list)
    kv_ports: tuple[int, int] | None = None
    commands: list[list[str]] = field(default_factory=list)
    env: dict[str, str] | None = None
    slots: int = 0  # requests each engine runs at once (vLLM's max_num_seqs)
    # real engines (`llama-server`), when these are not `sluice sim` processes
    servers: LlamaServers | None = None
    counters: EngineCounters = field(default_factory=lambda: VLLM_COUNTERS)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        if self.ports:
            return list(zip(self.hosts, self.ports, strict=True))
        return [(h, self.port) for h in self.hosts]

    @property
    def urls(self) -> list[str]:
        return [f"http://{h}:{p}" for h, p in self.addresses]

    def stop(self) -> None:
        for process in self.processes:
            stop(process)
        if self.servers is not None:
            self.servers.stop()

    def restart(self, index: int) -> None:
        """Engine `index`'s process stopped and started again on its addresses (an empty
        cache; a KV-event publisher numbering from 0 again)."""
        if self.servers is not None:
            self.servers[index].restart()
            return
        stop(self.processes[index])
        process = _spawn(self.commands[index], self.env)
        self.processes[index] = process
        wait_for_port(*self.addresses[index], process)


def _spawn(command: list[str], env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _disjoint_blocks(count: int, blocks: int) -> list[int]:
    """The first ports of `blocks` blocks of `count` free consecutive ports, none overlapping."""
    firsts: list[int] = []
    while len(firsts) < blocks:
        first = free_port_block(count)
        if all(abs(first - other) >= count for other in firsts):
            firsts.append(first)
    return firsts


def start_engines(scenario: Scenario, priority: bool, *, kv_events: bool = False) -> Engines:
    """One `sluice sim` process per engine, each on its own loopback address and the same port
    (an InferencePool has one target port) — or, with `kv_events`, publishing vLLM's KV events
    with the precise arm's hash seed, on 127.0.0.1 with a port each (see `Engines`)."""
    if kv_events:
        http, pub, replay = _disjoint_blocks(ENGINES, 3)
        hosts, ports = [HOST_BASE] * ENGINES, [http + i for i in range(ENGINES)]
        engines = Engines([], hosts, http, ports, (pub, replay))
        engines.env = {**os.environ, "PYTHONHASHSEED": PRECISE_HASH_SEED}
    else:
        port = free_port()
        hosts = [f"127.0.0.{10 + i}" for i in range(ENGINES)]
        engines = Engines([], hosts, port)
    slots = scenario.setup.overrides.get("max_num_seqs")
    engines.slots = (
        int(str(slots)) if slots else get_profile(scenario.setup.profile).engine.max_num_seqs
    )
    for i, (host, port) in enumerate(engines.addresses):
        command = [sys.executable, "-m", "sluice.sim.cli", "--count", "1", "--host", host]
        command += ["--port", str(port), "--profile", scenario.setup.profile]
        command += ["--log-level", "warning"]
        blocks = scenario.setup.overrides.get("num_gpu_blocks")
        if blocks is not None:
            command += ["--num-gpu-blocks", str(blocks)]
        if priority:
            command += ["--scheduling-policy", "priority"]
        if engines.kv_ports is not None:
            pub, replay = engines.kv_ports
            kv = {
                "enable_kv_cache_events": True,
                "publisher": "zmq",
                "endpoint": f"tcp://*:{pub + i}",
                "replay_endpoint": f"tcp://*:{replay + i}",
            }
            command += ["--kv-events-config", json.dumps(kv)]
        engines.commands.append(command)
        engines.processes.append(_spawn(command, engines.env))
    try:
        for (host, port), process in zip(engines.addresses, engines.processes, strict=True):
            wait_for_port(host, port, process)
    except Exception:
        engines.stop()
        raise
    return engines


def start_llamacpp_engines(count: int, slots: int, threads: int) -> Engines:
    """`count` real `llama-server` processes, each on its own loopback address and the same
    port, as `start_engines` places the simulated ones; raises when llama.cpp is not built
    (`make engines`)."""
    install = find_install()
    if install is None:
        raise RuntimeError("llama.cpp is not built: make engines")
    port = free_port()
    hosts = [f"127.0.0.{10 + i}" for i in range(count)]
    settings = LlamaServerSettings(threads=threads, slots=slots)
    servers = start_llama_servers(count, install, settings, addresses=[(h, port) for h in hosts])
    engines = Engines([], hosts, port, slots=slots, counters=LLAMACPP_COUNTERS)
    engines.servers = servers
    return engines


def _manifests(workdir: Path, engines: Engines, objectives: dict[str, int]) -> Path:
    return serve_manifests(
        workdir, engines.ports or [engines.port], hosts=engines.hosts, objectives=objectives
    )


_PRECISE = "- type: precise-prefix-cache-scorer\n  name: prefix-cache-scorer\n  parameters:\n"


def sluice_config_text(arm: Arm, kv_ports: tuple[int, int] | None = None) -> str:
    """The arm as one Sluice config file (scheduling, saturationDetector, flowControl); a
    precise scorer subscribes to the engines' KV-event ports `kv_ports`."""
    room = arm.room
    config_yaml = arm.config_yaml
    if "precise-prefix-cache-scorer" in config_yaml:
        if kv_ports is None or _PRECISE not in config_yaml:
            raise RuntimeError(f"arm {arm.name}: its engines publish no KV events to subscribe to")
        pub, replay = kv_ports
        config_yaml = config_yaml.replace(
            _PRECISE,
            _PRECISE + "    kvEventsConfig: {podDiscoveryConfig: "
            f"{{socketPort: {pub}, replaySocketPort: {replay}}}}}\n",
        )
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
    return config_yaml.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def start_router(
    arm_name: str, engines: Engines, objectives: dict[str, int], workdir: Path
) -> tuple[subprocess.Popen[bytes] | None, list[str]]:
    """The router process and the base URLs clients use (round-robin: no router, the engines
    themselves, taken in turn)."""
    if arm_name == DIRECT_ROUND_ROBIN:
        return None, engines.urls
    port = free_port()
    if arm_name in PEER_ARMS:
        peer, extra = PEER_ARMS[arm_name]
        prefix = _peer_command(peer)
        if prefix is None:
            raise RuntimeError(f"{peer} is not installed")
        command = [*prefix, "--host", "127.0.0.1", "--port", str(port)]
        command += ["--worker-urls", *engines.urls, *extra]
        # every peer binds its metrics on port 29000 unless told otherwise: two at once (this
        # suite's, or anyone else's on the machine) and the second exits
        command += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
        if arm_name == SMG_PRIORITY:
            classes = workdir / "smg-priority.yaml"
            classes.write_text(smg_scheduler_yaml(INTERACTIVE_SHARE))
            command += ["--priority-scheduler-config", str(classes)]
    else:
        arm = arm_by_name(arm_name)
        config = workdir / f"config-{port}.yaml"
        config.write_text(sluice_config_text(arm, engines.kv_ports))
        manifests = _manifests(workdir, engines, objectives)
        command = [str(Path(sys.executable).parent / "sluice"), "serve", "--pool-name=bench"]
        command += ["--pool-namespace=default", f"--resources={manifests}"]
        command += [f"--proxy-port={port}", f"--config-file={config}"]
        command += ["--disable-extproc", "--secure-serving=false", "--log-level=warning"]
        command += [f"--grpc-health-port={free_port()}", f"--metrics-port={free_port()}"]
        command += [f"--engine={engines.counters.profile}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, process, timeout=60)
    url = f"http://127.0.0.1:{port}"
    if arm_name == SMG_PRIORITY:
        try:
            set_smg_worker_slots(url, len(engines.urls), engines.slots)
        except Exception:
            stop(process)
            raise
    return process, [url]


# -- smg's priority scheduler ------------------------------------------------------------------

# smg's four classes, lowest first; a request names one in `x-smg-priority`
SMG_CLASSES = ("bulk", "default", "interactive", "system")


def smg_class(priority: int) -> str:
    """The smg class for an InferenceObjective priority: above 0 interactive (the class smg
    reserves slots for and lets preempt), 0 default, below 0 bulk."""
    return "interactive" if priority > 0 else "default" if priority == 0 else "bulk"


def client_headers(arm_name: str, objectives: Mapping[str, int]) -> dict[str, dict[str, str]]:
    """Per objective, the headers an arm's clients add: smg's class for smg's scheduler."""
    if arm_name != SMG_PRIORITY:
        return {}
    return {name: {"x-smg-priority": smg_class(p)} for name, p in objectives.items()}


def smg_scheduler_yaml(interactive_share: float) -> str:
    """smg 1.13.0's class YAML (`--priority-scheduler-config`): interactive keeps
    `interactive_share` of the pool's slots (`reserved_per_slot`; the share it offers) and may
    preempt a lower class's request that has not started streaming; the other classes reserve
    nothing. Queues deep and patient enough that none of a run's requests is turned away (smg
    answers 429 past `queue_size`, 503 past `queue_timeout_secs`). Every field of a class is
    required once the class appears."""
    lines = ["classes:"]
    for name in SMG_CLASSES:
        interactive = name == "interactive"
        lines += [
            f"  {name}:",
            "    reserved_floor: 0",
            f"    reserved_per_slot: {interactive_share if interactive else 0.0:g}",
            "    queue_size: 4096",
            "    queue_timeout_secs: 300",
            f"    starvation_threshold_secs: {5 if interactive else 120}",
            f"    can_preempt: {'true' if interactive else 'false'}",
        ]
    return "\n".join(lines) + "\n"


def set_smg_worker_slots(url: str, workers: int, slots: int, timeout: float = 30.0) -> None:
    """Tell smg each worker's real slots (`PATCH /workers/{id}` with the `max_running_requests`
    label): without it smg counts 64 per worker. Waits until smg lists every worker with it."""
    deadline = time.monotonic() + timeout
    patched: set[str] = set()
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "/workers", timeout=5) as response:
            listed = json.loads(response.read()).get("workers", [])
        done = [w for w in listed if w.get("labels", {}).get("max_running_requests") == str(slots)]
        if len(listed) >= workers and len(done) == len(listed):
            return
        for worker in listed:
            if worker["id"] not in patched:
                body = json.dumps({"labels": {"max_running_requests": str(slots)}}).encode()
                request = urllib.request.Request(
                    f"{url}/workers/{worker['id']}",
                    data=body,
                    method="PATCH",
                    headers={"content-type": "application/json"},
                )
                urllib.request.urlopen(request, timeout=5).read()
                patched.add(worker["id"])
        time.sleep(0.2)
    raise RuntimeError(f"smg did not take {slots} slots for each of {workers} workers")
