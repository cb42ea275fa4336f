"""The Markdown report: one section per scenario (median [min–max] over repetitions) and a
"targets" section that checks the claims the issues make, with the numbers behind each."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sluice.bench.metrics import (
    Summary,
    busy_fraction,
    by_key,
    delivered_output_tps,
    fairness,
    hit_rate,
    spread,
    summarize,
)
from sluice.bench.records import RunResult
from sluice.bench.scenarios import FAIRNESS, FIXED, ISOLATION, SWEEP, THROUGHPUT
from sluice.bench.suite import ScenarioResult

ISOLATION_LIMIT = 1.25  # protected tenant's p99 TTFT loaded / alone
THROUGHPUT_FLOOR = 0.95  # Sluice's throughput / round-robin's, in the same run
E2E_CEILING = 1.1  # Sluice's e2e p50 / round-robin's, in the same run
REFERENCE = "round-robin"
SLUICE = "sluice-default"


def fmt(x: float, digits: int = 3) -> str:
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞"
    return f"{x:.{digits}g}"


def fmt_spread(values: Sequence[float], digits: int = 3) -> str:
    mid, lo, hi = spread(values)
    if len(values) < 2 or lo == hi:
        return fmt(mid, digits)
    return f"{fmt(mid, digits)} [{fmt(lo, digits)}–{fmt(hi, digits)}]"


def markdown_row(cells: Sequence[str]) -> str:
    """One row of a Markdown table."""
    return "| " + " | ".join(cells) + " |"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table's lines: `header`, its rule, then `rows`."""
    return [markdown_row(header), "|" + "---|" * len(header), *map(markdown_row, rows)]


def _over(runs: Sequence[RunResult], f: Callable[[RunResult], float]) -> str:
    return fmt_spread([f(r) for r in runs])


@dataclass(frozen=True)
class Target:
    claim: str
    met: bool
    evidence: str


# -- per kind ----------------------------------------------------------------------------------


def _sweep_section(result: ScenarioResult) -> list[str]:
    header = [
        "arm",
        "goodput (QPS, p90 TTFT ≤ 2 s)",
        "vs round-robin",
        "vs upstream-default",
        "prefix hit rate at the knee",
    ]
    rr = statistics.median(result.goodputs("round-robin") or [math.nan])
    up = statistics.median(result.goodputs("upstream-default") or [math.nan])
    rows = []
    for arm in result.arms:
        goodputs = result.goodputs(arm)
        mid = statistics.median(goodputs)
        knees = [_knee(result, arm, seed) for seed in result.seeds]
        rows.append(
            [
                arm,
                fmt_spread(goodputs),
                fmt(mid / rr if rr else math.nan),
                fmt(mid / up if up else math.nan),
                fmt_spread([hit_rate(r) for r in knees if r is not None]),
            ]
        )
    return markdown_table(header, rows)


def _knee(result: ScenarioResult, arm: str, seed: int) -> RunResult | None:
    """The highest-load run of this repetition that met the SLO."""
    good = [r for r in result.runs.get(arm, []) if r.seed == seed and summarize(r).ttft_p90 <= 2]
    return max(good, key=lambda r: r.load) if good else None


def _fixed_section(result: ScenarioResult) -> list[str]:
    header = [
        "arm",
        "TTFT p50",
        "p90",
        "p99",
        "ITL mean",
        "e2e p99",
        "req/s",
        "out tok/s",
        "hit rate",
        "queue wait p99",
        "429/shed",
    ]
    rows = []
    for arm in result.arms:
        runs = result.runs.get(arm, [])
        ss = [summarize(r) for r in runs]
        rows.append(
            [
                arm,
                fmt_spread([s.ttft_p50 for s in ss]),
                fmt_spread([s.ttft_p90 for s in ss]),
                fmt_spread([s.ttft_p99 for s in ss]),
                fmt_spread([s.itl_mean for s in ss]),
                fmt_spread([s.e2e_p99 for s in ss]),
                fmt_spread([s.req_per_s for s in ss]),
                fmt_spread([s.output_tok_per_s for s in ss]),
                _over(runs, hit_rate),
                fmt_spread([s.queue_wait_p99 for s in ss]),
                fmt_spread([float(s.rejected + s.shed_or_expired) for s in ss]),
            ]
        )
    return markdown_table(header, rows)


