"""Wall-clock mode: real sockets. `sluice sim` engine processes (4 engines of the scenario's
profile, on 127.0.0.10..13), one router in front of them — `sluice serve --proxy-port` with the
arm's config, or a peer router from PyPI when installed — and an asyncio load generator that
replays the scenario's workload open-loop (streaming, usage in the last chunk) and records
client-side TTFT and e2e. Fresh engines and a fresh router for every run.

shared-prefix is a goodput sweep: every arm walks up the same loads with `suite.sweep` and
goodput comes from `metrics.goodput` (via `ScenarioResult.goodputs`), as in virtual time.
two-bands and noisy-neighbour run loaded and with the protected tenant alone; the targets are
`report.targets` over the same `ScenarioResult`s, so both modes check the same claims.

Router cost, per arm: added latency (median e2e of 40 sequential one-token requests through the
router minus the same straight to an engine), the router's CPU seconds over the run (process
and children, from /proc) and requests completed per router CPU-second, and its peak RSS.

Peers: `vllm-router` (round_robin, cache_aware), `sglang-router` (cache_aware), `smg`
(cache_aware, and cache_aware with `--priority-scheduler-enabled` for the priority
scenarios; smg classes tenants by its own YAML, which we do not write, so every request is in
its default class: this measures what the switch alone does; smg 1.13.0's `launch` rejects the
flag, so that arm reports the failure).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sluice.bench import report
from sluice.bench.arms import Arm, arm_by_name
from sluice.bench.metrics import SLO_TTFT_P90_S, delivered_output_tps, hit_rate, summarize
from sluice.bench.records import RequestRecord, RunResult, Sample
from sluice.bench.report import fmt, fmt_spread, isolation_ratios, targets
from sluice.bench.scenarios import SCENARIOS, SWEEP, THROUGHPUT, Scenario
from sluice.bench.suite import ScenarioResult, sweep
from sluice.bench.workloads import Arrival, Workload

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
# what each wall scenario runs, and at which loads: (quick, full). shared-prefix is a goodput
# sweep (the same points for every arm, walked up by `suite.sweep` until p90 TTFT breaks the
# SLO); the others run at one load, loaded and with the protected tenants alone.
WALL_LOADS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "shared-prefix": ((4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 32.0),) * 2,
    "two-bands": ((1.5,), (1.5,)),
    "noisy-neighbour": ((1.5,), (1.5,)),
    # closed loops (load = the streamed share): requests, not seconds, bound them
    "non-streamed": ((0.0,), (0.0,)),
    "mixed-streaming": ((0.5,), (0.5,)),
}
# requests a closed loop sends in wall mode (quick, full); the rest of its workload is unused
WALL_REQUESTS: dict[str, tuple[int, int]] = {
    "non-streamed": (128, 512),
    "mixed-streaming": (128, 512),
}
# the arm that stands for "straight to the engines": the client rotates over them itself
DIRECT_ROUND_ROBIN = "round-robin"
# seconds of the workload's arrivals replayed (quick, full)
WALL_DURATION: dict[str, tuple[float, float]] = {
    "shared-prefix": (20.0, 60.0),
    "two-bands": (10.0, 45.0),
    "noisy-neighbour": (15.0, 45.0),
}


def installed_peers() -> dict[str, bool]:
    """Which peer routers are installed (next to this Python, or on PATH)."""
    return {name: _binary(name) is not None for name in PEERS}


def _binary(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    host: str, port: int, process: subprocess.Popen[bytes], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}: {process.args!r}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- /proc -------------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out += _tree(int(child))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat; (0, 0) where unreadable."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0, 0.0
    values = [float(x) for x in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user/nice
    return total - idle, total


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of the machine's CPUs busy between two `machine_cpu()` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else math.nan


def peak_rss_mb(pid: int) -> float:
    total = 0.0
    for p in _tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        m = re.search(r"VmHWM:\s+(\d+) kB", status)
        if m:
            total += int(m.group(1)) / 1024
    return total


# -- processes ---------------------------------------------------------------------------------


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
            _stop(process)


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


# -- the load generator ------------------------------------------------------------------------


async def _one(
    session: object, url: str, arrival: Arrival, record: RequestRecord, t0: float
) -> None:
    import aiohttp
    import orjson

    assert isinstance(session, aiohttp.ClientSession)
    headers = arrival.headers()
    try:
        async with session.post(url + arrival.path, data=arrival.body(), headers=headers) as resp:
            if resp.status == 429:
                record.outcome = "rejected"
                return
            if resp.status != 200:
                record.outcome = "error"
                return
            usage: dict[str, object] = {}
            if arrival.stream:
                async for line in resp.content:
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        break
                    if record.first_token_at is None:
                        record.first_token_at = time.monotonic() - t0
                    doc = orjson.loads(payload)
                    if doc.get("usage"):
                        usage = doc["usage"]
            else:  # the whole response at once: its first token reaches the client at its end
                doc = orjson.loads(await resp.read())
                record.first_token_at = time.monotonic() - t0
                usage = doc.get("usage") or {}
            record.completed_at = time.monotonic() - t0
            record.outcome = "completed"
            record.output_tokens = int(str(usage.get("completion_tokens", 0)))
            record.prompt_tokens = int(str(usage.get("prompt_tokens", record.prompt_tokens)))
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict):
                record.cached_tokens = int(details.get("cached_tokens", 0))
    except (TimeoutError, aiohttp.ClientError):
        record.outcome = "error"


async def replay(
    urls: Sequence[str],
    workload: Workload,
    drain_s: float,
    engine_urls: Sequence[str] = (),
) -> tuple[list[RequestRecord], list[Sample]]:
    """Send the workload (open loop at its arrival times, or its closed loop) to `urls`, taken
    in turn; sample the engines' generated-token counters once a second meanwhile."""
    import aiohttp

    closed = workload.concurrency is not None
    budget = workload.duration_s + drain_s if not closed else 3600.0
    timeout = aiohttp.ClientTimeout(total=budget)
    connector = aiohttp.TCPConnector(limit=0)
    records: list[RequestRecord] = []
    samples: list[Sample] = []
    turn = itertools.cycle(urls)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        t0 = time.monotonic()
        sampler = asyncio.create_task(_sample_engines(session, engine_urls, t0, samples))

        def start(a: Arrival, at: float) -> asyncio.Task[None]:
            record = RequestRecord(
                a.request_id, a.tenant, 0, at, prompt_tokens=0, max_tokens=a.max_tokens
            )
            record.dispatched_at = at
            records.append(record)
            return asyncio.create_task(_one(session, next(turn), a, record, t0))

        try:
            if closed:
                pending = iter(workload.arrivals)

                async def client() -> None:
                    for a in pending:  # shared: each client takes the next one
                        await start(a, time.monotonic() - t0)

                clients = workload.concurrency or 1
                await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), budget)
            else:
                tasks = []
                for a in workload.arrivals:
                    delay = a.at - (time.monotonic() - t0)
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(start(a, a.at))
                await asyncio.wait_for(asyncio.gather(*tasks), budget)
        except TimeoutError:
            pass
        finally:
            sampler.cancel()
            await _sample_once(session, engine_urls, t0, samples)
    return records, samples


