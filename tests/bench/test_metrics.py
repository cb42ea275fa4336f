"""The numbers the report stands on: Jain's index, percentiles, goodput's crossing."""

from __future__ import annotations

import math

import pytest

from sluice.bench.metrics import goodput, jain_index, percentile


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
