"""Numbers from records: latency percentiles, throughput, cache hit rate, fairness, goodput.

Latency statistics exclude the warm-up window and count a request that never got its first
token (still queued when the run ended, or rejected) as infinitely slow, so an arm cannot look
fast by dropping work: a p90 over a run that lost more than 10% of its requests is infinite.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sluice.bench.records import RequestRecord, RunResult
from sluice.flowcontrol.fairness import TokenCost

SLO_TTFT_P90_S = 2.0  # goodput's SLO (Dynamo's TTFT threshold)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); nan for no values. Infinite values sort last."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def jain_index(shares: Iterable[float]) -> float:
    """Jain's fairness index: (Σx)² / (n·Σx²); 1 = perfectly equal, 1/n = one takes all.
    nan when nobody was served: "fair" would be a vacuous claim."""
    xs = list(shares)
    square_sum = sum(x * x for x in xs)
    if not xs or square_sum == 0:
        return math.nan
    return sum(xs) ** 2 / (len(xs) * square_sum)


def goodput(curve: Mapping[float, float], slo: float = SLO_TTFT_P90_S) -> float:
    """The highest offered load at which the metric (p90 TTFT) is within the SLO.

    `curve` maps load → p90 TTFT. Walking up the loads, the first that breaks the SLO ends the
    search; the crossing is interpolated linearly between the last good and first bad point.
    0 if even the lowest load breaks it; the highest load if none does."""
    loads = sorted(curve)
    best = 0.0
    previous: tuple[float, float] | None = None
    for load in loads:
        value = curve[load]
        if value <= slo:
            best, previous = load, (load, value)
            continue
        if previous is not None and math.isfinite(value):
            (l0, v0), (l1, v1) = previous, (load, value)
            best = l0 + (l1 - l0) * (slo - v0) / (v1 - v0)
        break
    return best


@dataclass(frozen=True, slots=True)
class Summary:
    """One run (or one slice of it: a band, a tenant) in numbers."""

    requests: int
    completed: int
    ttft_p50: float
    ttft_p90: float
    ttft_p99: float
    itl_mean: float
    e2e_p50: float
    e2e_p99: float
    queue_wait_p99: float
    req_per_s: float
    output_tok_per_s: float
    rejected: int  # 429s and displacements: the client was told to come back
    shed_or_expired: int


def _measured(run: RunResult, records: Iterable[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if r.arrived_at >= run.warmup_s]


def summarize(run: RunResult, records: Iterable[RequestRecord] | None = None) -> Summary:
    chosen = _measured(run, run.records if records is None else records)
    ttfts = [r.ttft for r in chosen]
    done = [r for r in chosen if r.outcome == "completed"]
    itls = [x for r in done if (x := r.itl) is not None]
    waits = [w for r in chosen if (w := r.queue_wait) is not None]
    window = max(1e-9, run.duration_s - run.warmup_s)
    return Summary(
        requests=len(chosen),
        completed=len(done),
        ttft_p50=percentile(ttfts, 50),
        ttft_p90=percentile(ttfts, 90),
        ttft_p99=percentile(ttfts, 99),
        itl_mean=statistics.fmean(itls) if itls else math.nan,
        e2e_p50=percentile([r.e2e for r in chosen], 50),
        e2e_p99=percentile([r.e2e for r in chosen], 99),
        queue_wait_p99=percentile(waits, 99),
        req_per_s=len(done) / window,
        output_tok_per_s=sum(r.output_tokens for r in done) / window,
        rejected=sum(1 for r in chosen if r.outcome in ("rejected", "displaced")),
        shed_or_expired=sum(1 for r in chosen if r.outcome in ("shed", "expired")),
    )


def by_key(run: RunResult, key: str) -> dict[str, Summary]:
    """Summaries per tenant (`key="tenant"`) or per band (`key="priority"`)."""
    groups: dict[str, list[RequestRecord]] = {}
    for r in run.records:
        groups.setdefault(str(getattr(r, key)), []).append(r)
    return {k: summarize(run, v) for k, v in sorted(groups.items())}


def hit_rate(run: RunResult) -> float:
    return run.prefix_hits / run.prefix_queries if run.prefix_queries else math.nan


def delivered_output_tps(run: RunResult) -> float:
    """Output tokens per second the engines generated (their own counters, sampled), from the
    end of warm-up until they generated the run's last token. Every arm of a scenario replays
    the same requests, so this is the arm's work over the time it took: an arm that leaves
    engines idle finishes later and scores lower, while one whose engines merely prefill first
    and decode later scores the same (a window cut at the last arrival would count only the
    tokens that happened to come early: round-robin's engines, handed every request at once,
    generate most of theirs after it). The end is the first sample showing the final count, or
    the last client-side completion when that falls between it and the sample before (tokens
    of requests still running when the run stopped count up to the sample). NaN for runs
    without engine samples."""
    samples = [s for s in run.samples if s.generated_tokens is not None]
    after = [s for s in samples if s.at >= run.warmup_s]
    if len(after) < 2:
        return math.nan
    first = after[0]
    final = after[-1].generated_tokens
    assert first.generated_tokens is not None and final is not None
    reached = next(i for i, s in enumerate(after) if (s.generated_tokens or 0) >= final)
    if reached == 0:
        return math.nan  # nothing generated after warm-up
    end = after[reached].at
    last = max((r.completed_at for r in run.records if r.completed_at is not None), default=end)
    if after[reached - 1].at < last < end:
        end = last
    span = end - first.at
    return (final - first.generated_tokens) / span if span > 0 else math.nan


def busy_fraction(run: RunResult) -> float:
    """Mean share of engines with work, over the arrival window after warm-up."""
    samples = [s for s in run.samples if run.warmup_s <= s.at <= run.duration_s]
    if not samples:
        return math.nan
    return statistics.fmean(s.busy_engines / s.engines for s in samples)


@dataclass(frozen=True, slots=True)
class Fairness:
    jain: float  # over the tenants' service (divided by their weights: all 1 here)
    max_gap_tokens: int  # the largest service gap between two tenants, over time
    largest_request_tokens: int  # VTC's bound is 2x the largest single request cost
    max_charged_gap: float  # the same, between the flow controller's virtual counters


def engine_concurrency(run: RunResult, engines: int) -> float:
    """Requests the engines ran at once, per engine, while the load was offered (from the end
    of warm-up to the last arrival; the drain after it is left out): each request's time
    between dispatch and completion, clipped to that window, summed, over the window."""
    start, end = run.warmup_s, run.duration_s
    if end <= start:
        return math.nan
    busy = 0.0
    for r in run.records:
        if r.dispatched_at is None:
            continue
        done = r.completed_at if r.completed_at is not None else end
        busy += max(0.0, min(done, end) - max(r.dispatched_at, start))
    return busy / (end - start) / engines


@dataclass(frozen=True, slots=True)
class Slice:
    """The pool over one slice of a run's time (`timeline`)."""

    start: float
    output_tps: float  # the engines' generated tokens over the slice (NaN: under two samples)
    queued: int  # in the router's queues at the slice's last sample
    running: int  # dispatched and not yet completed at the slice's middle, pool-wide
    arrived: int