def _protected_summaries(result: ScenarioResult, arm: str) -> list[list[tuple[Summary, Summary]]]:
    """Per repetition, (loaded, alone) summaries of each protected tenant measured in both."""
    out = []
    for loaded, alone in zip(result.runs.get(arm, []), result.baselines.get(arm, []), strict=False):
        alone_by, loaded_by = by_key(alone, "tenant"), by_key(loaded, "tenant")
        out.append(
            [
                (loaded_by[t], alone_by[t])
                for t in result.scenario.protected
                if t in loaded_by and t in alone_by
            ]
        )
    return out


def isolation_ratios(result: ScenarioResult, arm: str) -> list[float]:
    """Protected tenants' p99 TTFT loaded / alone, per repetition (worst tenant)."""
    return [
        max(
            (b.ttft_p99 / a.ttft_p99 if a.ttft_p99 > 0 else math.inf for b, a in pairs),
            default=0.0,
        )
        for pairs in _protected_summaries(result, arm)
    ]


def isolation_sample_sizes(result: ScenarioResult, arm: str) -> list[int]:
    """Per repetition, the fewest protected requests behind a p99 of `isolation_ratios` (the
    loaded run's or the run alone, whichever tenant measured fewest). Under 100, a p99 is
    nearly its sample's worst request, and one request moves the ratio."""
    return [
        min((min(b.requests, a.requests) for b, a in pairs), default=0)
        for pairs in _protected_summaries(result, arm)
    ]


def _isolation_section(result: ScenarioResult) -> list[str]:
    protected = ", ".join(result.scenario.protected)
    header = [
        "arm",
        f"{protected} p99 TTFT alone",
        "loaded",
        "ratio (≤ 1.25 holds)",
        f"{protected} p50 loaded",
        "others p99 TTFT",
        "others completed",
        "429/shed/expired",
        "pool busy",
        "pool out tok/s",
    ]
    rows = []
    for arm in result.arms:
        loaded = result.runs.get(arm, [])
        alone = result.baselines.get(arm, [])
        prot = [t for t in result.scenario.protected]

        def p(run: RunResult, q: str, tenants: list[str] = prot, other: bool = False) -> float:
            recs = [r for r in run.records if (r.tenant in tenants) != other]
            s = summarize(run, recs)
            return {
                "p99": s.ttft_p99,
                "p50": s.ttft_p50,
                "done": float(s.completed),
                "drop": float(s.rejected + s.shed_or_expired),
            }[q]

        rows.append(
            [
                arm,
                _over(alone, lambda r: p(r, "p99")),
                _over(loaded, lambda r: p(r, "p99")),
                fmt_spread(isolation_ratios(result, arm)),
                _over(loaded, lambda r: p(r, "p50")),
                _over(loaded, lambda r: p(r, "p99", other=True)),
                _over(loaded, lambda r: p(r, "done", other=True)),
                _over(loaded, lambda r: p(r, "drop", other=True)),
                _over(loaded, busy_fraction),
                _over(loaded, delivered_output_tps),
            ]
        )
    return markdown_table(header, rows)


def throughput_ratios(result: ScenarioResult, arm: str) -> tuple[list[float], list[float]]:
    """Per repetition, `arm`'s requests per second and e2e p50, each over round-robin's."""
    tput, e2e = [], []
    for mine, ref in zip(result.runs.get(arm, []), result.runs.get(REFERENCE, []), strict=False):
        a, b = summarize(mine), summarize(ref)
        tput.append(a.req_per_s / b.req_per_s if b.req_per_s else math.nan)
        e2e.append(a.e2e_p50 / b.e2e_p50 if b.e2e_p50 else math.nan)
    return tput, e2e


