"""Duplicate cold prefills on two real llama.cpp engines: Sluice against round-robin.

Issue #14, item 3: when requests sharing a prefix no engine has seen arrive while the first of
them is still prefilling, llama.cpp computes the prefix again for each one that lands on a slot
without it — and a slot keeps its cache to itself until its request ends. The ideal is one cold
prefill per distinct prefix; the target, Sluice's cold prefills <= distinct prefixes + 1 and its
TTFT p50 and p90 below round-robin's, in every trial.

Workload per trial: `--groups` new system prompts of ~`--prefix-tokens` tokens, `--per-group`
requests each (the same system prompt, a different short question), in a shuffled order (the
same for both arms of a trial), one every `--gap` seconds, so a group's later requests arrive
while its first is still prefilling (a 600-token prefill takes ~1.5 s at one thread). Streamed
chat, `max_tokens` 8. Fresh prompts for every arm and trial, so no arm finds another's cache.

A request is a cold prefill when llama.cpp computed at least half of its prefix (`timings.
prompt_n`, what the engine itself says it evaluated; the prefix's length from the engine's own
`/tokenize`); `llamacpp:prompt_tokens_total` and
`llamacpp:prompt_tokens_cached_total` (deltas over the arm, both engines) cross-check it.

Arms: `sluice` (`sluice serve --engine llamacpp`, the default config, as a separate process: for
llama.cpp the prefix scorer's `computingPrefixes` defaults to `completion` — a request whose
prefix an engine's slot is still computing or using waits its turn there, or goes elsewhere,
whichever the prefill estimate says is sooner), `sluice-no-wait` (the same with
`computingPrefixes: none`, upstream's behaviour) and `round-robin` (the client alternates
engines itself, as a round-robin router would).

    .venv/bin/python benchmarks/llamacpp_duplicate_prefills.py --trials 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from sluice.bench.engines.build import find_install, install_dir
from sluice.bench.engines.llamacpp import (
    LlamaServers,
    LlamaServerSettings,
    start_llama_servers,
)
from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.harness.ports import free_port, free_port_block, wait_for_port
from sluice.scheduling.defaults import DEFAULT_CONFIG_YAML

MODEL = "SmolLM2-135M-Instruct"
_SYLLABLES = ("ka", "lo", "mi", "ren", "tu", "sa", "vor", "el", "dai", "qu", "ob", "nix")


@dataclass
class Outcome:
    group: int
    status: int
    ttft_s: float
    computed: int  # prompt tokens the engine evaluated (llama.cpp `timings.prompt_n`)
    cached: int  # prompt tokens it reused (`timings.cache_n`)
    prompt_tokens: int


@dataclass
class ArmResult:
    arm: str
    trial: int
    outcomes: list[Outcome] = field(default_factory=list)
    prefix_tokens: int = 0
    computed_counter: float = 0.0
    cached_counter: float = 0.0
    wall_s: float = 0.0

    @property
    def cold(self) -> int:
        return sum(o.computed >= self.prefix_tokens / 2 for o in self.outcomes)

    @property
    def groups(self) -> int:
        return len({o.group for o in self.outcomes})

    def ttft(self, q: float) -> float:
        values = sorted(o.ttft_s for o in self.outcomes if o.status == 200)
        if not values:
            return math.nan
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def words(count: int, rng: random.Random) -> str:
    return " ".join(
        "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(count)
    )


async def one(
    session: aiohttp.ClientSession, url: str, system: str, question: str, group: int
) -> Outcome:
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.monotonic()
    ttft = math.nan
    last: dict[str, object] = {}
    async with session.post(url + "/v1/chat/completions", json=body) as response:
        if response.status != 200:
            await response.read()
            return Outcome(group, response.status, math.nan, 0, 0, 0)
        async for raw in response.content:
            if not raw.startswith(b"data: {"):
                continue
            event = json.loads(raw[6:])
            if math.isnan(ttft) and any(
                (c.get("delta") or {}).get("content") for c in event.get("choices", [])
            ):
                ttft = time.monotonic() - started
            if "timings" in event:
                last = event
    timings = last.get("timings") or {}
    usage = last.get("usage") or {}
    assert isinstance(timings, dict) and isinstance(usage, dict)
    return Outcome(
        group,
        200,
        ttft,
        int(timings.get("prompt_n", 0)),
        int(timings.get("cache_n", 0)),
        int(usage.get("prompt_tokens", 0)),
    )


def counters(servers: LlamaServers) -> tuple[float, float]:
    computed = cached = 0.0
    for server in servers:
        values = server.counters()
        computed += values.get("llamacpp:prompt_tokens_total", 0.0)
        cached += values.get("llamacpp:prompt_tokens_cached_total", 0.0)
    return computed, cached


async def run_arm(
    arm: str, trial: int, servers: LlamaServers, router_url: str | None, args: argparse.Namespace
) -> ArmResult:
    rng = random.Random(f"{arm}-{trial}-{args.seed}")
    # ~2.2 tokens per generated word with SmolLM2's tokenizer.
    prefixes = [words(round(args.prefix_tokens / 2.2), rng) for _ in range(args.groups)]
    order = [(i % args.groups, i // args.groups) for i in range(args.groups * args.per_group)]
    random.Random(f"order-{trial}-{args.seed}").shuffle(order)
    before = counters(servers)
    result = ArmResult(arm, trial)
    result.prefix_tokens = min(len(servers[0].tokenize(p)) for p in prefixes)
    # A new connection per request: llama-server closes each connection right after a streamed
    # response, and aiohttp does not resend a request that meets such a closed connection.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        started = time.monotonic()
        for index, (group, nth) in enumerate(order):
            url = router_url or servers[index % len(servers)].url
            question = f"Question {nth} about it: {words(6, rng)}?"
            tasks.append(asyncio.create_task(one(session, url, prefixes[group], question, group)))
            await asyncio.sleep(args.gap)
        result.outcomes = list(await asyncio.gather(*tasks))
        result.wall_s = time.monotonic() - started
    after = counters(servers)
    result.computed_counter = after[0] - before[0]
    result.cached_counter = after[1] - before[1]
    return result


def sluice_config(computing: str | None) -> str:
    """Sluice's default config, the prefix scorer's `computingPrefixes` set (None: as shipped,
    which for `--engine llamacpp` is `completion`)."""
    if computing is None:
        return DEFAULT_CONFIG_YAML
    return DEFAULT_CONFIG_YAML.replace(
        "- type: prefix-cache-scorer\n",
        f"- type: prefix-cache-scorer\n  parameters: {{computingPrefixes: {computing}}}\n",
        1,
    )


def start_sluice(
    servers: LlamaServers, workdir: Path, computing: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    targets = "".join(f"\n  - number: {p}" for p in servers.ports)
    (workdir / "pool.yaml").write_text(
        f"""apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: bench, namespace: default}}
