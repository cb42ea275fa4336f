"""The wall-clock report (Markdown): targets, goodput sweeps, loaded-vs-alone tables and the
router's costs."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence

from sluice.bench.metrics import SLO_TTFT_P90_S, delivered_output_tps, hit_rate, summarize
from sluice.bench.report import (
    fmt,
    fmt_spread,
    isolation_ratios,
    markdown_row,
    markdown_table,
    targets,
)
from sluice.bench.scenarios import SWEEP, THROUGHPUT
from sluice.bench.wall.processes import ENGINES, SMG_PRIORITY
from sluice.bench.wall.run import WALL_REQUESTS, WallRun, WallScenario

ROUND_ROBINS = ("round-robin", "vllm-router:round_robin")
OUT_TPS = (
    "output tokens the engines generated (their own counters, every engine) per second from "
    "the end of warm-up until their last token: the same requests in every arm, so an arm that "
    "leaves engines idle finishes later and shows less"
)
SMG_PRIORITY_NOTE = (
    "*smg:priority*: smg 1.13.0's priority-aware admission (`python -m smg launch --policy "
    "cache_aware --priority-scheduler-enabled --priority-scheduler-default-max-class "
    "interactive --priority-scheduler-config <classes>`): clients send `x-smg-priority` "
    "(objective priority > 0 interactive, 0 default, < 0 bulk); the class YAML reserves the "
    "interactive class's offered share of the slots (`reserved_per_slot`) and lets only it "
    "preempt; each worker's `max_running_requests` is set to the engine's slots with `PATCH "
    "/workers/{id}` (smg otherwise counts 64 per worker). With one class (noisy-neighbour) it "
    "is smg's admission queue alone."
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
    lines = markdown_table(header, rows)
    lines += ["", "Every point of every arm:", ""]
    header = ["arm", "load", "TTFT p50", "p90", "p99", "req/s", "hit rate", *_CPU_HEADER]
    lines += markdown_table(header, [])
    for arm, runs in ws.runs.items():
        for run in runs:
            if run.error:
                lines.append(f"| {arm} | {fmt(run.load)} | failed: {run.error[:120]} |")
                continue
            sm = summarize(run.result)
            row = [arm, fmt(run.load), fmt(sm.ttft_p50), fmt(sm.ttft_p90), fmt(sm.ttft_p99)]
            row += [fmt(sm.req_per_s), fmt(hit_rate(run.result)), *_cpu_cells(run)]
            lines.append(markdown_row(row))
    return lines


def _fixed_lines(ws: WallScenario) -> list[str]:
    s = ws.scenario
    reference = next((a for a in ROUND_ROBINS if ws.runs.get(a)), None)
    ref_tps = (
        delivered_output_tps(ws.runs[reference][0].result)
        if reference is not None and not ws.runs[reference][0].error
        else math.nan
    )
    header = ["arm", "TTFT p50", "p90", "p99", "e2e p50", "req/s", "out tok/s"]
    if reference is not None:
        header.append(f"out tok/s vs {reference}")
    header.append("hit rate")
    if s.protected:
        header += [f"{', '.join(s.protected)} p99 alone", "loaded", "ratio (≤ 1.25 holds)"]
    header += _CPU_HEADER
    lines = markdown_table(header, [])
    result = ws.as_result()
    for arm, runs in ws.runs.items():
        for run in runs:
            if run.error:
                lines.append(f"| {arm} | failed: {run.error[:120]} |")
                continue
            sm = summarize(run.result)
            row = [arm, fmt(sm.ttft_p50), fmt(sm.ttft_p90), fmt(sm.ttft_p99), fmt(sm.e2e_p50)]
            tps = delivered_output_tps(run.result)
            row += [fmt(sm.req_per_s), fmt(tps)]
            if reference is not None:
                row.append(fmt(tps / ref_tps if ref_tps else math.nan))
            row += [fmt(hit_rate(run.result))]
            if s.protected:
                prot = [r for r in run.result.records if r.tenant in s.protected]
                alone = summarize(run.baseline).ttft_p99 if run.baseline else math.nan
                ratios = isolation_ratios(result, arm)
                row += [fmt(alone), fmt(summarize(run.result, prot).ttft_p99)]
                row += [fmt(max(ratios)) if ratios else "–"]
            row += _cpu_cells(run)
            lines.append(markdown_row(row))
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
    if any(ws.runs.get(SMG_PRIORITY) for ws in results):
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
        return f"{load}; {count} requests; {ws.wall_s:.0f} s. *out tok/s*: {OUT_TPS}."
    return (
        f"{load}; the first {fmt(ws.duration_s)} s of the workload's arrivals (first "
        f"{fmt(100 * s.warmup_frac)}% left out as warm-up); {ws.wall_s:.0f} s. *out tok/s*: "
        f"{OUT_TPS}."
    )