def _throughput_section(result: ScenarioResult) -> list[str]:
    header = [
        "arm",
        "req/s",
        f"vs {REFERENCE}",
        "e2e p50",
        f"vs {REFERENCE}",
        "e2e p99",
        "TTFT p50",
        "out tok/s (engines)",
        "errors",
    ]
    rows = []
    for arm in result.arms:
        runs = result.runs.get(arm, [])
        ss = [summarize(r) for r in runs]
        tput, e2e = throughput_ratios(result, arm)
        rows.append(
            [
                arm,
                fmt_spread([s.req_per_s for s in ss]),
                fmt_spread(tput),
                fmt_spread([s.e2e_p50 for s in ss]),
                fmt_spread(e2e),
                fmt_spread([s.e2e_p99 for s in ss]),
                fmt_spread([s.ttft_p50 for s in ss]),
                _over(runs, delivered_output_tps),
                fmt_spread([float(s.requests - s.completed) for s in ss]),
            ]
        )
    return markdown_table(header, rows)


def _fairness_section(result: ScenarioResult) -> list[str]:
    header = [
        "arm",
        "Jain's index (token service)",
        "max service gap, delivered",
        "max gap, virtual counters",
        "2x largest request",
        "service per tenant (rep 1, virtual tokens)",
    ]
    rows = []
    for arm in result.arms:
        runs = result.runs.get(arm, [])
        tenants = sorted({r.tenant for r in runs[0].records}) if runs else []
        fs = [fairness(r, tenants) for r in runs]
        final = runs[0].samples[-1].served_by_tenant if runs and runs[0].samples else {}
        rows.append(
            [
                arm,
                fmt_spread([f.jain for f in fs]),
                fmt_spread([float(f.max_gap_tokens) for f in fs]),
                fmt_spread([f.max_charged_gap for f in fs]),
                fmt(2.0 * fs[0].largest_request_tokens if fs else math.nan),
                ", ".join(f"{t}: {final.get(t, 0)}" for t in tenants),
            ]
        )
    return markdown_table(header, rows)


SECTIONS = {
    SWEEP: _sweep_section,
    FIXED: _fixed_section,
    ISOLATION: _isolation_section,
    FAIRNESS: _fairness_section,
    THROUGHPUT: _throughput_section,
}


# -- targets -----------------------------------------------------------------------------------