async def _sample_engines(
    session: object, engine_urls: Sequence[str], t0: float, samples: list[Sample]
) -> None:
    while True:
        await _sample_once(session, engine_urls, t0, samples)
        await asyncio.sleep(1.0)


async def _sample_once(
    session: object, engine_urls: Sequence[str], t0: float, samples: list[Sample]
) -> None:
    """The engines' own count of generated tokens (vLLM's `generation_tokens_total`)."""
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)
    if not engine_urls:
        return
    at = time.monotonic() - t0
    total = 0
    busy = 0
    try:
        for url in engine_urls:
            async with session.get(url + "/metrics") as resp:
                text = await resp.text()
            total += int(_gauge(text, "vllm:generation_tokens_total"))
            # an engine with a request running is busy, as the virtual runner counts it
            busy += _gauge(text, "vllm:num_requests_running") > 0
    except (TimeoutError, aiohttp.ClientError):
        return
    samples.append(Sample(at, {}, {}, busy, len(engine_urls), {}, total))


def _gauge(page: str, name: str) -> float:
    """The value of an unlabelled-or-labelled sample `name` on a Prometheus page (0 if absent)."""
    match = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", page, re.M)
    return float(match.group(1)) if match else 0.0


async def probe_latency(url: str, n: int = 40) -> float:
    """Median e2e of sequential one-token requests (seconds)."""
    import aiohttp

    body = b'{"model":"sim-model","prompt":"Say hello.","max_tokens":1}'
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            started = time.perf_counter()
            async with session.post(
                url + "/v1/completions", data=body, headers={"content-type": "application/json"}
            ) as resp:
                await resp.read()
            times.append(time.perf_counter() - started)
    return statistics.median(times[5:])


