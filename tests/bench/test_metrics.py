"""The numbers the report stands on: Jain's index, percentiles, goodput's crossing."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from sluice.bench.metrics import delivered_output_tps, goodput, jain_index, percentile, timeline
from sluice.bench.records import RequestRecord, RunResult, Sample


def test_jain_index_is_one_for_equal_shares_and_one_over_n_when_one_takes_all() -> None:
    assert jain_index([5, 5, 5, 5]) == pytest.approx(1.0)
    assert jain_index([10, 0, 0, 0]) == pytest.approx(0.25)
    # (1+2+3)^2 / (3 * (1+4+9)) = 36/42
    assert jain_index([1, 2, 3]) == pytest.approx(36 / 42)
    assert math.isnan(jain_index([0, 0]))  # nobody served: no fairness claim


def test_percentile_is_nearest_rank_and_infinite_values_sort_last() -> None:
    values = [float(x) for x in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([1.0, 2.0, math.inf], 99) == math.inf
    assert math.isnan(percentile([], 50))


def test_goodput_interpolates_the_slo_crossing() -> None:
    # p90 TTFT 0.5 s at 10 QPS, 1.5 s at 20, 3.5 s at 30: 2 s is crossed a quarter of the way
    # from 20 to 30.
    assert goodput({10: 0.5, 20: 1.5, 30: 3.5, 40: 9.0}) == pytest.approx(22.5)


def test_goodput_edges() -> None:
    assert goodput({10: 0.5, 20: 1.0}) == 20  # never broken: the highest load tried
    assert goodput({10: 3.0, 20: 1.0}) == 0  # broken at the lowest load
    assert goodput({10: 1.0, 20: math.inf}) == 10  # no finite point to interpolate to
    # The first break ends the search even if a higher load looks good again (noise).
    assert goodput({10: 1.0, 20: 2.0, 30: 5.0, 40: 1.0}) == pytest.approx(20)


def test_fairness_reports_delivered_and_charged_gaps_in_virtual_tokens() -> None:
    from sluice.bench.metrics import fairness
    from sluice.bench.records import RequestRecord, RunResult, Sample

    records = [
        RequestRecord("a1", "A", 0, 0.0, prompt_tokens=1000, max_tokens=100),
        RequestRecord("b1", "B", 0, 0.0, prompt_tokens=100, max_tokens=100),
    ]
    samples = [
        Sample(1.0, {}, {"A": 1000, "B": 300}, 1, 1, {"A": 1200.0, "B": 900.0}),
        Sample(2.0, {}, {"A": 1200, "B": 1100}, 1, 1, {"A": 1400.0, "B": 1300.0}),
    ]
    run = RunResult("fairness", "arm", 1, 1.0, records, samples, duration_s=2.0)
    result = fairness(run, ["A", "B"])
    assert result.max_gap_tokens == 700
    assert result.max_charged_gap == pytest.approx(300.0)
    assert result.largest_request_tokens == 1000 + 2 * 100  # w_in · prompt + w_out · max_tokens
    assert result.jain == pytest.approx(jain_index([1200, 1100]))


def _counted(
    counts: Sequence[tuple[float, int]], last_completion: float, warmup_s: float = 1.0
) -> RunResult:
    """A run whose engines had generated these many tokens at these times (their counters,
    sampled), with arrivals over 10 s and the last request completing at `last_completion`."""
    record = RequestRecord("r", "t", 0, 0.0, 10, 4, outcome="completed")
    record.completed_at = last_completion
    samples = [Sample(at, {}, {}, 4, 4, {}, tokens) for at, tokens in counts]
    return RunResult("s", "a", 1, 1.5, [record], samples, duration_s=10.0, warmup_s=warmup_s)


def test_delivered_output_tps_is_the_work_over_the_time_it_took_not_an_arrival_window() -> None:
    # Both pools generate 9,000 tokens after warm-up and finish at 16 s. One decodes steadily;
    # the other (round-robin handed its engines every request at once: they prefill first)
    # has produced a tenth of its tokens when arrivals stop at 10 s and the rest after.
    steady = _counted([(t, 600 * t - 600) for t in range(1, 17)], last_completion=16.0)
    burst = [(t, 100 * t - 100) for t in range(1, 11)] + [(13, 3000), (15, 7000), (16, 9000)]
    late = _counted(burst, last_completion=16.0)
    assert delivered_output_tps(steady) == pytest.approx(9000 / 15)
    assert delivered_output_tps(late) == delivered_output_tps(steady)
    # the same work finished 3 s later is delivered 15/18 as fast
    slower = _counted([(t, 500 * t - 500) for t in range(1, 20)], last_completion=19.0)
    assert delivered_output_tps(slower) / delivered_output_tps(steady) == pytest.approx(15 / 18)


def test_delivered_output_tps_ends_at_the_last_completion_between_two_samples() -> None:
    # sampled once a second: the count is final at 12 s, the last request completed at 11.5 s
    run = _counted([(1, 0), (11, 1000), (12, 1050), (13, 1050)], last_completion=11.5)
    assert delivered_output_tps(run) == pytest.approx(1050 / 10.5)
    # tokens of requests still running when the run ended count up to the last sample
    cut = _counted([(1, 0), (5, 400), (9, 800)], last_completion=4.0)
    assert delivered_output_tps(cut) == pytest.approx(800 / 8)
    assert math.isnan(delivered_output_tps(_counted([(1, 0), (2, 0)], last_completion=0.5)))
    assert math.isnan(delivered_output_tps(_counted([], last_completion=1.0)))


def test_a_timeline_slices_the_run_until_its_last_completion() -> None:
    """Two requests: one dispatched at once and done at 3 s, one queued until 4 s and done at
    7 s; the engines generate 100 tokens a second until 7 s."""
    early = RequestRecord("a", "t", 0, 0.0, 10, 10, dispatched_at=0.0, completed_at=3.0)
    late = RequestRecord("b", "t", 0, 1.0, 10, 10, dispatched_at=4.0, completed_at=7.0)
    samples = [
        Sample(at, {0: 1 if 1.0 <= at < 4.0 else 0}, {}, 1, 1, generated_tokens=int(100 * at))
        for at in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0)
    ]
    run = RunResult("s", "arm", 1, 1.0, [early, late], samples)
    slices = timeline(run, 2.0)
    assert [s.start for s in slices] == [0.0, 2.0, 4.0, 6.0]  # the last holds the completion
    assert [s.output_tps for s in slices] == pytest.approx([100.0] * 4)
    assert [s.queued for s in slices] == [1, 1, 0, 0]  # at each slice's last sample
    assert [s.running for s in slices] == [1, 0, 1, 0]  # at 1, 3, 5 and 7 s
    assert [s.arrived for s in slices] == [2, 0, 0, 0]
