"""The prefill estimate: how long an endpoint takes from dispatch to first token, learned from
streamed first bytes and from the engine's own counters — what ends a pending prefill when no
first byte comes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.registry import EndpointRegistry
from sluice.room import PrefillEstimator, RoomSettings


def test_an_endpoint_never_seen_is_estimated_from_the_prior() -> None:
    estimator = PrefillEstimator(RoomSettings(prefill_tokens_per_s=1000, prefill_overhead_s=0.02))
    assert estimator.estimate("new", 1000) == pytest.approx(1.02)
    assert estimator.estimate("new", 0) == pytest.approx(0.02)


def test_first_bytes_teach_an_endpoint_its_prefill_rate() -> None:
    estimator = PrefillEstimator(RoomSettings(prefill_tokens_per_s=1000))
    for tokens in (100, 400, 800, 1600) * 10:  # a 10,000 tokens/s engine, 10 ms overhead
        estimator.observe_first_byte("fast", tokens, 0.01 + tokens / 10_000)
    assert estimator.estimate("fast", 1000) == pytest.approx(0.11, rel=0.15)
    assert estimator.estimate("other", 1000) > 0.9, "what one endpoint taught stays its own"


def test_a_noisy_endpoint_is_given_a_margin_so_the_first_byte_usually_comes_first() -> None:
    steady, noisy = PrefillEstimator(RoomSettings()), PrefillEstimator(RoomSettings())
    for i in range(200):
        tokens = 200 + 10 * (i % 50)
        steady.observe_first_byte("e", tokens, tokens / 5000)
        noisy.observe_first_byte("e", tokens, tokens / 5000 * (0.5 if i % 2 else 1.5))
    assert steady.estimate("e", 500) == pytest.approx(0.1, rel=0.1)
    assert noisy.estimate("e", 500) > 1.5 * 0.1


def test_the_estimate_never_exceeds_the_longest_hold() -> None:
    estimator = PrefillEstimator(RoomSettings(prefill_tokens_per_s=10, max_prefill_hold_s=5))
    assert estimator.estimate("slow", 100_000) == 5


def _scraped(registry: EndpointRegistry, now: float, **counters: float) -> None:
    mark = registry.begin_scrape("e")
    assert mark is not None
    registry.record_scrape(mark, EngineMetrics(updated_at=now, **counters))  # type: ignore[arg-type]


def test_the_engines_ttft_histogram_teaches_the_rate_of_non_streamed_traffic() -> None:
    # No first byte reaches Sluice early (non-streamed): the engine's counters say it all.
    registry = EndpointRegistry()
    registry.add(Endpoint("e", "10.0.0.1", 8000))
    estimator = PrefillEstimator(RoomSettings(prefill_tokens_per_s=1000))
    requests = seconds = prompt = cached = 0.0
    for step in range(40):
        requests += 4
        seconds += 4 * (0.005 + 600 / 8000)  # each: 600 uncached tokens at 8,000 tokens/s
        prompt += 4 * 700
        cached += 4 * 100
        _scraped(
            registry,
            float(step),
            first_tokens=requests,
            first_token_seconds=seconds,
            prompt_tokens=prompt,
            cached_prompt_tokens=cached,
        )
        estimator.observe_scrapes(registry.snapshot())
    assert estimator.estimate("e", 600) == pytest.approx(0.08, rel=0.2)


def test_an_engine_restart_is_not_taken_for_a_sample() -> None:
    registry = EndpointRegistry()
    registry.add(Endpoint("e", "10.0.0.1", 8000))
    estimator = PrefillEstimator(RoomSettings())
    before = estimator.estimate("e", 500)
    _scraped(registry, 1.0, first_tokens=100, first_token_seconds=50.0)
    estimator.observe_scrapes(registry.snapshot())
    _scraped(registry, 2.0, first_tokens=2, first_token_seconds=0.1)  # counters went back
    estimator.observe_scrapes(registry.snapshot())
    assert estimator.estimate("e", 500) == before


@given(
    st.lists(
        st.tuples(st.integers(0, 20_000), st.floats(0, 120, allow_nan=False)),
        max_size=60,
    ),
    st.integers(0, 100_000),
)
def test_the_estimate_is_always_a_finite_hold_within_the_cap(
    samples: list[tuple[int, float]], tokens: int
) -> None:
    settings = RoomSettings(max_prefill_hold_s=30)
    estimator = PrefillEstimator(settings)
    for sample_tokens, seconds in samples:
        estimator.observe_first_byte("e", sample_tokens, seconds)
    estimate = estimator.estimate("e", tokens)
    assert 0 <= estimate <= settings.max_prefill_hold_s