def targets(results: Sequence[ScenarioResult]) -> list[Target]:
    out: list[Target] = []
    by_name = {r.scenario.name: r for r in results}
    sp = by_name.get("shared-prefix")
    if sp is not None and SLUICE in sp.arms:
        g = {a: statistics.median(sp.goodputs(a)) for a in sp.arms}
        best_other = max((v for a, v in g.items() if a != SLUICE), default=0.0)
        out.append(
            Target(
                f"shared-prefix: {SLUICE} has the highest goodput",
                g[SLUICE] >= best_other,
                ", ".join(f"{a} {fmt(v)}" for a, v in g.items()),
            )
        )
        refs = (("round-robin", 4.0), ("vllm-router:round_robin", 4.0), ("upstream-default", 1.2))
        for peer, factor in refs:
            if peer in g:
                ratio = g[SLUICE] / g[peer] if g[peer] else math.inf
                out.append(
                    Target(
                        f"shared-prefix: {SLUICE} goodput >= {factor:g}x {peer}",
                        ratio >= factor,
                        f"{fmt(ratio)}x",
                    )
                )
        # wall clock: the routers a user would pick instead (arms "router:policy")
        cache_aware = {a: v for a, v in g.items() if a.endswith(":cache_aware")}
        if cache_aware:
            best = max(cache_aware, key=lambda a: cache_aware[a])
            out.append(
                Target(
                    f"shared-prefix: {SLUICE} goodput >= the best cache-aware peer",
                    g[SLUICE] >= cache_aware[best],
                    f"{fmt(g[SLUICE])} vs {best} {fmt(cache_aware[best])}",
                )
            )
    real = by_name.get("llamacpp-shared-prefix")  # on real engines (wall, --engines llamacpp)
    if real is not None and SLUICE in real.runs and REFERENCE in real.runs:
        mine = [summarize(r) for r in real.runs[SLUICE]]
        ref = [summarize(r) for r in real.runs[REFERENCE]]
        p50 = (
            statistics.median(s.ttft_p50 for s in mine),
            statistics.median(s.ttft_p50 for s in ref),
        )
        p90 = (
            statistics.median(s.ttft_p90 for s in mine),
            statistics.median(s.ttft_p90 for s in ref),
        )
        out.append(
            Target(
                f"llamacpp-shared-prefix: {SLUICE}'s TTFT p50 and p90 both below {REFERENCE}'s",
                p50[0] < p50[1] and p90[0] < p90[1],
                f"p50 {fmt(p50[0])} vs {fmt(p50[1])} s, p90 {fmt(p90[0])} vs {fmt(p90[1])} s",
            )
        )
    out += _outside_targets(by_name)
    isolation = ("two-bands", "noisy-neighbour", "sheddable-batch", "llamacpp-two-bands")
    for name in (*isolation, "priority-mix"):
        iso = by_name.get(name)
        if iso is None or SLUICE not in iso.arms:
            continue
        ratios = isolation_ratios(iso, SLUICE)
        # pool busy: engines with a request running, sampled by either runner
        busy = [busy_fraction(r) for r in iso.runs.get(SLUICE, []) if r.samples]
        worst = max(ratios) if ratios else math.nan
        evidence = f"p99 ratio per rep {', '.join(fmt(x) for x in ratios)}"
        sizes = isolation_sample_sizes(iso, SLUICE)
        evidence += f" (each p99 over at least {', '.join(str(n) for n in sizes)} requests)"
        if busy:
            evidence += f"; pool busy {', '.join(fmt(b) for b in busy)}"
        claim = (
            f"{name}, {SLUICE}: {', '.join(iso.scenario.protected)} p99 TTFT within "
            f"{ISOLATION_LIMIT}x of unloaded at 150% load"
        )
        out.append(Target(claim, worst <= ISOLATION_LIMIT, evidence))
        peers = [a for a in iso.arms if ":" in a and iso.runs.get(a)]
        if peers:
            worst_of = {a: max(isolation_ratios(iso, a), default=math.nan) for a in peers}
            out.append(
                Target(
                    f"{name}: no peer router keeps {', '.join(iso.scenario.protected)} within "
                    f"{ISOLATION_LIMIT}x of unloaded",
                    all(not v <= ISOLATION_LIMIT for v in worst_of.values()),
                    ", ".join(f"{a} {fmt(v)}x" for a, v in worst_of.items()),
                )
            )
        if REFERENCE in iso.runs:
            delivered = [
                delivered_output_tps(mine) / delivered_output_tps(ref)
                for mine, ref in zip(iso.runs[SLUICE], iso.runs[REFERENCE], strict=False)
            ]
            out.append(
                Target(
                    f"{name}, {SLUICE}: the pool delivers >= {THROUGHPUT_FLOOR}x {REFERENCE}'s "
                    "output tokens/s",
                    bool(delivered) and min(delivered) >= THROUGHPUT_FLOOR,
                    ", ".join(f"{fmt(x)}x" for x in delivered),
                )
            )
        if name == "two-bands" and busy:
            out.append(
                Target(
                    "two-bands: pool >= 95% busy",
                    min(busy, default=0) >= 0.95,
                    ", ".join(fmt(b) for b in busy),
                )
            )
    for result in results:
        if result.scenario.kind != THROUGHPUT or SLUICE not in result.runs:
            continue
        if REFERENCE not in result.runs:
            continue
        tput, e2e = throughput_ratios(result, SLUICE)
        name = result.scenario.name
        out.append(
            Target(
                f"{name}, {SLUICE}: requests/s >= {THROUGHPUT_FLOOR}x {REFERENCE}'s",
                bool(tput) and min(tput) >= THROUGHPUT_FLOOR,
                ", ".join(f"{fmt(x)}x" for x in tput),
            )
        )
        out.append(
            Target(
                f"{name}, {SLUICE}: e2e p50 <= {E2E_CEILING}x {REFERENCE}'s",
                bool(e2e) and max(e2e) <= E2E_CEILING,
                ", ".join(f"{fmt(x)}x" for x in e2e),
            )
        )
    fair = by_name.get("fairness")
    if fair is not None and SLUICE in fair.arms:
        runs = fair.runs[SLUICE]
        tenants = sorted({r.tenant for r in runs[0].records})
        fs = [fairness(r, tenants) for r in runs]
        out.append(
            Target(
                f"fairness, {SLUICE}: Jain >= 0.99 between backlogged tenants",
                min(f.jain for f in fs) >= 0.99,
                ", ".join(fmt(f.jain, 4) for f in fs),
            )
        )

        def within(f_run: RunResult) -> float:
            final = f_run.samples[-1].served_by_tenant if f_run.samples else {}
            served = [final.get(t, 0) for t in tenants]
            return (max(served) - min(served)) / max(served) if max(served) else math.nan

        gaps = [within(r) for r in runs]
        out.append(
            Target(
                f"fairness, {SLUICE}: token service within 10% between the tenants",
                all(g <= 0.1 for g in gaps),
                ", ".join(f"{fmt(100 * g)}%" for g in gaps),
            )
        )
        out.append(
            Target(
                f"fairness, {SLUICE}: virtual-counter gap <= 2x the largest request cost (VTC)",
                all(
                    math.isfinite(f.jain) and f.max_charged_gap <= 2 * f.largest_request_tokens
                    for f in fs
                ),
                ", ".join(
                    f"{fmt(f.max_charged_gap)} vs {2 * f.largest_request_tokens}" for f in fs
                ),
            )
        )
        out.append(
            Target(
                f"fairness, {SLUICE}: delivered-service gap <= 2x the largest request cost",
                all(
                    math.isfinite(f.jain) and f.max_gap_tokens <= 2 * f.largest_request_tokens
                    for f in fs
                ),
                ", ".join(f"{f.max_gap_tokens} vs {2 * f.largest_request_tokens}" for f in fs),
            )
        )
    return out


