"""Active-active replicas (issue #20): what sharing one store costs, and what it keeps.

1. **Decisions per CPU-second** of 1, 2 and 3 `sluice serve` replicas (proxy mode) sharing one
   real Redis, sync included, against one replica with no store. Four zero-latency simulated
   engines capped at `--cap` requests each (so leases split the caps and requests queue), a
   closed loop of `--concurrency` non-streamed requests spread over the replicas in turn; the
   replicas' CPU read from /proc. Target: N replicas' decisions per CPU-second >= 0.8x one
   replica's (adding replicas adds capacity). Arms alternate over `--rounds`; the goal line
   takes the median of each round's own ratio. Two control arms: one replica with a third of
   the clients and of the caps (loaded as each of three is: does a lighter-loaded event loop
   pay more per decision?) and one replica beside two CPU-bound neighbour processes (the
   machine as crowded as with three replicas: what does crowding 2 cores cost by itself?).
   Each round prints the replicas', the load generator's, the engines', the store's and
   everything else's CPU, steal and the load average; the idle CPU of a replica (no traffic:
   scrapes, timers, syncs) is measured per arm and its share ("fixed cost") left out in the
   "above fixed cost" column.
1b. **Capacity, weak scaling** (`--part capacity`): the same, but every replica is loaded as
   the lone one is: `--per-replica-clients` clients of its own and `--requests` per replica,
   and with the store each endpoint's cap is `--cap` x replicas, so each replica's lease (an
   even split while all are busy) is the room one replica alone has (docs/replicas.md says
   why this and not more engines). On a 2-core machine this cannot add req/s; it asks whether
   each decision costs the same CPU when there are more replicas, each as loaded as one.
2. **Sync cost**: per request (CPU per request with the store minus without), per idle replica
   second (syncs every 50 ms with no traffic), bytes per request and sync wall time (from the
   replicas' own `sluice_replicas_sync_*` metrics).
3. **One replica with the store against one without, side by side** (`--part paired`): both
   over the same engines and the same seconds, each with its own closed loop, so the shared
   machine's other load hits both alike; rounds of `--seconds` each, steal and idle CPU beside.
   Sequential arms (part 1) on this machine swing 2x with other users' load.
4. **Shared-prefix goodput** (wall clock): the `shared-prefix` scenario (48 groups x 3,000-token
   prefixes, real-time simulated engines) through 1 replica and through 3 replicas taken in
   turn per request (so every group lands on all three: the shared prefix index is what keeps
   locality), walked up `--loads` until p90 TTFT breaks 2 s. Target: 3 replicas >= 0.95x one.

The machine has 2 cores shared with the engines, the load generator and other users: compare
ratios within one run.

    PYTHONPATH=src .venv/bin/python benchmarks/replicas_scaling.py
        [--part decisions|capacity|paired|prefix|all] [--requests 3000] [--rounds 2]
        [--per-replica-clients 24] [--seconds 8]
        [--loads 4,6,8,10] [--window 15]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from sluice.bench.arms import arm_by_name
from sluice.bench.harness.child import child_env, exit_on_sigterm, stop_processes
from sluice.bench.harness.cpu import (
    cpu_seconds,
    idle_and_steal,
    machine_jiffies,
    tree_cpu_seconds,
)
from sluice.bench.harness.pool import serve_manifests
from sluice.bench.harness.ports import free_port, free_port_block, wait_for_port
from sluice.bench.harness.store import redis_server
from sluice.bench.metrics import SLO_TTFT_P90_S, goodput, hit_rate, summarize
from sluice.bench.records import RunResult
from sluice.bench.scenarios import SCENARIOS
from sluice.bench.suite import in_turn
from sluice.bench.wall.load import replay
from sluice.bench.wall.processes import sluice_config_text, start_engines
from sluice.bench.wall.run import wall_workload
from sluice.bench.wall.sampling import prefix_counters

ENGINES = 4
BODY = b'{"model":"sim-model","prompt":"Say hello.","max_tokens":4}'
TARGET_SCALING = 0.8
# A CPU-bound neighbour for the contention control arm: strided reads of a 4-million-element
# list (~140 MB with its ints), so that like another replica it takes time slices AND the
# caches (a bare `while True: pass` has no memory footprint to speak of).
NEIGHBOUR = "x = list(range(4_000_000))\nwhile True:\n    sum(x[::61])"
TARGET_PREFIX = 0.95


@dataclass
class Replicas:
    """`count` replicas of one pool, sharing `store_port`'s Redis (None: one replica alone)."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    metrics_urls: list[str] = field(default_factory=list)

    def cpu(self) -> float:
        return sum(tree_cpu_seconds(p.pid) for p in self.processes)

    def stop(self) -> None:
        stop_processes(*self.processes)