def _prefix_counters(engines: Engines) -> tuple[float, float]:
    import urllib.request

    hits = queries = 0.0
    for url in engines.urls:
        text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        for name, value in re.findall(r"^(vllm:prefix_cache_\w+)(?:\{[^}]*\})? (\S+)$", text, re.M):
            if name.startswith("vllm:prefix_cache_hits"):
                hits += float(value)
            elif name.startswith("vllm:prefix_cache_queries"):
                queries += float(value)
    return hits, queries


# -- one run -----------------------------------------------------------------------------------


@dataclass
class WallRun:
    arm: str
    result: RunResult
    baseline: RunResult | None = None
    router_cpu_s: float = math.nan
    router_rss_mb: float = math.nan
    added_latency_ms: float = math.nan
    replay_s: float = math.nan  # wall time of the replay (arrivals + drain)
    machine_busy: float = math.nan  # share of all CPUs busy during the replay
    error: str = ""

    @property
    def load(self) -> float:
        return self.result.load

    @property
    def router_core_share(self) -> float:
        """The router's CPU seconds per second of replay: 1.0 is one core flat out."""
        return self.router_cpu_s / self.replay_s if self.replay_s > 0 else math.nan

    @property
    def req_per_cpu_s(self) -> float:
        done = sum(1 for r in self.result.records if r.outcome == "completed")
        return done / self.router_cpu_s if self.router_cpu_s else math.nan


def _needs_priority_engines(arm_name: str) -> bool:
    return arm_name not in PEER_ARMS and arm_by_name(arm_name).flow.engine_priority


def run_arm(
    scenario: Scenario,
    arm_name: str,
    workload: Workload,
    *,
    seed: int,
    load: float,
    drain_s: float,
    probe: bool = True,
) -> WallRun:
    """One wall-clock run: fresh engines and router; the result and the router's costs.
    `probe`: also measure the router's added latency (40 + 40 sequential requests first)."""
    engines = start_engines(scenario, _needs_priority_engines(arm_name))
    workdir = Path(tempfile.mkdtemp(prefix="sluice-wall-"))
    router: subprocess.Popen[bytes] | None = None
    try:
        objectives = dict(workload.objectives)
        router, urls = start_router(arm_name, engines, objectives, workdir)
        time.sleep(1.0)  # first scrapes / health checks
        added = math.nan
        if probe and router is not None:
            direct = asyncio.run(probe_latency(engines.urls[0]))
            via = asyncio.run(probe_latency(urls[0]))
            added = (via - direct) * 1000
        cpu0 = cpu_seconds(router.pid) if router is not None else 0.0
        machine0 = machine_cpu()
        t0 = time.monotonic()
        records, samples = asyncio.run(replay(urls, workload, drain_s, engines.urls))
        replay_s = time.monotonic() - t0
        busy = busy_share(machine0, machine_cpu())
        cpu = cpu_seconds(router.pid) - cpu0 if router is not None else math.nan
        rss = peak_rss_mb(router.pid) if router is not None else math.nan
        priorities = workload.objectives
        for r in records:
            arrival_objective = r.tenant if r.tenant in priorities else None
            r.priority = priorities.get(arrival_objective or "", 0)
        hits, queries = _prefix_counters(engines)
        closed = workload.concurrency is not None
        ended = [r.completed_at for r in records if r.completed_at is not None]
        duration = max(ended, default=0.0) if closed else workload.duration_s
        result = RunResult(
            scenario=scenario.name,
            arm=arm_name,
            seed=seed,
            load=load,
            records=records,
            samples=samples,
            prefix_hits=int(hits),
            prefix_queries=int(queries),
            duration_s=duration,
            warmup_s=0.0 if closed else workload.duration_s * scenario.warmup_frac,
            cpu_s=cpu,
        )
        return WallRun(arm_name, result, None, cpu, rss, added, replay_s, busy)
    finally:
        if router is not None:
            _stop(router)
        engines.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def wall_arms(scenario: Scenario, requested: Sequence[str]) -> list[str]:
    if requested:
        return list(requested)
    arms = [DIRECT_ROUND_ROBIN, "sluice-default"]
    peers = installed_peers()
    for arm, (binary, _) in PEER_ARMS.items():
        if not peers.get(binary):
            continue
        if arm == "smg:priority" and not scenario.protected:
            continue
        arms.append(arm)
    return arms