# Scenarios whose prompts share history or context: prefix routing should see more of it cached
# than round-robin, and answer sooner.
SHARING_SCENARIOS = ("multi-turn", "shared-prefix-chat", "agentic", "agentic-busy")


def _median_of(runs: Sequence[RunResult], f: Callable[[RunResult], float]) -> float:
    values = [f(r) for r in runs]
    return statistics.median(values) if values else math.nan


def _outside_targets(by_name: dict[str, ScenarioResult]) -> list[Target]:
    """Targets of the workloads from outside (issue #14): the ladder's goodput, the priority
    mix's class order, and cache reuse on the multi-turn and agentic shapes."""
    out: list[Target] = []
    ladder = by_name.get("shared-prefix-ladder")
    if ladder is not None and SLUICE in ladder.arms:
        g = {a: statistics.median(ladder.goodputs(a)) for a in ladder.arms}
        for peer in ("round-robin", "upstream-default"):
            if peer in g:
                out.append(
                    Target(
                        f"shared-prefix-ladder: {SLUICE} goodput >= {peer}'s",
                        g[SLUICE] >= g[peer],
                        f"{fmt(g[SLUICE])} vs {fmt(g[peer])} QPS",
                    )
                )
    mix = by_name.get("priority-mix")
    if mix is not None and SLUICE in mix.runs:
        order = ("critical", "normal", "batch")

        def class_p50(run: RunResult, objective: str) -> float:
            recs = [r for r in run.records if r.tenant.startswith(f"{objective}-")]
            return summarize(run, recs).ttft_p50

        per_rep = [[class_p50(run, o) for o in order] for run in mix.runs[SLUICE]]
        out.append(
            Target(
                f"priority-mix, {SLUICE}: TTFT p50 ordered by priority (critical <= normal <= "
                "batch)",
                bool(per_rep) and all(a <= b <= c for a, b, c in per_rep),
                "; ".join(", ".join(fmt(x) for x in rep) for rep in per_rep),
            )
        )
    for name in SHARING_SCENARIOS:
        result = by_name.get(name)
        if result is None or SLUICE not in result.runs or REFERENCE not in result.runs:
            continue
        mine, ref = result.runs[SLUICE], result.runs[REFERENCE]
        hits = _median_of(mine, hit_rate), _median_of(ref, hit_rate)
        out.append(
            Target(
                f"{name}: {SLUICE} prefix hit rate > {REFERENCE}'s",
                hits[0] > hits[1],
                f"{fmt(hits[0])} vs {fmt(hits[1])}",
            )
        )
        p90 = (
            _median_of(mine, lambda r: summarize(r).ttft_p90),
            _median_of(ref, lambda r: summarize(r).ttft_p90),
        )
        out.append(
            Target(
                f"{name}: {SLUICE} TTFT p90 <= {REFERENCE}'s",
                p90[0] <= p90[1],
                f"{fmt(p90[0])} vs {fmt(p90[1])} s",
            )
        )
    return out