def start_replicas(
    count: int,
    store_port: int | None,
    manifests: Path,
    config: Path,
    workdir: Path,
    flags: tuple[str, ...] = (),
) -> Replicas:
    out = Replicas()
    for i in range(count):
        port, metrics = free_port(), free_port()
        command = [sys.executable, "-m", "sluice", "serve", "--pool-name=bench"]
        command += ["--pool-namespace=default", f"--resources={manifests}"]
        command += [f"--proxy-port={port}", f"--config-file={config}"]
        command += ["--disable-extproc", "--secure-serving=false", "--log-level=warning"]
        command += [f"--grpc-health-port={free_port()}", f"--metrics-port={metrics}"]
        if store_port is not None:
            command += [f"--replicas-store=redis://127.0.0.1:{store_port}/0", f"--replica-id=r{i}"]
        command += flags
        log = (workdir / f"r{i}.log").open("wb")
        out.processes.append(
            subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env())
        )
        out.urls.append(f"http://127.0.0.1:{port}")
        out.metrics_urls.append(f"http://127.0.0.1:{metrics}/metrics")
    for process, url in zip(out.processes, out.urls, strict=True):
        wait_for_port("127.0.0.1", int(url.rsplit(":", 1)[1]), process, timeout=60)
    return out


async def replica_samples(urls: list[str]) -> dict[str, float]:
    """`sluice_replicas_*` samples summed over the replicas."""
    total: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.get(url) as response:
                text = await response.text()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name.startswith("sluice_replicas_") and "le" not in sample.labels:
                        key = sample.name + "".join(
                            f"{{{v}}}" for k, v in sample.labels.items() if k == "direction"
                        )
                        total[key] = total.get(key, 0.0) + sample.value
    return total