@dataclass
class WallScenario:
    scenario: Scenario
    loads: tuple[float, ...]  # the offered loads (a sweep walks up them until the knee)
    # arm -> its runs: one per load reached (sweeps), or the one loaded run (with its baseline)
    runs: dict[str, list[WallRun]] = field(default_factory=dict)
    seed: int = 1
    quick: bool = True
    duration_s: float = 0.0
    wall_s: float = 0.0

    def as_result(self) -> ScenarioResult:
        """The runs as the virtual mode's `ScenarioResult`, so goodput, the isolation ratios and
        the targets come from the same code in both modes."""
        ran = tuple(a for a, runs in self.runs.items() if any(not r.error for r in runs))
        out = ScenarioResult(self.scenario, ran, (self.seed,), self.quick, mode="wall")
        for arm, runs in self.runs.items():
            good = [r for r in runs if not r.error]
            if len(good) < len(runs):
                out.skipped[arm] = next(r.error for r in runs if r.error)
            if good:
                out.runs[arm] = [r.result for r in good]
                out.baselines[arm] = [r.baseline for r in good if r.baseline is not None]
        out.wall_s = self.wall_s
        return out


def wall_duration(scenario: Scenario, quick: bool) -> float:
    return WALL_DURATION.get(scenario.name, (10.0, 45.0))[0 if quick else 1]


def wall_workload(
    scenario: Scenario, seed: int, load: float, quick: bool, cut: float | None = None
) -> Workload:
    """The scenario's workload cut to the wall mode's replay window."""
    workload = scenario.build(seed, load, quick)
    if workload.concurrency is not None:
        count = WALL_REQUESTS.get(scenario.name, (128, 512))[0 if quick else 1]
        return Workload(
            workload.name,
            workload.arrivals[:count],
            workload.objectives,
            workload.adapters,
            workload.concurrency,
        )
    cut = wall_duration(scenario, quick) if cut is None else cut
    return Workload(
        workload.name,
        tuple(a for a in workload.arrivals if a.at < cut),
        workload.objectives,
        workload.adapters,
    )


def _failed(scenario: Scenario, arm: str, seed: int, load: float, exc: Exception) -> WallRun:
    return WallRun(arm, RunResult(scenario.name, arm, seed, load, [], []), error=str(exc))


def run_wall_scenario(
    scenario: Scenario,
    arms: Sequence[str],
    *,
    seed: int,
    quick: bool,
    loads: Sequence[float] | None = None,
    drain_s: float | None = None,
    duration_s: float | None = None,
    on_run: Callable[[WallRun], None] | None = None,
) -> WallScenario:
    """Every arm on the scenario. Sweeps walk each arm up `loads` with `suite.sweep` (the
    virtual mode's stopping rule); the added-latency probe runs once per arm, at its first load.
    Isolation scenarios run the loaded mix and the protected tenants alone."""
    default = WALL_LOADS.get(scenario.name, (scenario.quick_loads, scenario.loads))
    chosen = tuple(loads or default[0 if quick else 1])
    out = WallScenario(scenario, chosen, seed=seed, quick=quick)
    out.duration_s = wall_duration(scenario, quick) if duration_s is None else duration_s
    started = time.monotonic()
    # after the last arrival, wait this long for stragglers (a request still without its first
    # token by then is infinitely late: far past the 2 s SLO either way)
    drain = drain_s if drain_s is not None else (10.0 if quick else 40.0)

    def point(arm: str, load: float, first: bool) -> WallRun:
        print(f"wall {scenario.name} {arm} at {fmt(load)} ...", file=sys.stderr, flush=True)
        workload = wall_workload(scenario, seed, load, quick, out.duration_s)
        try:
            run = run_arm(scenario, arm, workload, seed=seed, load=load, drain_s=drain, probe=first)
            if scenario.protected:
                alone = workload.only(*scenario.protected)
                run.baseline = run_arm(
                    scenario, arm, alone, seed=seed, load=load, drain_s=drain, probe=False
                ).result
        except Exception as exc:  # a peer that fails to start is reported, not fatal
            run = _failed(scenario, arm, seed, load, exc)
        if on_run is not None:
            on_run(run)
        return run

    for arm in arms:
        if scenario.kind == SWEEP:
            out.runs[arm] = sweep(
                chosen,
                functools.partial(lambda a, load: point(a, load, load == chosen[0]), arm),
                lambda run: run.result,
            )
        else:
            out.runs[arm] = [point(arm, load, i == 0) for i, load in enumerate(chosen)]
    out.wall_s = time.monotonic() - started
    return out