spec:
  selector: {{matchLabels: {{app: llamacpp}}}}
  targetPorts:{targets}
  endpointPickerRef: {{name: sluice, port: {{number: 9002}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: engines, namespace: default, labels: {{app: llamacpp}}}}
status: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: "True"}}]}}
"""
    )
    config = workdir / f"config-{computing}.yaml"
    config.write_text(sluice_config(computing))
    port = free_port()
    command = [str(Path(sys.executable).parent / "sluice"), "serve", "--pool-name=bench"]
    command += [f"--config-file={config}"]
    command += [f"--resources={workdir / 'pool.yaml'}", f"--proxy-port={port}", "--engine=llamacpp"]
    level = "debug" if os.environ.get("SLUICE_BENCH_ROUTER_LOG") else "warning"
    command += ["--disable-extproc", "--secure-serving=false", f"--log-level={level}"]
    command += [f"--grpc-health-port={free_port()}", f"--metrics-port={free_port()}"]
    log_dir = os.environ.get("SLUICE_BENCH_ROUTER_LOG")  # a directory for the routers' logs
    out = open(Path(log_dir) / f"sluice-{computing}.log", "wb") if log_dir else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(command, stdout=out, stderr=out)
    wait_for_port("127.0.0.1", port, process, timeout=60)
    time.sleep(0.5)  # a few scrapes: both engines have fresh metrics
    return process, f"http://127.0.0.1:{port}"


def render(results: list[ArmResult], args: argparse.Namespace, elapsed_s: float) -> str:
    lines = [
        f"2 llama-server engines (--threads {args.threads}, --parallel {args.slots}), "
        f"{args.groups} new prefixes of {min(r.prefix_tokens for r in results)}-"
        f"{max(r.prefix_tokens for r in results)} tokens x {args.per_group} requests, "
        f"one every {args.gap:g} s; {args.trials} trial(s) per arm; {elapsed_s:.0f} s; "
        f"machine: {os.cpu_count()} CPUs shared with other work.",
        "",
        "| arm | trial | cold prefills | ideal | prompt tokens computed | reused | TTFT p50 s "
        "| TTFT p90 s | req/s | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        errors = sum(o.status != 200 for o in r.outcomes)
        lines.append(
            f"| {r.arm} | {r.trial} | {r.cold} | {r.groups} | {r.computed_counter:.0f} "
            f"| {r.cached_counter:.0f} | {r.ttft(0.5):.2f} | {r.ttft(0.9):.2f} "
            f"| {len(r.outcomes) / r.wall_s:.2f} | {errors} |"
        )
    lines.append("")
    for arm in dict.fromkeys(r.arm for r in results):
        mine = [r for r in results if r.arm == arm]
        colds = [r.cold for r in mine]
        lines.append(
            f"- {arm}: cold prefills {min(colds)}-{max(colds)} (median "
            f"{statistics.median(colds):g}) where {mine[0].groups} would do; TTFT p50 "
            f"{statistics.median(r.ttft(0.5) for r in mine):.2f} s, p90 "
            f"{statistics.median(r.ttft(0.9) for r in mine):.2f} s (medians over trials)"
        )
    lines += ["", *targets(results)]
    return "\n".join(lines)


def targets(results: list[ArmResult]) -> list[str]:
    """Per trial: Sluice's cold prefills <= distinct prefixes + 1, and its TTFT p50 and p90
    below round-robin's in the same trial."""
    by = {(r.arm, r.trial): r for r in results}
    out = []
    for (arm, trial), r in by.items():
        if arm != "sluice":
            continue
        cold_ok = r.cold <= r.groups + 1
        verdict = "MET" if cold_ok else "MISSED"
        line = f"- trial {trial}: cold prefills {r.cold} <= {r.groups} + 1: {verdict}"
        rr = by.get(("round-robin", trial))
        if rr is not None:
            faster = r.ttft(0.5) < rr.ttft(0.5) and r.ttft(0.9) < rr.ttft(0.9)
            line += (
                f"; TTFT p50 {r.ttft(0.5):.2f} vs {rr.ttft(0.5):.2f} s, p90 {r.ttft(0.9):.2f} vs "
                f"{rr.ttft(0.9):.2f} s (round-robin): {'MET' if faster else 'MISSED'}"
            )
        out.append(line)
    return out