async def wait_joined(metrics_urls: list[str], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    n = len(metrics_urls)
    while True:
        seen = await replica_samples(metrics_urls)
        if seen.get("sluice_replicas_store_connected") == n and seen.get(
            "sluice_replicas_peers"
        ) == n * (n - 1):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the replicas did not join the store and see each other")
        await asyncio.sleep(0.1)


async def closed_loop(
    urls: list[str], requests: int, concurrency: int, *, pinned: bool = False
) -> tuple[int, float]:
    """`requests` non-streamed completions, `concurrency` clients at a time. Spread (default):
    each request to the next of `urls` in turn, so N replicas share one load. Pinned:
    `concurrency` clients for each of `urls`, each client always to its own replica, so every
    replica is loaded as one replica alone is (the capacity part). Returns (answered 200,
    seconds)."""
    turn = itertools.cycle(urls)
    left = iter(range(requests))
    ok = 0
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(url: str | None) -> None:
            nonlocal ok
            for _ in left:
                async with session.post(
                    (url or next(turn)) + "/v1/completions", data=BODY, headers=headers
                ) as response:
                    await response.read()
                    ok += response.status == 200

        clients = [u for u in urls for _ in range(concurrency)] if pinned else [None] * concurrency
        started = time.monotonic()
        await asyncio.gather(*(client(u) for u in clients))
        return ok, time.monotonic() - started


@dataclass(frozen=True)
class Arm:
    """One arm of the decisions or capacity part: `replicas` processes, with or without the
    store, `clients` closed-loop clients in all and `requests` in all, engines capped at `cap`."""

    name: str
    replicas: int
    store: bool
    cap: int
    clients: int
    requests: int
    pinned: bool  # each client to its own replica (capacity) or requests in turn (decisions)
    neighbours: int = 0  # CPU-bound processes run beside the arm (the machine-contention control)
    flags: tuple[str, ...] = ()  # more `sluice serve` flags for every replica


@dataclass
class DecisionRun:
    arm: str
    replicas: int
    requests: int
    cpu_s: float
    wall_s: float
    idle_cpu_per_replica_s: float  # CPU per replica per second with no traffic
    syncs: float = 0.0
    sync_s: float = 0.0
    sync_bytes: float = 0.0

    fallbacks: float = 0.0
    store_cpu_s: float = 0.0  # the store's own CPU over the same requests
    steal: float = 0.0  # share of the machine's CPU time stolen by the host over the run
    machine_idle: float = 0.0  # share of the machine's CPU time idle over the run
    loadavg: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after
    loader_cpu_s: float = 0.0  # this process (the load generator) over the run
    engines_cpu_s: float = 0.0

    @property
    def per_cpu_s(self) -> float:
        return self.requests / self.cpu_s

    @property
    def other_cpu(self) -> float:
        """CPU (of one core) the machine spent on anything but this run's processes: other
        users (their processes may not be visible from here), the kernel's own threads."""
        busy = (1 - self.machine_idle - self.steal) * (os.cpu_count() or 1)
        ours = self.cpu_s + self.store_cpu_s + self.loader_cpu_s + self.engines_cpu_s
        return busy - ours / self.wall_s

    @property
    def per_cpu_s_with_store(self) -> float:
        return self.requests / (self.cpu_s + self.store_cpu_s)

    @property
    def fixed_cpu_s(self) -> float:
        """What the replicas would have spent over the run's wall time with no traffic at all
        (scrapes, syncs, timers every interval): paid once per replica, not per decision."""
        return self.idle_cpu_per_replica_s * self.replicas * self.wall_s

    @property
    def marginal_per_cpu_s(self) -> float:
        """Decisions per CPU-second above the fixed cost: the cost that grows with requests."""
        return self.requests / (self.cpu_s - self.fixed_cpu_s)


def decisions_arm(arm: Arm, args: argparse.Namespace, engines: subprocess.Popen[bytes],
                  engine_ports: list[int]) -> DecisionRun:  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="sluice-replicas-bench-"))
    manifests = serve_manifests(workdir, engine_ports)
    config = workdir / "config.yaml"
    config.write_text(f"saturationDetector: {{maxInFlightPerEndpoint: {arm.cap}}}\n")
    server = redis_server() if arm.store else None
    replicas: Replicas | None = None
    try:
        if server is not None:
            server.start()
        replicas = start_replicas(
            arm.replicas, server.port if server else None, manifests, config, workdir, arm.flags
        )
        if server is not None:
            asyncio.run(wait_joined(replicas.metrics_urls))
        per = arm.clients // arm.replicas if arm.pinned else arm.clients  # per replica if pinned
        asyncio.run(closed_loop(replicas.urls, 200 * arm.replicas, per, pinned=arm.pinned))  # warm
        idle0, idle_t0 = replicas.cpu(), time.monotonic()
        time.sleep(args.idle)
        idle = (replicas.cpu() - idle0) / (time.monotonic() - idle_t0) / arm.replicas
        before = asyncio.run(replica_samples(replicas.metrics_urls))
        store_pid = server.process.pid if server is not None and server.process else None
        store0 = tree_cpu_seconds(store_pid) if store_pid else 0.0
        load0, stat0, self0 = os.getloadavg()[0], machine_jiffies(), cpu_seconds(os.getpid())
        engines0 = tree_cpu_seconds(engines.pid)
        hogs = [subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) for _ in range(arm.neighbours)]
        cpu0 = replicas.cpu()
        try:
            ok, wall = asyncio.run(closed_loop(replicas.urls, arm.requests, per, pinned=arm.pinned))
            cpu = replicas.cpu() - cpu0
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        stat1, self1 = machine_jiffies(), cpu_seconds(os.getpid())
        engines_s = tree_cpu_seconds(engines.pid) - engines0
        store_cpu = tree_cpu_seconds(store_pid) - store0 if store_pid else 0.0
        after = asyncio.run(replica_samples(replicas.metrics_urls))
        if ok != arm.requests:
            raise RuntimeError(f"{arm.name}: {arm.requests - ok} requests failed")

        def delta(name: str) -> float:
            return after.get(name, 0.0) - before.get(name, 0.0)

        machine_idle, steal = idle_and_steal(stat0, stat1)
        return DecisionRun(
            arm.name,
            arm.replicas,
            ok,
            cpu,
            wall,
            idle,
            delta("sluice_replicas_sync_duration_seconds_count"),
            delta("sluice_replicas_sync_duration_seconds_sum"),
            delta("sluice_replicas_sync_bytes_total{sent}")
            + delta("sluice_replicas_sync_bytes_total{received}"),
            delta("sluice_replicas_fallbacks_total"),
            store_cpu,
            steal,
            machine_idle,
            (load0, os.getloadavg()[0]),
            self1 - self0,
            engines_s,
        )
    finally:
        if replicas is not None:
            replicas.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _arms(args: argparse.Namespace, capacity: bool) -> list[Arm]:
    """Decisions (strong scaling): one fixed closed loop of `--concurrency` spread over the
    replicas, the same caps. Capacity (weak scaling): `--per-replica-clients` for EACH replica
    and `--requests` per replica; with the store each endpoint's cap is `--cap` times the
    replicas, so that each replica's lease (an even split while all are busy) is the room one
    replica alone has — N replicas in front of a pool N times as large, each as loaded as the
    lone one. Without a store each replica takes the whole cap to itself, so `--cap` is already
    each one's room (and N x cap the endpoint's total, as with the store)."""
    out = []
    for n, store in ((1, False), (1, True), (2, True), (3, True), (3, False)):
        name = f"{n} replica{'s' if n > 1 else ''}" + (" + Redis" if store else ", no store")
        if capacity:
            cap = args.cap * n if store else args.cap
            out.append(Arm(name, n, store, cap, args.per_replica_clients * n,
                           args.requests * n, True))  # fmt: skip
        else:
            out.append(Arm(name, n, store, args.cap, args.concurrency, args.requests, False))
    # One replica + Redis loaded as in its own arm, beside two CPU-bound neighbours: the
    # machine as crowded as with three replicas (three busy processes besides the loader and
    # the engines on 2 cores), one replica's decisions. What it loses is the crowding alone.
    crowded = out[1]
    out.append(Arm("1 replica + Redis beside 2 CPU-bound neighbours", 1, True, crowded.cap,
                   crowded.clients, crowded.requests, crowded.pinned, neighbours=2))  # fmt: skip
    if not capacity:
        # One replica loaded as each of three is in the fixed-total arms: a third of the
        # clients and of the room (the caps over 3, at least 1). If it loses as much per
        # decision as three replicas do, the loss is the lighter load per event loop (fewer
        # events per wake-up, the fixed costs spread over fewer decisions), not the replica
        # count.
        third = f"1 replica + Redis, a third of the load ({args.concurrency // 3} clients,"
        third += f" cap {max(1, args.cap // 3)})"
        out.append(Arm(third, 1, True, max(1, args.cap // 3), args.concurrency // 3,
                       args.requests, False))  # fmt: skip
        # Three replicas deciding alone, each with a third of the caps (at least 1): as the
        # store's leases split the room, so their requests queue as the store's arm's do (the
        # plain no-store arm gives each the whole caps: 3x the room, nothing waits).
        out.append(Arm(f"3 replicas, no store, cap {max(1, args.cap // 3)} each", 3, False,
                       max(1, args.cap // 3), args.concurrency, args.requests, False))  # fmt: skip
        # Three replicas + Redis syncing every 200 ms instead of 50: a quarter of the syncs
        # (and of the pumps after them, and of the early syncs' budget). What it wins back is
        # what the syncs' frequency costs per decision.
        out.append(Arm("3 replicas + Redis, synced every 200 ms", 3, True, args.cap,
                       args.concurrency, args.requests, False,
                       flags=("--replicas-sync-interval=200ms",)))  # fmt: skip
    return out


def decisions(args: argparse.Namespace, capacity: bool = False) -> bool:
    """Decisions per CPU-second of 1, 2 and 3 replicas, arms alternated per round. Three
    replicas deciding alone (each with the whole caps) tell the sync's cost from the cost of
    three processes on this machine."""
    arms = _arms(args, capacity)
    first = free_port_block(ENGINES)
    ports = [first + i for i in range(ENGINES)]
    command = [sys.executable, "-m", "sluice", "sim", "--count", str(ENGINES), "--port"]
    command += [str(first), "--profile", "zero-latency", "--log-level", "warning"]
    engines = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_env(),
    )
    runs: dict[str, list[DecisionRun]] = {arm.name: [] for arm in arms}
    try:
        for port in ports:
            wait_for_port("127.0.0.1", port, engines)
        for round_ in range(args.rounds):
            for arm in in_turn(arms, round_):
                run = decisions_arm(arm, args, engines, ports)
                print(
                    f"  round {round_ + 1} {arm.name}: {run.per_cpu_s:,.0f} decisions/CPU-s"
                    f" ({run.requests} in {run.wall_s:.1f}s, {run.cpu_s:.2f} CPU-s,"
                    f" steal {run.steal * 100:.0f} %, load {run.loadavg[0]:.2f})",
                    file=sys.stderr,
                    flush=True,
                )
                runs[arm.name].append(run)
    finally:
        stop_processes(engines)
    return report(args, arms, runs, capacity)


def report(
    args: argparse.Namespace, arms: list[Arm], runs: dict[str, list[DecisionRun]], capacity: bool
) -> bool:
    def best(arm: str) -> DecisionRun:  # the round the shared machine disturbed least
        return max(runs[arm], key=lambda r: r.per_cpu_s)

    names = [a.name for a in arms]
    alone, one = best(names[0]), best(names[1])
    part = "capacity" if capacity else "decisions"
    if capacity:
        print(
            f"\n## Capacity, weak scaling: decisions per CPU-second with {args.per_replica_clients}"
            f" clients per replica, each client to its own replica ({args.requests} requests per"
            f" replica; caps {args.cap} x replicas with the store, {args.cap} without; {ENGINES}"
            f" zero-latency engines; best of {args.rounds} rounds)\n"
        )
    else:
        print(
            f"\n## Decisions per CPU-second, fixed total load ({args.requests} requests,"
            f" {args.concurrency} clients over all replicas in turn, {ENGINES} zero-latency"
            f" engines capped at {args.cap}; best of {args.rounds} rounds)\n"
        )
    print("| arm | req/s | decisions per CPU-s | vs 1 replica + Redis | with the store's CPU"
          " | vs 1 + Redis | above fixed cost | vs 1 + Redis | CPU per request"
          " | fixed cost share | syncs per request | sync bytes per request | mean sync ms"
          " | idle CPU per replica | fall-backs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for arm in arms:
        run = best(arm.name)
        ratio = run.per_cpu_s / one.per_cpu_s
        marginal = run.marginal_per_cpu_s / one.marginal_per_cpu_s
        with_store = run.per_cpu_s_with_store / one.per_cpu_s_with_store
        syncs = run.syncs / run.requests
        mean_ms = run.sync_s / run.syncs * 1000 if run.syncs else math.nan
        print(
            f"| {arm.name} | {run.requests / run.wall_s:,.0f} | {run.per_cpu_s:,.0f}"
            f" | {ratio:.2f}x | {run.per_cpu_s_with_store:,.0f} | {with_store:.2f}x"
            f" | {run.marginal_per_cpu_s:,.0f} | {marginal:.2f}x"
            f" | {run.cpu_s / run.requests * 1e6:.0f} µs"
            f" | {run.fixed_cpu_s / run.cpu_s * 100:.0f} %"
            f" | {syncs:.3f} | {run.sync_bytes / run.requests:.0f} | {mean_ms:.2f}"
            f" | {run.idle_cpu_per_replica_s * 100:.1f} % | {run.fallbacks:g} |"
        )
    print(f"\n### Each round ({part}; ratios against that round's 1 replica + Redis)\n")
    print("| round | arm | req/s | decisions per CPU-s | vs 1 + Redis"
          " | above fixed cost vs 1 + Redis | replicas CPU | fixed cost | loader CPU"
          " | engines CPU | store CPU | other CPU | steal | machine idle"
          " | load average before, after |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    per_round: dict[str, list[float]] = {a.name: [] for a in arms}
    per_round_store: dict[str, list[float]] = {a.name: [] for a in arms}
    for round_ in range(args.rounds):
        base = runs[names[1]][round_]
        for arm in arms:
            run = runs[arm.name][round_]
            per_round[arm.name].append(run.per_cpu_s / base.per_cpu_s)
            per_round_store[arm.name].append(run.per_cpu_s_with_store / base.per_cpu_s_with_store)
            print(
                f"| {round_ + 1} | {arm.name} | {run.requests / run.wall_s:,.0f}"
                f" | {run.per_cpu_s:,.0f} | {per_round[arm.name][-1]:.2f}x"
                f" | {run.marginal_per_cpu_s / base.marginal_per_cpu_s:.2f}x"
                f" | {run.cpu_s / run.wall_s * 100:.0f} %"
                f" | {run.fixed_cpu_s / run.wall_s * 100:.0f} %"
                f" | {run.loader_cpu_s / run.wall_s * 100:.0f} %"
                f" | {run.engines_cpu_s / run.wall_s * 100:.0f} %"
                f" | {run.store_cpu_s / run.wall_s * 100:.0f} %"
                f" | {run.other_cpu * 100:.0f} %"
                f" | {run.steal * 100:.0f} % | {run.machine_idle * 100:.0f} %"
                f" | {run.loadavg[0]:.2f}, {run.loadavg[1]:.2f} |"
            )
    idle_alone = runs[names[0]]
    idle_store = runs[names[1]]
    print(
        "\nIdle CPU per replica (no traffic, scrapes + timers; + syncs with the store), per round:"
        f" alone {', '.join(f'{r.idle_cpu_per_replica_s * 100:.1f} %' for r in idle_alone)};"
        f" + Redis {', '.join(f'{r.idle_cpu_per_replica_s * 100:.1f} %' for r in idle_store)}"
        " (of one core). The table's 'fixed cost' is that idle rate times replicas times wall"
        " time; 'above fixed cost' leaves it out."
    )
    per_request = (one.cpu_s / one.requests - alone.cpu_s / alone.requests) * 1e6
    three, three_alone = best(names[3]), best(names[4])
    per_request_3 = (three.cpu_s / three.requests - three_alone.cpu_s / three_alone.requests) * 1e6
    print(
        f"Sync cost per request ({part}): 1 replica + Redis minus alone {per_request:.0f} µs CPU;"
        f" 3 replicas + Redis minus 3 alone {per_request_3:.0f} µs."
    )
    met = True
    for arm in arms:
        if arm.replicas == 1 or not arm.store:
            continue
        rounds = per_round[arm.name]
        median, store_median = (
            statistics.median(rounds),
            statistics.median(per_round_store[arm.name]),
        )
        best_ratio = best(arm.name).per_cpu_s / one.per_cpu_s
        ok = median >= TARGET_SCALING and store_median >= TARGET_SCALING
        met &= ok
        print(
            f"{'MET' if ok else 'MISSED'} ({part}): {arm.name} / 1 replica + Redis decisions per"
            f" CPU-s, median of {len(rounds)} rounds {median:.2f}x (with the store's CPU"
            f" {store_median:.2f}x; per round {', '.join(f'{r:.2f}' for r in rounds)};"
            f" best of rounds {best_ratio:.2f}x); target >= {TARGET_SCALING}x"
        )
    return met


async def timed_loop(url: str, seconds: float, concurrency: int) -> int:
    """Non-streamed completions to `url`, `concurrency` at a time, for `seconds`; answered 200."""
    ok = 0
    end = time.monotonic() + seconds
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client() -> None:
            nonlocal ok
            while time.monotonic() < end:
                async with session.post(url + "/v1/completions", data=BODY, headers=headers) as r:
                    await r.read()
                    ok += r.status == 200

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return ok


async def side_by_side(urls: list[str], seconds: float, concurrency: int) -> list[int]:
    return list(await asyncio.gather(*(timed_loop(u, seconds, concurrency) for u in urls)))


def paired(args: argparse.Namespace) -> bool:
    """One replica alone and one with Redis over the same engines in the same seconds: the
    store's cost per request without the machine's other load deciding which arm looks
    slower (docs/replicas.md, "Decisions per CPU-second")."""
    first = free_port_block(ENGINES)
    ports = [first + i for i in range(ENGINES)]
    command = [sys.executable, "-m", "sluice", "sim", "--count", str(ENGINES), "--port"]
    command += [str(first), "--profile", "zero-latency", "--log-level", "warning"]
    engines = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env()
    )
    workdir = Path(tempfile.mkdtemp(prefix="sluice-replicas-paired-"))
    server = redis_server()
    groups: list[Replicas] = []
    rates: list[float] = []
    costs: list[float] = []
    try:
        for port in ports:
            wait_for_port("127.0.0.1", port, engines)
        manifests = serve_manifests(workdir, ports)
        config = workdir / "config.yaml"
        config.write_text(f"saturationDetector: {{maxInFlightPerEndpoint: {args.cap}}}\n")
        server.start()
        for name in ("alone", "store"):
            (workdir / name).mkdir()
        groups.append(start_replicas(1, None, manifests, config, workdir / "alone"))
        groups.append(start_replicas(1, server.port, manifests, config, workdir / "store"))
        alone, store = groups
        asyncio.run(wait_joined(store.metrics_urls))
        urls = [alone.urls[0], store.urls[0]]
        asyncio.run(side_by_side(urls, 1.5, args.concurrency))  # warm up
        print(f"\n## One replica alone and one with Redis, side by side ({args.seconds:g} s"
              f" rounds, concurrency {args.concurrency} each, {ENGINES} zero-latency engines"
              f" capped at {args.cap})\n")  # fmt: skip
        print("| round | alone req/s | alone decisions per CPU-s | + Redis req/s"
              " | + Redis decisions per CPU-s | req/s ratio | per CPU-s ratio | syncs/s"
              " | mean sync ms | lease (sum) | steal | idle | load average |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for round_ in range(args.rounds):
            cpu0 = [g.cpu() for g in groups]
            before = asyncio.run(replica_samples(store.metrics_urls))
            stat0, t0 = machine_jiffies(), time.monotonic()
            done = asyncio.run(side_by_side(urls, args.seconds, args.concurrency))
            wall, stat1 = time.monotonic() - t0, machine_jiffies()
            cpu = [g.cpu() - c for g, c in zip(groups, cpu0, strict=True)]
            after = asyncio.run(replica_samples(store.metrics_urls))
            syncs = after.get("sluice_replicas_sync_duration_seconds_count", 0.0) - before.get(
                "sluice_replicas_sync_duration_seconds_count", 0.0
            )
            sync_s = after.get("sluice_replicas_sync_duration_seconds_sum", 0.0) - before.get(
                "sluice_replicas_sync_duration_seconds_sum", 0.0
            )
            machine_idle, steal = idle_and_steal(stat0, stat1)
            per_cpu = [n / c for n, c in zip(done, cpu, strict=True)]
            rates.append(done[1] / done[0])
            costs.append(per_cpu[1] / per_cpu[0])
            print(
                f"| {round_ + 1} | {done[0] / wall:,.0f} | {per_cpu[0]:,.0f}"
                f" | {done[1] / wall:,.0f} | {per_cpu[1]:,.0f} | {rates[-1]:.2f}x"
                f" | {costs[-1]:.2f}x | {syncs / wall:.0f}"
                f" | {sync_s / syncs * 1000 if syncs else math.nan:.1f}"
                f" | {after.get('sluice_replicas_lease', 0.0):g}"
                f" | {steal * 100:.0f} % | {machine_idle * 100:.0f} %"
                f" | {os.getloadavg()[0]:.2f} |",
                flush=True,
            )
    finally:
        for group in groups:
            group.stop()
        server.stop()
        stop_processes(engines)
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\n+ Redis / alone: req/s {min(rates):.2f}-{max(rates):.2f}x, decisions per CPU-s"
        f" {min(costs):.2f}-{max(costs):.2f}x (the lease sum is the whole cap times"
        f" {ENGINES} endpoints when the lone replica holds every cap)"
    )
    return True


@dataclass
class PrefixPoint:
    """One shared-prefix load point and what each process spent on it (CPU from /proc over
    the replay, drain included), so a TTFT change can be put beside the process that paid."""

    run: RunResult
    replicas_cpu_s: float
    store_cpu_s: float
    engines_cpu_s: float
    client_cpu_s: float  # this process: the load generator
    syncs: float  # every replica's syncs over the replay
    sync_s: float  # their summed wall time
    fallbacks: float
    loadavg: tuple[float, float]  # 1-minute load average before and after

    @property
    def store_us_per_sync(self) -> float:
        return self.store_cpu_s / self.syncs * 1e6 if self.syncs else math.nan

    @property
    def replica_us_per_sync(self) -> float:
        """Replicas' CPU per sync: an upper bound on the sync's client cost (requests too)."""
        return self.replicas_cpu_s / self.syncs * 1e6 if self.syncs else math.nan

    @property
    def mean_sync_ms(self) -> float:
        return self.sync_s / self.syncs * 1000 if self.syncs else math.nan


def prefix_point(replicas: int, load: float, args: argparse.Namespace) -> PrefixPoint:
    scenario = SCENARIOS["shared-prefix"]
    workload = wall_workload(scenario, args.seed, load, True, args.window)
    engines = start_engines(scenario, False)
    workdir = Path(tempfile.mkdtemp(prefix="sluice-replicas-prefix-"))
    server = redis_server().start()
    group: Replicas | None = None
    try:
        manifests = serve_manifests(
            workdir, [engines.port], hosts=engines.hosts, objectives=dict(workload.objectives)
        )
        config = workdir / "config.yaml"
        config.write_text(sluice_config_text(arm_by_name("sluice-default")))
        group = start_replicas(replicas, server.port, manifests, config, workdir)
        asyncio.run(wait_joined(group.metrics_urls))
        assert server.process is not None

        def engines_cpu() -> float:
            return sum(tree_cpu_seconds(p.pid) for p in engines.processes)

        load0 = os.getloadavg()[0]
        before = asyncio.run(replica_samples(group.metrics_urls))
        cpu0, store0 = group.cpu(), tree_cpu_seconds(server.process.pid)
        engines0, self0 = engines_cpu(), cpu_seconds(os.getpid())
        records, samples = asyncio.run(replay(group.urls, workload, 10.0, engines.urls))
        cpu, store = group.cpu() - cpu0, tree_cpu_seconds(server.process.pid) - store0
        engines_s, self_s = engines_cpu() - engines0, cpu_seconds(os.getpid()) - self0
        after = asyncio.run(replica_samples(group.metrics_urls))
        hits, queries = prefix_counters(engines)

        def delta(name: str) -> float:
            return after.get(name, 0.0) - before.get(name, 0.0)

        run = RunResult(
            "shared-prefix",
            f"{replicas} replicas",
            args.seed,
            load,
            records,
            samples,
            prefix_hits=int(hits),
            prefix_queries=int(queries),
            duration_s=workload.duration_s,
            warmup_s=workload.duration_s * scenario.warmup_frac,
            cpu_s=cpu,
        )
        return PrefixPoint(
            run,
            cpu,
            store,
            engines_s,
            self_s,
            delta("sluice_replicas_sync_duration_seconds_count"),
            delta("sluice_replicas_sync_duration_seconds_sum"),
            delta("sluice_replicas_fallbacks_total"),
            (load0, os.getloadavg()[0]),
        )
    finally:
        if group is not None:
            group.stop()
        engines.stop()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def prefix(args: argparse.Namespace) -> bool:
    loads = [float(x) for x in args.loads.split(",")]
    curves: dict[int, dict[float, PrefixPoint]] = {1: {}, 3: {}}
    walking = {1, 3}
    for i, load in enumerate(loads):  # both arms at each load, in alternating order
        for replicas in (1, 3) if i % 2 == 0 else (3, 1):
            if replicas not in walking:
                continue
            print(f"  shared-prefix, {replicas} replicas, {load:g} QPS ...", file=sys.stderr)
            point = prefix_point(replicas, load, args)
            curves[replicas][load] = point
            point_p90 = summarize(point.run).ttft_p90
            print(
                f"    p90 TTFT {point_p90:.3f} s, hit rate {hit_rate(point.run):.3f},"
                f" store {point.store_us_per_sync:.0f} µs CPU per sync,"
                f" load average {point.loadavg[0]:.2f} -> {point.loadavg[1]:.2f}",
                file=sys.stderr,
                flush=True,
            )
            if point_p90 > SLO_TTFT_P90_S:
                walking.discard(replicas)  # past the knee: higher loads only break it more
    print(
        f"\n## Shared-prefix goodput, wall clock ({args.window:g} s of arrivals per load,"
        " the first 25 % as warm-up; requests to the replicas in turn)\n"
    )
    print("| replicas | goodput (QPS, p90 TTFT <= 2 s) | p90 TTFT per load (QPS: s) |"
          " prefix hit rate per load |")  # fmt: skip
    print("|---|---|---|---|")
    good = {}
    for replicas, curve in curves.items():
        p90 = {load: summarize(point.run).ttft_p90 for load, point in curve.items()}
        good[replicas] = goodput(p90)
        print(
            f"| {replicas} | {good[replicas]:.1f} |"
            f" {', '.join(f'{load:g}: {v:.3f}' for load, v in p90.items())} |"
            f" {', '.join(f'{load:g}: {hit_rate(pt.run):.3f}' for load, pt in curve.items())} |"
        )
    print(
        "\n### CPU per point (seconds over the replay and its drain; syncs from the replicas'"
        " metrics)\n"
    )
    print("| replicas | QPS | replicas CPU | store CPU | engines CPU | load generator CPU"
          " | syncs | store µs per sync | replicas µs per sync | mean sync ms | fall-backs"
          " | load average before, after |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for replicas, curve in curves.items():
        for load, pt in curve.items():
            print(
                f"| {replicas} | {load:g} | {pt.replicas_cpu_s:.2f} | {pt.store_cpu_s:.2f}"
                f" | {pt.engines_cpu_s:.2f} | {pt.client_cpu_s:.2f} | {pt.syncs:.0f}"
                f" | {pt.store_us_per_sync:.0f} | {pt.replica_us_per_sync:.0f}"
                f" | {pt.mean_sync_ms:.2f} | {pt.fallbacks:g}"
                f" | {pt.loadavg[0]:.2f}, {pt.loadavg[1]:.2f} |"
            )
    ratio = good[3] / good[1] if good[1] else math.nan
    capped = good[1] == max(loads) and good[3] == max(loads)
    met = ratio >= TARGET_PREFIX
    print(
        f"\n{'MET' if met else 'MISSED'}: 3 replicas / 1 replica goodput {ratio:.2f}x"
        f" (target >= {TARGET_PREFIX}x)"
        f"{'; both reached the highest load tried' if capped else ''}"
    )
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part", choices=("decisions", "capacity", "paired", "prefix", "all"), default="all"
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument(
        "--per-replica-clients", type=int, default=24, help="capacity: clients for each replica"
    )
    parser.add_argument("--cap", type=int, default=4, help="maxInFlightPerEndpoint")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=float, default=2.0, help="idle seconds measured per arm")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per paired round")
    # On this 2-core machine (engines, load generator and replicas on it) p90 TTFT is past the
    # 2 s SLO near 10-14 QPS; at 16-32 QPS every point broke it (goodput 0, ratio NaN).
    parser.add_argument("--loads", default="4,6,8,10", help="shared-prefix QPS, ascending")
    parser.add_argument("--window", type=float, default=15.0, help="seconds of arrivals")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(
        "machine: 2 cores shared with the engines, the load generator and other users;"
        " compare ratios within this run",
        file=sys.stderr,
    )
    met = True
    if args.part in ("decisions", "all"):
        met &= decisions(args)
    if args.part in ("capacity", "all"):
        met &= decisions(args, capacity=True)
    if args.part in ("paired", "all"):
        met &= paired(args)
    if args.part in ("prefix", "all"):
        met &= prefix(args)
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    exit_on_sigterm()
    main()