# -- the document ------------------------------------------------------------------------------


def render(
    results: Sequence[ScenarioResult],
    *,
    command: str,
    elapsed_s: float,
    plots: dict[str, list[Path]],
    relative_to: Path,
    notes: Sequence[str] = (),
) -> str:
    lines = [
        "# Sluice benchmark results",
        "",
        "Generated by `sluice bench`; do not edit by hand. Reproduce with:",
        "",
        f"    {command}",
        "",
        f"Wall time of the whole run: {elapsed_s:.0f} s. Cells are the median over "
        "repetitions with [min–max]; ∞ means some requests never got a first token before "
        "the run ended (or were rejected), so that percentile is unbounded.",
        "",
    ]
    lines += list(notes)
    tlist = targets(results)
    if tlist:
        lines += ["", "## Targets", ""]
        lines += markdown_table(
            ["claim", "met", "numbers"],
            [[t.claim, "yes" if t.met else "**no**", t.evidence] for t in tlist],
        )
    for result in results:
        s = result.scenario
        lines += [
            "",
            f"## {s.name} ({result.mode}, {s.kind})",
            "",
            s.description + ".",
            "",
            f"Pool: {s.setup.count} x `{s.setup.profile}`"
            + (f" with {dict(s.setup.overrides)}" if s.setup.overrides else "")
            + f"; seeds {', '.join(map(str, result.seeds))}; "
            f"load {', '.join(fmt(x) for x in s.loads_for(result.quick))} {s.load_unit}; "
            f"{result.wall_s:.0f} s.",
            "",
        ]
        lines += SECTIONS[s.kind](result)
        for arm, why in result.skipped.items():
            lines.append(f"\n*{arm}: skipped — {why}*")
        for path in plots.get(s.name, []):
            rel = _relative(path, relative_to)
            lines += ["", f"![{path.stem}]({rel})"]
    return "\n".join(lines) + "\n"


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def write_raw(result: ScenarioResult, out_dir: Path) -> Path:
    """Every request of every run as CSV (the raw data behind the tables)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.scenario.name}-requests.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "arm",
                "seed",
                "load",
                "baseline",
                "request_id",
                "tenant",
                "priority",
                "arrived_at",
                "dispatched_at",
                "first_token_at",
                "completed_at",
                "engine",
                "prompt_tokens",
                "output_tokens",
                "cached_tokens",
                "outcome",
            ]
        )
        for slot, baseline in ((result.runs, False), (result.baselines, True)):
            for arm, runs in slot.items():
                for run in runs:
                    for r in run.records:
                        writer.writerow(
                            [
                                arm,
                                run.seed,
                                run.load,
                                baseline,
                                r.request_id,
                                r.tenant,
                                r.priority,
                                r.arrived_at,
                                r.dispatched_at,
                                r.first_token_at,
                                r.completed_at,
                                r.engine,
                                r.prompt_tokens,
                                r.output_tokens,
                                r.cached_tokens,
                                r.outcome,
                            ]
                        )
    return path