# -- report ------------------------------------------------------------------------------------

ROUND_ROBINS = ("round-robin", "vllm-router:round_robin")
SMG_PRIORITY_NOTE = (
    "smg's priority scheduler (the two-class overload's peer with priorities) is not measured: "
    "smg 1.13.0's `smg launch --help` lists no priority-scheduler flag and `launch` rejects "
    "`--priority-scheduler-enabled`, so there is no such arm to run."
)


def _cache_aware(arm: str) -> bool:
    return arm.endswith(":cache_aware")


def _cpu_cells(run: WallRun) -> list[str]:
    return [
        fmt(run.router_cpu_s),
        fmt(run.router_core_share),
        fmt(run.req_per_cpu_s),
        fmt(run.machine_busy),
        fmt(run.router_rss_mb),
        fmt_spread([run.added_latency_ms], 2),
    ]


_CPU_HEADER = [
    "router CPU s",
    "router cores",
    "req per CPU-s",
    "machine busy",
    "peak RSS MB",
    "added latency ms",
]


def _sweep_lines(ws: WallScenario) -> list[str]:
    result = ws.as_result()
    goodputs = {arm: statistics.median(result.goodputs(arm)) for arm in result.arms}
    refs = [a for a in (*ROUND_ROBINS, "upstream-default") if a in goodputs]
    peers = [a for a in goodputs if _cache_aware(a)]
    best_peer = max((goodputs[a] for a in peers), default=math.nan)
    header = ["arm", "goodput (QPS, p90 TTFT ≤ 2 s)"]
    header += [f"vs {a}" for a in refs]
    if peers:
        header.append("vs best cache-aware peer")
    header += ["p90 TTFT per load (QPS: s)", "hit rate at the knee"]
    rows = []
    for arm, runs in ws.runs.items():
        if arm not in goodputs:
            rows.append([arm, f"failed: {result.skipped.get(arm, '')[:120]}"])
            continue
        g = goodputs[arm]
        row = [arm, fmt(g)]
        row += [fmt(g / goodputs[a] if goodputs[a] else math.inf) for a in refs]
        if peers:
            row.append(fmt(g / best_peer if best_peer else math.inf))
        curve = ", ".join(
            f"{fmt(r.load)}: {'failed' if r.error else fmt(summarize(r.result).ttft_p90)}"
            for r in runs
        )
        knee = [r for r in runs if not r.error and summarize(r.result).ttft_p90 <= SLO_TTFT_P90_S]
        row += [curve, fmt(hit_rate(max(knee, key=lambda r: r.load).result)) if knee else "–"]
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "Every point of every arm:", ""]
    header = ["arm", "load", "TTFT p50", "p90", "p99", "req/s", "hit rate", *_CPU_HEADER]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, runs in ws.runs.items():
        for run in runs:
            if run.error:
                lines.append(f"| {arm} | {fmt(run.load)} | failed: {run.error[:120]} |")
                continue
            sm = summarize(run.result)
            row = [arm, fmt(run.load), fmt(sm.ttft_p50), fmt(sm.ttft_p90), fmt(sm.ttft_p99)]
            row += [fmt(sm.req_per_s), fmt(hit_rate(run.result)), *_cpu_cells(run)]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _fixed_lines(ws: WallScenario) -> list[str]:
    s = ws.scenario
    header = ["arm", "TTFT p50", "p90", "p99", "e2e p50", "req/s", "out tok/s", "hit rate"]
    if s.protected:
        header += [f"{', '.join(s.protected)} p99 alone", "loaded", "ratio (≤ 1.25 holds)"]
    header += _CPU_HEADER
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    result = ws.as_result()
    for arm, runs in ws.runs.items():
        for run in runs:
            if run.error:
                lines.append(f"| {arm} | failed: {run.error[:120]} |")
                continue
            sm = summarize(run.result)
            row = [arm, fmt(sm.ttft_p50), fmt(sm.ttft_p90), fmt(sm.ttft_p99), fmt(sm.e2e_p50)]
            row += [fmt(sm.req_per_s), fmt(delivered_output_tps(run.result))]
            row += [fmt(hit_rate(run.result))]
            if s.protected:
                prot = [r for r in run.result.records if r.tenant in s.protected]
                alone = summarize(run.baseline).ttft_p99 if run.baseline else math.nan
                ratios = isolation_ratios(result, arm)
                row += [fmt(alone), fmt(summarize(run.result, prot).ttft_p99)]
                row += [fmt(max(ratios)) if ratios else "–"]
            row += _cpu_cells(run)
            lines.append("| " + " | ".join(row) + " |")
    return lines


