"""The KV-cache utilization scorer: upstream's `1 − kv` as its page last said, and with
`countDispatched` (Sluice's default profile) the usage the engine will have once it holds what
Sluice sent it since that page."""

from __future__ import annotations

from collections import Counter

from sluice.datalayer.endpoint import EngineMetrics
from sluice.datalayer.registry import EndpointRegistry
from sluice.scheduling.defaults import DEFAULT_CONFIG_YAML
from sluice.scheduling.framework import CycleState
from sluice.scheduling.scorers import KvCacheUtilizationScorer, expected_kv_usage

from .helpers import NOW, pool, request, scheduler

BLOCKS, BLOCK = 1000, 16  # 16,000 tokens of KV cache


def _engine(kv: float, running: int = 0) -> EngineMetrics:
    return EngineMetrics(
        kv_cache_usage=kv, running=running, cache_num_blocks=BLOCKS, cache_block_size=BLOCK
    )


def _scores(scorer: KvCacheUtilizationScorer, registry: EndpointRegistry) -> list[float]:
    return scorer.score(CycleState(request("hi"), NOW), registry.snapshot())


def test_upstreams_scorer_reads_the_page_alone() -> None:
    registry = pool(_engine(0.25), _engine(0.5))
    registry.dispatch("pod-0", 8000)
    assert _scores(KvCacheUtilizationScorer("kv"), registry) == [0.75, 0.5]


def test_counted_dispatches_weigh_until_a_scrape_shows_them() -> None:
    registry = pool(_engine(0.25), _engine(0.5))
    registry.dispatch("pod-0", 8000)  # half the cache, not on the page yet
    counted = KvCacheUtilizationScorer("kv", count_dispatched=True)
    assert _scores(counted, registry) == [0.25, 0.5]
    # The next page holds it (in the usage, or waiting for room): it is counted once.
    mark = registry.begin_scrape("pod-0")
    assert mark is not None
    registry.record_scrape(mark, _engine(0.75))
    assert _scores(counted, registry) == [0.25, 0.5]


def test_an_engine_without_its_cache_size_is_read_as_its_page_says() -> None:
    registry = pool(EngineMetrics(kv_cache_usage=0.25))
    registry.dispatch("pod-0", 8000)
    assert expected_kv_usage(registry.snapshot()[0]) == 0.25
    counted = KvCacheUtilizationScorer("kv", count_dispatched=True)
    assert _scores(counted, registry) == [0.75]


def test_the_score_never_goes_below_zero() -> None:
    registry = pool(_engine(0.9))
    registry.dispatch("pod-0", 16_000)
    assert _scores(KvCacheUtilizationScorer("kv", count_dispatched=True), registry) == [0.0]


def test_a_burst_released_at_once_spreads_by_what_each_engine_will_hold() -> None:
    """noisy-neighbour at 150 %, seed 2: the backlog released when the arrivals stopped (252
    requests of 4,000 tokens in one dispatch tick) went 116 to the engine that had run fewest,
    which then served them for 20 s after the others were idle. The load scorers' 1/(1 + x)
    flattens as a burst deepens; the page's KV difference did not."""
    counted = _burst(DEFAULT_CONFIG_YAML)
    # The engine with 12 fewer running requests takes about those 12 more than the others.
    assert all(counted["pod-0"] - counted[f"pod-{i}"] <= 12 for i in (1, 2, 3)), counted
    page_only = _burst(DEFAULT_CONFIG_YAML.replace(COUNTED, ""))
    assert all(page_only["pod-0"] > 2 * page_only[f"pod-{i}"] for i in (1, 2, 3)), page_only


COUNTED = "  parameters: {countDispatched: true}\n"


def _burst(config_yaml: str, size: int = 240) -> Counter[str]:
    """Where `size` cold 4,000-token requests released in one tick go, scheduled by
    `config_yaml`, on four engines of which one runs 8 requests and the others 20 each."""
    assert COUNTED in DEFAULT_CONFIG_YAML
    registry = pool(_engine(0.03, running=8), *(_engine(0.12, running=20) for _ in range(3)))
    picker = scheduler(config_yaml)
    placed: Counter[str] = Counter()
    for _ in range(size):
        chosen = picker.schedule(request("x" * 16_000), registry.snapshot(), NOW).primary
        registry.dispatch(chosen.name, 4200, prefill_tokens=4000)
        placed[chosen.name] += 1
    return placed
