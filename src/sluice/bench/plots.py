"""PNG plots of a scenario's results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from sluice.bench.metrics import SLO_TTFT_P90_S, summarize
from sluice.bench.records import RunResult
from sluice.bench.scenarios import FAIRNESS, ISOLATION, SWEEP
from sluice.bench.suite import ScenarioResult


def _saved(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _finite(x: float, cap: float) -> float:
    return x if math.isfinite(x) else cap


def ttft_percentiles(result: ScenarioResult, path: Path) -> Path:
    """Grouped bars: TTFT p50/p90/p99 per arm (first repetition, highest common load). In an
    isolation scenario, of the protected class only: the others are held back on purpose, and
    an all-requests chart would show the queueing priority asks for as if it were a failure."""
    fig, ax = plt.subplots(figsize=(8, 4))
    arms = [a for a in result.arms if result.runs.get(a)]
    protected = set(result.scenario.protected)
    width = 0.25
    cap = 0.0
    values: dict[str, list[float]] = {"p50": [], "p90": [], "p99": []}
    for arm in arms:
        run = _representative(result, arm)
        chosen = [r for r in run.records if r.tenant in protected] if protected else None
        s = summarize(run, chosen)
        for key, v in (("p50", s.ttft_p50), ("p90", s.ttft_p90), ("p99", s.ttft_p99)):
            values[key].append(v)
            if math.isfinite(v):
                cap = max(cap, v)
    cap = cap * 1.2 or 1.0
    for k, (key, vs) in enumerate(values.items()):
        ax.bar(
            [i + (k - 1) * width for i in range(len(arms))],
            [_finite(v, cap) for v in vs],
            width,
            label=key,
        )
    ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("TTFT (s)")
    who = f" of {', '.join(sorted(protected))}" if protected else ""
    ax.set_title(f"{result.scenario.name}: TTFT percentiles{who} (bars at the top did not finish)")
    ax.legend()
    return _saved(fig, path)


def _representative(result: ScenarioResult, arm: str) -> RunResult:
    """The first repetition's run at the highest load every arm reached (sweeps), else the
    first run."""
    runs = [r for r in result.runs[arm] if r.seed == result.seeds[0]]
    if result.scenario.kind != SWEEP:
        return runs[0]
    common = min(
        max(r.load for r in result.runs[a] if r.seed == result.seeds[0])
        for a in result.arms
        if result.runs.get(a)
    )
    return next((r for r in runs if r.load == common), runs[-1])


def latency_vs_load(result: ScenarioResult, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    for arm in result.arms:
        runs = sorted(
            (r for r in result.runs.get(arm, []) if r.seed == result.seeds[0]), key=lambda r: r.load
        )
        xs = [r.load for r in runs]
        ys = [_finite(summarize(r).ttft_p90, 60.0) for r in runs]
        ax.plot(xs, ys, marker="o", label=arm)
    ax.axhline(SLO_TTFT_P90_S, color="grey", linestyle="--", label="SLO 2 s")
    ax.set_yscale("log")
    ax.set_xlabel(f"offered load ({result.scenario.load_unit})")
    ax.set_ylabel("p90 TTFT (s)")
    ax.set_title(f"{result.scenario.name}: latency against offered load")
    ax.legend(fontsize=8)
    return _saved(fig, path)


def service_per_tenant(result: ScenarioResult, path: Path) -> Path:
    """Cumulative served tokens per tenant over time, one panel per arm."""
    arms = [a for a in result.arms if result.runs.get(a)]
    fig, axes = plt.subplots(1, len(arms), figsize=(3.2 * len(arms), 3.2), sharey=True)
    axes_list = list(axes) if len(arms) > 1 else [axes]
    for ax, arm in zip(axes_list, arms, strict=True):
        run = result.runs[arm][0]
        tenants = sorted({t for s in run.samples for t in s.served_by_tenant})
        for tenant in tenants:
            ax.plot(
                [s.at for s in run.samples],
                [s.served_by_tenant.get(tenant, 0) for s in run.samples],
                label=tenant,
            )
        ax.set_title(arm, fontsize=8)
        ax.set_xlabel("time (s)")
    axes_list[0].set_ylabel("served tokens")
    axes_list[0].legend(fontsize=7)
    fig.suptitle(f"{result.scenario.name}: cumulative service per tenant")
    return _saved(fig, path)


def queue_per_band(result: ScenarioResult, path: Path) -> Path:
    """Sluice's queue depth per band over time, for the arms that queue."""
    arms = [a for a in result.arms if result.runs.get(a)]
    fig, ax = plt.subplots(figsize=(8, 4))
    for arm in arms:
        run = result.runs[arm][0]
        bands = sorted({b for s in run.samples for b in s.queued_by_band}, reverse=True)
        for band in bands:
            ys = [s.queued_by_band.get(band, 0) for s in run.samples]
            if any(ys):
                ax.plot([s.at for s in run.samples], ys, label=f"{arm} band {band}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("queued requests")
    ax.set_title(f"{result.scenario.name}: queue depth per band")
    ax.legend(fontsize=7)
    return _saved(fig, path)


def plot_scenario(result: ScenarioResult, out_dir: Path) -> list[Path]:
    """Every plot that makes sense for the scenario's kind; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = result.scenario.name
    paths = [ttft_percentiles(result, out_dir / f"{name}-ttft.png")]
    kind = result.scenario.kind
    if kind == SWEEP:
        paths.append(latency_vs_load(result, out_dir / f"{name}-latency-vs-load.png"))
    if kind in (ISOLATION, FAIRNESS):
        paths.append(service_per_tenant(result, out_dir / f"{name}-service.png"))
        paths.append(queue_per_band(result, out_dir / f"{name}-queues.png"))
    return paths