def render_wall(results: Sequence[WallScenario], command: str, elapsed_s: float) -> str:
    lines = [
        "# Sluice benchmark results: wall clock",
        "",
        "Generated by `sluice bench --mode wall`; do not edit by hand. Reproduce with:",
        "",
        f"    {command}",
        "",
        f"Wall time: {elapsed_s:.0f} s; machine: {os.cpu_count()} CPUs shared by the engines "
        f"({ENGINES} `sluice sim` processes, one per engine, simulating in real time), the "
        "router and the load generator, so absolute latencies include CPU contention. One "
        "repetition. *router cores*: the router's CPU seconds per second of replay (1 = one "
        "core flat out); *machine busy*: share of all CPUs busy during the replay (1 = every "
        "core; anything else running on the machine counts too); *added latency*: measured "
        "once per arm (at a sweep's first load). Every run starts with cold caches and the "
        "replay windows are short, so shared-prefix goodput here is cold-start-heavy (see "
        "docs/bench.md).",
    ]
    tlist = targets([ws.as_result() for ws in results])
    if tlist:
        lines += ["", "## Targets", ""]
        lines += ["| claim | met | numbers |", "|---|---|---|"]
        lines += [f"| {t.claim} | {'yes' if t.met else '**no**'} | {t.evidence} |" for t in tlist]
    lines += ["", SMG_PRIORITY_NOTE]
    for ws in results:
        s = ws.scenario
        kind = {SWEEP: "goodput sweep", THROUGHPUT: "closed loop"}.get(s.kind, "loaded vs alone")
        lines += [
            "",
            f"## {s.name} (wall, {kind})",
            "",
            s.description + ".",
            "",
            _window_line(ws),
            "",
        ]
        lines += _sweep_lines(ws) if s.kind == SWEEP else _fixed_lines(ws)
    return "\n".join(lines) + "\n"


def _window_line(ws: WallScenario) -> str:
    s = ws.scenario
    load = f"Load {', '.join(fmt(x) for x in ws.loads)} {s.load_unit}"
    if s.kind == THROUGHPUT:
        count = WALL_REQUESTS.get(s.name, (128, 512))[0 if ws.quick else 1]
        return f"{load}; {count} requests; {ws.wall_s:.0f} s. *out tok/s*: the engines' own count."
    return (
        f"{load}; the first {fmt(ws.duration_s)} s of the workload's arrivals (first "
        f"{fmt(100 * s.warmup_frac)}% left out as warm-up); {ws.wall_s:.0f} s. *out tok/s*: "
        "output tokens the engines generated per second over the measured window (their own "
        "counters), whether or not their requests finished in it."
    )


def main_wall(names: list[str], args: argparse.Namespace, command: str) -> int:
    peers = ", ".join(
        f"{n}: {'installed' if ok else 'absent'}" for n, ok in installed_peers().items()
    )
    print(f"sluice bench --mode wall; peer routers: {peers}", file=sys.stderr)
    started = time.monotonic()
    chosen = [n for n in names if n in WALL_LOADS]
    skipped = [n for n in names if n not in WALL_LOADS]
    if skipped:
        print(
            f"wall mode runs {', '.join(WALL_LOADS)}; skipping {', '.join(skipped)}",
            file=sys.stderr,
        )
    requested = tuple(args.arms.split())
    report.SLUICE = args.candidate
    results = []
    for name in chosen:
        scenario = SCENARIOS[name]
        results.append(
            run_wall_scenario(
                scenario, wall_arms(scenario, requested), seed=args.seed, quick=args.quick
            )
        )
    elapsed = time.monotonic() - started
    text = render_wall(results, command, elapsed)
    path = args.results or args.out / "REPORT-wall.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(text)
    for t in targets([ws.as_result() for ws in results]):
        print(f"{'MET ' if t.met else 'MISS'} {t.claim}: {t.evidence}", file=sys.stderr)
    print(f"wrote {path} in {elapsed:.0f} s", file=sys.stderr)
    return 0
