"""What decision receipts and tracing cost, in the unit the goal is stated in: ext_proc requests
per Sluice CPU-second, through real Envoy.

Arms, each its own `sluice serve` (ext_proc, plaintext, default config) behind its own Envoy
(`deploy/envoy/envoy.yaml`, --concurrency 1), all in front of one `sluice sim` process serving
`--engines` zero-latency engines (a pool of that many endpoints, so the receipts carry real
score tables):

- `off`: `--decision-receipts=0 --tracing=false` — no recorder, the receipt-free path;
- `receipts`: the defaults (a ring of 1024 receipts / 4 MiB);
- `tracing`: receipts plus OTLP/HTTP export with the SDK's batch processor, every trace sampled
  (`OTEL_TRACES_SAMPLER=always_on`), to an OTLP receiver on 127.0.0.1 in this process;
- `tracing-sampled`: the same at `parentbased_traceidratio` with `--sample-ratio` (default 0.1,
  as upstream's inferencepool chart configures tracing for production);
- with `--aa`: `off-again`, the same as `off` in its own process and Envoy (an A/A arm: how far
  two equal arms differ in this run, the noise floor of every ratio);
- with `--batch-spans N`: `tracing-batchN`, every request traced with
  `OTEL_BSP_MAX_EXPORT_BATCH_SIZE=N` and `OTEL_BSP_MAX_QUEUE_SIZE=4N` (fewer, larger POSTs);
- with `--ring N` (repeatable): `receipts-ringN`, receipts with a ring of N
  (`--decision-receipts=N`): what the ring's size costs;
- with `--against TREE`: `off` and `receipts` again from another checkout's `src/` (a before and
  after in one run; `receipts@against` is also given against its own tree's `off`), and with
  `--against-tracing` its two tracing arms too (against its own tree's `off` and `receipts`).

`SLUICE_BENCH_PROFILE_DIR=DIR` runs each arm under cProfile (DIR/<arm>, written on exit).

One run: `--rounds` rounds of `--seconds`, each loading all arms at once, `--concurrency`
closed-loop clients each, so that every arm sees the same machine at every moment (on a
shared machine whose load swings within seconds, arms loaded one after the other see different
machines; `--one-at-a-time` does that, the order rotating per round). Per arm: requests per
Sluice CPU-second (its process's CPU-time clock over the load window, to the nanosecond, all
threads, the exporter's included; `bench.harness.cpu`) over all rounds, and its cost against `off`:
`1 - (req/CPU-s of the arm) / (req/CPU-s of off)`, with the spread of the per-round ratios;
for the tracing arms also against `receipts` (what tracing adds to receipts); and per arm the
CPU of its threads beside the event loop's (each thread's scheduler count in /proc/PID/task:
the tracer's batch thread) per request.
The receiver decodes what it gets and counts spans, so the tracing arms show their spans
arrived.

    .venv/bin/python benchmarks/receipts_overhead.py [--rounds 4] [--seconds 4] [--engines 4]

Director-core CPU per request and the 1 M-request ring memory check:
`benchmarks/receipts_core.py`.
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

from sluice.bench.harness.child import exit_on_sigterm, stop_processes
from sluice.bench.harness.cpu import cpu_seconds, thread_cpu_seconds
from sluice.bench.harness.envoy import REPO as ROOT
from sluice.bench.harness.envoy import Envoy, GatewayPorts, render_config
from sluice.bench.harness.otlp_sink import OtlpSinkProcess
from sluice.bench.harness.pool import serve_manifests
from sluice.bench.harness.ports import free_port, free_port_block, wait_listening
from sluice.extproc import BodyMode

BODY = {"model": "sim-model", "prompt": "Say hello.", "max_tokens": 4}
PATH = "/v1/completions"


class Arm:
    def __init__(
        self,
        name: str,
        flags: list[str],
        env: dict[str, str],
        manifests: Path,
        engines: list[int],
    ) -> None:
        self.name = name
        self.ports = GatewayPorts()
        command = [sys.executable]
        if os.environ.get("SLUICE_BENCH_PROFILE_DIR"):  # where does each arm's CPU go?
            command += ["-m", "cProfile", "-o", f"{os.environ['SLUICE_BENCH_PROFILE_DIR']}/{name}"]
        command += ["-m", "sluice", "serve", "--pool-name=bench"]
        command += ["--pool-namespace=default", f"--resources={manifests}"]
        command += [f"--grpc-port={self.ports.epp}", "--grpc-host=127.0.0.1"]
        command += ["--secure-serving=false", "--log-level=warning"]
        command += [f"--grpc-health-port={free_port()}", f"--metrics-port={free_port()}", *flags]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self.process = subprocess.Popen(command, cwd=ROOT, env={**environ, **env})
        config = render_config(self.ports, engines, mode=BodyMode.FULL_DUPLEX_STREAMED, tls=False)
        self.envoy = Envoy(config, self.ports.admin)
        self.url = f"http://127.0.0.1:{self.ports.listener}{PATH}"
        self.done = 0
        self.cpu = 0.0
        self.side_cpu = 0.0  # of its threads but the event loop's (the tracer's batch thread)
        self.rounds: list[float] = []  # requests per Sluice CPU-second, per round
        self.loads: list[float] = []  # the 1-minute load average after each round


async def one(http: aiohttp.ClientSession, url: str) -> None:
    async with http.post(url, json=BODY) as response:
        await response.read()
        assert response.status == 200, response.status


async def ready(http: aiohttp.ClientSession, url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await one(http, url)
            return
        except (aiohttp.ClientError, AssertionError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def load(arms: list[Arm], concurrency: int, seconds: float) -> None:
    """`concurrency` closed-loop clients per arm, for `seconds`; the arms in `arms` at once (each
    Sluice's CPU is read over the same window)."""
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) for _ in arms
    ]
    done = [0] * len(arms)
    try:
        for arm, http in zip(arms, sessions):  # open the connections before the clock starts
            await asyncio.gather(*(one(http, arm.url) for _ in range(concurrency)))
        stop_at = time.monotonic() + seconds

        async def worker(i: int) -> None:
            while time.monotonic() < stop_at:
                await one(sessions[i], arms[i].url)
                done[i] += 1

        main0 = [_main_thread_cpu(arm.process.pid) for arm in arms]
        cpu0 = [cpu_seconds(arm.process.pid) for arm in arms]
        await asyncio.gather(*(worker(i) for i in range(len(arms)) for _ in range(concurrency)))
        cpu = [cpu_seconds(arm.process.pid) - c for arm, c in zip(arms, cpu0)]
        main = [_main_thread_cpu(arm.process.pid) - m for arm, m in zip(arms, main0)]
    finally:
        for http in sessions:
            await http.close()
    for arm, n, c, m in zip(arms, done, cpu, main):
        arm.done += n
        arm.cpu += c
        arm.side_cpu += c - m
        arm.rounds.append(n / max(c, 1e-9))