async def main_async(args: argparse.Namespace) -> int:
    install = find_install()
    if install is None:
        print(f"llama-server is not built ({install_dir()}): run `make engines`", file=sys.stderr)
        return 1
    settings = LlamaServerSettings(threads=args.threads, slots=args.slots, context_per_slot=2048)
    started = time.monotonic()
    results: list[ArmResult] = []
    with tempfile.TemporaryDirectory(prefix="sluice-dup-prefill-") as tmp:
        first = free_port_block(2)
        addresses = [("127.0.0.1", first), ("127.0.0.1", first + 1)]
        with start_llama_servers(2, install, settings, addresses=addresses) as servers:
            routers = {
                "sluice": start_sluice(servers, Path(tmp)),
                "sluice-no-wait": start_sluice(servers, Path(tmp), "none"),
            }
            try:
                for trial in range(args.trials):
                    for arm in args.arms.split(","):
                        routed = routers[arm][1] if arm in routers else None
                        results.append(await run_arm(arm, trial, servers, routed, args))
            finally:
                for router, _ in routers.values():
                    router.terminate()
                    router.wait(10)
    print(render(results, args, time.monotonic() - started))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--groups", type=int, default=4, help="distinct new prefixes")
    parser.add_argument("--per-group", type=int, default=4, help="requests per prefix")
    parser.add_argument("--prefix-tokens", type=int, default=600)
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between arrivals")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", default="sluice,sluice-no-wait,round-robin")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