def timeline(run: RunResult, step_s: float) -> list[Slice]:
    """The run in slices of `step_s`, up to its last completion: where a throughput ratio comes
    from (the engines' batch while the load is offered, the backlog left at the last arrival,
    how fast it drains)."""
    end = max((r.completed_at or 0.0 for r in run.records), default=0.0)
    slices: list[Slice] = []
    start = 0.0
    while start <= end:
        stop = start + step_s
        inside = [s for s in run.samples if start <= s.at < stop]
        counted = [s for s in inside if s.generated_tokens is not None]
        tps = math.nan
        if len(counted) >= 2 and counted[-1].at > counted[0].at:
            first, last = counted[0].generated_tokens or 0, counted[-1].generated_tokens or 0
            tps = (last - first) / (counted[-1].at - counted[0].at)
        middle = start + step_s / 2
        running = sum(
            1
            for r in run.records
            if r.dispatched_at is not None
            and r.dispatched_at <= middle
            and (r.completed_at is None or r.completed_at > middle)
        )
        slices.append(
            Slice(
                start,
                tps,
                sum(inside[-1].queued_by_band.values()) if inside else 0,
                running,
                sum(1 for r in run.records if start <= r.arrived_at < stop),
            )
        )
        start = stop
    return slices


def fairness(
    run: RunResult,
    tenants: Sequence[str],
    until: float | None = None,
    cost: TokenCost | None = None,
) -> Fairness:
    """Service of backlogged `tenants` over the run, in VTC's units (the flow controller's
    token cost: w_in · uncached prompt + w_out · output), with VTC's measures."""
    cost = cost or TokenCost()
    end = run.duration_s if until is None else until
    samples = [s for s in run.samples if s.at <= end]
    gap = 0
    charged_gap = 0.0
    for s in samples:
        served = [s.served_by_tenant.get(t, 0) for t in tenants]
        gap = max(gap, max(served) - min(served))
        if all(t in s.charged_by_tenant for t in tenants):
            charged = [s.charged_by_tenant[t] for t in tenants]
            charged_gap = max(charged_gap, max(charged) - min(charged))
    final = samples[-1].served_by_tenant if samples else {}
    largest = max(
        (
            round(cost.input_weight * r.prompt_tokens + cost.output_weight * r.max_tokens)
            for r in run.records
            if r.tenant in tenants
        ),
        default=0,
    )
    return Fairness(jain_index(final.get(t, 0) for t in tenants), gap, largest, charged_gap)


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) over repetitions."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return (math.nan, math.nan, math.nan)
    return (statistics.median(finite), min(finite), max(finite))