def _main_thread_cpu(pid: int) -> float:
    return thread_cpu_seconds(pid).get(pid, 0.0)


GOAL_ON_PCT = 10.0  # issue #18: receipts and tracing on cost <= 10 %


async def main(args: argparse.Namespace) -> None:
    sink = OtlpSinkProcess()  # its own process: neither a Sluice nor the load generator pays
    with sink:
        arms = await run(args, sink.url)
    report(args, arms, sink)


def start_pool(count: int, prefix: str) -> tuple[subprocess.Popen[bytes], list[int], Path]:
    """`sluice sim` serving `count` zero-latency engines, their ports, and the manifests of a
    pool of them."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    first = free_port_block(count, below_ephemeral=True)
    engines = list(range(first, first + count))
    sim = [sys.executable, "-m", "sluice.sim.cli", "--count", str(count)]
    sim += ["--host", "127.0.0.1", "--port", str(first), "--profile", "zero-latency"]
    engine = subprocess.Popen([*sim, "--log-level", "warning"], cwd=ROOT)
    return engine, engines, serve_manifests(workdir, engines)


async def run(args: argparse.Namespace, sink_url: str) -> list[Arm]:
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink_url}
    engine, engines, manifests = start_pool(args.engines, "sluice-receipts-bench-")
    sampled = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}
    sampled["OTEL_TRACES_SAMPLER_ARG"] = str(args.sample_ratio)
    arms: list[Arm] = []
    try:
        await wait_listening(engines, 30, engine)
        off_flags = ["--decision-receipts=0", "--tracing=false"]
        arms += [
            Arm("off", off_flags, {}, manifests, engines),
            Arm("receipts", [], {}, manifests, engines),
            Arm("tracing", [], {**otlp, "OTEL_TRACES_SAMPLER": "always_on"}, manifests, engines),
            Arm(f"tracing-{args.sample_ratio:g}", [], {**otlp, **sampled}, manifests, engines),
        ]
        if args.aa:  # the same as off in another process: what arms differ by when equal
            arms.append(Arm("off-again", off_flags, {}, manifests, engines))
        if args.batch_spans:  # every request traced, in larger exports (fewer POSTs)
            big = {
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": str(args.batch_spans),
                # the queue must hold more than a batch, or the batch never fills
                "OTEL_BSP_MAX_QUEUE_SIZE": str(4 * args.batch_spans),
            }
            every = {**otlp, **big, "OTEL_TRACES_SAMPLER": "always_on"}
            arms.append(Arm(f"tracing-batch{args.batch_spans}", [], every, manifests, engines))
        for size in args.ring:  # receipts kept in a ring of another size
            ring = [f"--decision-receipts={size}"]
            arms.append(Arm(f"receipts-ring{size}", ring, {}, manifests, engines))
        if args.against:  # the same arms from another source tree, in the same run
            before = {"PYTHONPATH": str(Path(args.against).resolve() / "src")}
            arms += [
                Arm("off@against", off_flags, before, manifests, engines),
                Arm("receipts@against", [], before, manifests, engines),
            ]
            if args.against_tracing:
                every = {**before, **otlp, "OTEL_TRACES_SAMPLER": "always_on"}
                arms += [
                    Arm("tracing@against", [], every, manifests, engines),
                    Arm(
                        f"tracing-{args.sample_ratio:g}@against",
                        [],
                        {**before, **otlp, **sampled},
                        manifests,
                        engines,
                    ),
                ]
        for arm in arms:
            await arm.envoy.start()
        async with aiohttp.ClientSession() as session:
            for arm in arms:
                await ready(session, arm.url)
                for _ in range(300):  # warm up
                    await one(session, arm.url)
        loads: list[float] = []
        for r in range(args.rounds):
            began = [arm.done for arm in arms]
            if args.together:
                await load(arms, args.concurrency, args.seconds)
            else:
                for arm in arms[r % len(arms) :] + arms[: r % len(arms)]:
                    await load([arm], args.concurrency, args.seconds)
            loads.append(os.getloadavg()[0])
            base = arms[0].rounds[-1]
            cells = [
                f"{arm.name} {arm.rounds[-1]:6.0f} ({arm.done - b} req"
                + ("" if arm is arms[0] else f", {100 * (1 - arm.rounds[-1] / base):+5.1f} %")
                + ")"
                for arm, b in zip(arms, began)
            ]
            head = f"round {r + 1}/{args.rounds}  load {loads[-1]:4.2f}  req/CPU-s: "
            print(
                head + "  ".join(cells),
                file=sys.stderr,
                flush=True,
            )
        time.sleep(1.0)  # the batch processors' last exports (OTEL_BSP_SCHEDULE_DELAY: 5 s max)
        for arm in arms:
            arm.loads = loads
        return arms
    finally:
        for arm in arms:
            await arm.envoy.stop()
        stop_processes(*(arm.process for arm in arms), engine, timeout=10)


def report(args: argparse.Namespace, arms: list[Arm], sink: OtlpSinkProcess) -> None:
    base, traced = arms[0], arms[2]
    base_rate = base.done / base.cpu
    out: dict[str, object] = {
        "unit": "ext_proc requests per Sluice CPU-second (Envoy -> sluice serve -> sim)",
        "engines": args.engines,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "seconds_per_round": args.seconds,
        "arms_loaded": "at once" if args.together else "one at a time, order rotating",
        "cpus": os.cpu_count(),
        "loadavg_1m_per_round": [round(x, 2) for x in base.loads],
        "spans_received": sink.spans,
        "exports_received": sink.exports,
        "connections_received": sink.connections,
        "receiver": f"own process (pid {sink.pid}), not counted",
    }
    entries: dict[str, dict[str, Any]] = {}  # per arm, as printed
    for arm in arms:
        rate = arm.done / arm.cpu
        ratios = [a / b for a, b in zip(arm.rounds, base.rounds)]
        entry: dict[str, Any] = {
            "requests": arm.done,
            "sluice_cpu_s": round(arm.cpu, 2),
            "requests_per_cpu_s": round(rate, 1),
            "per_round_requests_per_cpu_s": [round(x, 1) for x in arm.rounds],
            "cost_vs_off_pct": round(100 * (1 - rate / base_rate), 1),
            "per_round_cost_pct": [round(100 * (1 - x), 1) for x in ratios],
            "median_round_cost_pct": round(100 * (1 - statistics.median(ratios)), 1),
            # CPU of the threads beside the event loop's, per request (the tracer's batch thread)
            "other_threads_us_per_request": round(1e6 * arm.side_cpu / max(arm.done, 1), 1),
        }
        tree = "@against" if arm.name.endswith("@against") else ""
        if tree and arm.name != "off@against":  # against its own tree's off
            other = next(a for a in arms if a.name == "off@against")
            entry["cost_vs_own_off_pct"] = round(100 * (1 - rate * other.cpu / other.done), 1)
            own_ratios = [a / b for a, b in zip(arm.rounds, other.rounds)]
            entry["median_round_cost_vs_own_off_pct"] = round(
                100 * (1 - statistics.median(own_ratios)), 1
            )
        if arm.name.startswith("tracing"):  # what tracing adds to receipts (of its own tree)
            mine = next(a for a in arms if a.name == f"receipts{tree}")
            own = [a / b for a, b in zip(arm.rounds, mine.rounds)]
            entry["cost_vs_receipts_pct"] = round(100 * (1 - rate * mine.cpu / mine.done), 1)
            entry["median_round_cost_vs_receipts_pct"] = round(
                100 * (1 - statistics.median(own)), 1
            )
        out[arm.name] = entries[arm.name] = entry
    print(json.dumps(out, indent=2))
    # the claim: receipts and tracing on, against off, pooled and per round — tracing every
    # request, and as upstream's chart deploys it in production (parentbased_traceidratio 0.1)
    window = f"{args.rounds} rounds, load average {min(base.loads):.2f}-{max(base.loads):.2f}"
    goal_line(traced, base, "receipts + tracing (every request)", window)
    sampled = next(a for a in arms if a.name == f"tracing-{args.sample_ratio:g}")
    what = f"receipts + tracing sampled at {args.sample_ratio:g} (parentbased_traceidratio)"
    goal_line(sampled, base, what, window)
    names = {a.name: a for a in arms}
    if args.aa:
        again = entries["off-again"]
        per_round = again["per_round_cost_pct"]
        print(
            f"A/A: off again (another process, the same flags) at "
            f"{again['cost_vs_off_pct']:+.1f} % of off (rounds {min(per_round):+.1f} to "
            f"{max(per_round):+.1f} %): the noise floor of this run's arm-against-arm ratios"
        )
    batch_us = entries[traced.name]["other_threads_us_per_request"]
    print(f"tracer's batch thread (every request traced): {batch_us:.1f} us CPU a request")
    if args.batch_spans:
        batched = f"receipts + tracing (every request, batches of {args.batch_spans} spans)"
        goal_line(names[f"tracing-batch{args.batch_spans}"], base, batched, window)
    if args.against and args.against_tracing:  # the other tree, against its own off
        own_base = names["off@against"]
        goal_line(names["tracing@against"], own_base, f"{args.against}: receipts + tracing", window)
        sampled = names[f"tracing-{args.sample_ratio:g}@against"]
        goal_line(sampled, own_base, f"{args.against}: {what}", window)
    print(
        "off <= 1 %: not resolvable in CPU time here (a few `is None` checks per request); "
        "shown in instructions by benchmarks/receipts_instructions.py, which prints its own "
        "MET/MISSED line"
    )


def goal_line(arm: Arm, base: Arm, what: str, window: str) -> None:
    pooled = 100 * (1 - (arm.done / arm.cpu) / (base.done / base.cpu))
    median = 100 * (1 - statistics.median(a / b for a, b in zip(arm.rounds, base.rounds)))
    met = pooled <= GOAL_ON_PCT and median <= GOAL_ON_PCT
    print(
        f"{'MET' if met else 'MISSED'}: {what} on cost {pooled:.1f} % (median round "
        f"{median:.1f} %) of ext_proc requests per Sluice CPU-second against off; goal <= "
        f"{GOAL_ON_PCT:g} % (both); {window}"
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--aa", action="store_true", help="also an A/A arm: off again, in its own process"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--engines", type=int, default=4)
    parser.add_argument("--sample-ratio", type=float, default=0.1)
    parser.add_argument(
        "--against",
        metavar="TREE",
        help="also run off and receipts from another checkout's src/ (a before/after in one run)",
    )
    parser.add_argument(
        "--against-tracing",
        action="store_true",
        help="with --against, its two tracing arms too (eight arms in all)",
    )
    parser.add_argument(
        "--batch-spans",
        type=int,
        metavar="N",
        help="also an every-request tracing arm with OTEL_BSP_MAX_EXPORT_BATCH_SIZE=N "
        "(and a queue of 4N spans): what fewer, larger POSTs save",
    )
    parser.add_argument(
        "--ring",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="also a receipts arm whose ring keeps N receipts (repeatable; the default is 1024)",
    )
    parser.add_argument(
        "--one-at-a-time",
        dest="together",
        action="store_false",
        help="load the arms one after the other in each round (order rotating), not at once",
    )
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    exit_on_sigterm()
    cli()
